//! `/api/admin/*`: user management and run-time settings; every route needs `AdminUser`.
use axum::{
    Json,
    extract::State,
    http::StatusCode,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
    sea_query::{Expr, ExprTrait, Func, LikeExpr},
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::{
    auth,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{AdminUser, JsonBody, Path, Query},
    pagination::{Page, PageQuery},
    runtime_settings::{self, SettingsPatch, SettingsView},
    state::AppState,
    users::{self, NewUser, Password, Role, UserView},
    validation::Checks,
};
use store::entities::users as user_entity;

#[derive(Deserialize, IntoParams)]
pub struct UserListQuery {
    /// Matches email or nickname, case-insensitively.
    pub q: Option<String>,
    pub page: Option<u64>,
    pub page_size: Option<u64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub email: String,
    pub password: String,
    pub nickname: Option<String>,
    /// `user` (default) or `admin`.
    pub role: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    pub nickname: Option<String>,
    pub role: Option<String>,
    pub is_active: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    pub new_password: String,
}

#[utoipa::path(get, path = "/api/admin/users", tag = "admin", security(("bearer" = [])), params(UserListQuery),
    responses((status = 200, body = Page<UserView>), (status = 403, body = ErrorBody)))]
pub async fn list_users(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(query): Query<UserListQuery>,
) -> ApiResult<Json<Page<UserView>>> {
    let (page, page_size) = PageQuery { page: query.page, page_size: query.page_size }.checked()?;
    let mut select = user_entity::Entity::find();
    if let Some(q) = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        let pattern = format!("%{}%", escape_like(&q.to_lowercase()));
        let lower = |col: user_entity::Column| Expr::expr(Func::lower(Expr::col(col)));
        select = select.filter(
            Condition::any()
                .add(lower(user_entity::Column::Email).like(LikeExpr::new(&pattern).escape('!')))
                .add(lower(user_entity::Column::Nickname).like(LikeExpr::new(&pattern).escape('!'))),
        );
    }
    let paginator = select.order_by_asc(user_entity::Column::Id).paginate(&state.db, page_size);
    let total = paginator.num_items().await?;
    let items = paginator.fetch_page(page - 1).await?.into_iter().map(UserView::from).collect();
    Ok(Json(Page { items, total, page, page_size }))
}

/// `%` and `_` typed by the user are matched literally. `!` is the escape character because a
/// backslash means different things in MySQL and SQLite string literals.
fn escape_like(text: &str) -> String {
    text.replace('!', "!!").replace('%', "!%").replace('_', "!_")
}

