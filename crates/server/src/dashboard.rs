//! The dashboard: one HTML page and its assets, built into the binary with `include_bytes!` (no
//! CDN, nothing fetched at run time, no front-end build step). The page talks to the API with the
//! token the operator gives it; the server holds no session.
//!
//! Assets answer with an `ETag` and `Cache-Control: no-cache`: a browser revalidates and gets a
//! `304` until the binary changes.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::ApiPath;
use crate::{ApiError, AppState, ErrorCode};

/// One file of the dashboard.
struct Asset {
    name: &'static str,
    media: &'static str,
    body: &'static [u8],
    etag: &'static str,
}

/// FNV-1a, computed at compile time: the ETag of an asset changes when its bytes change.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `"<16 hex digits>"` of a hash, as a static string.
const fn etag_of(hash: u64) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($name:literal, $media:literal) => {{
        const BODY: &[u8] = include_bytes!(concat!("../dashboard/", $name));
        const TAG: [u8; 18] = etag_of(fnv1a(BODY));
        Asset {
            name: $name,
            media: $media,
            body: BODY,
            etag: match std::str::from_utf8(&TAG) {
                Ok(tag) => tag,
                Err(_) => "\"0\"",
            },
        }
    }};
}

static INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
static ASSETS: [Asset; 3] = [
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
];

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/", get(index)).route("/assets/{*path}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

async fn asset(ApiPath(path): ApiPath<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|a| a.name == path)
        .map(|a| serve(a, &headers))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no dashboard asset {path:?}")))
}

fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == asset.etag || tag.trim() == "*"));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, HeaderValue::from_static(asset.media))], asset.body).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_hex_and_differ_per_asset() {
        let tags: Vec<&str> = std::iter::once(&INDEX).chain(ASSETS.iter()).map(|a| a.etag).collect();
        for tag in &tags {
            assert_eq!(tag.len(), 18, "{tag}");
            assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
            assert!(tag[1..17].chars().all(|c| c.is_ascii_hexdigit()), "{tag}");
        }
        let mut unique = tags.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), tags.len());
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        let page = std::str::from_utf8(INDEX.body).expect("utf-8");
        for asset in &ASSETS {
            if asset.name != "icon.svg" {
                assert!(page.contains(&format!("/assets/{}", asset.name)), "{} is not loaded", asset.name);
            }
        }
        // nothing from elsewhere, no inline script or style (the CSP forbids them)
        assert!(!page.contains("http://") && !page.contains("https://"), "the page fetches from elsewhere");
        assert!(!page.contains("<script>") && !page.contains("style="), "inline script or style");
    }
}
