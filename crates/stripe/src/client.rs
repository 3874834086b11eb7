//! A thin Stripe HTTP client on reqwest: Stripe's form encoding, pinned `Stripe-Version`,
//! `Stripe-Account`, `Idempotency-Key`, and retries with backoff where Stripe says a retry is
//! safe. Responses stay `serde_json::Value`: Stripe objects change shape between API versions,
//! so callers read only the fields they need.

use std::fmt;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
pub use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::ExposeSecret;
pub use secrecy::SecretString;
use serde_json::{Map, Value, json};

use crate::backoff::{self, Jitter};
use crate::form;

/// The API version every request pins unless the connection names another.
pub const CURRENT_API_VERSION: &str = "2026-10-28.endive";
pub const DEFAULT_BASE_URL: &str = "https://api.stripe.com";
/// Page size used by [`StripeClient::list_all`] (Stripe's maximum).
const PAGE_LIMIT: i64 = 100;

#[derive(Clone)]
pub struct ClientConfig {
    /// Stripe, the sandbox, or a proxy; without a trailing slash.
    pub base_url: String,
    pub secret_key: SecretString,
    /// Sent as `Stripe-Account` on every call (Connect), unless a request overrides it.
    pub stripe_account: Option<String>,
    /// `Stripe-Version`; `None` pins [`CURRENT_API_VERSION`].
    pub api_version: Option<String>,
    /// Whole request, body included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff step; doubles per retry, with full jitter.
    pub retry_base: Duration,
    /// Caps every wait between attempts, `Retry-After` included.
    pub max_retry_delay: Duration,
    pub user_agent: String,
}

impl ClientConfig {
    pub fn new(secret_key: impl Into<String>) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            secret_key: SecretString::from(secret_key.into()),
            stripe_account: None,
            api_version: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_retries: 2,
            retry_base: Duration::from_millis(500),
            max_retry_delay: Duration::from_secs(5),
            user_agent: concat!("Tollgate/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("secret_key", &mask_key(self.secret_key.expose_secret()))
            .field("stripe_account", &self.stripe_account)
            .field("api_version", &self.api_version)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_base", &self.retry_base)
            .field("max_retry_delay", &self.max_retry_delay)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

/// `sk_test_…4242`: the key's kind and its last four characters, as Stripe's dashboard shows it.
pub fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    // The prefix runs up to the second underscore (`sk_test_`, `rk_live_`, `whsec_` has one).
    let prefix_len = chars
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == '_')
        .map(|(i, _)| i + 1)
        .take(2)
        .last()
        .unwrap_or(0);
    let prefix: String = chars[..prefix_len].iter().collect();
    // Short keys show no tail: four of a handful of characters would give too much away.
    if chars.len() < prefix_len + 12 {
        return format!("{prefix}…");
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{prefix}…{tail}")
}

/// Per-call options.
#[derive(Clone, Debug, Default)]
pub struct RequestOptions {
    /// For POSTs; when `None` a random key is made once per call and reused on every retry.
    pub idempotency_key: Option<String>,
    /// Overrides the client's `Stripe-Account`.
    pub stripe_account: Option<String>,
    pub expand: Vec<String>,
    /// Test hook (e.g. the sandbox's `Sandbox-Fault`): headers sent on every attempt, or only on
    /// the first `extra_headers_attempts` attempts when set.
    pub extra_headers: Vec<(String, String)>,
    pub extra_headers_attempts: Option<u32>,
}

impl RequestOptions {
    pub fn idempotent(key: impl Into<String>) -> Self {
        Self {
            idempotency_key: Some(key.into()),
            ..Self::default()
        }
    }

