"""The served OpenAPI document of a running `tollgate serve`: valid OpenAPI 3.1 (checked by
openapi-spec-validator, an implementation independent of the server's), every operation complete,
every `$ref` resolving, and its words meant for Tollgate's users."""

from __future__ import annotations

import re
from typing import Any, Dict, Iterator, Tuple

import requests
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def fetch(tollgate) -> Dict[str, Any]:
    r = requests.get(tollgate.url("/openapi.json"), timeout=30)  # no API key: the document is public
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def operations(doc: Dict[str, Any]) -> Iterator[Tuple[str, str, Dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def refs(value: Any, at: str = "") -> Iterator[Tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "$ref" and isinstance(v, str):
                yield at, v
            else:
                yield from refs(v, f"{at}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from refs(v, f"{at}/{i}")


def resolve(doc: Dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve at {part!r}"
        node = node[part]
    return node


def test_the_served_document_is_valid_openapi_3_1(tollgate):
    doc = fetch(tollgate)
    assert doc["openapi"].startswith("3.1.")
    validate(doc, cls=OpenAPIV31SpecValidator)  # raises with the first error's path
    errors = list(OpenAPIV31SpecValidator(doc).iter_errors())
    assert errors == [], [str(e)[:300] for e in errors[:10]]
    assert doc["servers"][0]["url"] == tollgate.base


def test_every_operation_has_an_id_a_summary_a_tag_a_success_and_an_error(tollgate):
    doc = fetch(tollgate)
    declared = {t["name"] for t in doc["tags"]}
    problems, ids = [], set()
    count = 0
    for method, path, op in operations(doc):
        count += 1
        here = f"{method} {path}"
        if not op.get("operationId"):
            problems.append(f"{here}: no operationId")
        elif op["operationId"] in ids:
            problems.append(f"{here}: duplicate operationId {op['operationId']}")
        ids.add(op.get("operationId"))
        if not (op.get("summary") or "").strip():
            problems.append(f"{here}: no summary")
        if not op.get("tags"):
            problems.append(f"{here}: no tag")
        problems += [f"{here}: undeclared tag {t}" for t in op.get("tags", []) if t not in declared]
        codes = list(op.get("responses", {}))
        if not any(c.startswith("2") for c in codes):
            problems.append(f"{here}: no 2xx response")
        if not any(c.startswith("4") for c in codes):
            problems.append(f"{here}: no 4xx response")
    assert count >= 25, count
    assert problems == [], problems


def test_every_ref_resolves(tollgate):
    doc = fetch(tollgate)
    found = list(refs(doc))
    assert len(found) > 50, len(found)
    for at, ref in found:
        resolve(doc, ref)


def test_the_document_and_the_page_speak_to_users(tollgate):
    doc = fetch(tollgate)
    text = requests.get(tollgate.url("/openapi.json"), timeout=30).text
    for word in (r"seed", r"spec\s*§", r"\btodo\b", r"\bfixme\b"):
        m = re.search(word, text, re.IGNORECASE)
        assert m is None, f"the document says {m.group(0)!r}: …{text[max(m.start() - 80, 0):m.end() + 80]}…"
    info = doc["info"]["description"]
    for name in ("Gr4vy", "Glassfy", "Stripe"):
        assert name in info, name

    page = requests.get(tollgate.url("/docs"), timeout=30)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for word in (r"seed", r"spec\s*§", r"\btodo\b"):
        assert re.search(word, page.text, re.IGNORECASE) is None, word
