//! Authentication: password hashing, tokens, login throttling and the refresh-token lifecycle.
pub mod password;
pub mod rate_limit;
pub mod tokens;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set,
    sea_query::Expr,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{error::ApiError, state::AppState, users::UserView};
use store::entities::{refresh_tokens, users};

/// What login and refresh answer; the refresh token itself travels only in the cookie.
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub user: UserView,
}

pub struct IssuedSession {
    pub response: TokenResponse,
    pub refresh_token: String,
}

/// Starts a new token family for `user` (a login).
pub async fn start_session(state: &AppState, user: users::Model) -> Result<IssuedSession, ApiError> {
    let family = uuid::Uuid::new_v4().to_string();
    issue(state, user, family).await
}

async fn issue(state: &AppState, user: users::Model, family_id: String) -> Result<IssuedSession, ApiError> {
    let now = state.clock.now();
    let refresh_token = tokens::new_refresh_token();
    refresh_tokens::ActiveModel {
        user_id: Set(user.id),
        family_id: Set(family_id),
        token_hash: Set(tokens::hash_refresh_token(&refresh_token)),
        expires_at: Set(now + chrono::Duration::seconds(state.tokens.refresh_ttl_secs)),
        revoked_at: Set(None),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&state.db)
    .await?;
    let access_token = state.tokens.issue_access(user.id, &user.role, now);
    Ok(IssuedSession {
        response: TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: state.tokens.access_ttl_secs,
            user: UserView::from(user),
        },
        refresh_token,
    })
}

/// Exchanges a refresh token for a new one in the same family. Presenting a token that was
/// already rotated means it leaked (or raced): the whole family is revoked (R-AUTH-2).
pub async fn rotate(state: &AppState, presented: &str) -> Result<IssuedSession, ApiError> {
    let now = state.clock.now();
    let invalid = ApiError::Unauthorized("invalid refresh token");
    let stored = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::TokenHash.eq(tokens::hash_refresh_token(presented)))
        .one(&state.db)
        .await?
        .ok_or(invalid)?;
    if stored.revoked_at.is_some() {
        tracing::warn!(user_id = stored.user_id, family = %stored.family_id, "refresh token reuse; revoking family");
        revoke_family(&state.db, &stored.family_id, now).await?;
        return Err(ApiError::Unauthorized("refresh token reuse detected; please log in again"));
    }
    if stored.expires_at <= now {
        return Err(ApiError::Unauthorized("refresh token expired"));
    }
    // Conditional update: of two concurrent refreshes with the same token only one wins; the
    // loser is treated as reuse.
    let claimed = refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(now))
        .filter(refresh_tokens::Column::Id.eq(stored.id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .exec(&state.db)
        .await?;
    if claimed.rows_affected != 1 {
        revoke_family(&state.db, &stored.family_id, now).await?;
        return Err(ApiError::Unauthorized("refresh token reuse detected; please log in again"));
    }
    let user = users::Entity::find_by_id(stored.user_id)
        .one(&state.db)
        .await?
        .filter(|u| u.is_active)
        .ok_or(ApiError::Unauthorized("the account is disabled or gone"))?;
    issue(state, user, stored.family_id).await
}

pub async fn revoke_family(db: &impl ConnectionTrait, family_id: &str, now: DateTime<Utc>) -> Result<(), ApiError> {
    refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(now))
        .filter(refresh_tokens::Column::FamilyId.eq(family_id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Revokes the family the presented token belongs to (logout); unknown tokens are ignored.
pub async fn revoke_presented(state: &AppState, presented: &str) -> Result<(), ApiError> {
    let found = refresh_tokens::Entity::find()
        .filter(refresh_tokens::Column::TokenHash.eq(tokens::hash_refresh_token(presented)))
        .one(&state.db)
        .await?;
    if let Some(token) = found {
        revoke_family(&state.db, &token.family_id, state.clock.now()).await?;
    }
    Ok(())
}

/// Ends every session of a user: on disable, password change and password reset.
pub async fn revoke_all(db: &impl ConnectionTrait, user_id: i32, now: DateTime<Utc>) -> Result<(), ApiError> {
    refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(now))
        .filter(refresh_tokens::Column::UserId.eq(user_id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Hashes on the blocking pool: argon2 takes tens of milliseconds of CPU.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || password::hash(&password)).await?
}

pub async fn verify_password(password: String, stored: String) -> Result<password::Verdict, ApiError> {
    Ok(tokio::task::spawn_blocking(move || password::verify(&password, &stored)).await?)
}
