"""Field-by-field shape checker for the Stripe objects the sandbox returns.

Every JSON object a test receives (resource, list, deleted object, error body, webhook event) goes
through `problems()` / `assert_shape()`. Three references, in this order of authority:

1. Stripe's current example objects, `<repo>/../shared/stripe-openapi/fixtures3-subset-v2436.json`
   (`resources`): for the resource types it has, our object must have the SAME SET of fields (at
   the top level and in every nested object the fixture spells out) with the same JSON types.
   A fixture value `null` means "nullable": any type or null is fine there. A fixture value that is
   not null (object, string, ...) may be null in ours only where the 2023 schema marks the field
   `nullable`, or, for fields newer than the 2023 schema, where the official library (stripe-python
   16.1, generated from the current spec) types it `Optional[...]`.
   A fixture `{}` (metadata, shipping, payment_method_options, ...) shows no contents: any object is
   fine there, and its contents are checked against the 2023 schema and the library instead.
2. The 2023 schema subset `<repo>/../shared/stripe-openapi/spec3-subset-2023-08-16.json`
   (`components.schemas`): wherever it still describes a field, our value must have its type
   (`type`, `enum`, `nullable`, `anyOf`, `$ref`, `items`, `additionalProperties`; an expandable
   field may be a string id or the expanded object). Resource types absent from the fixtures
   (dispute, account, customer_cash_balance_transaction, deleted objects, errors) are checked
   against it alone: its `required` fields present (unless removed from the API since, i.e.
   unknown to the current library), and no field outside its `properties`...
3. ...unless the current library (stripe-python 16.1's typed resource classes) declares it: that
   is how fields added to the API after 2023 are told from invented ones.

The exemptions below are the only departures from these rules; each one says why.
"""

from __future__ import annotations

import json
import os
import pathlib
import typing
from typing import Any, Dict, List, Optional

import stripe

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get("TOLLGATE_SHARED", str(REPO.parent / "shared")))
_OPENAPI = SHARED / "stripe-openapi"

with open(_OPENAPI / "fixtures3-subset-v2436.json", encoding="utf-8") as _f:
    FIXTURES: Dict[str, Any] = json.load(_f)["resources"]
with open(_OPENAPI / "spec3-subset-2023-08-16.json", encoding="utf-8") as _f:
    SCHEMAS: Dict[str, Any] = json.load(_f)["components"]["schemas"]

# The official library's class for each `object` value (its annotations are the current API).
LIB: Dict[str, type] = {
    "account": stripe.Account,
    "balance_transaction": stripe.BalanceTransaction,
    "charge": stripe.Charge,
    "customer": stripe.Customer,
    "customer_cash_balance_transaction": stripe.CustomerCashBalanceTransaction,
    "cash_balance": stripe.CashBalance,
    "dispute": stripe.Dispute,
    "event": stripe.Event,
    "payment_intent": stripe.PaymentIntent,
    "payment_method": stripe.PaymentMethod,
    "price": stripe.Price,
    "product": stripe.Product,
    "refund": stripe.Refund,
    "webhook_endpoint": stripe.WebhookEndpoint,
    "api_errors": stripe.ErrorObject,
    # Checkout (the generated names `CheckoutSession` and `Item` do not exist in the library)
    "checkout.session": stripe.checkout.Session,
    "item": stripe.LineItem,
    # billing (the generated name would miss these: `line_item` is the invoice line, not
    # Checkout's, and test clocks live in stripe.test_helpers)
    "subscription": stripe.Subscription,
    "subscription_item": stripe.SubscriptionItem,
    "invoice": stripe.Invoice,
    "invoiceitem": stripe.InvoiceItem,
    "line_item": stripe.InvoiceLineItem,
    "invoice_payment": stripe.InvoicePayment,
    "credit_note": stripe.CreditNote,
    "credit_note_line_item": stripe.CreditNoteLineItem,
    "test_helpers.test_clock": stripe.test_helpers.TestClock,
    "plan": stripe.Plan,
}

# ---------------------------------------------------------------------------------------------
# EXEMPTIONS (path = object type, then field names; "[]" for list items)
# ---------------------------------------------------------------------------------------------

