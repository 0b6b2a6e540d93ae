//! The one error type at the edge: every failure becomes
//! `{"error": {"code", "message", "fields"?}}` with a fitting status.
use std::collections::BTreeMap;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("authentication required")]
    Unauthorized(&'static str),
    #[error("forbidden")]
    Forbidden,
    #[error("{message}")]
    Denied { code: &'static str, message: String },
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("request body too large")]
    PayloadTooLarge,
    /// An upload over a configured limit, with a message that names the limit.
    #[error("{message}")]
    TooLarge { code: &'static str, message: String },
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("validation failed")]
    Validation(FieldErrors),
    /// A provider answered with an error or could not be reached; the message is the provider's
    /// own text (keys are scrubbed by the `llm` crate).
    #[error("{0}")]
    Upstream(String),
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// Field name → why it was rejected.
pub type FieldErrors = BTreeMap<String, String>;

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<FieldErrors>,
}

impl ApiError {
    pub fn field(name: &str, why: impl Into<String>) -> Self {
        Self::Validation(FieldErrors::from([(name.to_owned(), why.into())]))
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict { code, message: message.into() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { code, message: message.into() }
    }

    fn status_code_message(&self) -> (StatusCode, &'static str, String) {
        match self {
            Self::BadRequest { code, message } => (StatusCode::BAD_REQUEST, code, message.clone()),
            Self::Unauthorized(why) => (StatusCode::UNAUTHORIZED, "unauthorized", (*why).to_owned()),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden", "you are not allowed to do this".into()),
            Self::Denied { code, message } => (StatusCode::FORBIDDEN, code, message.clone()),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such resource".into()),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not allowed on this route".into(),
            ),
            Self::Conflict { code, message } => (StatusCode::CONFLICT, code, message.clone()),
            Self::PayloadTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large".into())
            }
            Self::TooLarge { code, message } => (StatusCode::PAYLOAD_TOO_LARGE, code, message.clone()),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json".into(),
            ),
            Self::Validation(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", "some fields are invalid".into())
            }
            Self::Upstream(message) => (StatusCode::BAD_GATEWAY, "upstream_error", message.clone()),
            Self::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_requests", "too many attempts, try again later".into())
            }
            Self::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "an internal error occurred".into())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            // The cause chain goes to the log only; the client sees a generic message.
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        let (status, code, message) = self.status_code_message();
        let fields = match &self {
            Self::Validation(fields) => Some(fields.clone()),
            _ => None,
        };
        let body = ErrorBody { error: ErrorDetail { code: code.to_owned(), message, fields } };
        let mut response = (status, Json(body)).into_response();
        if let Self::TooManyRequests { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
        }
        response
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(err: sea_orm::DbErr) -> Self {
        if store::is_unique_violation(&err) {
            return Self::conflict("already_exists", "a record with these values already exists");
        }
        Self::Internal(anyhow::Error::new(err).context("database"))
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(err: tokio::task::JoinError) -> Self {
        Self::Internal(anyhow::Error::new(err).context("blocking task"))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