    fn with_key(key: Option<&str>) -> Self {
        Self {
            idempotency_key: key.map(str::to_string),
            ..Self::default()
        }
    }
}

/// Stripe's error object, as Stripe sent it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Stripe {status} {kind}{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct ApiError {
    pub status: u16,
    /// `error.type` (`card_error`, `invalid_request_error`, `api_error`, `idempotency_error`, …).
    pub kind: String,
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub param: Option<String>,
    pub message: String,
    pub request_id: Option<String>,
    /// The whole `error` object (`payment_intent`, `charge`, … live here); `Null` when the
    /// answer had none (a proxy's 502 page).
    pub raw: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe answered with an error (card declines are `kind == "card_error"`). Boxed to keep
    /// `Result<_, StripeError>` small on the success path.
    #[error(transparent)]
    Api(Box<ApiError>),
    #[error("Stripe did not answer in time")]
    Timeout,
    #[error("could not reach Stripe: {0}")]
    Connection(String),
    #[error("unreadable answer from Stripe: {0}")]
    Decode(String),
    /// The client or the request could not be built (bad header value, bad base URL).
    #[error("Stripe client misconfigured: {0}")]
    Config(String),
}

impl StripeError {
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Api(e) => Some(e),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        self.api().map(|e| e.status)
    }

    pub fn kind(&self) -> Option<&str> {
        self.api().map(|e| e.kind.as_str())
    }

    pub fn code(&self) -> Option<&str> {
        self.api().and_then(|e| e.code.as_deref())
    }

    pub fn decline_code(&self) -> Option<&str> {
        self.api().and_then(|e| e.decline_code.as_deref())
    }

    pub fn request_id(&self) -> Option<&str> {
        self.api().and_then(|e| e.request_id.as_deref())
    }

    pub fn message(&self) -> String {
        self.api()
            .map_or_else(|| self.to_string(), |e| e.message.clone())
    }

    pub fn is_card_error(&self) -> bool {
        self.kind() == Some("card_error")
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
    }

    /// Stripe was unreachable or failing even after retries: the server answers 502/504 (and
    /// the outcome is unknown, so the caller must be able to sync or retry with the same key).
    /// A 409 for lock contention or an idempotency key still in use is one too: an earlier
    /// request under the same key (one whose client went away) is still running at Stripe, and
    /// a later retry gets its result.
    pub fn is_retryable_outage(&self) -> bool {
        match self {
            Self::Timeout | Self::Connection(_) => true,
            Self::Api(e) => {
                e.status >= 500
                    || e.status == 429
                    || (e.status == 409
                        && matches!(
                            e.code.as_deref(),
                            Some("lock_timeout" | "idempotency_key_in_use")
                        ))
            }
            Self::Decode(_) | Self::Config(_) => false,
        }
    }
}

/// A failed attempt and whether another may follow.
struct Failure {
    error: StripeError,
    retry: bool,
    retry_after: Option<Duration>,
}

impl Failure {
    fn last(error: StripeError) -> Self {
        Self {
            error,
            retry: false,
            retry_after: None,
        }
    }
}

#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    config: ClientConfig,
    /// `Bearer sk_…`, marked sensitive so that reqwest/hyper never print it.
    auth: HeaderValue,
}

impl fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl StripeClient {
    pub fn new(config: ClientConfig) -> Result<Self, StripeError> {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            // Stripe never redirects API calls; following one could send the key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StripeError::Config(error_chain(e)))?;
        Self::with_http(http, config)
    }

    /// Another key/account over the same connection pool (one client per Tollgate connection).
    /// Everything in `config` applies except `connect_timeout`, which is the pool's.
    pub fn with_config(&self, config: ClientConfig) -> Result<Self, StripeError> {
        Self::with_http(self.http.clone(), config)
    }

