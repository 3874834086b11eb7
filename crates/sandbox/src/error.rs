//! Stripe's error object (`{"error": {type, code, decline_code, param, message, …}}`) and the
//! HTTP statuses Stripe pairs with each type.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone)]
pub struct StripeError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub param: Option<String>,
    pub message: String,
    /// Further members of the error object (`payment_intent`, `charge`, `payment_method`, …).
    pub extra: Map<String, Value>,
    /// `Stripe-Should-Retry` header value, when Stripe sends one.
    pub should_retry: Option<bool>,
    pub retry_after: Option<u64>,
}

pub type Result<T, E = StripeError> = std::result::Result<T, E>;

impl StripeError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            code: None,
            decline_code: None,
            param: None,
            message: message.into(),
            extra: Map::new(),
            should_retry: None,
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn code(mut self, code: &str) -> Self {
        self.code = Some(code.to_string());
        self
    }

    pub fn param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    pub fn unknown_param(param: &str) -> Self {
        Self::invalid(format!("Received unknown parameter: {param}"))
            .code("parameter_unknown")
            .param(param)
    }

    pub fn missing_param(param: &str) -> Self {
        Self::invalid(format!("Missing required param: {param}."))
            .code("parameter_missing")
            .param(param)
    }

    pub fn invalid_integer(param: &str, value: &str) -> Self {
        Self::invalid(format!("Invalid integer: {value}"))
            .code("parameter_invalid_integer")
            .param(param)
    }

    pub fn invalid_value(param: &str, message: impl Into<String>) -> Self {
        Self::invalid(message)
            .code("parameter_invalid_string")
            .param(param)
    }

    /// 404 `resource_missing`: `No such customer: 'cus_123'`.
    pub fn missing(object: &str, id: &str, param: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("No such {object}: '{id}'"),
        )
        .code("resource_missing");
        e.param = Some(param.to_string());
        e
    }

    pub fn unexpected_state(message: impl Into<String>) -> Self {
        Self::invalid(message).code("payment_intent_unexpected_state")
    }

    pub fn api_error(should_retry: bool) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "An unknown error occurred",
        );
        e.should_retry = Some(should_retry);
        e
    }

    pub fn rate_limited() -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "invalid_request_error",
            "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
        )
        .code("rate_limit");
        e.retry_after = Some(1);
        e.should_retry = Some(true);
        e
    }

    pub fn body(&self, request_id: &str) -> Value {
        let mut err = Map::new();
        if let Some(c) = &self.code {
            err.insert("code".into(), json!(c));
            err.insert(
                "doc_url".into(),
                json!(format!(
                    "https://stripe.com/docs/error-codes/{}",
                    c.replace('_', "-")
                )),
            );
        }
        if let Some(d) = &self.decline_code {
            err.insert("decline_code".into(), json!(d));
        }
        err.insert("message".into(), json!(self.message));
        if let Some(p) = &self.param {
            err.insert("param".into(), json!(p));
        }
        for (k, v) in &self.extra {
            err.insert(k.clone(), v.clone());
        }
        err.insert(
            "request_log_url".into(),
            json!(format!(
                "https://dashboard.stripe.com/test/logs/{request_id}"
            )),
        );
        err.insert("type".into(), json!(self.kind));
        json!({ "error": err })
    }
}
