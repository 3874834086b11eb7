"""schemathesis hooks for scripts/schemathesis (loaded through scripts/schemathesis.toml)."""

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    # A list cursor is opaque: only one this server made (a page's next_cursor or
    # previous_cursor) is valid, and any other is refused with 400. The fuzzer's made-up cursors
    # are dropped; the rest of the list request is sent as generated.
    if case.operation.method.upper() == "GET" and isinstance(case.query, dict):
        case.query.pop("cursor", None)

    # Connections the fuzzer makes keep keys the built-in sandbox accepts. A live key (sk_live_,
    # rk_live_, pk_live_) is valid, and by design it stops the built-in sandbox at once and takes
    # over the default connection; every later call of the run would then reach a Stripe this
    # machine has no account on. A restricted test key (rk_test_) is valid too, but the sandbox
    # knows only the restricted keys made through its control API, so Stripe calls with one
    # answer 502 (Stripe refused the key), as real Stripe would for a key it never issued. The
    # fuzzer's keys become sk_test_ / pk_test_ keys of the same shape, which the sandbox accepts
    # (the server runs with --sandbox-any-test-key).
    if case.operation.path.startswith("/connections") and isinstance(case.body, dict):
        for field in ("secret_key", "publishable_key"):
            value = case.body.get(field)
            if isinstance(value, str):
                value = value.replace("_live_", "_test_", 1)
                if value.lstrip().startswith("rk_"):
                    value = value.replace("rk_", "sk_", 1)
                case.body[field] = value
