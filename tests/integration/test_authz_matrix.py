"""Who may call what, generated from the route table (issue 15), on real NATS and PostgreSQL.

Every authenticated route of every service x every role x program in / out of scope: the
expected answer comes from what the route declares (its `require(...)` roles, kit.auth's
ProgramScope), never from a list kept by hand beside it. Area: a resource outside the caller's
area answers exactly as a missing one (404), so an answer never reveals that it exists."""
from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest

from contracts import wilayah
from services.kit.auth import _program_scope, current_principal, issue_token, require
from services.kit.http import api_routes, dependency_calls
from services.kit.principal import Principal, Role
from tests.factories import nik

pytestmark = pytest.mark.integration

SERVICES = ("intake", "registry", "disbursement", "reporting")
VILLAGE = wilayah.villages_in("331701")[0]
IN_SCOPE, OUT_OF_SCOPE = ("bpnt", "pkh"), ("pkh", "kamalia")  # the route's program is bpnt
PATH_VALUES = {"program": "bpnt", "code": "bpnt", "source": "apbn", "regency": "3317", "year": "2026",
               "fiscal_year": "2026", "period": "2026-11", "month": "2026-11", "village_code": VILLAGE,
               "channel": "bank", "held_on": "2026-11-02"}
# a required query parameter checked by a dependency listed before the principal (reporting's
# `period`) would answer 400 before 401/403: give it, so the answer shows the access decision
QUERY = {"period": "2026-11"}


def _roles(route) -> set[Role]:
    """The roles the route accepts: every require(...) it depends on must allow them."""
    allowed = set(Role)
    for call in dependency_calls(route):
        if isinstance(call, require):
            allowed &= {r for r in Role if call.allows(r)}
    return allowed


def _url(path: str, role: Role) -> str:
    """The route's path with values inside the caller's scope: bpnt, the caller's village, the
    caller themselves as {companion} (a companion sees only their own caseload)."""
    def value(m: re.Match) -> str:
        name = m.group(1)
        if name == "companion":
            return f"matrix-{role.value}"
        if name in PATH_VALUES:
            return PATH_VALUES[name]
        if name in ("nik", "no_kk"):
            return nik(VILLAGE, dt.date(1961, 2, 3), "F")
        return str(uuid.uuid4())  # ids: a resource that does not exist
    return re.sub(r"\{(\w+)(?::\w+)?\}", value, path)


def _auth(settings, role: Role, programs: tuple[str, ...]) -> dict[str, str]:
    p = Principal(user=f"matrix-{role.value}", role=role, area="", programs=programs)
    return {"Authorization": f"Bearer {issue_token(p, settings.auth_secret)}"}


def _authenticated(app):
    for path, route in api_routes(app.routes):
        if current_principal in dependency_calls(route):
            for method in sorted(route.methods or ()):
                yield method, path, route


@pytest.mark.parametrize("service", SERVICES)
async def test_every_route_x_every_role_x_program_scope(service, settings, start):
    wrong: list[str] = []
    async with start(service, settings) as svc:
        routes = list(_authenticated(svc.app))
        assert len(routes) >= 2  # reporting has two (its aggregates are public)
        for method, path, route in routes:
            allowed, scoped = _roles(route), _program_scope in dependency_calls(route)
            r = await svc.http.request(method, _url(path, Role.auditor), json={}, params=QUERY)
            if r.status_code != 401:
                wrong.append(f"{method} {path} without a token: {r.status_code}")
            for role in Role:
                for programs in (IN_SCOPE, OUT_OF_SCOPE):
                    r = await svc.http.request(method, _url(path, role), json={}, params=QUERY,
                                               headers=_auth(settings, role, programs))
                    refused = role not in allowed or (scoped and role is Role.program_manager
                                                      and programs == OUT_OF_SCOPE)
                    if refused != (r.status_code == 403) or r.status_code == 401 or r.status_code >= 500:
                        wrong.append(f"{method} {path} as {role.value} programs={programs}: {r.status_code} "
                                     f"(expected {'403' if refused else 'not 401/403'}) {r.text[:200]}")
                    if r.status_code >= 400 and set(r.json()) != {"error", "details"}:
                        wrong.append(f"{method} {path}: error body {r.text[:200]}")
    assert not wrong, "\n".join(wrong)


def test_every_disbursement_write_naming_a_program_checks_program_scope():
    """A new write route with {program} (or /programs/{code}) without ProgramScope fails here."""
    from services.disbursement.app import create_app
    from services.kit.settings import Settings

    app = create_app(Settings(_env_file=None))
    missing = [f"{m} {p}" for p, route in api_routes(app.routes) for m in route.methods or ()
               if m != "GET" and ("{program}" in p or p.startswith("/programs/{code}"))
               and _program_scope not in dependency_calls(route)]
    assert not missing, missing
    assert any("{program}" in p for p, _r in api_routes(app.routes))  # the walk sees them


async def test_a_program_manager_for_pkh_and_kamalia_may_not_change_bpnt(settings, start):
    async with start("disbursement", settings) as svc:
        out = _auth(settings, Role.program_manager, OUT_OF_SCOPE)
        r = await svc.http.put("/programs/bpnt", headers=out, json={})
        assert r.status_code == 403 and "outside your programs" in r.json()["error"], r.text
        r = await svc.http.put("/allocations/apbn/bpnt/2026", headers=out, json={"ceiling": 1000, "reason": "APBN"})
        assert r.status_code == 403 and "outside your programs" in r.json()["error"], r.text
        r = await svc.http.put("/allocations/apbn/pkh/2026", headers=out,
                               json={"ceiling": 1000, "reason": "APBN 2026"})
        assert r.status_code not in (401, 403), r.text


async def test_outside_your_area_answers_as_missing(settings, start, nc):
    """A person outside the caller's area and a NIK nobody has get the same answer and body shape."""
    from tests import factories
    from tests.conftest import eventually
    from tests.integration.registry_support import auth, send

    async with start("registry", settings) as registry:
        rep = factories.enrolment("pkh")
        await send(nc, settings, [rep], program="pkh")
        here = auth(settings, Role.village_office, area=rep["village_code"])
        await eventually(lambda: _status(registry, f"/people/{rep['nik']}", here, 200))
        far = auth(settings, Role.village_office, area="3317999999")
        nobody = factories.enrolment("pkh", village_code=rep["village_code"])["nik"]
        for path in ("/people/{}", "/people/{}/history"):
            there = await registry.http.get(path.format(rep["nik"]), headers=far)
            missing = await registry.http.get(path.format(nobody), headers=far)
            assert there.status_code == missing.status_code == 404, (there.text, missing.text)
            assert set(there.json()) == set(missing.json()) == {"error", "details"}


async def _status(svc, url: str, headers: dict, want: int) -> bool:
    return (await svc.http.get(url, headers=headers)).status_code == want
