//! The dashboard: plain HTML, CSS and JavaScript modules from `gateway/web`, built into
//! the binary (no build step, nothing fetched from elsewhere), served at `/`.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// Each asset: its path, content type and content.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../web/style.css"),
    ),
];

/// Only the gateway itself may be loaded from, framed by no one.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The dashboard's routes.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, kind, content)| {
            router.route(
                path,
                get(move || async move {
                    (
                        [
                            (header::CONTENT_TYPE, kind),
                            (header::CONTENT_SECURITY_POLICY, POLICY),
                            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                            (header::REFERRER_POLICY, "no-referrer"),
                            (header::CACHE_CONTROL, "no-cache"),
                        ],
                        content,
                    )
                        .into_response()
                }),
            )
        })
}
