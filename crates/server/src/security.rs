//! Route policies, tokens and security headers; every error answer as `{code, message}` JSON.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use model::config::routes::Access;

use crate::{ApiError, AppState, ErrorCode};

/// What a request may see: everything (admin and static API tokens, public routes) or one tenant
/// (a tenant token). Put on every request that passes the guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant.
    All,
    /// Only this tenant.
    Tenant(String),
    /// An edge worker token: only the edge workers' WebSocket, for these roles.
    Edge {
        /// The token's id (part of the worker's agent id).
        token_id: String,
        /// Roles it may serve.
        roles: Vec<String>,
    },
}

impl Scope {
    /// The tenant a listing must be limited to, if any.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Self::All | Self::Edge { .. } => None,
            Self::Tenant(tenant) => Some(tenant),
        }
    }
}

/// Routes a tenant token may use: the ones whose answers can be limited to its tenant.
const TENANT_ROUTES: [&str; 14] = [
    "/api/goals",
    "/api/goals/:id",
    "/api/knowledge/search",
    "/api/knowledge/graphrag",
    "/api/knowledge/graph/neighbors",
    "/api/knowledge/graph/path",
    "/api/knowledge/stats",
    "/api/messages",
    "/api/messages/:id",
    "/api/events",
    "/api/events/stream",
    "/api/traces/:trace_id",
    "/api/dlq",
    "/api/metrics/mcp/events",
];

/// How long a looked-up tenant token is trusted before it is read again (a revocation takes
/// effect within this time).
const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Tenant tokens read from the store, kept briefly (unknown ids too, so guessing costs no queries).
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, (Option<store::ApiToken>, std::time::Instant)>>,
}

