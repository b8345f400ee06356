"""Every status each operation can answer, in the OpenAPI document, with the error body.

FastAPI documents only an operation's success and its 422 (with its own validation schema,
which the API does not answer). `install` amends the generated document once, from one
table of rules: what kind of operation it is (authenticated, with a body, with a path
parameter, a write) says which errors it can answer, and `EXTRA` adds the few that depend on
what the operation does. Every error status refers to `ErrorOut` ({"error": {"code",
"message"}}), the body the handlers of errors.py answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from bollard.server.api.schemas import ErrorOut

API_PREFIX = "/api/v1"

DESCRIPTIONS: dict[int, str] = {
    400: "The body could not be read (not JSON, or not UTF-8).",
    401: "No token, or a token that is unknown, expired or revoked.",
    403: "The token's role does not have the permission this call needs (the message names it).",
    404: "Something the call names does not exist (the message says what).",
    409: "The call conflicts with the current state: the target is busy, exists already, "
    "lacks capacity or is not connected.",
    413: "The request body is larger than the server accepts (1 MiB by default).",
    422: "A parameter or a field of the body is invalid (the message names it and says why).",
    502: "The power controller (BMC) asked answered with a failure.",
    503: "The power controller (BMC) asked could not be reached, or the server cannot do it "
    "now (no free MAC address left); try again later.",
    504: "The power controller (BMC) asked did not answer in time.",
}

# Writes that cannot conflict with anything (they set a value, whatever the state).
NEVER_CONFLICT = {
    ("put", "/api/v1/settings/{key}"),
    ("put", "/api/v1/cluster/maintenance"),
}

# Query parameters that name something: an unknown one is a 404.
NAMING_QUERY = {"vm", "node", "task", "user"}

# What depends on what the operation does: (method, path) -> extra statuses.
EXTRA: dict[tuple[str, str], set[int]] = {
    # The body names a node (`node`, `node_limit`) that may not exist; no free MAC address.
    ("post", "/api/v1/vms"): {404, 503},
    ("post", "/api/v1/reconcile/fix"): {404},
    ("post", "/api/v1/vms/import"): {404},  # the node the copy goes to
    ("post", "/api/v1/tokens"): {404},  # of a user that does not exist
    # The body names a pool, a node or a snapshot's volume that may not exist.
    ("post", "/api/v1/volumes"): {404},
    # Asked of the VM's host: not connected (409).
    ("get", "/api/v1/vms/{name}/console"): {409},
    # Asked of the node's power controller (BMC).
    ("post", "/api/v1/nodes/{name}/power/{action}"): {502, 503, 504},
}

# Successful answers that are not JSON.
OTHER_CONTENT: dict[tuple[str, str], str] = {("get", "/metrics"): "text/plain"}

_METHODS = ("get", "put", "post", "delete", "patch")
_WRITES = ("put", "post", "delete", "patch")
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def statuses(method: str, path: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses an operation can answer, from what the document says of it."""
    found: set[int] = set()
    params = operation.get("parameters", [])
    if operation.get("security") or path.startswith(API_PREFIX):
        found |= {401, 403}
    if "requestBody" in operation:
        found |= {400, 413, 422}
    if params:
        found.add(422)
    if any(p.get("in") == "path" for p in params):
        found.add(404)
    if any(p.get("in") == "query" and p.get("name") in NAMING_QUERY for p in params):
        found.add(404)
    if method in _WRITES and path.startswith(API_PREFIX) and (method, path) not in NEVER_CONFLICT:
        found.add(409)
    return found | EXTRA.get((method, path), set())


def document_errors(document: dict[str, Any]) -> dict[str, Any]:
    """Amend a generated OpenAPI document in place (and return it)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas[ErrorOut.__name__] = error_schema
    ref = {"$ref": f"#/components/schemas/{ErrorOut.__name__}"}
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            answers = operation.setdefault("responses", {})
            for status in sorted(statuses(method, path, operation)):
                answers[str(status)] = {
                    "description": DESCRIPTIONS[status],
                    "content": {"application/json": {"schema": dict(ref)}},
                }
            media = OTHER_CONTENT.get((method, path))
            if media is not None:
                for status, answer in answers.items():
                    if status.startswith("2"):
                        answer["content"] = {media: {"schema": {"type": "string"}}}
    if not any(name in str(document.get("paths")) for name in _FASTAPI_VALIDATION):
        for name in _FASTAPI_VALIDATION:
            schemas.pop(name, None)
    return document


def install(app: FastAPI) -> None:
    """Make `app` serve the amended document (call once its routes are all added)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