    fn with_http(http: reqwest::Client, mut config: ClientConfig) -> Result<Self, StripeError> {
        let mut auth =
            HeaderValue::try_from(format!("Bearer {}", config.secret_key.expose_secret()))
                // Do not echo the key: the message names only the problem.
                .map_err(|_| {
                    StripeError::Config("the secret key is not a valid header value".into())
                })?;
        auth.set_sensitive(true);
        config.base_url = config.base_url.trim_end_matches('/').to_string();
        reqwest::Url::parse(&config.base_url)
            .map_err(|e| StripeError::Config(format!("base URL {:?}: {e}", config.base_url)))?;
        Ok(Self { http, config, auth })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Reads one object (`GET path`, no parameters).
    pub async fn retrieve(&self, path: &str) -> Result<Value, StripeError> {
        self.request(Method::GET, path, &Map::new(), RequestOptions::default())
            .await
    }

    /// Calls Stripe: GET/DELETE carry `params` in the query string, POST in a form body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        params: &Map<String, Value>,
        opts: RequestOptions,
    ) -> Result<Value, StripeError> {
        // `base_url` + `path` must stay on the configured host: `@evil.example/…` must not.
        if !path.starts_with('/') {
            return Err(StripeError::Config(format!(
                "path {path:?} must start with '/'"
            )));
        }
        let mut pairs = form::encode_pairs(params);
        pairs.extend(
            opts.expand
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("expand[{i}]"), e.clone())),
        );
        let encoded = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&pairs)
            .finish();
        let is_post = method == Method::POST;
        let mut url = format!("{}{path}", self.config.base_url);
        if !is_post && !encoded.is_empty() {
            url.push('?');
            url.push_str(&encoded);
        }
        let headers = self.headers(&opts, is_post)?;
        let extra = opts
            .extra_headers
            .iter()
            .map(|(k, v)| header(k, v))
            .collect::<Result<Vec<_>, _>>()?;

        let mut attempt = 0u32;
        loop {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(self.config.timeout)
                .headers(headers.clone());
            if opts.extra_headers_attempts.is_none_or(|n| attempt < n) {
                for (k, v) in &extra {
                    req = req.header(k, v);
                }
            }
            if is_post {
                req = req
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(encoded.clone());
            }
            let failure = match self.attempt(req).await {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            if !failure.retry || attempt >= self.config.max_retries {
                return Err(failure.error);
            }
            let wait = self.backoff(attempt, failure.retry_after);
            tracing::warn!(%method, path, attempt, error = %failure.error, wait_ms = wait.as_millis() as u64, "Stripe request failed; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    fn headers(&self, opts: &RequestOptions, is_post: bool) -> Result<HeaderMap, StripeError> {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::AUTHORIZATION, self.auth.clone());
        h.insert(reqwest::header::USER_AGENT, value(&self.config.user_agent)?);
        let version = self
            .config
            .api_version
            .as_deref()
            .unwrap_or(CURRENT_API_VERSION);
        h.insert("stripe-version", value(version)?);
        if let Some(acct) = opts
            .stripe_account
            .as_ref()
            .or(self.config.stripe_account.as_ref())
        {
            h.insert("stripe-account", value(acct)?);
        }
        if is_post {
            // Made once here, outside the retry loop, so every attempt carries the same key and
            // Stripe executes the call at most once.
            let key = match &opts.idempotency_key {
                Some(k) => k.clone(),
                None => format!("tollgate-{:032x}", rand::random::<u128>()),
            };
            h.insert("idempotency-key", value(&key)?);
        }
        Ok(h)
    }

    async fn attempt(&self, req: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let h = resp.headers();
        let text = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let request_id = text("request-id");
        let should_retry = text("stripe-should-retry").map(|v| v == "true");
        let retry_after = text("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // A connection dropped mid-body is as retryable as one dropped before the headers.
        let body = resp.bytes().await.map_err(transport)?;

        if (200..300).contains(&status) {
            return serde_json::from_slice(&body)
                .map_err(|e| Failure::last(StripeError::Decode(format!("HTTP {status}: {e}"))));
        }
        let raw = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|mut v| v.get_mut("error").map(Value::take))
            .filter(Value::is_object);
        let field = |k: &str| {
            raw.as_ref()
                .and_then(|r| r.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let error = StripeError::Api(Box::new(ApiError {
            status,
            kind: field("type").unwrap_or_else(|| "api_error".into()),
            code: field("code"),
            decline_code: field("decline_code"),
            param: field("param"),
            message: field("message")
                .unwrap_or_else(|| format!("HTTP {status} without a Stripe error object")),
            request_id,
            raw: raw.unwrap_or(Value::Null),
        }));
        // Stripe's own verdict wins. Without it: 429 and lock contention are transient; a 5xx
        // is not retried, since Stripe saved it under the idempotency key and would replay it.
        let retry = should_retry.unwrap_or_else(|| {
            status == 429
                || (status == 409
                    && matches!(
                        error.code(),
                        Some("lock_timeout" | "idempotency_key_in_use")
                    ))
        });
        Err(Failure {
            error,
            retry,
            retry_after,
        })
    }

    /// Exponential backoff with full jitter, but never shorter than a (capped) `Retry-After`.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let cap = self.config.max_retry_delay;
        let jittered = backoff::delay(self.config.retry_base, attempt.min(20), cap, Jitter::Full);
        retry_after.map_or(jittered, |ra| jittered.max(ra.min(cap)))
    }

    // ---- typed helpers -------------------------------------------------------------------

    pub async fn create_payment_intent(
        &self,
        params: &Map<String, Value>,
        idem_key: Option<&str>,
    ) -> Result<Value, StripeError> {
        self.post("/v1/payment_intents", params, idem_key).await
    }

    pub async fn retrieve_payment_intent(&self, id: &str) -> Result<Value, StripeError> {
        self.get(&format!("/v1/payment_intents/{}", seg(id)), &Map::new())
            .await
    }

    pub async fn update_payment_intent(
        &self,
        id: &str,
        params: &Map<String, Value>,
        idem_key: Option<&str>,
    ) -> Result<Value, StripeError> {
        let path = format!("/v1/payment_intents/{}", seg(id));
        self.post(&path, params, idem_key).await
    }

    pub async fn confirm_payment_intent(
        &self,
        id: &str,
        params: &Map<String, Value>,
        idem_key: Option<&str>,
    ) -> Result<Value, StripeError> {
        let path = format!("/v1/payment_intents/{}/confirm", seg(id));
        self.post(&path, params, idem_key).await
    }

    /// `amount_to_capture: None` captures everything; a partial capture releases the rest.
    pub async fn capture_payment_intent(
        &self,
        id: &str,
        amount_to_capture: Option<i64>,
        idem_key: Option<&str>,
    ) -> Result<Value, StripeError> {
        let mut params = Map::new();
        if let Some(a) = amount_to_capture {
            params.insert("amount_to_capture".into(), json!(a));
        }
        let path = format!("/v1/payment_intents/{}/capture", seg(id));
        self.post(&path, &params, idem_key).await
    }

    pub async fn cancel_payment_intent(
        &self,
        id: &str,
        reason: Option<&str>,
        idem_key: Option<&str>,
    ) -> Result<Value, StripeError> {
        let mut params = Map::new();
        if let Some(r) = reason {
            params.insert("cancellation_reason".into(), json!(r));
        }
        let path = format!("/v1/payment_intents/{}/cancel", seg(id));
        self.post(&path, &params, idem_key).await
    }

    pub async fn create_refund(
        &self,
        params: &Map<String, Value>,
        idem_key: Option<&str>,
    ) -> Result<Value, StripeError> {
        self.post("/v1/refunds", params, idem_key).await
    }

    pub async fn retrieve_refund(&self, id: &str) -> Result<Value, StripeError> {
        self.get(&format!("/v1/refunds/{}", seg(id)), &Map::new())
            .await
    }

    pub async fn list_refunds(&self, params: &Map<String, Value>) -> Result<Value, StripeError> {
        self.get("/v1/refunds", params).await
    }

    pub async fn retrieve_charge(&self, id: &str) -> Result<Value, StripeError> {
        self.get(&format!("/v1/charges/{}", seg(id)), &Map::new())
            .await
    }

    pub async fn list_events(&self, params: &Map<String, Value>) -> Result<Value, StripeError> {
        self.get("/v1/events", params).await
    }

    pub async fn retrieve_event(&self, id: &str) -> Result<Value, StripeError> {
        self.get(&format!("/v1/events/{}", seg(id)), &Map::new())
            .await
    }

    pub async fn retrieve_customer(&self, id: &str) -> Result<Value, StripeError> {
        self.get(&format!("/v1/customers/{}", seg(id)), &Map::new())
            .await
    }

    /// One page of any list endpoint (`/v1/…`), as Stripe's list object.
    pub async fn list(
        &self,
        path: &str,
        params: &Map<String, Value>,
    ) -> Result<Value, StripeError> {
        self.get(path, params).await
    }

    pub async fn create_webhook_endpoint(
        &self,
        params: &Map<String, Value>,
        idem_key: Option<&str>,
    ) -> Result<Value, StripeError> {
        self.post("/v1/webhook_endpoints", params, idem_key).await
    }

    pub async fn list_webhook_endpoints(
        &self,
        params: &Map<String, Value>,
    ) -> Result<Value, StripeError> {
        self.get("/v1/webhook_endpoints", params).await
    }

    pub async fn update_webhook_endpoint(
        &self,
        id: &str,
        params: &Map<String, Value>,
    ) -> Result<Value, StripeError> {
        let path = format!("/v1/webhook_endpoints/{}", seg(id));
        self.request(Method::POST, &path, params, RequestOptions::default())
            .await
    }

    /// The account the key (and `Stripe-Account`) acts for: a cheap credentials check.
    pub async fn retrieve_account(&self) -> Result<Value, StripeError> {
        self.get("/v1/account", &Map::new()).await
    }

    /// Every item of a list endpoint, following `has_more`/`starting_after`, up to `cap` items.
    pub async fn list_all(
        &self,
        path: &str,
        params: &Map<String, Value>,
        cap: usize,
    ) -> Result<Vec<Value>, StripeError> {
        let mut params = params.clone();
        params.entry("limit").or_insert(json!(PAGE_LIMIT));
        let mut out = Vec::new();
        loop {
            let mut page = self.get(path, &params).await?;
            let has_more = page
                .get("has_more")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let Some(Value::Array(data)) = page.get_mut("data").map(Value::take) else {
                return Err(StripeError::Decode(format!("{path}: not a list object")));
            };
            let last_id = data
                .last()
                .and_then(|o| o.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string);
            out.extend(data);
            if out.len() >= cap {
                out.truncate(cap);
                return Ok(out);
            }
            match last_id {
                Some(id) if has_more => params.insert("starting_after".into(), json!(id)),
                // No id to continue from would loop on the same page forever: stop.
                _ => return Ok(out),
            };
        }
    }

    async fn get(&self, path: &str, params: &Map<String, Value>) -> Result<Value, StripeError> {
        self.request(Method::GET, path, params, RequestOptions::default())
            .await
    }

    async fn post(
        &self,
        path: &str,
        params: &Map<String, Value>,
        idem_key: Option<&str>,
    ) -> Result<Value, StripeError> {
        self.request(
            Method::POST,
            path,
            params,
            RequestOptions::with_key(idem_key),
        )
        .await
    }
}

/// Everything but unreserved characters, so an id can never leave its path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'-')
    .remove(b'.')
    .remove(b'~');

fn seg(id: &str) -> String {
    utf8_percent_encode(id, SEGMENT).to_string()
}

fn value(v: &str) -> Result<HeaderValue, StripeError> {
    HeaderValue::from_str(v).map_err(|_| StripeError::Config(format!("invalid header value {v:?}")))
}

fn header(k: &str, v: &str) -> Result<(HeaderName, HeaderValue), StripeError> {
    let name = HeaderName::try_from(k)
        .map_err(|_| StripeError::Config(format!("invalid header name {k:?}")))?;
    Ok((name, value(v)?))
}

/// Maps a transport error; connection problems and timeouts may be retried because every POST
/// carries an idempotency key (a request that did reach Stripe is replayed, not repeated).
fn transport(e: reqwest::Error) -> Failure {
    let retry = e.is_connect() || e.is_timeout() || e.is_request() || e.is_body();
    let error = if e.is_timeout() {
        StripeError::Timeout
    } else {
        StripeError::Connection(error_chain(e))
    };
    Failure {
        error,
        retry,
        retry_after: None,
    }
}

/// The error and its sources, without the URL (it may carry query parameters).
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
