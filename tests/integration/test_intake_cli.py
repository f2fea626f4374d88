"""`sinergi intake escalate --now ...` against the real database; the service publishes."""
from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from typer.testing import CliRunner

from services.cli import app
from services.kit.auth import Role
from tests.conftest import eventually
from tests.integration.intake_support import fake_registry, intake_events, token
from tests.integration.test_intake_cases import VILLAGE_A, case_body

pytestmark = pytest.mark.integration


async def test_cli_escalates_overdue_cases(settings, nc, start):
    front = token(settings, Role.village_office, VILLAGE_A)
    env = {"SINERGI_DATABASE_URL": settings.database_url, "SINERGI_DB_PREFIX": settings.db_prefix,
           "SINERGI_NAMESPACE": settings.namespace}
    async with fake_registry(nc, settings, {}), start("intake", settings) as svc:
        case = (await svc.http.post("/cases", json=case_body(VILLAGE_A, name="Parmi"), headers=front)).json()
        runner = CliRunner()
        bad = await asyncio.to_thread(runner.invoke, app, ["intake", "escalate", "--now", "2026-11-30T09:00"], env=env)
        assert bad.exit_code != 0 and "timezone" in bad.output
        later = (dt.datetime.fromisoformat(case["due_at"]) + dt.timedelta(hours=1)).isoformat()
        res = await asyncio.to_thread(runner.invoke, app, ["intake", "escalate", "--now", later], env=env)
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout[res.stdout.index("{"):res.stdout.rindex("}") + 1])
        assert out["escalated"] == 1 and out["cases"][0]["ticket"] == case["ticket"]
        # the running service's relay publishes the CLI's outbox rows
        evs = await eventually(lambda: _one(intake_events(nc, settings, "intake.case_escalated")))
        assert evs[0]["data"]["case_id"] == case["case_id"] and evs[0]["data"]["level"] == "kecamatan"


async def _one(coro):
    evs = await coro
    return evs or None
