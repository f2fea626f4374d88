"""The area dimension of the authorization matrix (issue 15), generated from the route table on
real NATS and PostgreSQL: a resource that exists in one village, read through every route that
names it, by every role the route accepts, from the caller's own area and from another one.

Own area: a read answers (not 401/403/404). Another area: exactly the answer for a resource
that does not exist (status and body, the id aside; a write whose body is refused first is
refused alike for both), so no answer tells an outsider that a person or a case exists, or
where. Writes are checked from another area only (their own-area answers depend on their
bodies; tests/integration/test_staff_audit.py drives them). A program manager reads only the
cases referred to their programs' agency, so a village case is not theirs in any area."""
from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest

from contracts import wilayah
from services.kit.auth import current_principal, require
from services.kit.http import api_routes, dependency_calls
from services.kit.principal import Role
from tests import factories
from tests.conftest import eventually
from tests.factories import nik
from tests.integration.intake_support import fake_registry, person, token
from tests.integration.registry_support import send

pytestmark = pytest.mark.integration

HERE = wilayah.villages_in("331701")[0]
ELSEWHERE = wilayah.villages_in("331702")[0]  # another kecamatan: not covered by HERE's kecamatan either


def _roles(route) -> set[Role]:
    allowed = set(Role)
    for call in dependency_calls(route):
        if isinstance(call, require):
            allowed &= {r for r in Role if call.allows(r)}
    return allowed


def _routes(app, param: str):
    """(method, path, roles) of every authenticated route whose path names `{param}`."""
    for path, route in api_routes(app.routes):
        if "{" + param + "}" in path and current_principal in dependency_calls(route):
            for method in sorted(route.methods or ()):
                yield method, path, _roles(route)


def _areas_for(role: Role, village: str) -> str:
    """The caller's area code at its own level: a village office holds the village, the
    kecamatan supervisor the kecamatan, everyone else the village (the narrowest they may hold)."""
    return wilayah.kecamatan_of(village) if role is Role.kecamatan else village


def _same(a, b, *ids: str) -> bool:
    """Same status and same body once the ids in it are masked."""
    def mask(text: str) -> str:
        for i in ids:
            text = text.replace(i, "<id>")
        return re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)
    return a.status_code == b.status_code and mask(a.text) == mask(b.text)


async def _check(svc, settings, param: str, existing: str, missing: str, wrong: list[str],
                 not_readers: frozenset[Role] = frozenset()) -> int:
    checked = 0
    for method, path, roles in _routes(svc.app, param):
        for role in sorted(roles, key=lambda r: r.value):
            if role is Role.companion and method == "GET" and "/companions/" in path:
                continue
            other = token(settings, role, _areas_for(role, ELSEWHERE), f"area-{role.value}")
            there = await svc.http.request(method, path.replace("{" + param + "}", existing), json={}, headers=other)
            absent = await svc.http.request(method, path.replace("{" + param + "}", missing), json={}, headers=other)
            if there.status_code in (200, 201, 403) or not _same(there, absent, existing, missing):
                wrong.append(f"{method} {path} as {role.value} of another area: {there.status_code} {there.text[:160]}"
                             f" / unknown: {absent.status_code} {absent.text[:160]}")
            if method == "GET" and role not in not_readers:
                own = token(settings, role, _areas_for(role, HERE), f"area-{role.value}")
                mine = await svc.http.get(path.replace("{" + param + "}", existing), headers=own)
                if mine.status_code in (401, 403, 404) or mine.status_code >= 500:
                    wrong.append(f"{method} {path} as {role.value} of its own area: {mine.status_code} {mine.text[:160]}")
            checked += 1
    return checked


