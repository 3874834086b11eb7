//! What the process-level tests share.

/// The PostgreSQL server the tests use (`TOLLGATE_TEST_DATABASE_URL`, default the local `test`
/// database); `None` when `TOLLGATE_TEST_SKIP_POSTGRES=1`.
pub fn postgres_url() -> Option<String> {
    if std::env::var("TOLLGATE_TEST_SKIP_POSTGRES").as_deref() == Ok("1") {
        return None;
    }
    Some(
        std::env::var("TOLLGATE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
    )
}