# Fixture values that are placeholders, not the real shape: the field is checked against the 2023
# schema and the library only (type, nullability, field names), never against the fixture value.
FIXTURE_PLACEHOLDERS: Dict[str, str] = {
    "payment_intent.next_action":
        "fixture is the stub {'type': 'type'}; a real next_action has `type` plus the one "
        "sub-object it names (redirect_to_url, display_bank_transfer_instructions, ...)",
    "payment_intent.last_payment_error":
        "fixture is the stub {'type': 'idempotency_error'}; the real value is a full API error "
        "(code, decline_code, message, payment_method, ...), checked as `api_errors`",
    "payment_intent.processing":
        "fixture is the stub {'type': 'card'}; null unless the intent is `processing`",
    "payment_intent.transfer_data":
        "fixture shows a Connect destination expanded to an account stub; without a destination "
        "charge it is null (nullable in the 2023 schema)",
    "charge.transfer_data":
        "same as payment_intent.transfer_data: only on Connect destination charges, else null",
    "charge.source":
        "fixture is a legacy Sources object (type ach_credit_transfer); charges made through "
        "PaymentIntents have source null (library: Optional); the field is not in the 2023 schema",
    "payment_method.card.generated_from":
        "fixture holds a stub payment_method_details {'type': 'type'}; null unless the card was "
        "generated from a card-present payment (nullable in the 2023 schema)",
    "customer.discount":
        "fixture is a coupon discount; null for a customer without a coupon (nullable in 2023)",
}

# Fields of a fixture that may be ABSENT from a real object.
OPTIONAL_FIELDS: Dict[str, str] = {
    "credit_note_line_item.invoice_line_item":
        "only on lines of type invoice_line_item (the credit_note fixture's custom_line_item line "
        "has no such field)",
    "credit_note.lines.data[].invoice_line_item":
        "only on lines of type invoice_line_item (as the fixture's own second line shows)",
    "invoice.subscription":
        "removed in API 2025-03-31 (basil) in favour of parent.subscription_details.subscription "
        "(SPEC §4; the current library has no such field); the fixture still lists it as null",
    "charge.refunds":
        "not included by default since API version 2022-11-15 (include with expand[]=refunds); "
        "when present it must be a refund list",
}

# Fields absent from a fixture that Stripe returns only in some states (or only when expanded).
CONDITIONAL_FIELDS: Dict[str, str] = {
    "invoice.payments": "includable: only with expand[] (the invoice's invoice payments)",
    "invoice.confirmation_secret": "includable: only with expand[] (its intent's client secret)",
    "checkout.session.line_items": "includable: only with expand[]",
    "payment_intent.charges":
        "API versions before 2022-11-15 only: the list of the intent's charges (removed from the "
        "API since, so in neither the 2023 schema nor the library); checked as a list of charges",
    "invoiceitem.parent.subscription_details.subscription_item":
        "the subscription item a proration belongs to: on proration items only (library: "
        "Optional[str]); the fixture's item is not a proration",
    "line_item.pricing.price_details":
        "the sub-object named by pricing.type (price_details); the fixture shows only the type",
    "invoiceitem.pricing.price_details":
        "the sub-object named by pricing.type (price_details); the fixture shows only the type",
    "customer.cash_balance": "includable: only with expand[]",
    "customer.invoice_credit_balance": "includable: only with expand[]",
    "customer.sources": "includable: only with expand[]",
    "customer.subscriptions": "includable: only with expand[]",
    "customer.tax": "includable: only with expand[]",
    "customer.tax_ids": "includable: only with expand[]",
    "price.currency_options": "includable: only with expand[]",
    "price.tiers": "includable: only with expand[]",
    "webhook_endpoint.secret": "returned only by the create call (and secret rolls)",
    "refund.failure_reason": "present only on failed refunds",
    "refund.failure_balance_transaction": "present only on failed refunds",
    "refund.next_action": "present only on refunds that need a customer action",
    "refund.instructions_email": "present only on refunds that email instructions",
    "refund.description": "present only on non-card refunds",
    "refund.presentment_details": "present only with Adaptive Pricing presentment currencies",
    "refund.destination_details.card.reference":
        "the card network's reference (ARN): present once the network assigns it",
    "refund.destination_details.card.reference_status":
        "status of that reference (pending/available/unavailable): present on card refunds",
    "refund.destination_details.card.reference_type":
        "kind of that reference (acquirer_reference_number...): present on card refunds",
    "charge.outcome.risk_level": "Radar's risk level: present on card charges screened by Radar",
    "charge.outcome.risk_score": "Radar's risk score: present on card charges screened by Radar",
    "charge.outcome.rule": "present when a Radar rule decided the outcome",
    "charge.radar_options": "present only when radar_options were given",
    "charge.transfer": "present only on Connect destination charges",
    "charge.presentment_details": "present only with Adaptive Pricing presentment currencies",
    "charge.payment_method_details.card.capture_before":
        "present on uncaptured (manual capture) card authorizations",
    "payment_intent.presentment_details": "present only with Adaptive Pricing",
    "event.account": "present on events of connected accounts (Stripe-Account)",
    "event.data.previous_attributes": "present on *.updated events: the changed fields' old values",
}

