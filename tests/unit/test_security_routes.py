"""Every HTTP route of every service asks for a staff token (kit.auth.current_principal, via
`require(...)`), except the few listed here on purpose. A new route without authentication
fails this test until it gets `Depends(require(...))` or a reason in PUBLIC."""
from __future__ import annotations

import importlib

import pytest
from fastapi.routing import APIRoute

from services.kit.auth import current_principal
from services.kit.settings import SERVICES, Settings

# (service, method, path) -> why no token is needed
PUBLIC = {
    **{(s, "GET", "/healthz"): "liveness probe" for s in SERVICES},
    **{(s, "GET", "/readyz"): "readiness probe (says only ok/unavailable)" for s in SERVICES},
    **{(s, "POST", "/auth/token"): "the login itself" for s in SERVICES},
    **{(s, "GET", "/metrics"): "Prometheus scrape: counts and latencies by route template, no personal data; "
                               "keep it off the public reverse proxy (docs/OPERATIONS.md)" for s in SERVICES},
}
# route prefixes that check the login themselves (the browser pages: kit.web's cookie, or the
# login page itself)
OWN_CHECK = {(s, "/ui") for s in SERVICES}
# aggregate counts per village/program, published for transparency (Bappeda, the public)
AGGREGATES = {("reporting", "/reports/"), ("reporting", "/dashboard"), ("reporting", "/publik")}
# routes found open by this test and accepted for now (none)
KNOWN_GAPS: set[tuple[str, str, str]] = set()


def _deps(d):
    yield d.call
    for sub in d.dependencies:
        yield from _deps(sub)


def _walk(routes, prefix=""):
    for r in routes:
        if hasattr(r, "original_router"):  # FastAPI includes routers lazily
            yield from _walk(r.original_router.routes, prefix + (r.include_context.prefix or ""))
        elif isinstance(r, APIRoute):
            yield prefix + r.path, r


def _unauthenticated(service: str) -> set[tuple[str, str, str]]:
    app = importlib.import_module(f"services.{service}.app").create_app(Settings(_env_file=None))
    out = set()
    for path, route in _walk(app.routes):
        if current_principal not in set(_deps(route.dependant)):
            out |= {(service, m, path) for m in route.methods}
    return out


@pytest.mark.parametrize("service", SERVICES)
def test_every_route_requires_a_staff_token_unless_listed(service):
    open_routes = _unauthenticated(service)
    unexplained = {r for r in open_routes if r not in PUBLIC and r not in KNOWN_GAPS
                   and not any(r[0] == s and r[2].startswith(p) for s, p in OWN_CHECK | AGGREGATES)}
    assert not unexplained, f"routes without authentication: {sorted(unexplained)}"


def test_the_walk_sees_protected_routes_too():
    """Guard against a walker that finds nothing (which would make the test above vacuous)."""
    app = importlib.import_module("services.disbursement.app").create_app(Settings(_env_file=None))
    paths = {p for p, _r in _walk(app.routes)}
    assert "/cycles/{program}/{period}" in paths and "/auth/me" in paths
    assert ("disbursement", "POST", "/cycles/{program}/{period}") not in _unauthenticated("disbursement")


@pytest.mark.parametrize("service", SERVICES)
def test_openapi_documents_one_error_body_and_the_codes_each_route_may_answer(service):
    """Issue 15: the OpenAPI omitted 400/401/403 and documented a 422 body (FastAPI's
    HTTPValidationError) that no service sends. Every error is kit.http.ErrorBody now."""
    app = importlib.import_module(f"services.{service}.app").create_app(Settings(_env_file=None))
    doc = app.openapi()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert set(schemas["ErrorBody"]["required"]) == {"error"}
    protected = {(m, p) for p, r in _walk(app.routes) if current_principal in set(_deps(r.dependant))
                 for m in r.methods}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for code, resp in op["responses"].items():
                if code.startswith(("4", "5")):
                    ref = resp["content"]["application/json"]["schema"]["$ref"]
                    # a probe's 503 is its readiness report (which check failed), not an error body
                    expected = "/Readiness" if (method, path, code) == ("get", "/readyz", "503") else "/ErrorBody"
                    assert ref.endswith(expected), (method, path, code)
            if (method.upper(), path) in protected:
                assert {"401", "403"} <= set(op["responses"]), (method, path)
            if "{" in path:
                assert "404" in op["responses"], (method, path)


def test_require_shows_its_roles_to_the_route_table():
    """The authorization matrix (tests/integration/test_authz_matrix.py) reads who may call a
    route from its require(...): the roles must stay readable there."""
    from services.kit.auth import Role, require
    from services.kit.http import api_routes, dependency_calls

    app = importlib.import_module("services.registry.app").create_app(Settings(_env_file=None))
    found = {p: c.roles for p, r in api_routes(app.routes) for c in dependency_calls(r) if isinstance(c, require)}
    assert found["/data-quality/{conflict_id}/resolve"] == (Role.verifier,)


# JSON routes that answer no pydantic model, each with its reason; the list may only shrink
UNTYPED = {
    ("reporting", "GET", "/reports/monthly.xlsx"): "a workbook (binary), documented as its media type",
}


@pytest.mark.parametrize("service", SERVICES)
def test_every_json_route_answers_a_model(service):
    """95 route functions answered bare dicts (issue 15): a model makes the OpenAPI show the
    shape and lets schemathesis (tests/integration/test_api_fuzz.py) check every answer."""
    import typing

    from pydantic import BaseModel

    from services.kit.http import api_routes

    def typed(rm) -> bool:
        if typing.get_origin(rm) is list:
            rm = typing.get_args(rm)[0]
        return isinstance(rm, type) and issubclass(rm, BaseModel)

    app = importlib.import_module(f"services.{service}.app").create_app(Settings(_env_file=None))
    bare = {(service, m, p) for p, r in api_routes(app.routes) if r.include_in_schema
            and getattr(r.response_class, "__name__", "") not in ("HTMLResponse", "PlainTextResponse")
            and not typed(r.response_model) for m in r.methods}
    assert bare <= set(UNTYPED), sorted(bare - set(UNTYPED))
