//! The dashboard's page frame: the HTML head, the security headers every page carries, and
//! the bare message page (also answered by the session layer and the edge checks, which have
//! no session).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::page::esc;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(crate) fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

pub(crate) fn head(title: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Tollgate</title>\
         <link rel=\"stylesheet\" href=\"/dashboard/assets/dashboard.css\">\
         <script src=\"/dashboard/assets/dashboard.js\" defer></script></head>",
        esc(title)
    )
}

/// A bare page with a message (no session needed: also used by the session layer).
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let html = format!(
        "{}<body><main class=\"narrow\"><h1>{}</h1><p>{}</p>\
         <p><a href=\"/dashboard\">Back to the dashboard</a></p></main></body></html>",
        head(title),
        esc(title),
        esc(text)
    );
    secure((status, html).into_response())
}
