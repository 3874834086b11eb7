//! Typed request bodies and queries: one `Deserialize` struct per body and query, read with the
//! API's limits and its error envelope (SPEC §8), never a 422.
//!
//! - [`Body<T>`]: the body is read as [`super::JsonBody`] does (size limit, no body is `{}`, the
//!   edge's checks), then as `T`. Every field `T` does not know is refused, all of them listed in
//!   `details` with their pointers; a field of the wrong type or a missing one is named by its
//!   pointer. `T` then converts into the domain's types with `TryFrom` in its handler.
//! - [`Params<T>`]: the query string as `T`; repeated keys (`status=a&status=b`, `status[]=a`)
//!   fill a `Vec`. Query parameters `T` does not know are ignored, as browsers and SDKs add some.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::JsonBody;
use crate::error::{ApiError, ApiResult, Detail};

/// A JSON body read as `T` (see the module's text).
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBody(map) = JsonBody::from_request(req, state).await?;
        from_object(map).map(Body)
    }
}

/// Reads a JSON object as `T`: unknown fields are refused (every one, by pointer), as is a field
/// of the wrong type or a missing one.
pub fn from_object<T: DeserializeOwned>(body: Map<String, Value>) -> ApiResult<T> {
    let mut unknown: Vec<String> = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let result: Result<T, _> = serde_ignored::deserialize(
        serde_path_to_error::Deserializer::new(Value::Object(body), &mut track),
        |path| unknown.push(ignored_pointer(&path)),
    );
    if !unknown.is_empty() {
        let message = if unknown.len() == 1 {
            "Request failed validation: Unknown field.".to_string()
        } else {
            format!(
                "Request failed validation: {} unknown fields.",
                unknown.len()
            )
        };
        return Err(ApiError::BadRequest {
            message,
            details: unknown
                .iter()
                .map(|p| Detail::body(p, "Unknown field."))
                .collect(),
        });
    }
    result.map_err(|e| {
        let (pointer, message) = described(&track.path(), &e.to_string());
        ApiError::field(&pointer, message)
    })
}

/// Marks the named request schemas of `router`'s document as closed
/// (`additionalProperties: false`), as [`Body`] reads them: serde's derive can only tell utoipa
/// so with `deny_unknown_fields`, which would stop at the first unknown field instead of naming
/// every one.
pub fn close(router: &mut utoipa_axum::router::OpenApiRouter<crate::ApiContext>, names: &[&str]) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{AdditionalProperties, Schema};
    if let Some(components) = router.get_openapi_mut().components.as_mut() {
        for name in names {
            if let Some(RefOr::T(Schema::Object(o))) = components.schemas.get_mut(*name) {
                o.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
    }
}

/// A query string read as `T` (see the module's text).
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        from_query(parts.uri.query().unwrap_or("")).map(Params)
    }
}

/// Reads a query string as `T`; `key[]` is `key`.
pub fn from_query<T: DeserializeOwned>(raw: &str) -> ApiResult<T> {
    let mut normal = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        normal.append_pair(k.strip_suffix("[]").unwrap_or(&k), &v);
    }
    let normal = normal.finish();
    let mut track = serde_path_to_error::Track::new();
    let de = serde_html_form::Deserializer::new(form_urlencoded::parse(normal.as_bytes()));
    serde::Deserialize::deserialize(serde_path_to_error::Deserializer::new(de, &mut track)).map_err(
        |e: serde_html_form::de::Error| {
            let (pointer, message) = described(&track.path(), &e.to_string());
            ApiError::query(&pointer, message)
        },
    )
}

/// The pointer and the words of a serde error at `path`: a missing field is named by its own
/// pointer and is "Required."; other errors keep serde's words ("invalid type: integer `5`,
/// expected a string").
fn described(path: &serde_path_to_error::Path, message: &str) -> (String, String) {
    let mut pointer = String::new();
    for segment in path.iter() {
        use serde_path_to_error::Segment;
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } => pointer.push_str(&format!("/{}", escape(key))),
            Segment::Enum { variant } => pointer.push_str(&format!("/{}", escape(variant))),
            Segment::Unknown => {}
        }
    }
    match message.strip_prefix("missing field `") {
        Some(rest) => {
            let field = rest.split('`').next().unwrap_or("");
            (format!("{pointer}/{}", escape(field)), "Required.".into())
        }
        None => (pointer, message.to_string()),
    }
}

fn ignored_pointer(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}/{index}", ignored_pointer(parent)),
        Path::Map { parent, key } => format!("{}/{}", ignored_pointer(parent), escape(key)),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_pointer(parent),
    }
}

/// JSON pointer escaping (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        city: String,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        amount: i64,
        address: Option<Inner>,
        #[serde(default)]
        tags: Vec<String>,
    }

    fn body(v: Value) -> ApiResult<Outer> {
        match v {
            Value::Object(m) => from_object(m),
            _ => unreachable!("tests pass objects"),
        }
    }

    fn details(e: ApiError) -> Vec<(String, String)> {
        match e {
            ApiError::BadRequest { details, .. } => details
                .into_iter()
                .map(|d| (d.pointer, d.message))
                .collect(),
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn every_unknown_field_is_named_even_nested() {
        let e = body(json!({"amount": 1, "x": 1, "address": {"city": "a", "zip~/": 2}, "y": 2}))
            .unwrap_err();
        let d = details(e);
        let pointers: Vec<&str> = d.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(pointers, ["/x", "/address/zip~0~1", "/y"]);
        assert!(d.iter().all(|(_, m)| m == "Unknown field."));
    }

    #[test]
    fn wrong_types_and_missing_fields_name_the_field() {
        let d = details(body(json!({"amount": "1"})).unwrap_err());
        assert_eq!(d[0].0, "/amount");
        assert!(d[0].1.contains("expected i64"), "{}", d[0].1);
        let d = details(body(json!({"amount": 1, "address": {}})).unwrap_err());
        assert_eq!(d, [("/address/city".to_string(), "Required.".to_string())]);
        let d = details(body(json!({"amount": 1, "tags": ["a", 2]})).unwrap_err());
        assert_eq!(d[0].0, "/tags/1");
        let d = details(body(json!({})).unwrap_err());
        assert_eq!(d, [("/amount".to_string(), "Required.".to_string())]);
    }

    #[test]
    fn a_good_body_reads() {
        let o = body(json!({"amount": 5, "address": null, "tags": ["a"]})).unwrap();
        assert_eq!((o.amount, o.tags), (5, vec!["a".to_string()]));
    }

    #[derive(Debug, Deserialize)]
    struct Q {
        limit: Option<i64>,
        #[serde(default)]
        status: Vec<String>,
    }

    #[test]
    fn queries_repeat_keys_and_name_bad_values() {
        let q: Q = from_query("status=a&status[]=b&limit=5&other=1").unwrap();
        assert_eq!((q.limit, q.status), (Some(5), vec!["a".into(), "b".into()]));
        let e = from_query::<Q>("limit=x").unwrap_err();
        match e {
            ApiError::BadRequest { details, .. } => {
                assert_eq!(
                    (details[0].location, details[0].pointer.as_str()),
                    ("query", "/limit")
                )
            }
            other => panic!("not a 400: {other:?}"),
        }
    }
}
