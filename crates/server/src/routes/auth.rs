//! `/api/auth/*`: register, login, refresh, logout, me, change password.
use std::net::SocketAddr;

use axum::{
    Json,
    extract::{ConnectInfo, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::{
    auth::{self, IssuedSession, TokenResponse, password::Verdict},
    error::{ApiError, ApiResult, ErrorBody},
    extract::{AuthUser, JsonBody},
    runtime_settings,
    state::AppState,
    users::{self, Email, NewUser, Password, UserView},
};
use store::entities::users as user_entity;

pub const REFRESH_COOKIE: &str = "refresh_token";
/// The cookie is only sent to the auth routes, never to the rest of the API.
pub const COOKIE_PATH: &str = "/api/auth";

#[derive(Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub email: String,
    pub password: String,
    pub nickname: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

#[utoipa::path(post, path = "/api/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = UserView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn register(State(state): State<AppState>, JsonBody(req): JsonBody<RegisterRequest>) -> ApiResult<(StatusCode, Json<UserView>)> {
    if !runtime_settings::load(&state).await?.registration_open {
        return Err(ApiError::Denied { code: "registration_closed", message: "self-registration is closed".into() });
    }
    let new = NewUser::parse(&req.email, &req.password, req.nickname.as_deref(), None)?;
    let user = users::create(&state.db, new, state.clock.now()).await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse, description = "also sets the refresh cookie"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "account disabled"),
        (status = 429, body = ErrorBody, description = "rate limited; see Retry-After")))]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<LoginRequest>,
) -> ApiResult<Response> {
    let now = state.clock.now();
    let email_key = req.email.trim().to_lowercase();
    let ip = client_ip(&state, &headers, peer);
    state
        .login_limiter
        .check(&ip, &email_key, now)
        .map_err(|retry_after_secs| ApiError::TooManyRequests { retry_after_secs })?;

    let bad_credentials = ApiError::Unauthorized("invalid email or password");
    let user = match Email::parse(&req.email) {
        Ok(email) => user_entity::Entity::find()
            .filter(user_entity::Column::Email.eq(email.as_str()))
            .one(&state.db)
            .await?,
        Err(_) => None,
    };
    // Verify against a dummy hash when the account is unknown so timing does not reveal it.
    let stored = user.as_ref().map_or_else(|| auth::password::dummy_hash().to_owned(), |u| u.password_hash.clone());
    let verdict = auth::verify_password(req.password.clone(), stored).await?;
    let user = match (user, verdict) {
        (Some(user), Verdict::Match | Verdict::MatchNeedsUpgrade) => {
            if matches!(verdict, Verdict::MatchNeedsUpgrade) {
                upgrade_hash(&state, &user, req.password).await?;
            }
            user
        }
        _ => {
            state.login_limiter.record_failure(&email_key, now);
            return Err(bad_credentials);
        }
    };
    if !user.is_active {
        return Err(ApiError::Denied { code: "account_disabled", message: "this account is disabled".into() });
    }
    state.login_limiter.record_success(&email_key);
    let session = auth::start_session(&state, user).await?;
    Ok(session_response(&state, &headers, StatusCode::OK, session))
}

async fn upgrade_hash(state: &AppState, user: &user_entity::Model, password: String) -> ApiResult<()> {
    let new_hash = auth::hash_password(password).await?;
    let mut active = user.clone().into_active_model();
    active.password_hash = Set(new_hash);
    active.updated_at = Set(Some(state.clock.now()));
    active.update(&state.db).await?;
    tracing::info!(user_id = user.id, "upgraded a bcrypt password hash to argon2id");
    Ok(())
}

#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth",
    responses((status = 200, body = TokenResponse, description = "rotates the refresh cookie"), (status = 401, body = ErrorBody)))]
pub async fn refresh(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let presented = refresh_cookie(&headers).ok_or(ApiError::Unauthorized("no refresh token"))?;
    match auth::rotate(&state, &presented).await {
        Ok(session) => Ok(session_response(&state, &headers, StatusCode::OK, session)),
        // A refused token is also cleared from the browser.
        Err(err @ ApiError::Unauthorized(_)) => {
            let mut response = err.into_response();
            response.headers_mut().insert(header::SET_COOKIE, clear_cookie(&state, &headers));
            Ok(response)
        }
        Err(err) => Err(err),
    }
}

#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", responses((status = 204)))]
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(presented) = refresh_cookie(&headers) {
        auth::revoke_presented(&state, &presented).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, clear_cookie(&state, &headers));
    Ok(response)
}

#[utoipa::path(get, path = "/api/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody)))]
pub async fn me(AuthUser(user): AuthUser) -> Json<UserView> {
    Json(user.into())
}

#[utoipa::path(put, path = "/api/auth/password", tag = "auth", security(("bearer" = [])), request_body = ChangePasswordRequest,
    responses((status = 204, description = "other sessions are revoked; this one gets a new refresh cookie"),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn change_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    AuthUser(user): AuthUser,
    JsonBody(req): JsonBody<ChangePasswordRequest>,
) -> ApiResult<Response> {
    let new_password = Password::parse(&req.new_password).map_err(|why| ApiError::field("new_password", why))?;
    let verdict = auth::verify_password(req.current_password, user.password_hash.clone()).await?;
    if matches!(verdict, Verdict::Mismatch) {
        return Err(ApiError::field("current_password", "is not correct"));
    }
    let now = state.clock.now();
    let mut active = user.clone().into_active_model();
    active.password_hash = Set(auth::hash_password(new_password.into_inner()).await?);
    active.updated_at = Set(Some(now));
    let user = active.update(&state.db).await?;
    auth::revoke_all(&state.db, user.id, now).await?;
    let session = auth::start_session(&state, user).await?;
    let mut response = session_response(&state, &headers, StatusCode::OK, session);
    *response.status_mut() = StatusCode::NO_CONTENT;
    *response.body_mut() = Default::default();
    response.headers_mut().remove(header::CONTENT_TYPE);
    Ok(response)
}

fn session_response(state: &AppState, headers: &HeaderMap, status: StatusCode, session: IssuedSession) -> Response {
    let IssuedSession { response, refresh_token } = session;
    let mut out = (status, Json::<TokenResponse>(response)).into_response();
    let cookie = format!(
        "{REFRESH_COOKIE}={refresh_token}; HttpOnly; SameSite=Strict; Path={COOKIE_PATH}; Max-Age={}{}",
        state.tokens.refresh_ttl_secs,
        secure_suffix(state, headers)
    );
    out.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("cookie is ASCII"));
    out
}

fn clear_cookie(state: &AppState, headers: &HeaderMap) -> HeaderValue {
    let cookie = format!(
        "{REFRESH_COOKIE}=; HttpOnly; SameSite=Strict; Path={COOKIE_PATH}; Max-Age=0{}",
        secure_suffix(state, headers)
    );
    HeaderValue::from_str(&cookie).expect("cookie is ASCII")
}

/// `Secure` when served over https (directly configured, or as told by the reverse proxy).
fn secure_suffix(state: &AppState, headers: &HeaderMap) -> &'static str {
    let forwarded_https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    if state.settings.auth.secure_cookie || forwarded_https { "; Secure" } else { "" }
}

fn refresh_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == REFRESH_COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

/// The client address for rate limiting; `X-Forwarded-For` only counts behind a trusted proxy.
fn client_ip(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> String {
    if state.settings.server.trust_proxy
        && let Some(first) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
    {
        return first.trim().to_owned();
    }
    peer.ip().to_string()
}
