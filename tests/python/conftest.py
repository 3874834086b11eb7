"""Black-box harness: runs `tollgate sandbox` and drives it with Stripe's official Python library.

- `sandbox` (session): one standalone sandbox process on 127.0.0.1:<free port>, started from
  `$TOLLGATE_BIN` (default `<repo>/target/debug/tollgate`), its printed lines parsed (format in
  docs/sandbox.md), killed at the end.
- `client`: a `stripe.StripeClient` pointed at it (`base_addresses`), `max_network_retries=0`.
  Its HTTP client is the library's own `RequestsClient`, subclassed only to look at each answer:
  every JSON body the sandbox sends (objects, lists, errors) goes through `shapes.problems`, and a
  test with any shape mismatch fails (after its own assertions ran).
- `start_sandbox(...)`: start an extra process (restart and --strict-keys tests).
- `receiver`: a local HTTP server (127.0.0.1) that records webhook deliveries.
"""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import pytest
import requests
import stripe

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import shapes  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
TOLLGATE_BIN = os.environ.get("TOLLGATE_BIN", str(REPO / "target" / "debug" / "tollgate"))

# Shape problems seen during the current test (filled by CheckingHTTPClient and `check`).
SHAPE_LOG: List[str] = []


def record_shape(where: str, body: Any) -> None:
    if os.environ.get("TOLLGATE_SKIP_SHAPES") == "1":  # diagnosis only: see behaviour failures alone
        return
    for p in shapes.problems(body):
        SHAPE_LOG.append(f"{where}: {p}")


def check(obj: Any, where: str = "") -> Any:
    """Shape-check one object explicitly (webhook payloads, raw HTTP answers)."""
    record_shape(where or "explicit check", obj)
    return obj


class CheckingHTTPClient(stripe.RequestsClient):
    """The library's default requests-based client; only observes the answers."""

    def request(self, method, url, headers, post_data=None):  # type: ignore[override]
        content, status, rheaders = super().request(method, url, headers, post_data)
        try:
            body = json.loads(content)
        except Exception:
            SHAPE_LOG.append(f"{method.upper()} {url} -> {status}: body is not JSON: {content[:200]!r}")
        else:
            record_shape(f"{method.upper()} {url.split('/v1', 1)[-1][:80]} -> {status}", body)
        return content, status, rheaders


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    SHAPE_LOG.clear()
    try:
        res = yield
    except BaseException as e:
        if SHAPE_LOG and hasattr(e, "add_note"):
            e.add_note("shape mismatches seen in this test:\n  " + "\n  ".join(SHAPE_LOG[:60]))
        raise
    if SHAPE_LOG:
        raise AssertionError("responses do not match Stripe's shapes:\n  " + "\n  ".join(SHAPE_LOG[:80]))
    return res


# ---- the sandbox process -------------------------------------------------------------------


@dataclass
class Sandbox:
    base: str
    secret_key: str
    publishable_key: str
    account: str
    proc: subprocess.Popen
    lines: List[str] = field(default_factory=list)
    stderr_path: str = ""

    def url(self, path: str) -> str:
        return self.base + path

    def client(self, api_key: Optional[str] = None, **kw) -> stripe.StripeClient:
        kw.setdefault("max_network_retries", 0)
        return stripe.StripeClient(
            api_key or self.secret_key,
            base_addresses={"api": self.base, "connect": self.base, "files": self.base},
            http_client=CheckingHTTPClient(),
            **kw,
        )

    def http(self, method: str, path: str, *, data=None, params=None, headers=None,
             key: Optional[str] = "default", shape: bool = True, **kw) -> requests.Response:
        """A raw Stripe API call (form-encoded), for header-level checks the library hides."""
        h = {}
        if key == "default":
            key = self.secret_key
        if key:
            h["Authorization"] = f"Bearer {key}"
        h.update(headers or {})
        r = requests.request(method, self.base + path, data=data, params=params, headers=h,
                             timeout=30, **kw)
        if shape and r.headers.get("content-type", "").startswith("application/json"):
            record_shape(f"{method} {path} -> {r.status_code}", r.json())
        return r

    def control(self, method: str, path: str, body: Optional[dict] = None) -> requests.Response:
        """The sandbox's control API (JSON, loopback only)."""
        r = requests.request(method, self.base + path, json=body, timeout=30)
        return r

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def stderr_tail(self, n: int = 4000) -> str:
        try:
            return pathlib.Path(self.stderr_path).read_text(errors="replace")[-n:]
        except OSError:
            return ""


