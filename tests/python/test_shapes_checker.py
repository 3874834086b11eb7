"""The shape checker itself (no sandbox needed): it accepts Stripe's own examples and catches
the mistakes it exists to catch."""

import copy

import shapes


def fx(t):
    return copy.deepcopy(shapes.FIXTURES[t])


def test_fixtures_pass():
    for t in ["payment_intent", "charge", "refund", "customer", "product", "price", "payment_method",
              "event", "webhook_endpoint", "balance_transaction"]:
        assert shapes.problems(fx(t)) == [], t


def test_missing_and_extra_fields():
    pi = fx("payment_intent")
    del pi["amount_received"]
    pi["colour"] = "red"
    errs = shapes.problems(pi)
    assert any("payment_intent.amount_received: missing" in e for e in errs)
    assert any("payment_intent.colour: unexpected" in e for e in errs)


def test_wrong_types():
    ch = fx("charge")
    ch["amount"] = "100"
    ch["paid"] = 1
    ch["billing_details"]["address"]["city"] = 5  # fixture null: any type, but the 2023 schema says string
    errs = shapes.problems(ch)
    assert any("charge.amount: type string" in e for e in errs)
    assert any("charge.paid: type integer" in e for e in errs)
    assert any("charge.billing_details.address.city" in e for e in errs)


def test_null_only_where_nullable():
    pi = fx("payment_intent")
    pi["metadata"] = None          # not nullable
    pi["automatic_payment_methods"] = None  # nullable in 2023
    pi["managed_payments"] = None  # newer than 2023; Optional in the library
    errs = shapes.problems(pi)
    assert any("payment_intent.metadata: null" in e for e in errs)
    assert not any("automatic_payment_methods" in e for e in errs)
    assert not any("managed_payments" in e for e in errs)


def test_enums_and_expansion():
    pi = fx("payment_intent")
    pi["status"] = "paid"
    pi["latest_charge"] = fx("charge")
    pi["latest_charge"]["amount"] = None
    errs = shapes.problems(pi)
    assert any("payment_intent.status: 'paid' not among" in e for e in errs)
    assert any("latest_charge → charge.amount: null" in e for e in errs)


def test_placeholder_next_action_checked_against_schema():
    pi = fx("payment_intent")
    pi["next_action"] = {"type": "redirect_to_url",
                         "redirect_to_url": {"url": "http://x/auth", "return_url": "https://y/"}}
    assert shapes.problems(pi) == []
    pi["next_action"]["redirect_to_url"]["url"] = 3
    assert shapes.problems(pi)
    pi["next_action"] = {"type": "redirect_to_url", "redirect": {}}
    assert any("next_action.redirect: unexpected" in e for e in shapes.problems(pi))


def test_schema_only_resource_dispute():
    d = {"id": "du_1", "object": "dispute", "amount": 100, "balance_transactions": [], "charge": "ch_1",
         "created": 1, "currency": "usd", "evidence": {}, "livemode": False, "metadata": {},
         "reason": "fraudulent", "status": "needs_response", "is_charge_refundable": False,
         "payment_intent": "pi_1",
         "evidence_details": {"due_by": 2, "has_evidence": False, "past_due": False, "submission_count": 0}}
    errs = shapes.problems(d)
    assert all("evidence." in e for e in errs), errs  # only the empty evidence's required fields
    d2 = dict(d, made_up_field=1)
    assert any("made_up_field: unexpected" in e for e in shapes.problems(d2))
    d3 = dict(d, enhanced_eligibility_types=[])  # newer than 2023, known to the library
    assert not any("enhanced_eligibility_types" in e for e in shapes.problems(d3))


def test_lists_deleted_and_errors():
    assert shapes.problems({"object": "list", "data": [fx("customer")], "has_more": False,
                            "url": "/v1/customers"}) == []
    assert shapes.problems({"object": "list", "data": [], "has_more": False}) != []
    assert shapes.problems({"id": "cus_1", "object": "customer", "deleted": True}) == []
    assert shapes.problems({"id": "cus_1", "object": "customer", "deleted": True, "email": None}) != []
    assert shapes.problems({"error": {"type": "invalid_request_error", "code": "resource_missing",
                                      "message": "No such customer: 'cus_1'", "param": "id",
                                      "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
                                      "request_log_url": "https://dashboard.stripe.com/test/logs/req_1"}}) == []
    assert shapes.problems({"error": {"type": "card_error", "oops": 1}}) != []
    assert shapes.problems({"message": "nope"}) != []
