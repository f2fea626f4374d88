"""Verification validity as program data (issue 17), against real NATS and PostgreSQL: a program
that requires a verification says how long one stays valid; the registry announces each
verification that runs past it once (registry.verifications_expired), and the verifier's round
worklist shows who is due."""
from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from contracts.registry import VerificationsExpired
from services.cli import app
from services.kit.auth import Role
from services.registry import programs, store
from tests import factories
from tests.conftest import eventually
from tests.integration.registry_support import auth, drain, send
from tests.integration.test_registry_proposals import define

pytestmark = pytest.mark.integration

V = "3317012001"
REQUIRES = "kamalia_merekah"   # requires a verification, valid 6 months
FREE = "kube"                  # requires none


async def expiries(nc, settings) -> list[dict]:
    """Every registry.verifications_expired event so far (envelopes), each checked against the contract."""
    got = await drain(nc.jetstream(), settings.names.event(VerificationsExpired.event_type),
                      settings.names.stream("REGISTRY"), wait=0.5)
    for env in got:
        VerificationsExpired.model_validate(env["data"])
    return got


async def verified(http, settings, niks: list[str], area: str = V) -> str:
    """A round with `niks` verified in it; returns its id."""
    verifier = auth(settings, Role.verifier)
    r = await http.post("/verification-rounds", json={"area": area}, headers=verifier)
    assert r.status_code == 201, r.text
    rid = r.json()["round_id"]
    for nik in niks:
        r = await http.post(f"/verification-rounds/{rid}/results", json={"nik": nik, "result": "verified"},
                            headers=verifier)
        assert r.status_code == 200, r.text
    return rid


async def backdate(svc, nik: str, months: int) -> None:
    """As if the person's verification had been recorded `months` ago."""
    async with svc.rt.sessions.begin() as s:
        await s.execute(sa.update(store.verification_results).where(store.verification_results.c.nik == nik)
                        .values(recorded_at=sa.func.now() - sa.func.make_interval(0, months)))


async def test_a_verification_past_its_validity_is_announced_once(settings, nc, start):
    a = factories.enrolment(REQUIRES, village_code=V)
    b = factories.enrolment(FREE, village_code=V)
    async with start("registry", settings) as registry:
        http = registry.http
        await define(http, settings, REQUIRES, "regency", requires_verification=True, validity_months=6)
        await define(http, settings, FREE, "regency")
        await send(nc, settings, [a, b])
        await verified(http, settings, [a["nik"], b["nik"]])
        await backdate(registry, a["nik"], 7)
        await backdate(registry, b["nik"], 7)
        now = dt.datetime.now(dt.UTC)

        assert await programs.expire_verifications(registry.rt, now=now - dt.timedelta(days=62)) == 0
        assert await programs.expire_verifications(registry.rt, now=now) == 1
        got = await expiries(nc, settings)
        assert len(got) == 1
        [item] = got[0]["data"]["expiries"]
        assert (item["nik"], item["programme_identifiers"], item["village_code"]) == (a["nik"], [REQUIRES], V)
        assert dt.date.fromisoformat(item["expired_on"]) < now.date()

        # idempotent: a second scan (the timer, or an operator's command) announces nothing new
        assert await programs.expire_verifications(registry.rt, now=now) == 0
        assert len(await expiries(nc, settings)) == 1

        # a new verification counts from its own date, and runs out in its turn
        await verified(http, settings, [a["nik"]], area="3317")
        assert await programs.expire_verifications(registry.rt, now=now + dt.timedelta(days=150)) == 0
        assert await programs.expire_verifications(registry.rt, now=now + dt.timedelta(days=200)) == 1
        assert len(await expiries(nc, settings)) == 2


async def test_expiries_travel_in_batches_of_at_most_max_items(settings, nc, start, monkeypatch):
    monkeypatch.setattr(programs, "MAX_ITEMS", 2)
    people = [factories.enrolment(REQUIRES, village_code=V) for _ in range(5)]
    async with start("registry", settings) as registry:
        await define(registry.http, settings, REQUIRES, "regency", requires_verification=True, validity_months=1)
        await send(nc, settings, people)
        await verified(registry.http, settings, [p["nik"] for p in people])
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=62)
        assert await programs.expire_verifications(registry.rt, now=later, batch=3) == 5
        got = await expiries(nc, settings)
        sizes = sorted(len(e["data"]["expiries"]) for e in got)
        assert max(sizes) <= 2 and sum(sizes) == 5
        assert sorted(i["nik"] for e in got for i in e["data"]["expiries"]) == sorted(p["nik"] for p in people)
        assert len({e["event_id"] for e in got}) == len(got)


