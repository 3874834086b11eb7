"""Outbound webhooks (SPEC §7, issue 8) through a real `tollgate serve` process.

- Every delivery is verified with the independent Standard Webhooks implementation
  (`standardwebhooks` from PyPI), including during a secret rotation: both signatures are sent
  in the grace period and each secret verifies; after it only the new one does.
- Crash: the server is SIGKILLed after a change committed and before its event could be
  delivered (the receiver is not even listening); after a restart the event is delivered.

Runs on SQLite and PostgreSQL. The servers here are started with
`--allow-private-webhook-targets` (the receiver is on 127.0.0.1, plain http) and fast retries.
"""

from __future__ import annotations

import http.server
import json
import signal
import threading
import time
from typing import Dict, List, Optional, Tuple

import pytest
import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from conftest import Tollgate, drop_pg_database, free_port, start_tollgate, stop_tollgate, wait_for

FAST = ["--allow-private-webhook-targets", "--webhook-retry-base-ms", "300",
        "--webhook-retry-max-ms", "2000", "--webhook-timeout-ms", "2000"]
PM = {"method": "stripe", "redirect_url": "https://example.com/cb", "country": "US", "currency": "USD"}


class HookReceiver:
    """Records deliveries (headers, raw body); binds a given port or a free one."""

    def __init__(self, port: int = 0) -> None:
        self.got: List[Tuple[Dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(n)
                with outer.lock:
                    outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def deliveries(self) -> List[Tuple[Dict[str, str], bytes, dict]]:
        with self.lock:
            return [(h, b, json.loads(b)) for h, b in self.got]

    def named(self, name: str) -> List[Tuple[Dict[str, str], bytes, dict]]:
        return [d for d in self.deliveries() if d[2]["name"] == name]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify(secret: str, headers: Dict[str, str], body: bytes) -> dict:
    """Standard Webhooks verification by the independent library (raises when it fails)."""
    return Webhook(secret).verify(body, {
        "webhook-id": headers["webhook-id"],
        "webhook-timestamp": headers["webhook-timestamp"],
        "webhook-signature": headers["webhook-signature"],
    })


def subscribe(tg: Tollgate, url: str, events: List[str]) -> dict:
    r = tg.http("POST", "/webhook-subscriptions", json_body={"url": url, "events": events})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["secret"].startswith("whsec_"), body
    return body


def authorized_transaction(tg: Tollgate, amount: int = 1500) -> dict:
    """A redirect-flow transaction the buyer approves at the sandbox (as Stripe.js would)."""
    r = tg.http("POST", "/transactions", json_body={
        "amount": amount, "currency": "USD", "intent": "authorize", "payment_method": PM})
    assert r.status_code == 201, r.text
    tx = r.json()
    pi = tx["additional_identifiers"]["payment_id"]
    r = tg.stripe("POST", f"/v1/payment_intents/{pi}/confirm", key=tg.publishable_key,
                  data={"client_secret": tx["payment_service_transaction_id"],
                        "payment_method": "pm_card_visa"})
    assert r.status_code == 200, r.text
    r = tg.http("POST", f"/transactions/{tx['id']}/sync")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "authorization_succeeded", r.text
    return r.json()


@pytest.fixture(params=["sqlite", "postgres"])
def server(request):
    tg = start_tollgate(request.param, *FAST, "--webhook-secret-grace-secs", "4")
    yield tg
    stop_tollgate(tg)


def test_every_delivery_verifies_with_standardwebhooks_through_a_rotation(server: Tollgate):
    tg = server
    rx = HookReceiver()
    try:
        sub = subscribe(tg, rx.url, ["transaction.*", "refund.*"])
        s1 = sub["secret"]

        # 1. transaction.authorized, signed with s1 only.
        tx = authorized_transaction(tg)
        (h, body, ev) = wait_for(lambda: next(iter(rx.named("transaction.authorized")), None),
                                 what="transaction.authorized")
        payload = verify(s1, h, body)
        assert payload == ev
        assert ev["type"] == "event" and ev["id"] == h["webhook-id"]
        assert ev["merchant_account_id"] == "default"
        assert ev["target"]["id"] == tx["id"] and ev["target"]["status"] == "authorization_succeeded"
        assert len(h["webhook-signature"].split(" ")) == 1
        # The target is the resource as the API returns it.
        api = tg.http("GET", f"/transactions/{tx['id']}").json()
        for k in ("id", "amount", "currency", "status", "authorized_amount", "payment_service"):
            assert ev["target"][k] == api[k], k

        # 2. Rotate: the next deliveries carry both signatures; each secret verifies alone.
        r = tg.http("POST", f"/webhook-subscriptions/{sub['id']}/rotate-secret")
        assert r.status_code == 200, r.text
        s2 = r.json()["secret"]
        assert s2 != s1 and r.json()["previous_secret_expires_at"]
        r = tg.http("POST", f"/transactions/{tx['id']}/capture", json_body={})
        assert r.status_code == 200 and r.json()["status"] == "capture_succeeded", r.text
        (h, body, ev) = wait_for(lambda: next(iter(rx.named("transaction.captured")), None),
                                 what="transaction.captured")
        assert len(h["webhook-signature"].split(" ")) == 2, h["webhook-signature"]
        assert verify(s1, h, body)["id"] == ev["id"]
        assert verify(s2, h, body)["id"] == ev["id"]
        with pytest.raises(WebhookVerificationError):
            verify("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=", h, body)
        # Tampering is caught by the independent verifier.
        with pytest.raises(WebhookVerificationError):
            verify(s2, h, body.replace(b"capture_succeeded", b"capture_succeedeX"))

        # 3. After the grace period only the new secret signs.
        time.sleep(4.5)
        r = tg.http("POST", f"/transactions/{tx['id']}/refunds", json_body={"amount": 300})
        assert r.status_code == 201, r.text
        refund_names = ("refund.processing", "refund.succeeded")
        (h, body, ev) = wait_for(
            lambda: next(iter([d for d in rx.deliveries() if d[2]["name"] in refund_names]), None),
            what="a refund event")
        assert len(h["webhook-signature"].split(" ")) == 1
        assert verify(s2, h, body)["target"]["type"] == "refund"
        with pytest.raises(WebhookVerificationError):
            verify(s1, h, body)

        # Every delivery received verifies with a secret valid when it was sent.
        for h, body, ev in rx.deliveries():
            ok = 0
            for s in (s1, s2):
                try:
                    verify(s, h, body)
                    ok += 1
                except WebhookVerificationError:
                    pass
            assert ok >= 1, (h, body)

        # The delivery log agrees, once it has caught up: the receiver keeps a delivery before
        # it answers, and the server logs it as delivered only after the answer (the worker's
        # batch write), so an event just received (a refund event) may not be logged yet.
        received = {ev["id"] for _, _, ev in rx.deliveries()}

        def all_logged() -> bool:
            r = tg.http("GET", "/webhook-deliveries", params={"status": "delivered", "limit": 100})
            assert r.status_code == 200, r.text
            return received <= {d["event_id"] for d in r.json()["items"]}

        wait_for(all_logged, timeout=30, what=f"{sorted(received)} delivered in the log")
    finally:
        rx.close()


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_sigkill_between_commit_and_delivery_then_restart_delivers(db: str):
    port = free_port()  # nobody listens here yet: no delivery can succeed before the kill
    tg = start_tollgate(db, *FAST)
    restarted: Optional[Tollgate] = None
    rx: Optional[HookReceiver] = None
    try:
        sub = subscribe(tg, f"http://127.0.0.1:{port}/hook", ["transaction.authorized"])
        tx = authorized_transaction(tg)  # committed: the status and its outbox row
        r = tg.http("GET", "/webhook-deliveries")
        items = r.json()["items"]
        assert len(items) == 1 and items[0]["status"] in ("pending", "failed"), items
        event_id = items[0]["event_id"]
        assert tg.stop(signal.SIGKILL) == -signal.SIGKILL

        rx = HookReceiver(port)
        restarted = start_tollgate(db, *FAST, data_dir=tg.data_dir, database_url=tg.database_url)
        # A claim the killed server held lapses after its lease (timeout + 10 s), then the
        # restarted server attempts it.
        (h, body, ev) = wait_for(lambda: next(iter(rx.deliveries()), None), timeout=60,
                                 what="the event after the restart")
        assert h["webhook-id"] == event_id
        assert ev["name"] == "transaction.authorized" and ev["target"]["id"] == tx["id"]
        verify(sub["secret"], h, body)
        d = wait_for(lambda: (lambda d: d if d["status"] == "delivered" else None)(
            restarted.http("GET", f"/webhook-deliveries/{items[0]['id']}").json()),
            what="delivered in the log")
        assert d["attempt_log"][-1]["status_code"] == 204, d
        assert d["event"]["id"] == event_id
    finally:
        if rx:
            rx.close()
        if restarted:
            restarted.stop()
        tg.stop()
        if tg.pg_database:
            drop_pg_database(tg.pg_database)
        import shutil
        shutil.rmtree(tg.data_dir, ignore_errors=True)
