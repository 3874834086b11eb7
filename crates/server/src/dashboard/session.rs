//! Operators, login and sessions of the dashboard (SPEC §10).
//!
//! - Passwords: argon2id (the crate's defaults: 19 MiB, 2 passes), hashed and checked on a
//!   blocking thread so a login never stalls the async workers.
//! - Sessions: 256 random bits in an `HttpOnly; SameSite=Strict; Path=/dashboard` cookie
//!   (`Secure` behind TLS), stored as SHA-256 with an idle and an absolute end; a new id at
//!   every login; logout deletes the row.
//! - CSRF: every POST carries a `csrf` field equal to a hash of the session id (so nothing more
//!   needs storing, and a database copy does not reveal it), compared in constant time. The
//!   login form, which has no session yet, uses a double-submit cookie.
//! - Throttling: `dashboard_max_failures` consecutive failures lock the operator for
//!   `dashboard_lockout_secs`; four times as many from one client address within that time
//!   lock the address. Attempts are counted atomically before the password is checked, and at
//!   most `dashboard_hash_concurrency` checks run at once ([`PasswordChecks`]).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_store::operators::{self, OperatorRow, SessionRow};

use crate::ApiContext;

pub const SESSION_COOKIE: &str = "tg_session";
pub const LOGIN_COOKIE: &str = "tg_login_csrf";

/// The signed-in operator of a dashboard request (put in the request's extensions by
/// [`require_session`]).
#[derive(Debug, Clone)]
pub struct Session {
    pub id_hash: String,
    pub operator_id: String,
    pub username: String,
    /// The merchant account the dashboard acts for.
    pub merchant_account_id: String,
    /// The token every form of this session must send back.
    pub csrf: String,
}

/// Hashes a password with argon2id (PHC string).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password: {e}"))
}