impl TokenCache {
    async fn lookup(&self, store: &store::Store, id: &str) -> Result<Option<store::ApiToken>, store::Error> {
        let now = std::time::Instant::now();
        if let Some((token, at)) = self.lock().get(id)
            && now.duration_since(*at) < TOKEN_CACHE_TTL
        {
            return Ok(token.clone());
        }
        let token = store.api_token(id).await?;
        let mut entries = self.lock();
        if entries.len() >= 10_000 {
            entries.retain(|_, (_, at)| now.duration_since(*at) < TOKEN_CACHE_TTL);
        }
        entries.insert(id.to_owned(), (token.clone(), now));
        Ok(token)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (Option<store::ApiToken>, std::time::Instant)>>
    {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Compares two secrets in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the guard needs: the app, the tenant tokens it has read, the failed-authentication limit.
#[derive(Clone)]
pub(crate) struct Guard {
    pub(crate) app: AppState,
    pub(crate) tokens: std::sync::Arc<TokenCache>,
    pub(crate) failures: Option<std::sync::Arc<crate::limit::AuthFailures>>,
}

/// Deny by default: the route must be in the allowlist and the caller must hold what it needs.
/// Tokens are not looked at on public routes; on the others, a client address over its failed
/// authentications gets 429 before its tokens are checked.
pub(crate) async fn guard(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let state = &guard.app;
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
    if access == Access::Public {
        request.extensions_mut().insert(Scope::All);
        return next.run(request).await;
    }
    let admin = request.headers().get("x-admin-token").and_then(|v| v.to_str().ok());
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let supplied = admin.is_some() || bearer.is_some();
    let mut attempt = match (&guard.failures, supplied) {
        (Some(failures), true) => match failures.begin(crate::limit::client_ip(&request), (admin, bearer)) {
            Ok(attempt) => Some((failures, attempt)),
            Err(wait) => {
                return crate::limit::too_many(
                    wait,
                    format!(
                        "too many failed authentications from this address: retry after {wait} s (tokens from it are not checked until then)"
                    ),
                );
            }
        },
        _ => None,
    };
    let admin_matches =
        |given: &str| state.admin_token.as_ref().is_some_and(|t| constant_time_eq(t.as_bytes(), given.as_bytes()));
    let is_admin = admin.or(bearer).is_some_and(admin_matches);
    let mut scope = Scope::All;
    let mut bearer_ok = bearer.is_some_and(|given| {
        admin_matches(given) || state.api_tokens.iter().any(|t| constant_time_eq(t.as_bytes(), given.as_bytes()))
    });
    if !bearer_ok && let Some((id, secret)) = bearer.and_then(secrets::tokens::split) {
        match guard.tokens.lookup(&state.store, id).await {
            Ok(Some(token)) if secrets::tokens::verify(secret, &token) => {
                bearer_ok = true;
                scope = match token.roles {
                    Some(roles) => Scope::Edge { token_id: token.id, roles },
                    None => Scope::Tenant(token.tenant),
                };
            }
            Ok(_) => {}
            Err(err) => {
                // the store failed, not the client: its check spends nothing
                if let Some((failures, attempt)) = attempt.take() {
                    failures.end(attempt, true);
                }
                return ApiError::from(err).into_response();
            }
        }
    }
    // every token given must be right: a wrong admin header next to a good bearer is a guess too
    let admin_ok = admin.is_none_or(admin_matches);
    if let Some((failures, attempt)) = attempt {
        failures.end(attempt, admin_ok && (bearer.is_none() || bearer_ok));
    }
    let has_token = is_admin || bearer_ok;
    let allowed = match access {
        Access::Public => true,
        Access::Token => has_token,
        Access::Admin => is_admin,
    };
    if !allowed {
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
    if let Scope::Tenant(tenant) = &scope
        && !TENANT_ROUTES.iter().any(|template| model::config::routes::template_matches(template, &path))
    {
        return ApiError::new(
            ErrorCode::Forbidden,
            format!("the token of tenant {tenant} reads only that tenant's messages, events, traces, dead letters and knowledge"),
        )
        .into_response();
    }
    if matches!(scope, Scope::Edge { .. }) && path != model::edge::CONNECT_PATH {
        return ApiError::new(
            ErrorCode::Forbidden,
            format!("an edge worker token reaches only {}", model::edge::CONNECT_PATH),
        )
        .into_response();
    }
    request.extensions_mut().insert(scope);
    next.run(request).await
}

/// Security headers on every answer; every error answer as `{code, message}` JSON, also the
/// ones made outside the handlers (the request timeout, extractors' rejections).
pub(crate) async fn headers(State(limits): State<crate::Limits>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let status = response.status();
    if (status.is_client_error() || status.is_server_error()) && !is_json(&response) {
        response = as_json_error(response, &limits).await;
    }
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    // the dashboard's assets set their own (revalidated with an ETag); everything else is not stored
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Longest text of a rejection kept as the message of its JSON error.
const MAX_REJECTION_TEXT: usize = 512;

/// The JSON error for an error answer that is not one: same status (and `Allow`, `Retry-After`),
/// a code from the status, the limit named for 408 and 413, the text of a 4xx (an extractor's
/// rejection), never the text of a 5xx.
async fn as_json_error(response: Response, limits: &crate::Limits) -> Response {
    use axum::http::StatusCode;
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let code = match status {
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::REQUEST_TIMEOUT => ErrorCode::Timeout,
        StatusCode::CONFLICT => ErrorCode::Conflict,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        _ if status.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::InvalidRequest,
    };
    let message = match code {
        ErrorCode::Timeout => format!(
            "the request took longer than the limit of {} s (request_timeout)",
            limits.request_timeout.as_secs_f64()
        ),
        ErrorCode::PayloadTooLarge => {
            format!("the request body is larger than the limit of {} bytes (max_body_bytes)", limits.max_body_bytes)
        }
        ErrorCode::Unavailable => "a dependency is unavailable; try again shortly".to_owned(),
        ErrorCode::Internal => "internal error; see the server log".to_owned(),
        _ => {
            let text = axum::body::to_bytes(body, MAX_REJECTION_TEXT).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&text).trim().to_owned();
            if text.is_empty() { status.canonical_reason().unwrap_or("refused").to_lowercase() } else { text }
        }
    };
    let mut json = ApiError::new(code, message).into_response();
    *json.status_mut() = status;
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(value) = parts.headers.get(&name) {
            json.headers_mut().insert(name, value.clone());
        }
    }
    json
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
