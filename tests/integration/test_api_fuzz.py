"""The HTTP APIs under hostile input (issue 15), on real NATS and PostgreSQL.

First the server errors fuzzing found, one test each (each answered 5xx before); then
property-based tests: schemathesis generates requests from each service's own OpenAPI and
checks that none answers a server error and every answer matches its documented schema."""
from __future__ import annotations

import datetime as dt
import uuid

import jwt
import pytest

from contracts import wilayah
from services.kit.auth import ALGORITHM, AUDIENCE, Role
from tests.factories import kk, nik
from tests.integration.intake_support import token

pytestmark = pytest.mark.integration

VILLAGE = wilayah.villages_in("331701")[0]
HUGE = "9223372036854775808"  # one past PostgreSQL's bigint


def _is_error_body(r) -> bool:
    body = r.json()
    return isinstance(body.get("error"), str) and isinstance(body.get("details"), list) and "detail" not in body


async def test_intake_offsets_nul_text_and_a_lookup_without_letters(settings, start):
    front = token(settings, Role.village_office, VILLAGE)
    async with start("intake", settings) as svc:
        r = await svc.http.get("/cases", params={"offset": HUGE}, headers=front)
        assert r.status_code == 422 and _is_error_body(r), r.text
        body = {"reporter": {"name": "Siti\u0000Aminah"}, "village_code": VILLAGE, "category": "not_receiving_aid",
                "channel": "walk_in", "kind": "complaint", "text": "tidak menerima\u0000 bantuan"}
        r = await svc.http.post("/cases", json=body, headers=front)
        assert r.status_code == 422 and _is_error_body(r), r.text
        fields = {d["field"] for d in r.json()["details"]}
        assert {"reporter.name", "text"} <= fields and "NUL" in r.text
        r = await svc.http.get("/lookup", params={"name": "%", "village_code": VILLAGE}, headers=front)
        assert r.status_code == 422 and "no letters" in r.json()["error"], r.text


async def test_registry_offsets_and_nul_in_a_proposed_name(settings, start):
    verifier = token(settings, Role.verifier, "")
    async with start("registry", settings) as svc:
        for path in ("/proposals", "/data-quality"):
            r = await svc.http.get(path, params={"offset": HUGE}, headers=verifier)
            assert r.status_code == 422 and _is_error_body(r), (path, r.text)
        born = dt.date(1970, 5, 6)
        r = await svc.http.post("/proposals", headers=verifier, json={
            "nik": nik(VILLAGE, born, "F"), "no_kk": kk(VILLAGE), "name": "Siti\u0000", "sex": "F",
            "birth_date": born.isoformat(), "village_code": VILLAGE})
        assert r.status_code == 422 and _is_error_body(r) and "NUL" in r.text, r.text


async def test_a_month_13_and_a_token_with_an_integer_area(settings, start):
    manager = token(settings, Role.program_manager, "")
    async with start("disbursement", settings) as svc:
        r = await svc.http.put(f"/kube/groups/{uuid.uuid4()}/savings/{nik(VILLAGE, dt.date(1980, 1, 2), 'M')}/2026-13",
                               json={"amount": 10_000}, headers=manager)
        assert r.status_code == 422 and _is_error_body(r), r.text
        now = int(dt.datetime.now(dt.UTC).timestamp())
        bad = jwt.encode({"sub": "x", "role": "program_manager", "area": 3317, "aud": AUDIENCE, "iat": now,
                          "exp": now + 600}, settings.auth_secret, algorithm=ALGORITHM)
        r = await svc.http.get("/auth/me", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401 and r.json()["error"] == "invalid token", r.text


# --- property-based: schemathesis against each service's own OpenAPI ------------------------

MAX_EXAMPLES = 25  # per operation: about 1,500 requests over the four services, ~2 minutes at load 10
SKIP = {("POST", "/auth/token")}  # the login: Argon2 and its throttle (tests/unit/test_security_auth.py)


def _role_for(app, method: str, path: str) -> Role:
    """A role the route accepts (read from its require(...)), so the request reaches the route."""
    from services.kit.auth import require
    from services.kit.http import api_routes, dependency_calls

    for p, route in api_routes(app.routes):
        if p == path and method in (route.methods or ()):
            for call in dependency_calls(route):
                if isinstance(call, require) and call.roles:
                    return call.roles[0]
    return Role.kabupaten


def _fuzz(svc, loop) -> tuple[int, list[str]]:
    """Runs in a worker thread (hypothesis is synchronous); each request goes to the service on
    the test's event loop, where its NATS and PostgreSQL connections live. Returns the number
    of requests sent and one line per operation that failed."""
    import schemathesis

    schema = schemathesis.openapi.from_dict(svc.app.openapi())
    sent, failures = [0], []
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) in SKIP:
            continue
        try:
            _fuzz_operation(svc, loop, op, svc.tokens[_role_for(svc.app, op.method.upper(), op.path)], sent)
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{op.method.upper()} {op.path}: {str(exc)[:800]}")
    return sent[0], failures


def _fuzz_operation(svc, loop, op, auth: dict[str, str], sent: list[int]) -> None:
    import asyncio

    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy())
    def check(case):
        kw = case.as_transport_kwargs(base_url="http://svc", headers=auth)
        body = kw.get("data")
        req = svc.http.request(kw["method"], kw["url"], params=kw.get("params"), headers=kw.get("headers"),
                               json=kw.get("json"), content=body if isinstance(body, bytes | str) else None,
                               data=body if isinstance(body, dict) else None, cookies=kw.get("cookies"))
        resp = asyncio.run_coroutine_threadsafe(req, loop).result(timeout=120)
        sent[0] += 1
        case.validate_response(resp, checks=[not_a_server_error, response_schema_conformance])

    check()


@pytest.mark.parametrize("service", ["intake", "registry", "disbursement", "reporting"])
async def test_generated_requests_get_no_server_error_and_answers_match_their_schema(service, settings, start):
    import asyncio
    import contextlib

    from services.kit.principal import Principal
    from services.kit.auth import issue_token

    async with contextlib.AsyncExitStack() as stack:
        if service == "intake":  # intake asks the registry during registration and look-ups
            await stack.enter_async_context(start("registry", settings))
        svc = await stack.enter_async_context(start(service, settings))
        svc.tokens = {r: {"Authorization": "Bearer " + issue_token(Principal(f"fuzz-{r.value}", r, ""),
                                                                    settings.auth_secret)} for r in Role}
        sent, failures = await asyncio.to_thread(_fuzz, svc, asyncio.get_running_loop())
    assert not failures, "\n".join(failures)
    assert sent >= 50, sent  # the generator really ran