async def test_registry_people_households_and_proposals_by_area(settings, nc, start):
    wrong: list[str] = []
    async with start("registry", settings) as registry:
        rep = factories.enrolment("pkh", village_code=HERE)
        await send(nc, settings, [rep], program="pkh")
        regency = token(settings, Role.verifier, "", "dinsos-1")
        await eventually(lambda: _status(registry, f"/people/{rep['nik']}", regency, 200))
        unknown = factories.enrolment("pkh", village_code=HERE)
        n = await _check(registry, settings, "nik", rep["nik"], unknown["nik"], wrong)
        n += await _check(registry, settings, "no_kk", rep["no_kk"], unknown["no_kk"], wrong)
    assert n >= 4, n  # the walk found the person and household routes
    assert not wrong, "\n".join(wrong)


async def test_intake_cases_by_area(settings, nc, start):
    wrong: list[str] = []
    reporter = nik(HERE, dt.date(1958, 3, 4), "F")
    async with fake_registry(nc, settings, {reporter: person(reporter, HERE, ["pkh"])}), \
            start("intake", settings) as intake:
        front = token(settings, Role.village_office, HERE, "fo-area")
        r = await intake.http.post("/cases", headers=front, json={
            "reporter": {"nik": reporter}, "village_code": HERE, "category": "not_receiving_aid",
            "channel": "walk_in", "kind": "complaint", "text": "Belum menerima bantuan"})
        assert r.status_code == 201, r.text
        case = r.json()
        year = dt.datetime.now(dt.timezone(dt.timedelta(hours=7))).year
        for existing, missing in ((case["ticket"], f"PSK-{HERE}-{year}-999999"),
                                  (case["case_id"], str(uuid.uuid4()))):
            n = await _check(intake, settings, "ref", existing, missing, wrong, frozenset({Role.program_manager}))
    assert n >= 6, n
    assert not wrong, "\n".join(wrong)


async def _status(svc, url: str, headers: dict, want: int) -> bool:
    return (await svc.http.get(url, headers=headers)).status_code == want


async def test_intake_lookup_and_registration_show_nobody_outside_the_area(settings, nc, start):
    """Issue 17: a village office's `/lookup` returned NIK, KK, name and programs of people in
    other villages. A match outside the caller's area now reads exactly as no match, by NIK and
    by name, and a case about such a person proposes them (the verifier sees the existing
    record) instead of showing their programs."""
    there = nik(ELSEWHERE, dt.date(1950, 1, 2), "F")
    nobody = nik(ELSEWHERE, dt.date(1950, 1, 3), "F")
    here = nik(HERE, dt.date(1951, 1, 2), "F")
    people = {there: person(there, ELSEWHERE, ["pkh"], name="Sumiyati"),
              here: person(here, HERE, ["bpnt"], name="Sumiyati")}
    front = token(settings, Role.village_office, HERE, "fo-area")
    async with fake_registry(nc, settings, people), start("intake", settings) as intake:
        a = await intake.http.get("/lookup", params={"nik": there}, headers=front)
        b = await intake.http.get("/lookup", params={"nik": nobody}, headers=front)
        assert a.status_code == b.status_code == 200 and a.json() == b.json() == {"found": False, "people": []}
        mine = (await intake.http.get("/lookup", params={"nik": here}, headers=front)).json()
        assert mine["found"] and mine["people"][0]["nik"] == here
        by_name = await intake.http.get("/lookup", params={"name": "Sumiyati", "village_code": ELSEWHERE},
                                        headers=front)
        assert by_name.json() == {"found": False, "people": []}
        answers = []
        for who in (there, nobody):
            r = await intake.http.post("/cases", headers=front, json={
                "reporter": {"nik": who, "no_kk": who[:6] + "0101200009", "name": "Sumiyati"}, "village_code": HERE,
                "category": "not_receiving_aid", "channel": "walk_in", "kind": "complaint", "text": "Belum terdaftar"})
            assert r.status_code == 201, r.text
            answers.append({k: r.json()[k] for k in ("person_status", "programs", "matches")})
        assert answers[0] == answers[1] == {"person_status": "proposed", "programs": [], "matches": []}
