//! Route policies, tokens and security headers.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use model::config::routes::Access;

use crate::{ApiError, AppState, ErrorCode};

/// Compares two secrets in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Deny by default: the route must be in the allowlist and the caller must hold what it needs.
pub(crate) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let Some(access) = state.routes.decide(method.as_str(), &path) else {
        let allowed = state.routes.methods_for(&path);
        if allowed.is_empty() {
            return ApiError::new(ErrorCode::NotFound, format!("no route {method} {path}")).into_response();
        }
        let allow = allowed.join(", ");
        let mut response =
            ApiError::new(ErrorCode::MethodNotAllowed, format!("{path} answers {allow}, not {method}")).into_response();
        if let Ok(value) = HeaderValue::from_str(&allow) {
            response.headers_mut().insert(header::ALLOW, value);
        }
        return response;
    };
    let admin = request.headers().get("x-admin-token").and_then(|v| v.to_str().ok());
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let is_admin = match (&state.admin_token, admin.or(bearer)) {
        (Some(expected), Some(given)) => constant_time_eq(expected.as_bytes(), given.as_bytes()),
        _ => false,
    };
    let has_token = is_admin
        || bearer
            .is_some_and(|given| state.api_tokens.iter().any(|t| constant_time_eq(t.as_bytes(), given.as_bytes())));
    let allowed = match access {
        Access::Public => true,
        Access::Token => has_token,
        Access::Admin => is_admin,
    };
    if !allowed {
        let supplied = admin.is_some() || bearer.is_some();
        let what = if access == Access::Admin {
            "the admin token (x-admin-token)"
        } else {
            "a token (Authorization: Bearer …)"
        };
        if state.admin_token.is_none() && access == Access::Admin {
            return ApiError::new(
                ErrorCode::Forbidden,
                "admin routes are disabled: start COGO with COGO_ADMIN_TOKEN set",
            )
            .into_response();
        }
        let code = if supplied && access == Access::Admin && has_token {
            ErrorCode::Forbidden
        } else {
            ErrorCode::Unauthorized
        };
        return ApiError::new(code, format!("{method} {path} needs {what}")).into_response();
    }
    next.run(request).await
}

/// Security headers on every answer; payload-too-large answers as JSON.
pub(crate) async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE && !is_json(&response) {
        response = ApiError::new(ErrorCode::PayloadTooLarge, "request body is larger than the limit").into_response();
    }
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_comparison() {
        assert!(super::constant_time_eq(b"secret", b"secret"));
        assert!(!super::constant_time_eq(b"secret", b"secreT"));
        assert!(!super::constant_time_eq(b"secret", b"secret2"));
    }
}
