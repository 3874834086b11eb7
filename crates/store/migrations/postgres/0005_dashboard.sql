-- Dashboard operators and their sessions (SPEC §10). Kept column-for-column equal between
-- SQLite and PostgreSQL. Times are unix milliseconds.

CREATE TABLE operators (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    -- argon2id PHC string; the password itself is never stored.
    password_hash TEXT NOT NULL,
    -- Consecutive failed logins; reset by a successful one.
    failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until  BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- A session is found by the SHA-256 of its id: the id itself (the cookie) is never stored.
CREATE TABLE operator_sessions (
    id_hash             TEXT PRIMARY KEY,
    operator_id         TEXT NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    merchant_account_id TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    last_seen_at        BIGINT NOT NULL,
    -- Absolute end (created_at + the absolute lifetime); the idle end is last_seen_at + idle.
    expires_at          BIGINT NOT NULL
);
CREATE INDEX operator_sessions_by_operator ON operator_sessions (operator_id);

-- Failed logins per client address (throttles guessing across usernames).
CREATE TABLE login_failures (
    address      TEXT PRIMARY KEY,
    failures     BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    locked_until BIGINT
);
