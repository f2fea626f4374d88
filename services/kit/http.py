"""What every service's HTTP API shares: one error body, the status codes a route documents,
paging bounds, and text that PostgreSQL can store.

Every 4xx/5xx answer of every service is an `ErrorBody` (`{"error": "...", "details": [...]}`):
FastAPI's own shapes (`{"detail": ...}` for HTTPException, HTTPValidationError for 422) are
replaced by the handlers `install_errors` adds, and the OpenAPI documents ErrorBody for each
status code a route can answer (`responses(...)`, added by `require(...)` in kit.auth)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

# paging: an offset past 10 million rows is no page anyone reads, and PostgreSQL refuses an
# OFFSET beyond a bigint (9223372036854775808 answered 500 before this bound, issue 15)
MAX_OFFSET = 10_000_000
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")]


def _no_nul(v: str | None) -> str | None:
    # PostgreSQL text cannot hold U+0000 (asyncpg: "invalid byte sequence"): refuse it here, as
    # bad input with a field name, instead of a 500 from the INSERT
    if v is not None and "\x00" in v:
        raise ValueError("must not contain the NUL character (\\u0000)")
    return v


NoNul = AfterValidator(_no_nul)
"""Annotate free text that is stored: `Annotated[str, NoNul, Field(...)]`."""


class Problem(BaseModel):
    field: str = Field(default="", description="where in the request (query, path, body field), if known")
    problem: str


class ErrorBody(BaseModel):
    """The one shape of every error answer, in every service."""
    error: str = Field(description="what went wrong, in plain words")
    details: list[Problem | str | dict[str, Any]] = Field(
        default_factory=list, description="field by field problems (422) or further facts")


STATUS_TEXT = {400: "bad request", 401: "no valid staff token", 403: "not allowed for this role, area or program",
               404: "not found (or outside your area)", 409: "conflicts with the current state",
               422: "invalid request", 429: "too many requests", 503: "a dependency is unavailable"}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or a dependency: each code documented with ErrorBody."""
    return {c: {"model": ErrorBody, "description": STATUS_TEXT.get(c, "error")} for c in codes}


def error_json(status: int, error: str, details: list[Any] | None = None,
               headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(error=error, details=details or []).model_dump(mode="json"),
                        status_code=status, headers=headers)


def _body_of(detail: Any) -> tuple[str, list[Any]]:
    """An HTTPException's detail ({"error": ..., "problems": [...]} in Sinergi, a string from
    Starlette) as ErrorBody fields; other keys of a dict become details."""
    if isinstance(detail, dict):
        error = str(detail.get("error", "error"))
        details = list(detail.get("problems") or detail.get("details") or [])
        rest = {k: v for k, v in detail.items() if k not in ("error", "problems", "details")}
        return error, details + ([rest] if rest else [])
    return str(detail), []


def install_errors(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        error, details = _body_of(exc.detail)
        return error_json(exc.status_code, error, details, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        # say what is wrong, field by field, without echoing the whole input back
        errors = [{"field": ".".join(str(p) for p in e["loc"] if p != "body"), "problem": e["msg"]}
                  for e in exc.errors()]
        return error_json(422, "invalid request", errors)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with its default 422 body (HTTPValidationError, never sent) replaced
    by ErrorBody everywhere."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    if "ErrorBody" not in schemas:
        schemas.update(ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}").pop("$defs", {}))
        schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas["ErrorBody"].pop("$defs", None)
    for item in doc.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            r422 = op["responses"].get("422")
            if r422 is not None:
                op["responses"]["422"] = {"description": STATUS_TEXT[422],
                                          "content": {"application/json": {"schema": ref}}}
    for path, route in api_routes(app.routes):
        for method in route.methods or ():
            op = doc.get("paths", {}).get(path, {}).get(method.lower())
            if op is None:
                continue
            for code in sorted(error_codes(route)):
                op["responses"].setdefault(str(code), {"description": STATUS_TEXT.get(code, "error"),
                                                       "content": {"application/json": {"schema": ref}}})
    app.openapi_schema = doc
    return doc


def api_routes(routes: Any, prefix: str = "") -> Iterator[tuple[str, APIRoute]]:
    """(path, route) of every APIRoute, through routers FastAPI includes lazily."""
    for r in routes:
        if hasattr(r, "original_router"):
            yield from api_routes(r.original_router.routes, prefix + (r.include_context.prefix or ""))
        elif isinstance(r, APIRoute):
            yield prefix + r.path, r


def dependency_calls(route: APIRoute) -> list[Any]:
    """Every dependency callable of a route, depth first (require(...) instances among them)."""
    out: list[Any] = []

    def walk(d: Any) -> None:
        out.append(d.call)
        for sub in d.dependencies:
            walk(sub)
    walk(route.dependant)
    return out


def error_codes(route: APIRoute) -> set[int]:
    """The error statuses a route may answer, from what it declares: a staff token (401, and
    403 for role, area or program), a path parameter (404: missing or outside your area),
    any input (400/422: refused input), a write (409: conflicts with the current state)."""
    from services.kit.auth import current_principal

    d = route.dependant
    codes: set[int] = set()
    if current_principal in dependency_calls(route):
        codes |= {401, 403}
    if d.path_params:
        codes.add(404)
    if d.path_params or d.query_params or d.body_params or d.header_params:
        codes |= {400, 422}
    if (route.methods or set()) & {"POST", "PUT", "PATCH", "DELETE"}:
        codes.add(409)
    return codes
