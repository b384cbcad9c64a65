//! API errors: a stable table of codes to HTTP statuses; bodies are `{code, message}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The stable error codes of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request is malformed or breaks a rule.
    InvalidRequest,
    /// 401: a token is needed and missing or wrong.
    Unauthorized,
    /// 403: the token is valid but not enough (admin needed).
    Forbidden,
    /// 404: no such thing, or the route is not allowed.
    NotFound,
    /// 405: the path exists, for other methods (see `Allow`).
    MethodNotAllowed,
    /// 408: the request took longer than the limit (its body arrived too slowly, or the work
    /// took too long).
    Timeout,
    /// 409: the thing is in a state that forbids the operation.
    Conflict,
    /// 413: body too large.
    PayloadTooLarge,
    /// 429: slow down.
    RateLimited,
    /// 503: a dependency (the database) is unavailable; try again.
    Unavailable,
    /// 500: a bug; details are in the server log.
    Internal,
}

impl ErrorCode {
    /// The HTTP status of this code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answered to an API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Stable code.
    pub code: ErrorCode,
    /// Human message (generic for 5xx).
    pub message: String,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// The body of every error answer.
#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct Body<'a> {
    code: ErrorCode,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.code.status(), axum::Json(Body { code: self.code, message: &self.message })).into_response();
        if matches!(self.code, ErrorCode::RateLimited | ErrorCode::Unavailable) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A path parameter ([`axum::extract::Path`]) whose rejection is an [`ApiError`] (`{code, message}`)
/// rather than axum's plain text, e.g. for a percent-encoded segment that is not UTF-8.
#[derive(Debug)]
pub(crate) struct ApiPath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) if rejection.status().is_server_error() => {
                tracing::error!(error = %rejection.body_text(), "path parameters of a route do not match its handler");
                Err(ApiError::new(ErrorCode::Internal, "internal error; see the server log"))
            }
            Err(rejection) => {
                Err(ApiError::new(ErrorCode::InvalidRequest, format!("bad path: {}", rejection.body_text())))
            }
        }
    }
}

impl From<store::Error> for ApiError {
    fn from(err: store::Error) -> Self {
        use store::Error as E;
        match &err {
            E::NotFound { .. } => Self::new(ErrorCode::NotFound, err.to_string()),
            E::Conflict { .. } => Self::new(ErrorCode::Conflict, err.to_string()),
            E::InvalidMessage { source, .. } => Self::new(ErrorCode::InvalidRequest, source.to_string()),
            E::ResultTooLarge { .. } | E::BadCursor { .. } => Self::new(ErrorCode::InvalidRequest, err.to_string()),
            _ if err.is_transient() => {
                tracing::warn!(error = %err, "store unavailable");
                Self::new(ErrorCode::Unavailable, "the database is unavailable; try again shortly")
            }
            _ => {
                tracing::error!(error = ?err, "store error");
                Self::new(ErrorCode::Internal, "internal error; see the server log")
            }
        }
    }
}

#[cfg(test)]
mod tests;
