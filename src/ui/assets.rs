//! The interface's pages and files, compiled into the binary (no CDN, no build step): one
//! HTML shell for every page, a style sheet, and a small plain script per page that fetches
//! the JSON API and draws with DOM and SVG calls (names from a backup are only ever put in
//! as text, never as markup).

use super::api::media_id;
use axum::extract::Path as UrlPath;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const SHELL: &str = include_str!("web/page.html");

/// (name, content type, content)
const FILES: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("web/style.css"),
    ),
    (
        "common.js",
        "text/javascript; charset=utf-8",
        include_str!("web/common.js"),
    ),
    (
        "trays.js",
        "text/javascript; charset=utf-8",
        include_str!("web/trays.js"),
    ),
    (
        "tree.js",
        "text/javascript; charset=utf-8",
        include_str!("web/tree.js"),
    ),
    (
        "files.js",
        "text/javascript; charset=utf-8",
        include_str!("web/files.js"),
    ),
    (
        "space.js",
        "text/javascript; charset=utf-8",
        include_str!("web/space.js"),
    ),
    ("logo.svg", "image/svg+xml", include_str!("web/logo.svg")),
];

/// The pages of one medium.
const MEDIUM_PAGES: &[&str] = &["tree", "files", "space"];

fn html(page: &str, medium: &str) -> Response {
    // `page` is one of a fixed set and `medium` a parsed media id: nothing to escape.
    let body = SHELL
        .replace("{{page}}", page)
        .replace("{{medium}}", medium);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

pub async fn trays_page() -> Response {
    html("trays", "")
}

pub async fn medium_page(UrlPath((id, page)): UrlPath<(String, String)>) -> Response {
    let Ok(id) = media_id(&id) else {
        return not_found().await;
    };
    match MEDIUM_PAGES.iter().find(|p| **p == page) {
        Some(p) => html(p, &id.to_string()),
        None => not_found().await,
    }
}

pub async fn asset(UrlPath(name): UrlPath<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, ty, body)) => ([(header::CONTENT_TYPE, *ty)], *body).into_response(),
        None => not_found().await,
    }
}

pub async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found\n",
    )
        .into_response()
}
