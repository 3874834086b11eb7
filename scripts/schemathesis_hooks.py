"""schemathesis hooks for scripts/schemathesis (loaded through scripts/schemathesis.toml)."""

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    # A list cursor is opaque: only one this server made (a page's next_cursor or
    # previous_cursor) is valid, and any other is refused with 400. The fuzzer's made-up cursors
    # are dropped; the rest of the list request is sent as generated.
    if case.operation.method.upper() == "GET" and isinstance(case.query, dict):
        case.query.pop("cursor", None)

    # Integers are JSON integers: `1e3` or `3.0` is refused on purpose (an amount is written in
    # integer minor units, and a test holds the server to it), while JSON Schema, and so the
    # fuzzer, counts any number without a fraction as an integer. Such numbers are sent as
    # integers.
    # The body is only replaced when it holds such a number: assigning it marks the case for
    # revalidation, which would turn a request with an invalid body into a "positive" one.
    if _has_integral_float(case.body):
        case.body = _integral_floats(case.body)

    # Connections the fuzzer makes keep keys the built-in sandbox accepts. A live key (sk_live_,
    # rk_live_, pk_live_) is valid, and by design it stops the built-in sandbox at once and takes
    # over the default connection; every later call of the run would then reach a Stripe this
    # machine has no account on. A restricted test key (rk_test_) is valid too, but the sandbox
    # knows only the restricted keys made through its control API, so Stripe calls with one
    # answer 502 (Stripe refused the key), as real Stripe would for a key it never issued. The
    # fuzzer's keys become sk_test_ / pk_test_ keys of the same shape, which the sandbox accepts
    # (the server runs with --sandbox-any-test-key).
    #
    # A `stripe_account` (a connected account the key acts for, sent as Stripe-Account) is
    # dropped for the same reason: the sandbox has no connected accounts, so Stripe refuses every
    # call of such a connection (502), as real Stripe does for an account the key cannot reach.
    if case.operation.path.startswith("/connections") and isinstance(case.body, dict):
        case.body.pop("stripe_account", None)
        for field in ("secret_key", "publishable_key"):
            value = case.body.get(field)
            if isinstance(value, str):
                value = value.replace("_live_", "_test_", 1)
                if value.lstrip().startswith("rk_"):
                    value = value.replace("rk_", "sk_", 1)
                case.body[field] = value


def _integral_floats(value):
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, list):
        return [_integral_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral_floats(v) for k, v in value.items()}
    return value


def _has_integral_float(value):
    if isinstance(value, float):
        return value.is_integer() and abs(value) < 2**63
    if isinstance(value, list):
        return any(_has_integral_float(v) for v in value)
    if isinstance(value, dict):
        return any(_has_integral_float(v) for v in value.values())
    return False
