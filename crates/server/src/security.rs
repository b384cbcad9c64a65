//! Route policies, tokens and security headers.

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
}

impl Scope {
    /// The tenant a listing must be limited to, if any.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Self::All => None,
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

/// Deny by default: the route must be in the allowlist and the caller must hold what it needs.
pub(crate) async fn guard(
    State((state, tokens)): State<(AppState, std::sync::Arc<TokenCache>)>,
    mut request: Request,
    next: Next,
) -> Response {
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
    let mut scope = Scope::All;
    let mut has_token = is_admin
        || bearer
            .is_some_and(|given| state.api_tokens.iter().any(|t| constant_time_eq(t.as_bytes(), given.as_bytes())));
    if !has_token && let Some((id, secret)) = bearer.and_then(secrets::tokens::split) {
        match tokens.lookup(&state.store, id).await {
            Ok(Some(token)) if secrets::tokens::verify(secret, &token) => {
                has_token = true;
                scope = Scope::Tenant(token.tenant);
            }
            Ok(_) => {}
            Err(err) => return ApiError::from(err).into_response(),
        }
    }
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
    if let Scope::Tenant(tenant) = &scope
        && access != Access::Public
        && !TENANT_ROUTES.iter().any(|template| model::config::routes::template_matches(template, &path))
    {
        return ApiError::new(
            ErrorCode::Forbidden,
            format!("the token of tenant {tenant} reads only that tenant's messages, events, traces, dead letters and knowledge"),
        )
        .into_response();
    }
    request.extensions_mut().insert(scope);
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
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    // the dashboard's assets set their own (revalidated with an ETag); everything else is not stored
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
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
