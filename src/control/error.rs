//! API errors: `{"error": "<code>", "message": "<what and how to fix>"}` (docs/api.md).

use super::coordinator;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What was wrong and how to fix it.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 400 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token: send \"Authorization: Bearer <token>\" with the token from [control] token_file",
        )
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413: the body is over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("request body is larger than {limit} bytes; send one reservation per request"),
        )
    }

    /// 408: the body did not arrive in time.
    pub fn timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request",
            format!(
                "the request body did not arrive within {} s; send it with the request",
                limit.as_secs()
            ),
        )
    }

    /// 503 `not_ready`: something has not been seen on the wire yet.
    pub fn not_ready(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
    }

    /// 500: something on the relay's side.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<coordinator::Error> for ApiError {
    fn from(e: coordinator::Error) -> Self {
        match e {
            coordinator::Error::Invalid(m) => ApiError::invalid(m),
            coordinator::Error::NotFound(m) => ApiError::not_found(m),
            coordinator::Error::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            coordinator::Error::Exhausted(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "exhausted", m)
            }
            coordinator::Error::Storage(m) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", m)
            }
            coordinator::Error::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(json!({ "error": self.code, "message": self.message }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"rtp-relay\""),
            );
        }
        response
    }
}
