"""Customer cash balance: a customer_balance payment intent funded in parts through the test helper
emits payment_intent.partially_funded, then succeeds."""

from conftest import find_events, wait_for


def bank_transfer_intent(client, customer, amount):
    return client.v1.payment_intents.create({
        "amount": amount, "currency": "usd", "customer": customer,
        "payment_method_types": ["customer_balance"],
        "payment_method_data": {"type": "customer_balance"},
        "payment_method_options": {"customer_balance": {
            "funding_type": "bank_transfer", "bank_transfer": {"type": "us_bank_transfer"}}},
        "confirm": True,
    })


def test_customer_balance_partially_funded_then_succeeds(client, uid):
    cus = client.v1.customers.create({"email": f"{uid}@example.com"})
    pi = bank_transfer_intent(client, cus.id, 5000)
    assert pi.status == "requires_action"
    assert pi.next_action.type == "display_bank_transfer_instructions"
    instr = pi.next_action.display_bank_transfer_instructions
    assert instr.amount_remaining == 5000 and instr.currency == "usd"
    assert instr.type == "us_bank_transfer"
    assert isinstance(instr.reference, str) and instr.reference
    pm = client.v1.payment_methods.retrieve(pi.payment_method)
    assert pm.type == "customer_balance"

    txn = client.v1.test_helpers.customers.fund_cash_balance(cus.id, {"amount": 2000, "currency": "usd"})
    assert txn.object == "customer_cash_balance_transaction"
    assert txn.type == "funded" and txn.net_amount == 2000 and txn.customer == cus.id
    assert txn.currency == "usd"

    def partially():
        p = client.v1.payment_intents.retrieve(pi.id)
        return p if p.next_action and p.next_action.display_bank_transfer_instructions.amount_remaining == 3000 else None
    p = wait_for(partially, timeout=10, what="amount_remaining 3000")
    assert p.status == "requires_action" and p.amount_received == 0
    wait_for(lambda: find_events(client, "payment_intent.partially_funded", pi.id), timeout=10,
             what="payment_intent.partially_funded")

    client.v1.test_helpers.customers.fund_cash_balance(cus.id, {"amount": 3000, "currency": "usd",
                                                                "reference": instr.reference})
    done = wait_for(lambda: (lambda x: x if x.status == "succeeded" else None)(
        client.v1.payment_intents.retrieve(pi.id)), timeout=10, what="intent succeeded")
    assert done.amount_received == 5000 and done.next_action is None
    ch = client.v1.charges.retrieve(done.latest_charge)
    assert ch.payment_method_details.type == "customer_balance" and ch.amount == 5000
    assert find_events(client, "payment_intent.succeeded", pi.id)


def test_customer_balance_intent_needs_a_customer(client):
    import pytest
    import stripe
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.payment_intents.create({
            "amount": 1000, "currency": "usd", "payment_method_types": ["customer_balance"],
            "payment_method_data": {"type": "customer_balance"},
            "payment_method_options": {"customer_balance": {
                "funding_type": "bank_transfer", "bank_transfer": {"type": "us_bank_transfer"}}},
            "confirm": True,
        })
    assert ei.value.http_status == 400