#[utoipa::path(post, path = "/api/admin/users", tag = "admin", security(("bearer" = [])), request_body = CreateUserRequest,
    responses((status = 201, body = UserView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_user(
    State(state): State<AppState>,
    _admin: AdminUser,
    JsonBody(req): JsonBody<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let new = NewUser::parse(&req.email, &req.password, req.nickname.as_deref(), req.role.as_deref())?;
    let user = users::create(&state.db, new, state.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

#[utoipa::path(get, path = "/api/admin/users/{id}", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 404, body = ErrorBody)))]
pub async fn get_user(State(state): State<AppState>, _admin: AdminUser, Path(id): Path<i32>) -> ApiResult<Json<UserView>> {
    let user = user_entity::Entity::find_by_id(id).one(&state.db).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(user.into()))
}

#[utoipa::path(patch, path = "/api/admin/users/{id}", tag = "admin", security(("bearer" = [])), request_body = UpdateUserRequest,
    responses((status = 200, body = UserView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`last_admin`: would leave no active admin"), (status = 422, body = ErrorBody)))]
pub async fn update_user(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<i32>,
    JsonBody(req): JsonBody<UpdateUserRequest>,
) -> ApiResult<Json<UserView>> {
    let mut checks = Checks::default();
    let nickname = req.nickname.as_deref().map(|n| checks.check("nickname", users::parse_nickname(Some(n))));
    let role = req.role.as_deref().map(|r| checks.check("role", Role::parse(r)));
    checks.finish()?;
    let now = state.clock.now();

    let txn = state.db.begin().await?;
    let user = user_entity::Entity::find_by_id(id).one(&txn).await?.ok_or(ApiError::NotFound)?;
    let new_role = role.flatten().map_or(user.role.clone(), |r| r.as_str().to_owned());
    let new_active = req.is_active.unwrap_or(user.is_active);
    let loses_admin = user.is_active && user.role == auth::tokens::ROLE_ADMIN
        && (new_role != auth::tokens::ROLE_ADMIN || !new_active);
    if loses_admin && other_active_admins(&txn, user.id).await? == 0 {
        return Err(ApiError::conflict("last_admin", "the last active admin cannot be demoted or disabled"));
    }
    let deactivated = user.is_active && !new_active;
    let mut active = user.into_active_model();
    if let Some(nickname) = nickname.flatten() {
        active.nickname = Set(nickname);
    }
    active.is_admin = Set(new_role == auth::tokens::ROLE_ADMIN);
    active.role = Set(new_role);
    active.is_active = Set(new_active);
    active.updated_at = Set(Some(now));
    let user = active.update(&txn).await?;
    if deactivated {
        auth::revoke_all(&txn, user.id, now).await?;
    }
    txn.commit().await?;
    state.accounts.forget(&user.id);
    Ok(Json(user.into()))
}

/// Counts active admins other than `except`, locking their rows where the database can, so two
/// admins demoting each other at once cannot both succeed.
async fn other_active_admins(db: &impl ConnectionTrait, except: i32) -> Result<usize, ApiError> {
    let mut select = user_entity::Entity::find()
        .filter(user_entity::Column::Role.eq(auth::tokens::ROLE_ADMIN))
        .filter(user_entity::Column::IsActive.eq(true))
        .filter(user_entity::Column::Id.ne(except));
    if db.get_database_backend() != DbBackend::Sqlite {
        select = select.lock_exclusive();
    }
    Ok(select.all(db).await?.len())
}

#[utoipa::path(put, path = "/api/admin/users/{id}/password", tag = "admin", security(("bearer" = [])), request_body = ResetPasswordRequest,
    responses((status = 204, description = "the user's sessions are revoked"), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn reset_password(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<i32>,
    JsonBody(req): JsonBody<ResetPasswordRequest>,
) -> ApiResult<StatusCode> {
    let password = Password::parse(&req.new_password).map_err(|why| ApiError::field("new_password", why))?;
    let user = user_entity::Entity::find_by_id(id).one(&state.db).await?.ok_or(ApiError::NotFound)?;
    let now = state.clock.now();
    let mut active = user.into_active_model();
    active.password_hash = Set(auth::hash_password(password.into_inner()).await?);
    active.updated_at = Set(Some(now));
    let txn = state.db.begin().await?;
    let user = active.update(&txn).await?;
    auth::revoke_all(&txn, user.id, now).await?;
    txn.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/admin/settings", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = SettingsView)))]
pub async fn get_settings(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Json<SettingsView>> {
    Ok(Json(runtime_settings::load(&state).await?.view()))
}

#[utoipa::path(patch, path = "/api/admin/settings", tag = "admin", security(("bearer" = [])), request_body = SettingsPatch,
    responses((status = 200, body = SettingsView), (status = 422, body = ErrorBody)))]
pub async fn update_settings(
    State(state): State<AppState>,
    _admin: AdminUser,
    JsonBody(patch): JsonBody<SettingsPatch>,
) -> ApiResult<Json<SettingsView>> {
    Ok(Json(runtime_settings::update(&state, patch).await?.view()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_wildcards_typed_by_users_are_literal() {
        assert_eq!(super::escape_like("50%_a!b"), "50!%!_a!!b");
    }
}