# Objects whose type-specific sub-object is named by their `type` (the fixture shows `card`).
TYPE_KEYED = {"payment_method", "charge.payment_method_details"}

# ---------------------------------------------------------------------------------------------


def jtype(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def raw(obj: Any) -> Any:
    """The JSON the server sent for a library object (its raw response when it has one)."""
    if isinstance(obj, stripe.StripeObject):
        lr = getattr(obj, "last_response", None)
        data = getattr(lr, "data", None) if lr is not None else None
        if isinstance(data, dict) and data.get("id") == obj.get("id") and data.get("object") == obj.get("object"):
            return json.loads(json.dumps(data))
        return obj.to_dict()
    return obj


# ---- 2023 schema helpers ---------------------------------------------------------------------


def resolve(node: Optional[dict]) -> Optional[dict]:
    seen = 0
    while isinstance(node, dict) and "$ref" in node and seen < 20:
        node = SCHEMAS.get(node["$ref"].rsplit("/", 1)[-1])
        seen += 1
    return node


def nullable(node: Optional[dict]) -> bool:
    if not isinstance(node, dict):
        return False
    if node.get("nullable"):
        return True
    r = resolve(node)
    return bool(isinstance(r, dict) and r.get("nullable"))


def object_schema(node: Optional[dict]) -> Optional[dict]:
    """The object-typed schema within a property schema ($ref, anyOf of a $ref, expandables)."""
    node = resolve(node)
    if not isinstance(node, dict):
        return None
    if "anyOf" in node:
        for b in node["anyOf"]:
            r = resolve(b)
            if isinstance(r, dict) and (r.get("type") == "object" or "properties" in r):
                return r
        return None
    if node.get("type") == "object" or "properties" in node:
        return node
    return None


def expandable(node: Optional[dict]) -> bool:
    node = resolve(node)
    if not isinstance(node, dict):
        return False
    if "x-expansionResources" in node:
        return True
    if "anyOf" in node:
        kinds = {resolve(b).get("type") if isinstance(resolve(b), dict) else None for b in node["anyOf"]}
        return "string" in kinds and any(
            isinstance(resolve(b), dict) and "properties" in resolve(b) for b in node["anyOf"])
    return False


def prop(node: Optional[dict], key: str) -> Optional[dict]:
    node = object_schema(node)
    if not isinstance(node, dict):
        return None
    return (node.get("properties") or {}).get(key)


def items_schema(node: Optional[dict]) -> Optional[dict]:
    node = resolve(node)
    if isinstance(node, dict) and "anyOf" in node:
        for b in node["anyOf"]:
            r = resolve(b)
            if isinstance(r, dict) and r.get("type") == "array":
                return r.get("items")
    return node.get("items") if isinstance(node, dict) else None


# ---- library (stripe-python 16.1) helpers ----------------------------------------------------


def lib_class(t: str) -> Optional[type]:
    """stripe-python's class for an `object` value (stripe.Discount for "discount", ...)."""
    if t in LIB:
        return LIB[t]
    name = "".join(part[:1].upper() + part[1:] for part in t.replace(".", "_").split("_"))
    c = getattr(stripe, name, None)
    return c if isinstance(c, type) and issubclass(c, stripe.StripeObject) else None


def _lib_ann(cls: Optional[type]) -> Dict[str, Any]:
    if cls is None:
        return {}
    out: Dict[str, Any] = {}
    for c in reversed(cls.__mro__):
        out.update(getattr(c, "__annotations__", {}) or {})
    return {k: v for k, v in out.items() if not k.startswith("_") and k != "OBJECT_NAME"}


def _lib_field_type(cls: Optional[type], key: str) -> Any:
    ann = _lib_ann(cls)
    return ann.get(key, None)


def lib_knows(cls: Optional[type], key: str) -> bool:
    return key in _lib_ann(cls)


def lib_optional(cls: Optional[type], key: str) -> bool:
    t = _lib_field_type(cls, key)
    return t is not None and type(None) in typing.get_args(t)


def lib_literals(cls: Optional[type], key: str) -> set:
    """Literal values the library allows for a field (current enums, newer than 2023's)."""
    t = _lib_field_type(cls, key)
    out: set = set()
    stack = [t] if t is not None else []
    while stack:
        x = stack.pop()
        if typing.get_origin(x) is typing.Literal:
            out.update(typing.get_args(x))
        else:
            stack.extend(typing.get_args(x))
    return out


def lib_child(cls: Optional[type], key: str) -> Optional[type]:
    """The StripeObject class a field holds (through Optional/List/Union/ExpandableField)."""
    t = _lib_field_type(cls, key)
    if t is None:
        return None
    stack = [t]
    while stack:
        x = stack.pop()
        if isinstance(x, typing.ForwardRef):
            x = getattr(stripe, x.__forward_arg__, None)
        if isinstance(x, str):
            x = getattr(stripe, x, None)
        if isinstance(x, type) and issubclass(x, stripe.StripeObject):
            return x
        stack.extend(typing.get_args(x))
    return None


# ---- the checker -----------------------------------------------------------------------------


class Checker:
    def __init__(self, old: bool = False) -> None:
        # old: an API version before 2025-03-31 (basil): objects are checked against the 2023
        # schema alone (its required fields must be there, even those removed since), never
        # against the current fixtures.
        self.old = old
        self.errors: List[str] = []
        self.where = ""  # display prefix for nested resources ("payment_intent.latest_charge → ")

    def err(self, path: str, msg: str) -> None:
        e = f"{self.where}{path}: {msg}"
        if e not in self.errors:
            self.errors.append(e)

    # entry point for any JSON value that claims to be a Stripe object
    def resource(self, o: Any, at: Optional[str] = None) -> None:
        if not isinstance(o, dict):
            self.err(at or "?", f"expected a Stripe object, got {jtype(o)}")
            return
        t = o.get("object")
        if not isinstance(t, str):
            self.err(at or "?", "no `object` field")
            return
        old = self.where
        if at:
            self.where = f"{old}{at} → "
        try:
            self._resource(o, t)
        finally:
            self.where = old

    def _resource(self, o: dict, t: str) -> None:
        p = t
        if t == "list":
            self.list_object(o, p)
            return
        if o.get("deleted") is True:
            self.deleted(o, t, p)
            return
        fixture = None if self.old else FIXTURES.get(t)
        sch = SCHEMAS.get(t)
        lib = lib_class(t)
        if fixture is None and sch is None:
            if t in LIB:
                self.library_only(o, lib, p)
                return
            self.err(p, f"object type {t!r} is in neither the fixtures nor the 2023 schema")
            return
        if fixture is not None:
            self.against_fixture(o, fixture, sch, lib, t)
        else:
            self.schema_only(o, sch, lib, t)
        if sch is not None:
            self.validate(o, sch, t, lib)

    def list_object(self, o: dict, p: str) -> None:
        want = {"object", "data", "has_more", "url"}
        if set(o) != want:
            self.err(p, f"list object fields {sorted(o)} != {sorted(want)}")
        if not isinstance(o.get("data"), list):
            self.err(p + ".data", "not an array")
        if not isinstance(o.get("has_more"), bool):
            self.err(p + ".has_more", "not a boolean")
        if not (isinstance(o.get("url"), str) and o["url"].startswith("/v1/")):
            self.err(p + ".url", f"not a /v1/ path: {o.get('url')!r}")
        for i, item in enumerate(o.get("data") or []):
            self.resource(item, f"{p}.data[{i}]")

    def deleted(self, o: dict, t: str, p: str) -> None:
        sch = SCHEMAS.get("deleted_" + t)
        if sch is None and lib_knows(lib_class(t), "deleted"):
            # No deleted_ schema in the 2023 subset (test clocks): the library's class declares
            # `deleted`; Stripe's deleted objects are {id, object, deleted: true}.
            if set(o) != {"id", "object", "deleted"}:
                self.err(p, f"deleted object fields {sorted(o)} != ['deleted', 'id', 'object']")
            return
        if sch is None:
            self.err(p, f"no deleted_{t} schema")
            return
        want = set(sch.get("properties", {}))
        if set(o) != want:
            self.err(p, f"deleted object fields {sorted(o)} != {sorted(want)}")
        self.validate(o, sch, p + "(deleted)", None)

    def error_body(self, body: Any) -> None:
        if not isinstance(body, dict) or set(body) != {"error"}:
            self.err("error", f"error body must be exactly {{'error': {{...}}}}, got {body!r:.200}")
            return
        e = body["error"]
        self.schema_only(e, SCHEMAS["api_errors"], LIB["api_errors"], "error")
        self.validate(e, SCHEMAS["api_errors"], "error", LIB["api_errors"])

    # -- fixture comparison

    def against_fixture(self, o: dict, f: dict, sch: Optional[dict], lib: Optional[type], path: str) -> None:
        fkeys = set(f)
        if path in TYPE_KEYED and isinstance(o.get("type"), str) and f.get("type") != o.get("type"):
            ftype = f.get("type")
            fkeys = (fkeys - {ftype}) | {o["type"]}
        for k in sorted(fkeys - set(o)):
            if f"{path}.{k}" not in OPTIONAL_FIELDS:
                self.err(f"{path}.{k}", "missing (the fixture has it)")
        for k in sorted(set(o) - fkeys):
            if f"{path}.{k}" not in CONDITIONAL_FIELDS:
                self.err(f"{path}.{k}", "unexpected field (not in the fixture, not a known conditional field)")
        for k in sorted(set(o) & fkeys):
            fv = f.get(k) if k in f else None
            self.value(o[k], fv, prop(sch, k), lib, k, f"{path}.{k}", k in f)
        for k in sorted(set(o) - fkeys):  # conditional fields: schema/library only
            sub = object_schema(prop(sch, k))
            if isinstance(o[k], dict) and sub is not None and "object" not in o[k]:
                self.schema_only(o[k], sub, lib_child(lib, k), f"{path}.{k}")

    def value(self, ov: Any, fv: Any, psch: Optional[dict], plib: Optional[type], key: str,
              path: str, in_fixture: bool = True) -> None:
        child_lib = lib_child(plib, key)
        if path in FIXTURE_PLACEHOLDERS or not in_fixture:
            if isinstance(ov, dict) and isinstance(ov.get("object"), str) and not path.endswith("last_payment_error"):
                self.resource(ov, path)
            elif isinstance(ov, dict):
                sub = object_schema(psch)
                if path.endswith("last_payment_error"):
                    self.schema_only(ov, SCHEMAS["api_errors"], LIB["api_errors"], path)
                    if isinstance(ov.get("payment_method"), dict):
                        self.resource(ov["payment_method"], path + ".payment_method")
                elif sub is not None:
                    self.schema_only(ov, sub, child_lib, path)
            elif ov is None and psch is not None and not nullable(psch):
                self.err(path, "null, but the 2023 schema does not mark it nullable")
            return
        if key == "metadata" and path.count(".") >= 1 and not path.endswith("[]"):
            # user data: a fixture's metadata keys are only an example; values are strings
            if not isinstance(ov, dict):
                self.err(path, f"metadata must be an object, got {jtype(ov)}")
                return
            for mk, mv in ov.items():
                if not isinstance(mv, str):
                    self.err(f"{path}.{mk}", f"metadata values are strings, got {jtype(mv)}")
            return
        if fv is None:
            # fixture null: nullable, any type; still check objects that say what they are
            if isinstance(ov, dict) and isinstance(ov.get("object"), str):
                self.resource(ov, path)
            elif isinstance(ov, dict):
                sub = object_schema(psch)
                if sub is not None:
                    self.schema_only(ov, sub, child_lib, path)
            return
        if ov is None:
            if psch is not None:
                if not nullable(psch):
                    self.err(path, f"null, but the fixture has {jtype(fv)} and the 2023 schema does not mark it nullable")
            elif not lib_optional(plib, key):
                self.err(path, f"null, but the fixture has {jtype(fv)} and the field is not nullable (not in the 2023 schema, not Optional in the library)")
            return
        ft, ot = jtype(fv), jtype(ov)
        if ft == "number" and ot == "integer":
            return
        if ft == "string" and ot == "object" and (expandable(psch) or (psch is None and child_lib is not None)):
            self.resource(ov, path)  # an expanded field
            return
        if ft != ot:
            self.err(path, f"type {ot} ({ov!r:.60}), fixture has {ft} ({fv!r:.60})")
            return
        if ot == "object":
            if isinstance(ov.get("object"), str) and ov.get("object") == "list":
                self.list_object(ov, path)
            elif isinstance(fv.get("object"), str) and isinstance(ov.get("object"), str) and fv["object"] != ov["object"]:
                self.resource(ov, path)  # e.g. event.data.object: checked as its own type
            elif isinstance(ov.get("object"), str) and ov.get("object") in FIXTURES and isinstance(fv.get("object"), str):
                self.resource(ov, path)
            elif fv == {}:
                sub = object_schema(psch)
                if sub is not None and key != "metadata":
                    self.schema_only(ov, sub, child_lib, path)
                if key == "metadata":
                    for mk, mv in ov.items():
                        if not isinstance(mv, str):
                            self.err(f"{path}.{mk}", f"metadata values are strings, got {jtype(mv)}")
            else:
                self.against_fixture(ov, fv, object_schema(psch), child_lib, path)
        elif ot == "array" and fv:
            isch = items_schema(psch)
            for item in ov:
                self.value(item, fv[0], isch, plib, key, path + "[]")
        elif ot == "array":
            for item in ov:
                if isinstance(item, dict) and isinstance(item.get("object"), str):
                    self.resource(item, path + "[]")

    # -- objects newer than the 2023 schema and absent from the fixtures (invoice_payment)

    def library_only(self, o: dict, lib: Optional[type], path: str) -> None:
        """Every field the current library declares non-Optional present, no field it does not
        declare; nested objects the same way with the library's nested classes."""
        ann = _lib_ann(lib)
        for k, typ in ann.items():
            if k not in o and k != "deleted" and type(None) not in typing.get_args(typ):
                self.err(f"{path}.{k}", "missing (declared, not Optional, in the current library)")
        for k, v in o.items():
            if k not in ann:
                self.err(f"{path}.{k}", "unexpected field (not in the current library)")
            elif v is None and not lib_optional(lib, k):
                self.err(f"{path}.{k}", "null, but the current library does not type it Optional")
            elif isinstance(v, dict) and isinstance(v.get("object"), str):
                self.resource(v, f"{path}.{k}")
            elif isinstance(v, dict):
                child = lib_child(lib, k)
                if child is not None:
                    sub = _lib_ann(child)
                    for sk, sv in v.items():
                        if sk not in sub:
                            self.err(f"{path}.{k}.{sk}", "unexpected field (not in the current library)")
                        elif sv is None and not lib_optional(child, sk):
                            self.err(f"{path}.{k}.{sk}", "null, but the current library does not type it Optional")

    # -- schema-only objects (no fixture, or a fixture {} / placeholder)

    def schema_only(self, o: dict, sch: Optional[dict], lib: Optional[type], path: str) -> None:
        sch = object_schema(sch)
        if sch is None:
            return
        props = sch.get("properties") or {}
        if not props:
            return
        for k in sch.get("required", []) or []:
            if k not in o and (self.old or lib is None or lib_knows(lib, k)):
                self.err(f"{path}.{k}", "missing (required in the 2023 schema and still in the API)")
        for k in sorted(o):
            if k in props or lib_knows(lib, k) or f"{path}.{k}" in CONDITIONAL_FIELDS:
                continue
            self.err(f"{path}.{k}", "unexpected field (in neither the 2023 schema nor the current library)")
        for k, v in o.items():
            # (`event.data` has a member named "object" that is not a type name)
            if isinstance(v, dict) and k in props and not isinstance(v.get("object"), str):
                sub = object_schema(props[k])
                if sub is not None and sub.get("properties"):
                    self.schema_only(v, sub, lib_child(lib, k), f"{path}.{k}")
            elif isinstance(v, dict) and isinstance(v.get("object"), str) and v["object"] != "list" and k != "payment_method":
                self.resource(v, f"{path}.{k}")
            elif isinstance(v, dict) and v.get("object") == "list":
                self.list_object(v, f"{path}.{k}")
            elif isinstance(v, dict) and k == "payment_method":
                self.resource(v, f"{path}.{k}")
            elif isinstance(v, list):
                for i, item in enumerate(v):
                    if isinstance(item, dict) and isinstance(item.get("object"), str):
                        self.resource(item, f"{path}.{k}[{i}]")

    # -- 2023 schema type validation

    def validate(self, v: Any, node: Any, path: str, lib: Optional[type]) -> None:
        for e in self._validate(v, node, path, lib, set()):
            self.err(*e)

    def _validate(self, v: Any, node: Any, path: str, lib: Optional[type] = None,
                  lits: Optional[set] = None) -> List[tuple]:
        """Errors of v against a 2023 schema node. `lib` is the library class of v (objects),
        `lits` the Literal values the library allows for v: a 2023 enum is extended by them."""
        lits = lits or set()
        node = resolve(node)
        if not isinstance(node, dict) or not node:
            return []
        if v is None:
            return [] if node.get("nullable") else [(path, "null, but the 2023 schema does not mark it nullable")]
        if "anyOf" in node:
            best = None
            for b in node["anyOf"]:
                errs = self._validate(v, b, path, lib, lits)
                if not errs:
                    return []
                if best is None or len(errs) < len(best):
                    best = errs
            rb = [resolve(b) for b in node["anyOf"]]
            kinds = [(r.get("type") or ("object" if "properties" in r else "?")) if isinstance(r, dict) else "?" for r in rb]
            same = [b for b, k in zip(node["anyOf"], kinds)
                    if k == jtype(v) or (k == "number" and jtype(v) == "integer")]
            if not same:
                return [(path, f"type {jtype(v)} matches none of {kinds} (2023 schema)")]
            if len(same) == 1:
                return self._validate(v, same[0], path, lib, lits)
            return best or []
        t = node.get("type") or ("object" if "properties" in node else None)
        jt = jtype(v)
        if t is None:
            return []
        if t == "number" and jt == "integer":
            return []
        if t != jt:
            return [(path, f"type {jt} ({v!r:.60}), the 2023 schema says {t}")]
        out: List[tuple] = []
        if "enum" in node and v not in node["enum"] and v not in lits:
            out.append((path, f"{v!r} not among {sorted(set(node['enum']) | lits)} (2023 schema + library)"))
        if t == "array":
            for i, item in enumerate(v):
                out.extend(self._validate(item, node.get("items"), f"{path}[]", lib, lits))
        elif t == "object":
            props = node.get("properties") or {}
            ap = node.get("additionalProperties")
            for k, sub in v.items():
                if k in props:
                    out.extend(self._validate(sub, props[k], f"{path}.{k}", lib_child(lib, k),
                                              lib_literals(lib, k)))
                elif isinstance(ap, dict):
                    out.extend(self._validate(sub, ap, f"{path}.{k}"))
        return out


BASIL = "2025-03-31"


def problems(obj: Any, api_version: Optional[str] = None) -> List[str]:
    """Everything wrong with one Stripe JSON value: resource, list, deleted object or error body.
    With an `api_version` older than 2025-03-31 (basil) the value is checked in that version's
    shape: against the 2023 schema subset alone (see Checker.old)."""
    c = Checker(old=bool(api_version) and api_version[:10] < BASIL)
    data = raw(obj)
    if isinstance(data, dict) and set(data) == {"error"}:
        c.error_body(data)
        e = data.get("error")
        if isinstance(e, dict):
            if isinstance(e.get("payment_intent"), dict):
                c.resource(e["payment_intent"], "error.payment_intent")
            if isinstance(e.get("payment_method"), dict):
                c.resource(e["payment_method"], "error.payment_method")
    else:
        c.resource(data)
    return c.errors


def assert_shape(obj: Any) -> Any:
    errs = problems(obj)
    assert not errs, "shape mismatches:\n  " + "\n  ".join(errs)
    return obj
