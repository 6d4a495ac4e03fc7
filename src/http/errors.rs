//! HTTP errors: a status, a stable code, and a message the client can act on.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input: 400.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// Missing or invalid credentials: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// Nothing there (e.g. a day never summarized): 404.
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// Body over the limit: 413.
    #[error("{0}")]
    TooLarge(String),
    /// No source could answer (or the forced one could not): 503.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// The store answered something it must not hold (a corrupt row): 500.
    #[error("{message}")]
    Internal { code: &'static str, message: String },
}

impl ApiError {
    pub fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest { code, message: message.into() }
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Unavailable { code, message: message.into() }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Unavailable { code, .. }
            | ApiError::Internal { code, .. } => code,
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::TooLarge(_) => "body_too_large",
        }
    }
}

/// No source (or not the forced one) could answer a stats question: 503 `no_source` or
/// `source_unavailable`, naming every source's reason.
impl From<actors::windows::Unanswered> for ApiError {
    fn from(why: actors::windows::Unanswered) -> ApiError {
        ApiError::unavailable(why.code(), why.message())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::Unauthorized(_) = self {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(json!({ "error": self.code(), "message": self.to_string() }))
    }
}
