//! Extractors that turn requests into typed, checked input or a clear `ApiError`.
use axum::{
    extract::{FromRequest, FromRequestParts, Request},
    http::{header, request::Parts},
};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::{
    auth::tokens,
    error::{ApiError, FieldErrors},
    state::AppState,
};
use store::entities::users;

/// A JSON body. Malformed JSON is a 400; a missing field or a value of the wrong type is a 422
/// naming the field; a body over the limit is a 413.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::bad_request("unreadable_body", rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    use serde_json::error::Category;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("malformed_json", "the request body is empty"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let malformed = |err: &serde_json::Error| {
        ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {err}"))
    };
    match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => {
            deserializer.end().map_err(|e| malformed(&e))?;
            Ok(value)
        }
        Err(err) => match err.inner().classify() {
            Category::Data => {
                let path = err.path().to_string();
                let message = strip_position(&err.inner().to_string());
                let field = if path.is_empty() || path == "." {
                    quoted_name(&message).unwrap_or_else(|| "body".to_owned())
                } else if message.starts_with("missing field") {
                    format!("{path}.{}", quoted_name(&message).unwrap_or_default())
                } else {
                    path
                };
                Err(ApiError::Validation(FieldErrors::from([(field, message)])))
            }
            _ => Err(malformed(err.inner())),
        },
    }
}

/// serde's messages end in " at line L column C"; the field name says more to a client.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// The first name between backticks, as in "missing field `email`".
fn quoted_name(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_owned())
}

/// A signed-in, active user, checked against the database on every request so that disabling
/// an account or changing a role takes effect at once.
#[derive(Debug, Clone)]
pub struct AuthUser(pub users::Model);

/// An [`AuthUser`] whose role is `admin`.
#[derive(Debug, Clone)]
pub struct AdminUser(pub users::Model);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user_id = bearer_user_id(parts, state)?;
        use sea_orm::EntityTrait;
        let user = users::Entity::find_by_id(user_id)
            .one(&state.db)
            .await?
            .filter(|u| u.is_active)
            .ok_or(ApiError::Unauthorized("the account is disabled or gone"))?;
        Ok(AuthUser(user))
    }
}

/// The user id of a valid bearer access token.
fn bearer_user_id(parts: &Parts, state: &AppState) -> Result<i32, ApiError> {
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .ok_or(ApiError::Unauthorized("missing bearer token"))?;
    Ok(state.tokens.verify_access(token.trim(), state.clock.now())?.user_id())
}

/// An [`AuthUser`] whose account may be a copy read less than a second ago
/// ([`crate::users::AccountCache`]): for the endpoints that stream answers, whose first token
/// should not wait for the account row, and for creating the chat session that usually comes
/// just before. Only the id and role are used there.
#[derive(Debug, Clone)]
pub struct StreamingUser(pub users::Model);

impl FromRequestParts<AppState> for StreamingUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user_id = bearer_user_id(parts, state)?;
        if let Some(user) = state.accounts.get(&user_id) {
            return Ok(StreamingUser(user));
        }
        let AuthUser(user) = AuthUser::from_request_parts(parts, state).await?;
        state.accounts.put(user.id, user.clone());
        Ok(StreamingUser(user))
    }
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let AuthUser(user) = AuthUser::from_request_parts(parts, state).await?;
        if user.role != tokens::ROLE_ADMIN {
            return Err(ApiError::Forbidden);
        }
        Ok(AdminUser(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Login {
        email: String,
        age: u32,
    }

    fn fields(err: ApiError) -> FieldErrors {
        match err {
            ApiError::Validation(f) => f,
            other => panic!("expected validation error, got {other:?}"),
        }
    }

    #[test]
    fn names_the_missing_or_mistyped_field() {
        let f = fields(parse_json::<Login>(br#"{"age": 3}"#).unwrap_err());
        assert!(f["email"].contains("missing field"), "{f:?}");
        let f = fields(parse_json::<Login>(br#"{"email": "a", "age": "x"}"#).unwrap_err());
        assert!(f.contains_key("age"), "{f:?}");
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        for body in [&b"{"[..], b"", b"nope", br#"{"email":"a","age":1} trailing"#] {
            assert!(matches!(parse_json::<Login>(body), Err(ApiError::BadRequest { .. })), "{body:?}");
        }
    }
}

/// `axum::extract::Path` answering bad segments with the JSON envelope.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` answering bad parameters with a 422 naming them.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        ApiError::bad_request("invalid_path", rejection.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        let text = rejection.body_text();
        let text = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text).to_owned();
        let field = text.split(':').next().filter(|f| !f.contains(' ')).unwrap_or("query").to_owned();
        ApiError::Validation(FieldErrors::from([(field, text)]))
    }
}
