"""The client: see the package's doc."""

from __future__ import annotations

import email.utils
import json
import random
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Union
from urllib.parse import quote

import httpx

__all__ = [
    "Consumption",
    "CustomerLink",
    "ErrorDetail",
    "Grant",
    "Permission",
    "PermissionSet",
    "Sku",
    "Tollgate",
    "TollgateError",
]


# ---- the public types -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sku:
    identifier: str
    product_id: Optional[str]
    is_trial: bool


@dataclass(frozen=True)
class Permission:
    identifier: str
    #: Whether the customer holds it now; never True past ``expires_at``, even offline.
    is_valid: bool
    #: Tollgate's (Glassfy-compatible) entitlement code.
    entitlement: int
    #: When it ends (UTC); None: no end.
    expires_at: Optional[datetime]
    skus: List[Sku] = field(default_factory=list)
    #: Units left, for metered permissions.
    balance: Optional[int] = None


@dataclass(frozen=True)
class PermissionSet:
    customid: str
    permissions: List[Permission]
    #: True when the server could not be reached and this is the last answer known.
    stale: bool
    #: The server's version of the answer (its ETag, the stream's event id).
    etag: Optional[str]
    received_at: datetime

    def has(self, permission: str) -> bool:
        return any(p.identifier == permission and p.is_valid for p in self.permissions)


@dataclass(frozen=True)
class Grant:
    id: str
    customid: str
    permission: str
    starts_at: Optional[datetime]
    expires_at: Optional[datetime]
    reason: str
    created_by: str
    revoked_at: Optional[datetime]
    revoked_by: Optional[str]


@dataclass(frozen=True)
class CustomerLink:
    customid: str
    customer_id: str
    connection_id: str
    moved_from: Optional[str]
    permissions: List[Permission]


@dataclass(frozen=True)
class Consumption:
    balance: int
    consumed: int
    ledger_id: str


@dataclass(frozen=True)
class ErrorDetail:
    location: str
    pointer: str
    message: str


