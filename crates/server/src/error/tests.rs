use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

/// Found by the `http_body` fuzz target: a path segment that is not UTF-8 once percent-decoded was
/// refused by axum in plain text, not as `{code, message}`.
#[tokio::test]
async fn a_path_that_is_not_utf8_is_refused_as_json() {
    let app: Router = Router::new().route("/items/{id}", get(|ApiPath(id): ApiPath<String>| async move { id }));
    let request = Request::builder().uri("/items/fu%CB%CBzz").body(Body::empty()).expect("request");
    let response = app.oneshot(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON body");
    assert_eq!(body["code"], "invalid_request");
    assert!(body["message"].as_str().unwrap_or_default().contains("UTF-8"), "{body}");
}