/// Whether `password` matches the stored PHC string (false for an unreadable hash).
pub fn verify_password(hash: &str, password: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    use argon2::password_hash::phc::PasswordHash;
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Usernames: 1 to 64 letters, digits, `.`, `_`, `-` or `@`.
pub fn valid_username(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 64
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

pub const MIN_PASSWORD: usize = 10;

/// Creates an operator (`tollgate operator create`), or with `replace` sets the password of an
/// existing one. Errors are messages for the command line.
pub async fn create_operator(
    ctx: &ApiContext,
    username: &str,
    password: &str,
    replace: bool,
) -> Result<&'static str, String> {
    if !valid_username(username) {
        return Err("usernames are 1 to 64 letters, digits, '.', '_', '-' or '@'".into());
    }
    if password.chars().count() < MIN_PASSWORD {
        return Err(format!(
            "the password must have at least {MIN_PASSWORD} characters"
        ));
    }
    let pw = password.to_string();
    let hash = tokio::task::spawn_blocking(move || hash_password(&pw))
        .await
        .map_err(|e| format!("hashing the password: {e}"))??;
    let now = ctx.now();
    let db = ctx.store.writer();
    if replace
        && operators::set_password(db, username, &hash, now)
            .await
            .map_err(|e| e.to_string())?
    {
        return Ok("password changed");
    }
    let row = OperatorRow {
        id: tollgate_store::new_id(),
        username: username.to_string(),
        password_hash: hash,
        failed_logins: 0,
        locked_until: None,
        created_at: now,
        updated_at: now,
    };
    match operators::insert_operator(db, &row).await {
        Ok(()) => Ok("created"),
        Err(e) if e.is_unique_violation() => Err(format!(
            "operator '{username}' already exists (use --reset-password to change its password)"
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// The stored form of a session id.
pub fn session_hash(id: &str) -> String {
    sha256_hex(&[b"tollgate-session\0", id.as_bytes()])
}

/// The CSRF token of a session: derived from its id, so it is as unguessable as the id and is
/// never stored (the stored hash uses another prefix).
pub fn csrf_token(id: &str) -> String {
    sha256_hex(&[b"tollgate-csrf\0", id.as_bytes()])
}

pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

pub fn ct_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the browser reached us over TLS: a `https://` public URL, or (only when configured)
/// a proxy's `X-Forwarded-Proto: https`.
pub fn over_tls(ctx: &ApiContext, headers: &HeaderMap) -> bool {
    if ctx.public_url.starts_with("https://") {
        return true;
    }
    ctx.config.trust_forwarded_proto
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value scoped to the dashboard; `value: None` clears the cookie.
pub fn set_cookie(name: &str, value: Option<&str>, secure: bool) -> HeaderValue {
    let mut c = match value {
        Some(v) => format!("{name}={v}; Path=/dashboard; HttpOnly; SameSite=Strict"),
        None => format!("{name}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0"),
    };
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// A 303 to `location` (the "redirect" of post/redirect/get, and the way to the login page).
pub fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Only local dashboard paths are followed after login (no open redirect).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/dashboard")
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.contains("://")
                && !n.starts_with("/dashboard/login") =>
        {
            n.to_string()
        }
        _ => "/dashboard".to_string(),
    }
}

fn to_login(req_path: &str, method: &Method, secure: bool, clear: bool) -> Response {
    // A GET comes back to its page after login; an action never repeats by itself.
    let location = if *method == Method::GET && req_path != "/dashboard" {
        let next: String = form_urlencoded::byte_serialize(req_path.as_bytes()).collect::<String>();
        format!("/dashboard/login?next={next}")
    } else {
        "/dashboard/login".to_string()
    };
    let mut r = see_other(&location);
    if clear {
        r.headers_mut()
            .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, None, secure));
    }
    r
}

/// The live session of a cookie value, if any (expired ones are deleted).
pub async fn load_session(ctx: &ApiContext, id: &str) -> Option<Session> {
    let id_hash = session_hash(id);
    let row = operators::get_session(ctx.store.reader(), &id_hash)
        .await
        .ok()??;
    let now = ctx.now();
    let idle_ms = (ctx.config.dashboard_idle_secs as i64).saturating_mul(1000);
    if row.expires_at <= now || row.last_seen_at.saturating_add(idle_ms) <= now {
        let _ = operators::delete_session(ctx.store.writer(), &id_hash).await;
        return None;
    }
    let op = operators::get(ctx.store.reader(), &row.operator_id)
        .await
        .ok()??;
    // Touch at most once a minute: fewer writes, and the idle timeout is coarse anyway.
    if now - row.last_seen_at > 60_000 {
        let _ = operators::touch_session(ctx.store.writer(), &id_hash, now).await;
    }
    Some(Session {
        id_hash,
        operator_id: op.id,
        username: op.username,
        merchant_account_id: row.merchant_account_id,
        csrf: csrf_token(id),
    })
}

/// Largest dashboard form accepted.
const MAX_FORM: usize = 64 * 1024;

/// Guards every dashboard page and action: no live session → redirect to login; a POST whose
/// `csrf` field is missing or wrong → 403, nothing done.
pub async fn require_session(State(ctx): State<ApiContext>, req: Request, next: Next) -> Response {
    let secure = over_tls(&ctx, req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let presented = cookie(req.headers(), SESSION_COOKIE).map(str::to_string);
    let Some(id) = presented else {
        return to_login(&path, &method, secure, false);
    };
    let Some(session) = load_session(&ctx, &id).await else {
        return to_login(&path, &method, secure, true);
    };
    let (parts, body) = req.into_parts();
    let req = if method == Method::GET || method == Method::HEAD {
        Request::from_parts(parts, body)
    } else {
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
            return super::layout::message(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large",
                "The form was larger than this dashboard accepts.",
            );
        };
        let sent = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if !ct_equal(&sent, &session.csrf) {
            return super::layout::message(
                StatusCode::FORBIDDEN,
                "Form refused",
                "This form did not carry this session's security token (it may come from another site, or from before you logged in again). Nothing was changed.",
            );
        }
        Request::from_parts(parts, Body::from(bytes))
    };
    let mut req = req;
    req.extensions_mut().insert(session);
    next.run(req).await
}

#[derive(serde::Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /dashboard/login`.
pub async fn login_page(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Response {
    login_form(&ctx, &headers, q.next.as_deref(), StatusCode::OK, "", None)
}

/// The login page (`templates/dashboard/login/login.html`).
#[derive(askama::Template)]
#[template(path = "dashboard/login/login.html")]
struct LoginPage<'a> {
    sandbox: bool,
    token: &'a str,
    next: &'a str,
    /// What was typed, kept after a failed attempt.
    username: &'a str,
    error: Option<&'a str>,
}

fn login_form(
    ctx: &ApiContext,
    headers: &HeaderMap,
    next: Option<&str>,
    status: StatusCode,
    username: &str,
    error: Option<&str>,
) -> Response {
    // Double-submit token: reuse the browser's cookie if it has one, so two tabs both work.
    let token = cookie(headers, LOGIN_COOKIE)
        .filter(|t| t.len() == 43)
        .map(str::to_string)
        .unwrap_or_else(random_token);
    // A username is at most 64 characters: longer input is not shown back whole.
    let username: String = username.trim().chars().take(64).collect();
    let page = LoginPage {
        sandbox: ctx.sandbox_running(),
        token: &token,
        next: &safe_next(next),
        username: &username,
        error,
    };
    let mut r = super::view::render(status, &page);
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, Some(&token), over_tls(ctx, headers)),
    );
    r
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

/// The bound on dashboard password checks running at once: each argon2 check holds 19 MiB, so
/// a burst of logins must wait in line rather than each take its own memory and thread.
#[derive(Clone)]
pub struct PasswordChecks(std::sync::Arc<tokio::sync::Semaphore>);

impl PasswordChecks {
    /// At most `concurrency` (at least 1) checks at once.
    pub fn new(concurrency: usize) -> Self {
        Self(std::sync::Arc::new(tokio::sync::Semaphore::new(
            concurrency.max(1),
        )))
    }

    /// Checks `password` against `hash` (the dummy hash for an unknown username) on a blocking
    /// thread once a slot is free; false if it does not match or could not be checked.
    async fn verify(&self, ctx: &ApiContext, hash: Option<String>, password: String) -> bool {
        let Ok(permit) = self.0.clone().acquire_owned().await else {
            return false;
        };
        let metrics = ctx.metrics.clone();
        // The permit goes with the work: a client that hangs up does not free its slot while
        // its hash is still being computed.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            use std::sync::atomic::Ordering::Relaxed;
            let running = metrics.password_checks_running.fetch_add(1, Relaxed) + 1;
            metrics
                .password_checks_running_max
                .fetch_max(running, Relaxed);
            metrics.password_checks.fetch_add(1, Relaxed);
            let hash = hash.as_deref().unwrap_or_else(|| dummy_hash());
            let ok = verify_password(hash, &password);
            metrics.password_checks_running.fetch_sub(1, Relaxed);
            ok
        })
        .await
        .unwrap_or(false)
    }
}