class TollgateError(Exception):
    """Every failure: an answer of the server (``status`` >= 400) or none (``status`` 0,
    ``code`` ``network_error`` or ``timeout``)."""

    def __init__(self, status: int, code: str, message: str, details: Optional[List[ErrorDetail]] = None,
                 retry_after: Optional[float] = None, balance: Optional[int] = None,
                 request_id: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details: List[ErrorDetail] = details or []
        self.retry_after = retry_after
        self.balance = balance
        self.request_id = request_id

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status == 429 or self.status >= 500

    def __repr__(self) -> str:
        return f"TollgateError(status={self.status}, code={self.code!r}, message={self.message!r})"


# ---- wire → types -----------------------------------------------------------------------------


def _date(s: Optional[str]) -> Optional[datetime]:
    if not s:
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


def _rfc3339(d: Union[datetime, str, None]) -> Optional[str]:
    if d is None or isinstance(d, str):
        return d
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _permission(w: Mapping[str, Any], now: Optional[datetime]) -> Permission:
    expires = _date(w.get("expires_at"))
    lapsed = now is not None and expires is not None and expires <= now
    balance = w.get("balance")
    return Permission(
        identifier=w["identifier"],
        is_valid=bool(w["is_valid"]) and not lapsed,
        entitlement=int(w["entitlement"]),
        expires_at=expires,
        skus=[Sku(identifier=s.get("identifier") or "", product_id=s.get("productid"),
                  is_trial=bool(s.get("istrial"))) for s in w.get("skuarray") or []],
        balance=balance if isinstance(balance, int) else None,
    )


@dataclass
class _Cached:
    etag: Optional[str]
    wire: Dict[str, Any]
    received_at: float


def _set_of(c: _Cached, stale: bool) -> PermissionSet:
    now = datetime.now(timezone.utc) if stale else None
    return PermissionSet(
        customid=c.wire["customid"],
        permissions=[_permission(p, now) for p in c.wire["permissions"]],
        stale=stale,
        etag=c.etag,
        received_at=datetime.fromtimestamp(c.received_at, timezone.utc),
    )


def _retry_after(v: Optional[str]) -> Optional[float]:
    if not v:
        return None
    try:
        return max(0.0, float(v.strip()))
    except ValueError:
        pass
    try:
        at = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    return max(0.0, at.timestamp() - time.time())


def _error_of(r: httpx.Response) -> TollgateError:
    try:
        body = r.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    details = [ErrorDetail(location=str(d.get("location", "")), pointer=str(d.get("pointer", "")),
                           message=str(d.get("message", "")))
               for d in body.get("details") or [] if isinstance(d, dict)]
    return TollgateError(
        status=r.status_code,
        code=str(body.get("code") or ("server_error" if r.status_code >= 500 else "http_error")),
        message=str(body.get("message") or f"HTTP {r.status_code}"),
        details=details,
        retry_after=_retry_after(r.headers.get("retry-after")),
        balance=body.get("balance") if isinstance(body.get("balance"), int) else None,
        request_id=r.headers.get("x-request-id"),
    )


# ---- the client -------------------------------------------------------------------------------


class _Grants:
    def __init__(self, client: "Tollgate"):
        self._c = client

    def create(self, customid: str, *, permission: str, reason: str,
               expires_at: Union[datetime, str, None] = None,
               idempotency_key: Optional[str] = None) -> Grant:
        """Gives ``permission`` by hand (secret keys), until ``expires_at`` (None: no end)."""
        r = self._c._send("POST", f"/v1/subscribers/{quote(customid, safe='')}/grants",
                          json_body={"permission": permission, "expires_at": _rfc3339(expires_at),
                                     "reason": reason},
                          idempotency_key=idempotency_key)
        self._c._forget(customid)
        g = r.json()
        return Grant(id=g["id"], customid=g["customid"], permission=g["permission"],
                     starts_at=_date(g.get("starts_at")), expires_at=_date(g.get("expires_at")),
                     reason=g["reason"], created_by=g["created_by"],
                     revoked_at=_date(g.get("revoked_at")), revoked_by=g.get("revoked_by"))


class Tollgate:
    """Tollgate's client; one per process and key. Thread-safe; caches permission answers for
    ETags and offline answers."""

    def __init__(self, base_url: str, api_key: str, *,
                 customer_token: Union[str, Callable[[str], str], None] = None,
                 merchant_account_id: Optional[str] = None,
                 max_retries: int = 3, retry_base: float = 0.25, retry_max: float = 8.0,
                 max_retry_after: float = 60.0, timeout: float = 10.0,
                 poll_interval: float = 5.0, heartbeat: int = 15, cache_size: int = 500,
                 transport: Optional[httpx.BaseTransport] = None):
        if not base_url:
            raise ValueError("base_url is required")
        if not api_key:
            raise ValueError("api_key is required")
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self._token = customer_token
        self._merchant = merchant_account_id
        self.max_retries = max_retries
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.max_retry_after = max_retry_after
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.heartbeat = heartbeat
        self._cache: "OrderedDict[str, _Cached]" = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self.grants = _Grants(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Tollgate":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- permission reads --

    def permissions(self, customid: str) -> PermissionSet:
        """The customer's permissions; from the cache on a 304; the last answer known with
        ``stale=True`` when the server cannot be reached."""
        with self._lock:
            cached = self._cache.get(customid)
        headers = self._read_headers(customid)
        if cached and cached.etag:
            headers["if-none-match"] = f'"{cached.etag}"'
        try:
            r = self._send("GET", "/v1/permissions", params={"customid": customid},
                           headers=headers, ok=(304,))
        except TollgateError as e:
            if cached is not None and e.retryable:
                return _set_of(cached, True)
            raise
        if r.status_code == 304 and cached is not None:
            cached = replace(cached, received_at=time.time())
        else:
            etag = (r.headers.get("etag") or "").removeprefix("W/").strip('"') or None
            cached = _Cached(etag=etag, wire=r.json(), received_at=time.time())
        self._remember(customid, cached)
        return _set_of(cached, False)

    def has(self, customid: str, permission: str) -> bool:
        return self.permissions(customid).has(permission)

    def stream(self, customid: str, *, last_event_id: Optional[str] = None,
               stop: Optional[threading.Event] = None) -> Iterator[PermissionSet]:
        """One connection to ``GET /v1/permissions/stream``: yields the permission set now (unless
        ``last_event_id`` is current) and at every change, until the server ends the stream or
        ``stop`` is set (checked at each event and heartbeat). Raises TollgateError."""
        headers = self._read_headers(customid)
        headers["accept"] = "text/event-stream"
        headers.update(self._auth())
        if last_event_id:
            headers["last-event-id"] = last_event_id
        idle = httpx.Timeout(self.timeout, read=self.heartbeat * 2.5 + 5)
        try:
            with self._http.stream("GET", "/v1/permissions/stream", headers=headers, timeout=idle,
                                   params={"customid": customid, "heartbeat": self.heartbeat}) as r:
                if r.status_code != 200:
                    r.read()
                    raise _error_of(r)
                event, data, ident = "message", [], None
                for line in r.iter_lines():
                    if stop is not None and stop.is_set():
                        return
                    if line == "":
                        if data and event == "permissions":
                            c = _Cached(etag=ident, wire=json.loads("\n".join(data)),
                                        received_at=time.time())
                            self._remember(customid, c)
                            yield _set_of(c, False)
                        event, data = "message", []
                        continue
                    if line.startswith(":"):
                        continue
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)
                    elif name == "id":
                        ident = value
        except httpx.HTTPError as e:
            raise TollgateError(0, "network_error", f"The stream broke: {e}") from e

    def watch(self, customid: str, on_change: Callable[[PermissionSet], None], *,
              transport: str = "auto",
              on_error: Optional[Callable[[TollgateError], None]] = None) -> Callable[[], None]:
        """Calls ``on_change`` (from a background thread) with the customer's permissions now and
        whenever they change; streams, and polls with ETags while streaming fails. Returns the
        function that stops watching."""
        stop = threading.Event()
        delivered: List[Any] = [None]

        def deliver(s: PermissionSet) -> None:
            key = (s.etag, s.stale, tuple(p.is_valid for p in s.permissions))
            if stop.is_set() or key == delivered[0]:
                return
            delivered[0] = key
            try:
                on_change(s)
            except Exception:  # noqa: BLE001 - the app's own error, not the watch's
                pass

        def told(e: TollgateError) -> None:
            if on_error is not None and not stop.is_set():
                try:
                    on_error(e)
                except Exception:  # noqa: BLE001
                    pass

        def run() -> None:
            failures = 0
            streamable = transport != "poll"
            while not stop.is_set():
                if streamable:
                    try:
                        with self._lock:
                            c = self._cache.get(customid)
                        for s in self.stream(customid, last_event_id=c.etag if c else None, stop=stop):
                            failures = 0
                            deliver(s)
                        stop.wait(self._backoff(0))
                        continue
                    except TollgateError as e:
                        told(e)
                        if not e.retryable:
                            if e.status == 404 and transport == "auto":
                                streamable = False
                            else:
                                return
                        failures += 1
                        if transport == "sse" or failures < 2:
                            # The server's Retry-After (a 429 for too many streams) comes first.
                            stop.wait(max(self._backoff(failures), e.retry_after or 0.0))
                            continue
                until = time.monotonic() + 30.0
                while not stop.is_set() and (time.monotonic() < until or transport == "poll"):
                    try:
                        deliver(self.permissions(customid))
                    except TollgateError as e:
                        told(e)
                        if not e.retryable:
                            return
                    stop.wait(self.poll_interval)
                if transport == "auto":
                    streamable = True

        threading.Thread(target=run, name=f"tollgate-watch-{customid}", daemon=True).start()
        return stop.set

    # ---- writes (secret keys) --

    def consume(self, customid: str, permission: str, units: int, *,
                idempotency_key: Optional[str] = None, metadata: Optional[Dict[str, Any]] = None,
                overage: Optional[str] = None) -> Consumption:
        """Consumes ``units`` of a metered permission; not enough: TollgateError
        ``insufficient_balance`` with ``balance``."""
        body: Dict[str, Any] = {"customid": customid, "units": units}
        if metadata is not None:
            body["metadata"] = metadata
        if overage is not None:
            body["overage"] = overage
        r = self._send("POST", f"/v1/permissions/{quote(permission, safe='')}/consume", json_body=body,
                       idempotency_key=idempotency_key)
        self._forget(customid)
        out = r.json()
        return Consumption(balance=out["balance"], consumed=out["consumed"], ledger_id=out["ledger_id"])

    def connect_stripe(self, customid: str, customer_id: str, *, force: Optional[bool] = None,
                       connection_id: Optional[str] = None,
                       idempotency_key: Optional[str] = None) -> CustomerLink:
        """Links a Stripe customer (``cus_…``) to ``customid``."""
        body: Dict[str, Any] = {"customid": customid, "customerid": customer_id}
        if force is not None:
            body["force"] = force
        if connection_id is not None:
            body["connection_id"] = connection_id
        r = self._send("POST", "/v1/connect_stripe", json_body=body, idempotency_key=idempotency_key)
        self._forget(customid)
        link = r.json()
        return CustomerLink(customid=link["customid"], customer_id=link["customerid"],
                            connection_id=link["connection_id"], moved_from=link.get("moved_from"),
                            permissions=[_permission(p, None) for p in link["permissions"]])

    # ---- plumbing --

    def _remember(self, customid: str, c: _Cached) -> None:
        with self._lock:
            self._cache.pop(customid, None)
            self._cache[customid] = c
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _forget(self, customid: str) -> None:
        with self._lock:
            self._cache.pop(customid, None)

    def _auth(self) -> Dict[str, str]:
        h = {"authorization": f"Bearer {self._key}"}
        if self._merchant:
            h["x-merchant-account-id"] = self._merchant
        return h

    def _read_headers(self, customid: str) -> Dict[str, str]:
        t = self._token
        if t is None:
            return {}
        return {"x-customer-token": t if isinstance(t, str) else t(customid)}

    def _backoff(self, attempt: int) -> float:
        return random.random() * min(self.retry_max, self.retry_base * (2 ** attempt))

    def _send(self, method: str, path: str, *, params: Optional[Dict[str, Any]] = None,
              headers: Optional[Dict[str, str]] = None, json_body: Any = None,
              idempotency_key: Optional[str] = None, ok: tuple = ()) -> httpx.Response:
        h = {"accept": "application/json", **self._auth(), **(headers or {})}
        content = None
        if method == "POST":
            h["content-type"] = "application/json"
            h["idempotency-key"] = idempotency_key or str(uuid.uuid4())
            content = json.dumps(json_body if json_body is not None else {})
        attempt = 0
        while True:
            try:
                r = self._http.request(method, path, params=params, headers=h, content=content)
                if r.is_success or r.status_code in ok:
                    return r
                err = _error_of(r)
            except httpx.TimeoutException as e:
                err = TollgateError(0, "timeout", f"No answer within {self.timeout} s.")
                err.__cause__ = e
            except httpx.HTTPError as e:
                err = TollgateError(0, "network_error", f"The server could not be reached: {e}")
                err.__cause__ = e
            if not err.retryable or attempt >= self.max_retries:
                raise err
            wait = err.retry_after if err.retry_after is not None else self._backoff(attempt)
            if wait > self.max_retry_after:
                raise err
            time.sleep(wait)
            attempt += 1