async def test_the_round_worklist_shows_who_is_due(settings, nc, start):
    lapsed = factories.enrolment(REQUIRES, village_code=V)      # verified 7 months ago: expired
    fresh = factories.enrolment(REQUIRES, village_code=V)       # verified today: valid past this round
    never = factories.enrolment(REQUIRES, village_code=V)       # never verified
    free = factories.enrolment(FREE, village_code=V)            # its program requires no verification
    async with start("registry", settings) as registry:
        http = registry.http
        await define(http, settings, REQUIRES, "regency", requires_verification=True, validity_months=6)
        await define(http, settings, FREE, "regency")
        await send(nc, settings, [lapsed, fresh, never, free])
        await verified(http, settings, [lapsed["nik"], fresh["nik"]], area="3317")
        await backdate(registry, lapsed["nik"], 7)
        verifier = auth(settings, Role.verifier)
        rid = (await http.post("/verification-rounds", json={"area": V}, headers=verifier)).json()["round_id"]

        page = (await http.get(f"/verification-rounds/{rid}/unverified", headers=verifier)).json()
        by_nik = {i["nik"]: i for i in page["items"]}
        assert page["total"] == 4
        assert by_nik[lapsed["nik"]]["due"] is True and by_nik[lapsed["nik"]]["due_programmes"] == [REQUIRES]
        assert dt.date.fromisoformat(by_nik[lapsed["nik"]]["verification_due_on"]) < dt.date.today()
        assert by_nik[never["nik"]]["due"] is True and by_nik[never["nik"]]["verification_due_on"] is None
        assert by_nik[fresh["nik"]]["due"] is False
        assert by_nik[free["nik"]]["due"] is False and by_nik[free["nik"]]["due_programmes"] == []

        due = (await http.get(f"/verification-rounds/{rid}/unverified", params={"due_only": "true"},
                              headers=verifier)).json()
        assert due["total"] == 2 and {i["nik"] for i in due["items"]} == {lapsed["nik"], never["nik"]}

        # the service's own clock finds the lapsed one (this scan, or the timer's if it came first)
        await programs.expire_verifications(registry.rt)
        [event] = await expiries(nc, settings)
        assert [i["nik"] for i in event["data"]["expiries"]] == [lapsed["nik"]]


async def test_no_staff_route_takes_a_clock(settings, start):
    async with start("registry", settings) as registry:
        spec = registry.app.openapi()
    params = {p["name"] for path in spec["paths"].values() for op in path.values() if isinstance(op, dict)
              for p in op.get("parameters", [])}
    assert not params & {"now", "clock", "today", "as_of_now"}


async def test_an_operator_runs_the_expiry_scan_with_a_clock(settings, nc, start):
    """`sinergi registry expire-verifications --now ...`: the operator's catch-up or rehearsal;
    the running registry publishes what the command queued."""
    env = {"SINERGI_DATABASE_URL": settings.database_url, "SINERGI_DB_PREFIX": settings.db_prefix,
           "SINERGI_NAMESPACE": settings.namespace}
    a = factories.enrolment(REQUIRES, village_code=V)
    async with start("registry", settings) as registry:
        await define(registry.http, settings, REQUIRES, "regency", requires_verification=True, validity_months=6)
        await send(nc, settings, [a])
        await verified(registry.http, settings, [a["nik"]])
        runner = CliRunner()
        bad = await asyncio.to_thread(runner.invoke, app, ["registry", "expire-verifications", "--now", "2027-06-01"],
                                      env=env)
        assert bad.exit_code != 0 and "timezone" in bad.output
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=200)).isoformat()
        res = await asyncio.to_thread(runner.invoke, app, ["registry", "expire-verifications", "--now", later], env=env)
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout[res.stdout.index("{"):res.stdout.rindex("}") + 1]) == {"expired": 1}
        got = await eventually(lambda: _some(expiries(nc, settings)))
        assert [i["nik"] for e in got for i in e["data"]["expiries"]] == [a["nik"]]


async def _some(coro):
    got = await coro
    return got or None
