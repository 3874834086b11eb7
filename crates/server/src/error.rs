//! The API's one error type and its JSON envelope (SPEC §8):
//! `{"type": "error", "code", "status", "message", "details": [{location, pointer, message, type}]}`.
//! No 422s (the seed SDK parses 422 as another shape); internals never reach the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One problem with a request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
pub struct Detail {
    /// `body`, `query`, `path` or `header`.
    #[schema(value_type = String, example = "body")]
    pub location: &'static str,
    /// JSON pointer into the location (`/amount`, `/payment_method/redirect_url`).
    #[schema(example = "/amount")]
    pub pointer: String,
    pub message: String,
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "value_error")]
    pub kind: &'static str,
}

/// Every error's body (the envelope Gr4vy's SDKs parse).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorEnvelope {
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^error$")]
    pub kind: &'static str,
    #[schema(value_type = String, example = "bad_request")]
    pub code: &'static str,
    /// The HTTP status, repeated.
    #[schema(example = 400)]
    pub status: u16,
    pub message: String,
    pub details: Vec<Detail>,
    /// On 502/504 when a transaction was saved before the call: its id (as `transaction_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// On 502/504 when a transaction was saved before the call: its id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// On 402 `insufficient_balance`: the balance of the metered permission.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<i64>,
}

impl Detail {
    pub fn body(pointer: &str, message: impl Into<String>) -> Self {
        Self {
            location: "body",
            pointer: pointer.to_string(),
            message: message.into(),
            kind: "value_error",
        }
    }

    pub fn query(pointer: &str, message: impl Into<String>) -> Self {
        Self {
            location: "query",
            pointer: pointer.to_string(),
            message: message.into(),
            kind: "value_error",
        }
    }

    pub fn path(pointer: &str, message: impl Into<String>) -> Self {
        Self {
            location: "path",
            pointer: pointer.to_string(),
            message: message.into(),
            kind: "value_error",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        message: String,
        details: Vec<Detail>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    DuplicateRecord(String),
    #[error("A request with this idempotency key is still being processed.")]
    ConcurrentRequest,
    #[error("This idempotency key was used with a different request.")]
    IdempotencyKeyMismatch,
    #[error("{0}")]
    TooManyRequests(String),
    /// A metered permission has fewer units available than asked (402).
    #[error("{message}")]
    InsufficientBalance { message: String, balance: i64 },
    /// A body over the limit (413; SPEC §8 has no code of its own for it: `bad_request`).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Stripe could not be reached or failed; `transaction_id` is set when a transaction was
    /// saved before the call (SPEC §8), so the client can sync or retry.
    #[error("{message}")]
    BadGateway {
        message: String,
        transaction_id: Option<String>,
    },
    #[error("{message}")]
    GatewayTimeout {
        message: String,
        transaction_id: Option<String>,
    },
    /// Something of ours failed; the cause is logged, never returned.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// A 400 about one field of the body.
    pub fn field(pointer: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::BadRequest {
            message: format!("Request failed validation: {}", message),
            details: vec![Detail::body(pointer, message)],
        }
    }

    pub fn query(pointer: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::BadRequest {
            message: format!("Request failed validation: {}", message),
            details: vec![Detail::query(pointer, message)],
        }
    }

    /// A 400 about one path parameter.
    pub fn path(pointer: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::BadRequest {
            message: format!("Request failed validation: {}", message),
            details: vec![Detail::path(pointer, message)],
        }
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("The {what} could not be found"))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::DuplicateRecord(_)
            | ApiError::ConcurrentRequest
            | ApiError::IdempotencyKeyMismatch => StatusCode::CONFLICT,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::InsufficientBalance { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ApiError::GatewayTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } | ApiError::PayloadTooLarge(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::DuplicateRecord(_) => "duplicate_record",
            ApiError::ConcurrentRequest => "concurrent_request",
            ApiError::IdempotencyKeyMismatch => "idempotency_key_mismatch",
            ApiError::TooManyRequests(_) => "too_many_requests",
            ApiError::InsufficientBalance { .. } => "insufficient_balance",
            ApiError::BadGateway { .. } => "bad_gateway",
            ApiError::GatewayTimeout { .. } => "gateway_timeout",
            ApiError::Internal(_) => "server_error",
        }
    }

    pub fn envelope(&self) -> ErrorEnvelope {
        let message = match self {
            ApiError::Internal(_) => "The request could not be processed.".to_string(),
            other => other.to_string(),
        };
        let details = match self {
            ApiError::BadRequest { details, .. } => details.clone(),
            _ => Vec::new(),
        };
        let transaction_id = match self {
            ApiError::BadGateway { transaction_id, .. }
            | ApiError::GatewayTimeout { transaction_id, .. } => transaction_id.clone(),
            _ => None,
        };
        ErrorEnvelope {
            kind: "error",
            code: self.code(),
            status: self.status().as_u16(),
            message,
            details,
            id: transaction_id.clone(),
            transaction_id,
            balance: match self {
                ApiError::InsufficientBalance { balance, .. } => Some(*balance),
                _ => None,
            },
        }
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(self.envelope()).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(cause = %cause, "internal error");
        }
        (self.status(), axum::Json(self.envelope())).into_response()
    }
}

impl From<tollgate_store::StoreError> for ApiError {
    fn from(e: tollgate_store::StoreError) -> Self {
        match e {
            // A row moved between read and write: the caller may retry.
            tollgate_store::StoreError::Conflict => ApiError::ConcurrentRequest,
            e => ApiError::Internal(format!("store: {e}")),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