/// A hash to check when the username is unknown, so that the answer takes as long as for a
/// known one (no username probing by timing).
fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash_password("tollgate-dummy-password").unwrap_or_default())
}

fn login_unavailable() -> Response {
    super::layout::message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Login unavailable",
        "The login could not be checked. Please try again.",
    )
}

/// `POST /dashboard/login`.
///
/// Every attempt is counted (for its client address, and for the operator when the username
/// exists) in one database statement each, before the password is checked: simultaneous
/// attempts cannot all pass the limit, and no update is lost. A successful login takes its
/// counts back.
pub async fn login(
    State(ctx): State<ApiContext>,
    axum::Extension(checks): axum::Extension<PasswordChecks>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let next = form.next.as_deref();
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !ct_equal(&form.csrf, expected) {
        return login_form(
            &ctx,
            &headers,
            next,
            StatusCode::FORBIDDEN,
            &form.username,
            Some("The login form expired. Please try again."),
        );
    }
    let now = ctx.now();
    let address = peer.ip().to_string();
    let window = (ctx.config.dashboard_lockout_secs as i64).saturating_mul(1000);
    let max = i64::from(ctx.config.dashboard_max_failures);
    let address_max = max.saturating_mul(4);
    let too_many = |ctx: &ApiContext| {
        login_form(
            ctx,
            &headers,
            next,
            StatusCode::TOO_MANY_REQUESTS,
            &form.username,
            Some("Too many failed logins. Try again later."),
        )
    };
    match operators::count_address_attempt(ctx.store.writer(), &address, now, window, address_max)
        .await
    {
        Ok(n) if n > address_max => return too_many(&ctx),
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "counting a dashboard login attempt");
            return login_unavailable();
        }
    }
    let operator = match operators::by_username(ctx.store.reader(), form.username.trim()).await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "reading operators");
            return login_unavailable();
        }
    };
    if let Some(op) = &operator {
        match operators::reserve_attempt(ctx.store.writer(), &op.id, max, now + window, now).await {
            Ok(Some(_)) => {}
            Ok(None) => return too_many(&ctx),
            Err(e) => {
                tracing::error!(error = %e, "counting a dashboard login attempt");
                return login_unavailable();
            }
        }
    }
    let hash = operator.as_ref().map(|o| o.password_hash.clone());
    let ok = checks.verify(&ctx, hash, form.password).await;
    let Some(op) = operator.as_ref().filter(|_| ok) else {
        if let Some(op) = &operator {
            tracing::info!(operator = %op.username, "dashboard login failed");
        }
        return login_form(
            &ctx,
            &headers,
            next,
            StatusCode::UNAUTHORIZED,
            &form.username,
            Some("Wrong username or password."),
        );
    };
    if let Err(e) =
        operators::forgive_address_attempt(ctx.store.writer(), &address, address_max).await
    {
        tracing::warn!(error = %e, "taking back a successful login's attempt");
    }
    // Success: a brand-new session id (any session the browser had is ended: rotation).
    let secure = over_tls(&ctx, &headers);
    if let Some(old) = cookie(&headers, SESSION_COOKIE) {
        let _ = operators::delete_session(ctx.store.writer(), &session_hash(old)).await;
    }
    let idle_ms = (ctx.config.dashboard_idle_secs as i64).saturating_mul(1000);
    let _ = operators::prune_sessions(ctx.store.writer(), now, idle_ms).await;
    if let Err(e) = operators::reset_failures(ctx.store.writer(), &op.id, now).await {
        tracing::warn!(error = %e, "resetting an operator's failed logins");
    }
    let id = random_token();
    let row = SessionRow {
        id_hash: session_hash(&id),
        operator_id: op.id.clone(),
        merchant_account_id: crate::DEFAULT_MERCHANT_ACCOUNT.to_string(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + (ctx.config.dashboard_session_secs as i64).saturating_mul(1000),
    };
    if let Err(e) = operators::insert_session(ctx.store.writer(), &row).await {
        tracing::error!(error = %e, "storing a dashboard session");
        return super::layout::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Login unavailable",
            "The session could not be stored. Please try again.",
        );
    }
    tracing::info!(operator = %op.username, "dashboard login");
    let mut r = see_other(&safe_next(next));
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, Some(&id), secure),
    );
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, None, secure));
    r
}

/// `POST /dashboard/logout`: the session row is deleted, the cookie cleared.
pub async fn logout(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    axum::Extension(s): axum::Extension<Session>,
) -> Response {
    let _ = operators::delete_session(ctx.store.writer(), &s.id_hash).await;
    let mut r = see_other("/dashboard/login");
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, None, over_tls(&ctx, &headers)),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse battery!"));
        assert!(!verify_password("not a hash", "x"));
    }

    #[test]
    fn next_is_local_only() {
        assert_eq!(
            safe_next(Some("/dashboard/transactions?status=x")),
            "/dashboard/transactions?status=x"
        );
        assert_eq!(safe_next(Some("https://evil.example/")), "/dashboard");
        assert_eq!(safe_next(Some("//evil.example/dashboard")), "/dashboard");
        assert_eq!(safe_next(None), "/dashboard");
    }

    #[test]
    fn tokens_differ_and_compare() {
        let id = random_token();
        assert_eq!(id.len(), 43);
        assert_ne!(session_hash(&id), csrf_token(&id));
        assert!(ct_equal(&csrf_token(&id), &csrf_token(&id)));
        assert!(!ct_equal("a", "ab"));
    }
}
