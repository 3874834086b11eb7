//! The edge of every request Tollgate answers itself (the API, the hosted payment pages, the
//! dashboard): text that cannot be stored is refused before any handler, store or Stripe call
//! sees it. PostgreSQL's text cannot hold the NUL character (U+0000), so a NUL in a path
//! parameter, a query parameter, a form field, or any JSON string or object key is a 400 that
//! names it, on SQLite exactly as on PostgreSQL. A path parameter that is not UTF-8 is refused
//! the same way (axum's own rejection would be plain text, outside the error envelope).
//!
//! JSON bodies are checked where they are read ([`crate::api::parse_object`]), so the detail
//! names the field (`/payment_method/redirect_url`).

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

use crate::error::{ApiError, Detail};

const NUL: &str = "Must not contain the NUL character (U+0000).";
/// Largest dashboard form read here (the session guard behind allows as much).
const MAX_FORM: usize = 64 * 1024;
const NOT_UTF8: &str = "Must be UTF-8 text.";

/// What is wrong with a request, and where: `location` is `path`, `query` or `body`, and
/// `pointer` a JSON pointer into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub location: &'static str,
    pub pointer: String,
    pub message: &'static str,
}

impl Refusal {
    fn new(location: &'static str, pointer: String, message: &'static str) -> Self {
        Self {
            location,
            pointer,
            message,
        }
    }

    /// The API's 400 (SPEC §8 envelope) with one detail naming the field.
    pub fn into_api_error(self) -> ApiError {
        ApiError::BadRequest {
            message: format!("Request failed validation: {}", self.message),
            details: vec![Detail {
                location: self.location,
                pointer: self.pointer,
                message: self.message.to_string(),
                kind: "value_error",
            }],
        }
    }

    /// The field as a person reads it (a NUL shown as U+2400, "␀").
    fn field_name(&self) -> String {
        let name = self
            .pointer
            .trim_start_matches('/')
            .replace('\0', "\u{2400}");
        if name.is_empty() {
            self.location.to_string()
        } else {
            name
        }
    }
}

/// One reference token of a JSON pointer (RFC 6901).
fn token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// The first path parameter of `path` that is not UTF-8 or holds a NUL once percent-decoded;
/// `template` is the route that matched (`/transactions/{id}`), which names the parameter.
pub fn check_path(template: Option<&str>, path: &str) -> Option<Refusal> {
    let names: Vec<&str> = template.map(|t| t.split('/').collect()).unwrap_or_default();
    let wildcard = names.iter().position(|n| n.starts_with("{*"));
    for (i, raw) in path.split('/').enumerate() {
        if !raw.contains('%') {
            continue;
        }
        let decoded: Vec<u8> = percent_decode_str(raw).collect();
        let message = match std::str::from_utf8(&decoded) {
            Err(_) => NOT_UTF8,
            Ok(s) if s.contains('\0') => NUL,
            Ok(_) => continue,
        };
        let at = match wildcard {
            Some(w) if i >= w => w,
            _ => i,
        };
        let pointer = names
            .get(at)
            .and_then(|n| n.strip_prefix('{'))
            .and_then(|n| n.strip_suffix('}'))
            .map(|n| format!("/{}", token(n.trim_start_matches('*'))))
            .unwrap_or_default();
        return Some(Refusal::new("path", pointer, message));
    }
    None
}

/// The first `application/x-www-form-urlencoded` pair (a query string or a form body) whose
/// name or value holds a NUL.
pub fn check_pairs(location: &'static str, encoded: &[u8]) -> Option<Refusal> {
    form_urlencoded::parse(encoded)
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        .map(|(k, _)| Refusal::new(location, format!("/{}", token(&k)), NUL))
}

/// The first string or object key of a JSON body that holds a NUL.
pub fn check_json(body: &Map<String, Value>) -> Option<Refusal> {
    body.iter()
        .find_map(|(k, v)| {
            let at = format!("/{}", token(k));
            if k.contains('\0') {
                Some(at)
            } else {
                first_nul(v).map(|rest| at + &rest)
            }
        })
        .map(|at| Refusal::new("body", at, NUL))
}

