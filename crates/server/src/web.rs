//! The embedded web UI: files from `web/dist` with long caching for hashed assets, and the SPA
//! fallback (any other GET that is not an API route gets `index.html`).
use axum::{
    http::{HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use rust_embed::RustEmbed;

use crate::error::ApiError;

#[derive(RustEmbed)]
#[folder = "../../web/dist"]
#[allow_missing = true]
struct Assets;

pub async fn serve(method: Method, uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path.starts_with("api/") || path == "api" || (method != Method::GET && method != Method::HEAD) {
        return ApiError::NotFound.into_response();
    }
    if !path.is_empty()
        && let Some(file) = Assets::get(path)
    {
        let cache = if path.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "public, max-age=3600" };
        return asset_response(file, cache);
    }
    // Paths that look like files but are absent are real 404s, not app routes.
    if path.rsplit('/').next().is_some_and(|last| last.contains('.')) {
        return ApiError::NotFound.into_response();
    }
    match Assets::get("index.html") {
        Some(index) => asset_response(index, "no-cache"),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "The web UI is not built into this binary. Start the platform with scripts/start.sh, \
             which builds web/ first; the API is available under /api.",
        )
            .into_response(),
    }
}

fn asset_response(file: rust_embed::EmbeddedFile, cache: &'static str) -> Response {
    let mime = file.metadata.mimetype();
    let mut response = file.data.into_owned().into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(mime) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