LINE_PATTERNS = [
    ("base", re.compile(r"^sandbox listening on (http://127\.0\.0\.1:\d+)\s*$")),
    ("secret_key", re.compile(r"^secret key: (sk_test_\S+)\s*$")),
    ("publishable_key", re.compile(r"^publishable key: (pk_test_\S+)\s*$")),
    ("account", re.compile(r"^account: (acct_\S+)\s*$")),
]


def start_sandbox(*extra: str, timeout: float = 30) -> Sandbox:
    if not (os.path.isfile(TOLLGATE_BIN) and os.access(TOLLGATE_BIN, os.X_OK)):
        pytest.fail(f"sandbox binary {TOLLGATE_BIN} is missing: run `cargo build -p tollgate` "
                    f"(or set TOLLGATE_BIN)", pytrace=False)
    errf = tempfile.NamedTemporaryFile(prefix="tollgate-sandbox-", suffix=".stderr", delete=False)
    proc = subprocess.Popen(
        [TOLLGATE_BIN, "sandbox", "--listen", "127.0.0.1:0", *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf, text=True, bufsize=1,
    )
    lines: "queue.Queue[Optional[str]]" = queue.Queue()
    seen: List[str] = []

    def pump():
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    got: Dict[str, str] = {}
    deadline = time.time() + timeout
    idx = 0
    while idx < len(LINE_PATTERNS):
        left = deadline - time.time()
        try:
            line = lines.get(timeout=max(left, 0.01))
        except queue.Empty:
            line = "<timeout>"
        if line is None or line == "<timeout>":
            proc.kill()
            pytest.fail(f"sandbox did not print its {LINE_PATTERNS[idx][0]} line "
                        f"(stdout so far: {seen}, stderr: {pathlib.Path(errf.name).read_text()[-2000:]})",
                        pytrace=False)
        seen.append(line)
        name, rx = LINE_PATTERNS[idx]
        m = rx.match(line)
        assert m, f"sandbox line {idx + 1} should match {rx.pattern!r}, got {line!r} (docs/sandbox.md)"
        got[name] = m.group(1)
        idx += 1
    sb = Sandbox(proc=proc, lines=seen, stderr_path=errf.name, **got)
    # readiness: the API answers
    while True:
        try:
            r = requests.get(sb.base + "/v1/customers", params={"limit": 1},
                             headers={"Authorization": f"Bearer {sb.secret_key}"}, timeout=2)
            if r.status_code < 500:
                break
        except requests.RequestException:
            pass
        if time.time() > deadline or proc.poll() is not None:
            sb.stop(signal.SIGKILL)
            pytest.fail(f"sandbox at {sb.base} never became ready; stderr: {sb.stderr_tail()}", pytrace=False)
        time.sleep(0.05)
    return sb


@pytest.fixture(scope="session")
def sandbox():
    sb = start_sandbox()
    yield sb
    sb.stop()


@pytest.fixture
def client(sandbox) -> stripe.StripeClient:
    return sandbox.client()


@pytest.fixture
def uid() -> str:
    """A unique token for this test's objects (emails, metadata) so list filters find only them."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def chaos(sandbox):
    """Set webhook chaos for one test; turned off afterwards."""
    def set_(**kw):
        body = {"duplicate": 0.0, "reorder_window_ms": 0, "delay_ms": 0}
        body.update(kw)
        r = sandbox.control("POST", "/_sandbox/chaos", body)
        assert r.status_code == 200, r.text
    yield set_
    sandbox.control("POST", "/_sandbox/chaos", {"duplicate": 0.0, "reorder_window_ms": 0, "delay_ms": 0})


# ---- helpers shared by the tests -----------------------------------------------------------


def wait_for(fn: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r:.300})")


def find_events(client: stripe.StripeClient, type_: str, object_id: str, limit: int = 100) -> List[Any]:
    evs = client.v1.events.list({"type": type_, "limit": limit})
    out = []
    for e in evs.data:
        o = e.data.object.to_dict()
        if o.get("id") == object_id or o.get("payment_intent") == object_id:
            out.append(e)
    return out


def paid_intent(client: stripe.StripeClient, amount: int = 2000, pm: str = "pm_card_visa", **extra):
    """A succeeded card payment intent."""
    params = {"amount": amount, "currency": "usd", "payment_method_types": ["card"],
              "payment_method": pm, "confirm": True}
    params.update(extra)
    pi = client.v1.payment_intents.create(params)
    assert pi.status == "succeeded", pi
    return pi


@dataclass
class Delivery:
    path: str
    headers: Dict[str, str]
    body: bytes
    at: float
    answered: int


class Receiver:
    """Records webhook deliveries; answers with queued statuses (default 200)."""

    def __init__(self) -> None:
        self.deliveries: List[Delivery] = []
        self.lock = threading.Lock()
        self.script: List[int] = []  # statuses to answer next, in order
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(n)
                with outer.lock:
                    status = outer.script.pop(0) if outer.script else 200
                    outer.deliveries.append(Delivery(self.path, requests.structures.CaseInsensitiveDict(self.headers.items()),
                                                     body, time.time(), status))
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{uuid.uuid4().hex[:8]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> List[tuple]:
        """(delivery, parsed event) pairs."""
        with self.lock:
            ds = list(self.deliveries)
        return [(d, json.loads(d.body)) for d in ds]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


# ---- the Tollgate server (`tollgate serve`) ------------------------------------------------
#
# - `tollgate` (session, parametrised `sqlite` / `postgres`): one `tollgate serve` process with a
#   fresh data directory, and for PostgreSQL a fresh database (created with psql, dropped at the
#   end); the built-in sandbox is mounted at `{base}/sandbox/stripe`. Every test that uses it runs
#   on both databases. PostgreSQL is reached at `$TOLLGATE_TEST_PG` (default
#   `postgres://postgres@127.0.0.1:5432`); when it cannot be reached the postgres runs are
#   skipped, unless `TOLLGATE_REQUIRE_PG=1` (then they fail).
# - `start_tollgate(db, *extra_flags)`: start another one (restart tests, other flags).

PG_ADMIN = os.environ.get("TOLLGATE_TEST_PG", "postgres://postgres@127.0.0.1:5432").rstrip("/")


def free_port() -> int:
    """A port free right now on 127.0.0.1 (the server does not print back port 0 yet)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _psql(sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", f"{PG_ADMIN}/postgres", "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
                          capture_output=True, text=True, timeout=60)


def create_pg_database() -> str:
    """A fresh PostgreSQL database; returns its name (skips, or fails with TOLLGATE_REQUIRE_PG=1)."""
    name = f"tollgate_test_{uuid.uuid4().hex[:12]}"
    try:
        r = _psql(f'CREATE DATABASE "{name}"')
        err = r.stderr if r.returncode else ""
    except (OSError, subprocess.TimeoutExpired) as e:
        err = str(e)
    if err:
        msg = f"PostgreSQL at {PG_ADMIN} is not usable: {err.strip()[:300]}"
        if os.environ.get("TOLLGATE_REQUIRE_PG") == "1":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return name


def drop_pg_database(name: str) -> None:
    try:
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except (OSError, subprocess.TimeoutExpired):
        pass


@dataclass
class Tollgate:
    base: str
    api_key: str                   # the first secret key (an operator key)
    sandbox_secret_key: str
    publishable_key: str           # the sandbox's publishable key (what Stripe.js would use)
    proc: subprocess.Popen
    db: str                        # "sqlite" or "postgres"
    data_dir: str
    database_url: Optional[str] = None
    pg_database: Optional[str] = None
    lines: List[str] = field(default_factory=list)
    stderr_path: str = ""
    owns_data_dir: bool = False    # made by start_tollgate: removed by stop_tollgate

    @property
    def sandbox_base(self) -> str:
        return self.base + "/sandbox/stripe"

    def url(self, path: str) -> str:
        return self.base + path

    def http(self, method: str, path: str, *, json_body=None, key: Optional[str] = "default",
             headers=None, **kw) -> requests.Response:
        """A raw Tollgate API call (JSON), for what the SDK does not cover."""
        h = {}
        if key == "default":
            key = self.api_key
        if key:
            h["Authorization"] = f"Bearer {key}"
        h.update(headers or {})
        return requests.request(method, self.base + path, json=json_body, headers=h, timeout=30, **kw)

    def stripe(self, method: str, path: str, *, data=None, key: Optional[str] = None,
               basic: bool = False) -> requests.Response:
        """A Stripe API call to the mounted sandbox (form-encoded; the sandbox secret key by default)."""
        key = key or self.sandbox_secret_key
        kw: Dict[str, Any] = {"auth": (key, "")} if basic else {"headers": {"Authorization": f"Bearer {key}"}}
        return requests.request(method, self.sandbox_base + path, data=data, timeout=30, **kw)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def stderr_tail(self, n: int = 4000) -> str:
        try:
            return pathlib.Path(self.stderr_path).read_text(errors="replace")[-n:]
        except OSError:
            return ""


SERVE_PATTERNS = {
    "sandbox_secret_key": re.compile(r"^sandbox secret key: (sk_test_\S+)\s*$"),
    "publishable_key": re.compile(r"^sandbox publishable key: (pk_test_\S+)\s*$"),
    "base": re.compile(r"^tollgate listening on (http://\S+?)/?(?:\s|$)"),
    "first_key_file": re.compile(r"^first secret API key written to (\S.*?)\s*$"),
}


def start_tollgate(db: str = "sqlite", *extra: str, data_dir: Optional[str] = None,
                   database_url: Optional[str] = None, env: Optional[Dict[str, str]] = None,
                   timeout: float = 60) -> Tollgate:
    """Starts `tollgate serve` on 127.0.0.1:<free port> with the built-in sandbox. For `postgres`
    without `database_url`, a fresh database is created (and recorded in `pg_database`)."""
    if not (os.path.isfile(TOLLGATE_BIN) and os.access(TOLLGATE_BIN, os.X_OK)):
        pytest.fail(f"binary {TOLLGATE_BIN} is missing: run `cargo build -p tollgate` (or set TOLLGATE_BIN)",
                    pytrace=False)
    owns_data_dir = data_dir is None
    data_dir = data_dir or tempfile.mkdtemp(prefix=f"tollgate-{db}-")
    penv = dict(os.environ)
    penv.pop("DATABASE_URL", None)
    penv.setdefault("TOLLGATE_LOG_FORMAT", "text")
    pg_database = None
    if db == "postgres":
        if database_url is None:
            pg_database = create_pg_database()
            database_url = f"{PG_ADMIN}/{pg_database}"
        penv.setdefault("TOLLGATE_MASTER_KEY", "5a" * 32)
    elif db != "sqlite":
        raise ValueError(db)
    penv.update(env or {})
    port = free_port()
    args = [TOLLGATE_BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir,
            "--sandbox", "true"]
    if database_url:
        args += ["--database-url", database_url]
    args += list(extra)
    errf = tempfile.NamedTemporaryFile(prefix="tollgate-serve-", suffix=".stderr", delete=False)
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf,
                            text=True, bufsize=1, env=penv)
    lines: "queue.Queue[Optional[str]]" = queue.Queue()
    seen: List[str] = []

    def pump():
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()

    def fail(why: str):
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if pg_database:
            drop_pg_database(pg_database)
        pytest.fail(f"tollgate serve ({db}) {why} (stdout: {seen}, stderr: "
                    f"{pathlib.Path(errf.name).read_text(errors='replace')[-3000:]})", pytrace=False)

    got: Dict[str, str] = {}
    key_file = pathlib.Path(data_dir) / "first-secret-key"
    deadline = time.time() + timeout
    # The keys and the address come first; the first-key line after the database is set up.
    while not ({"sandbox_secret_key", "publishable_key", "base"} <= got.keys()
               and ("first_key_file" in got or key_file.exists())):
        try:
            line = lines.get(timeout=max(deadline - time.time(), 0.01))
        except queue.Empty:
            fail(f"did not print its start-up lines within {timeout}s")
        if line is None:
            fail(f"exited with {proc.wait(5)} before it was ready")
        seen.append(line)
        for name, rx in SERVE_PATTERNS.items():
            m = rx.match(line)
            if m:
                got[name] = m.group(1)
    assert got["base"] == f"http://127.0.0.1:{port}", got["base"]
    tg = Tollgate(base=got["base"], api_key="", sandbox_secret_key=got["sandbox_secret_key"],
                  publishable_key=got["publishable_key"], proc=proc, db=db, data_dir=data_dir,
                  database_url=database_url, pg_database=pg_database, lines=seen,
                  stderr_path=errf.name, owns_data_dir=owns_data_dir)
    while True:
        try:
            if requests.get(tg.base + "/healthz", timeout=2).status_code == 200 and key_file.exists():
                tg.api_key = key_file.read_text().strip()
                if tg.api_key:
                    break
        except requests.RequestException:
            pass
        if time.time() > deadline or proc.poll() is not None:
            fail("never became ready (GET /healthz and {data_dir}/first-secret-key)")
        time.sleep(0.05)
    return tg


def stop_tollgate(tg: Tollgate) -> None:
    """Stops the process, drops its PostgreSQL database and removes the files it made."""
    import shutil
    tg.stop()
    if tg.pg_database:
        drop_pg_database(tg.pg_database)
    if tg.owns_data_dir:
        shutil.rmtree(tg.data_dir, ignore_errors=True)
    try:
        os.unlink(tg.stderr_path)
    except OSError:
        pass


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def tollgate(request) -> Tollgate:
    tg = start_tollgate(request.param)
    yield tg
    stop_tollgate(tg)
