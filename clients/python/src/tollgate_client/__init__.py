"""Tollgate's client for Python backends (``tollgate-client``).

The same surface as the TypeScript package ``@tollgate/client``::

    from tollgate_client import Tollgate

    tg = Tollgate("http://127.0.0.1:8080", "tg_sk_…")
    tg.permissions("user-7")                     # PermissionSet
    tg.has("user-7", "premium")                  # bool
    stop = tg.watch("user-7", print)             # live updates (a background thread)
    tg.consume("user-7", "ai_credits", 5, idempotency_key="gen-981")
    tg.grants.create("user-7", permission="premium", expires_at=None, reason="support")
    tg.connect_stripe("user-7", "cus_…")

The wire field names are those of Tollgate's ``/openapi.json`` (its tests check them against a
live server's document).
"""

from ._client import (
    Consumption,
    CustomerLink,
    ErrorDetail,
    Grant,
    Permission,
    PermissionSet,
    Sku,
    Tollgate,
    TollgateError,
)

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
