//! `page` / `page_size` query parameters and the list envelope every list route answers with.
use sea_orm::{
    ColumnTrait,
    sea_query::{Expr, ExprTrait, Func, LikeExpr, SimpleExpr},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

pub const MAX_PAGE_SIZE: u64 = 100;

#[derive(Deserialize, IntoParams, Default)]
pub struct PageQuery {
    /// From 1.
    pub page: Option<u64>,
    /// 1 to 100, default 20.
    pub page_size: Option<u64>,
}

impl PageQuery {
    /// Returns (page, page_size) or a 422 naming the parameter.
    pub fn checked(&self) -> Result<(u64, u64), ApiError> {
        let page = self.page.unwrap_or(1);
        let size = self.page_size.unwrap_or(20);
        if page == 0 {
            return Err(ApiError::field("page", "must be 1 or more"));
        }
        if size == 0 || size > MAX_PAGE_SIZE {
            return Err(ApiError::field("page_size", format!("must be between 1 and {MAX_PAGE_SIZE}")));
        }
        Ok((page, size))
    }
}

#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub page: u64,
    pub page_size: u64,
}

/// `lower(column) LIKE %q%` with the user's `%` and `_` matched literally (`!` escapes: a
/// backslash means different things in MySQL and SQLite string literals).
pub fn contains_ci(column: impl ColumnTrait, q: &str) -> SimpleExpr {
    let escaped = q.to_lowercase().replace('!', "!!").replace('%', "!%").replace('_', "!_");
    Expr::expr(Func::lower(Expr::col(column))).like(LikeExpr::new(format!("%{escaped}%")).escape('!'))
}