/// The JSON pointer (relative to `v`) of the first string or object key in `v` that holds a
/// NUL: `Some("")` when `v` itself is such a string.
pub fn first_nul(v: &Value) -> Option<String> {
    fn walk(v: &Value, at: &mut String) -> bool {
        let within = |at: &mut String, step: &str, v: &Value, key_nul: bool| {
            let len = at.len();
            at.push('/');
            at.push_str(step);
            if key_nul || walk(v, at) {
                return true;
            }
            at.truncate(len);
            false
        };
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .any(|(i, item)| within(at, &i.to_string(), item, false)),
            Value::Object(m) => m
                .iter()
                .any(|(k, item)| within(at, &token(k), item, k.contains('\0'))),
            _ => false,
        }
    }
    let mut at = String::new();
    walk(v, &mut at).then_some(at)
}

/// Path parameters and query parameters of `req`.
fn check_request(req: &Request) -> Option<Refusal> {
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    check_path(template, req.uri().path()).or_else(|| {
        req.uri()
            .query()
            .and_then(|q| check_pairs("query", q.as_bytes()))
    })
}

/// The API's edge (a route layer, so the matched route names path parameters): the error
/// envelope.
pub async fn api(req: Request, next: Next) -> Response {
    match check_request(&req) {
        Some(r) => r.into_api_error().into_response(),
        None => next.run(req).await,
    }
}

/// The hosted payment pages' edge: the plain "link not valid" page a buyer sees.
pub async fn pay(req: Request, next: Next) -> Response {
    match check_request(&req) {
        Some(_) => crate::page::notice(
            StatusCode::BAD_REQUEST,
            "Payment link not valid",
            "This payment link is not valid. Please return to the merchant and start again.",
        ),
        None => next.run(req).await,
    }
}

/// The dashboard's edge: path, query and, for a posted form, every field.
pub async fn dashboard(req: Request, next: Next) -> Response {
    let refused = |r: Refusal| {
        crate::dashboard::layout::message(
            StatusCode::BAD_REQUEST,
            "Request refused",
            &format!(
                "'{}' contains the NUL character (U+0000) or text that is not UTF-8, which Tollgate does not accept. Nothing was changed.",
                r.field_name()
            ),
        )
    };
    if let Some(r) = check_request(&req) {
        return refused(r);
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if req.method() != Method::POST || !is_form {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
        return crate::dashboard::layout::message(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Form too large",
            "The form was larger than this dashboard accepts.",
        );
    };
    if let Some(r) = check_pairs("body", &bytes) {
        return refused(r);
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn path_parameters_are_named() {
        let r = check_path(
            Some("/transactions/{id}/capture"),
            "/transactions/a%00b/capture",
        );
        assert_eq!(r, Some(Refusal::new("path", "/id".into(), NUL)));
        let r = check_path(Some("/transactions/{id}"), "/transactions/%FF");
        assert_eq!(r, Some(Refusal::new("path", "/id".into(), NOT_UTF8)));
        let r = check_path(Some("/dashboard/{*rest}"), "/dashboard/a/b/%00");
        assert_eq!(r, Some(Refusal::new("path", "/rest".into(), NUL)));
        assert_eq!(
            check_path(None, "/x/%00"),
            Some(Refusal::new("path", String::new(), NUL))
        );
        assert_eq!(
            check_path(Some("/transactions/{id}"), "/transactions/%C3%A9"),
            None
        );
    }

    #[test]
    fn query_and_form_pairs() {
        assert_eq!(
            check_pairs("query", b"limit=1&customid=a%00"),
            Some(Refusal::new("query", "/customid".into(), NUL))
        );
        assert_eq!(
            check_pairs("body", b"a%2Fb%00=1"),
            Some(Refusal::new("body", "/a~1b\0".into(), NUL))
        );
        assert_eq!(check_pairs("query", b"a=%FF&b=c"), None);
    }

    #[test]
    fn json_pointer_names_the_string_or_key() {
        let body = |v: Value| v.as_object().cloned().unwrap_or_default();
        let r = check_json(&body(json!({"a": 1, "pm": {"x": ["ok", "b\u{0}"]}})));
        assert_eq!(r.map(|r| r.pointer), Some("/pm/x/1".to_string()));
        let r = check_json(&body(json!({"m": {"k\u{0}": "v"}})));
        assert_eq!(r.map(|r| r.pointer), Some("/m/k\u{0}".to_string()));
        let r = check_json(&body(json!({"a/b~": "\u{0}"})));
        assert_eq!(r.map(|r| r.pointer), Some("/a~1b~0".to_string()));
        assert_eq!(check_json(&body(json!({"a": ["é", {"b": null}]}))), None);
    }
}
