//! The embedded web dashboards: static assets compiled into the binary (no CDN, no
//! build step, works offline), which read the JSON API. One page per audience —
//! `/operator` (plant operator, scoped to one customer), `/service` (field service)
//! and `/manufacturer` (the service business) — and `/`, which sends a signed-in
//! caller to their role's view ([`crate::auth::Role::home_view`]) and shows everyone
//! else the three views and the way to sign in (`/views` shows them to everyone).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::AppState;
use super::access::{SESSION_COOKIE, cookie, principal_of};

/// A page or asset: its URL path, content type and the file compiled in.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

macro_rules! asset {
    ($path:literal, $content_type:expr, $file:literal) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_str!(concat!("../../../dashboards/web/", $file)),
        }
    };
}

const INDEX: Asset = asset!("/", HTML, "index.html");

const ASSETS: &[Asset] = &[
    INDEX,
    // The same list of views, for a signed-in caller whom `/` would redirect.
    asset!("/views", HTML, "index.html"),
    asset!("/operator", HTML, "operator.html"),
    asset!("/service", HTML, "service.html"),
    asset!("/manufacturer", HTML, "manufacturer.html"),
    asset!("/signin", HTML, "signin.html"),
    asset!("/assets/common.js", JS, "common.js"),
    asset!("/assets/operator.js", JS, "operator.js"),
    asset!("/assets/service.js", JS, "service.js"),
    asset!("/assets/manufacturer.js", JS, "manufacturer.js"),
    asset!("/assets/signin.js", JS, "signin.js"),
    asset!("/assets/style.css", CSS, "style.css"),
];

fn serve(a: &Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, a.content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        a.body,
    )
        .into_response()
}

pub fn routes() -> Router<AppState> {
    ASSETS
        .iter()
        .filter(|a| a.path != INDEX.path)
        .fold(Router::new(), |router, a| {
            router.route(a.path, get(move || async move { serve(a) }))
        })
        .route(INDEX.path, get(home))
}

/// `/`: a valid session goes to its role's view (303); without one, or with one that
/// expired or was revoked, the page that lists the views and links to sign-in.
async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(secret) = cookie(&headers, SESSION_COOKIE)
        && let Ok(principal) = principal_of(&state, secret).await
        && let Some(view) = principal.role.home_view()
    {
        return Redirect::to(view).into_response();
    }
    serve(&INDEX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every script and stylesheet a page links to is one of the served assets, so a
    /// renamed file cannot leave a page with a 404.
    #[test]
    fn every_asset_a_page_links_to_is_served() {
        let served: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        for page in ASSETS.iter().filter(|a| a.content_type == HTML) {
            for attr in ["src=\"", "href=\""] {
                for link in page.body.split(attr).skip(1) {
                    let link = link.split('"').next().unwrap_or_default();
                    if link.starts_with("/assets/") {
                        assert!(served.contains(&link), "{} links to {link}", page.path);
                    }
                }
            }
        }
    }
}
