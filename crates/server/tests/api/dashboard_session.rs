//! The dashboard tests' session: an operator created as `tollgate operator create` does, a
//! login through the login form (with its CSRF cookie), the session cookie and a page's CSRF
//! token, and GETs and form POSTs with or without that cookie.

use crate::common::{Resp, TestServer, now_ms};

pub const USER: &str = "admin";
pub const PASSWORD: &str = "a long enough password";

/// Creates the operator `USER` with `PASSWORD` the way `tollgate operator create` does.
pub async fn operator(s: &TestServer) {
    let hash = tollgate_server::dashboard::session::hash_password(PASSWORD).unwrap();
    let now = now_ms();
    tollgate_store::operators::insert_operator(
        &s.pool,
        &tollgate_store::operators::OperatorRow {
            id: format!("op-{now}"),
            username: USER.into(),
            password_hash: hash,
            failed_logins: 0,
            locked_until: None,
            created_at: now,
            updated_at: now,
        },
    )
    .await
    .unwrap();
}

/// The `Set-Cookie` headers of a response.
pub fn set_cookies(r: &Resp) -> Vec<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

/// The value `name` is set to by a response (None: not set; Some(""): cleared).
pub fn cookie_value(r: &Resp, name: &str) -> Option<String> {
    set_cookies(r).iter().find_map(|c| {
        c.strip_prefix(&format!("{name}="))
            .map(|rest| rest.split(';').next().unwrap_or_default().to_string())
    })
}

/// The first `name="csrf"` hidden field of a page.
pub fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field in {html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// A GET sending `cookie` (`tg_session=…`, or any cookie header).
pub async fn get_with(s: &TestServer, path: &str, cookie: &str) -> Resp {
    s.send(s.http.get(s.url(path)).header("cookie", cookie))
        .await
}

/// A GET without any cookie.
pub async fn get_anonymous(s: &TestServer, path: &str) -> Resp {
    s.send(s.http.get(s.url(path))).await
}

/// A form POST sending `cookie`.
pub async fn post_form(s: &TestServer, path: &str, cookie: &str, form: &[(&str, &str)]) -> Resp {
    s.send(s.http.post(s.url(path)).form(form).header("cookie", cookie))
        .await
}

/// A form POST without any cookie.
pub async fn post_form_anonymous(s: &TestServer, path: &str, form: &[(&str, &str)]) -> Resp {
    s.send(s.http.post(s.url(path)).form(form)).await
}

/// Tries to log in as `username` through the login form, sending `extra_cookie` too.
pub async fn try_login_as(
    s: &TestServer,
    username: &str,
    password: &str,
    extra_cookie: Option<&str>,
) -> Resp {
    let page = get_anonymous(s, "/dashboard/login").await;
    assert_eq!(page.status, 200, "{}", page.text);
    let token = cookie_value(&page, "tg_login_csrf").expect("login csrf cookie");
    assert_eq!(csrf_of(&page.text), token);
    let mut cookie = format!("tg_login_csrf={token}");
    if let Some(extra) = extra_cookie {
        cookie = format!("{cookie}; {extra}");
    }
    post_form(
        s,
        "/dashboard/login",
        &cookie,
        &[
            ("username", username),
            ("password", password),
            ("csrf", &token),
        ],
    )
    .await
}

/// Tries to log in as `USER`.
pub async fn try_login(s: &TestServer, password: &str, extra_cookie: Option<&str>) -> Resp {
    try_login_as(s, USER, password, extra_cookie).await
}

/// Logs in as `USER` (created before by `operator`); returns the session cookie
/// (`tg_session=…`).
pub async fn login(s: &TestServer) -> String {
    let r = try_login(s, PASSWORD, None).await;
    assert_eq!(r.status, 303, "{}", r.text);
    let id = cookie_value(&r, "tg_session").expect("session cookie");
    assert!(id.len() >= 43, "a 256-bit id: {id}");
    format!("tg_session={id}")
}

/// A page's CSRF token for the session.
pub async fn csrf(s: &TestServer, cookie: &str) -> String {
    let p = get_with(s, "/dashboard/transactions", cookie).await;
    assert_eq!(p.status, 200, "{}", p.text);
    csrf_of(&p.text)
}

/// Creates the operator and logs in: the session cookie and a CSRF token.
pub async fn session(s: &TestServer) -> (String, String) {
    operator(s).await;
    let cookie = login(s).await;
    let token = csrf(s, &cookie).await;
    (cookie, token)
}
