//! The embedded web dashboards: static assets compiled into the binary (no CDN, no
//! build step, works offline), which read the JSON API. One page per audience —
//! `/operator` (plant operator, scoped to one customer), `/service` (field service)
//! and `/manufacturer` (the service business) — and `/`, which leads to them.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

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

const ASSETS: &[Asset] = &[
    asset!("/", HTML, "index.html"),
    asset!("/operator", HTML, "operator.html"),
    asset!("/service", HTML, "service.html"),
    asset!("/manufacturer", HTML, "manufacturer.html"),
    asset!("/assets/common.js", JS, "common.js"),
    asset!("/assets/operator.js", JS, "operator.js"),
    asset!("/assets/service.js", JS, "service.js"),
    asset!("/assets/manufacturer.js", JS, "manufacturer.js"),
    asset!("/assets/style.css", CSS, "style.css"),
];

pub fn routes() -> Router<AppState> {
    ASSETS.iter().fold(Router::new(), |router, a| {
        let (content_type, body) = (a.content_type, a.body);
        router.route(
            a.path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, content_type),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    body,
                )
                    .into_response()
            }),
        )
    })
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
