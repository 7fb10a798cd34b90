//! The web dashboard, embedded in the binary and served at `/`.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

include!(concat!(env!("OUT_DIR"), "/dashboard_assets.rs"));

const NOT_BUILT: &str = "<!doctype html><title>Strata</title><h1>Strata querier</h1>\
<p>The dashboard was not built into this binary. Build it with <code>make dashboard</code> \
(npm) and rebuild; the Prometheus HTTP API is at <a href=\"api/v1/status/buildinfo\">/api/v1/</a>.</p>";

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

fn asset(path: &str) -> Response {
    match ASSETS.iter().find(|(p, _)| *p == path) {
        Some((p, bytes)) => {
            let cache = if p.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
            ([(header::CONTENT_TYPE, content_type(p)), (header::CACHE_CONTROL, cache)], *bytes).into_response()
        }
        None if path == "index.html" => {
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], NOT_BUILT).into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// True when the dashboard was built into this binary.
pub fn built() -> bool {
    ASSETS.iter().any(|(p, _)| *p == "index.html")
}

/// Routes: `/` (the dashboard) and `/assets/*`.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route("/assets/{*file}", get(|Path(file): Path<String>| async move { asset(&format!("assets/{file}")) }))
}
