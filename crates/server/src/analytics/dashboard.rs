//! `/dashboard`: the operations page, its script and stylesheet, embedded in the binary.
//!
//! No build step and no CDN: plain HTML, CSS and JavaScript drawn on `<canvas>`. The page logs
//! in through `POST /api/v1/auth/login` (the token stays in `sessionStorage`), listens to
//! `/api/v1/live`, lists withdrawals to review and polls `/readyz`. Served with a content
//! security policy that allows only this origin.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

const PAGE: &str = include_str!("assets/dashboard.html");
const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");
/// The site's icon, which browsers ask for at `/favicon.ico` on any page.
const ICON: &[u8] = include_bytes!("assets/favicon.ico");

const POLICY: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

/// The page and its assets (not in the OpenAPI document: they are not API).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .route("/dashboard", get(|| async { asset("text/html; charset=utf-8", PAGE) }))
        .route("/dashboard/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/dashboard/app.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route(
            "/favicon.ico",
            get(|| async {
                ([(header::CONTENT_TYPE, "image/x-icon"), (header::CACHE_CONTROL, "public, max-age=86400")], ICON)
            }),
        )
}
