"""Cross-program conflicts: flagged once, queued for a verifier, announced as registry events."""
from __future__ import annotations

import pytest

from services.kit.auth import Role
from services.registry import store
from tests import factories
from tests.integration.registry_support import auth, count, events, send

pytestmark = pytest.mark.integration


async def test_programs_disagreeing_on_a_name_are_flagged_once_and_the_identity_is_kept(settings, nc, start):
    pkh = factories.enrolment("pkh", name="Siti Aminah")
    variant = {**pkh, "message_id": "variant", "programme_identifier": "kis", "name": "Sitti Aminah"}
    other = {**pkh, "message_id": "other", "programme_identifier": "bpnt", "name": "Sumarni"}
    again = {**other, "message_id": "other-again", "status_change_date": "2026-03-01"}
    async with start("registry", settings) as registry:
        await send(nc, settings, [pkh])
        got = await send(nc, settings, [variant, other])
        assert {r["status"] for r in got.values()} == {"succ"}  # enrolments are accepted; identity is questioned
        await send(nc, settings, [again])
        h = auth(settings)
        r = await registry.http.get("/data-quality", headers=h)
        assert r.status_code == 200
        q = r.json()
        assert q["total"] == 1
        item = q["items"][0]
        assert item["kind"] == "name_mismatch" and item["nik"] == pkh["nik"]
        assert item["programme_identifiers"] == ["bpnt", "pkh"]
        assert item["details"]["registry"]["name"] == "Siti Aminah" and item["details"]["report"]["name"] == "Sumarni"
        person = (await registry.http.get(f"/people/{pkh['nik']}", headers=h)).json()
        assert person["name"] == "Siti Aminah" and len(person["enrolments"]) == 3
        flagged = await events(nc, settings, "registry.conflict_flagged", 1)
        assert len(flagged) == 1
        data = flagged[0]["data"]
        assert data == {"conflict_id": item["id"], "nik": pkh["nik"], "kind": "name_mismatch",
                        "village_code": pkh["village_code"], "programme_identifiers": ["bpnt", "pkh"]}
        assert "name" not in data  # no personal data beyond the key

        # a verifier resolves it; the queue is paginated and filterable
        far = auth(settings, Role.verifier, area="3317999999")
        assert (await registry.http.post(f"/data-quality/{item['id']}/resolve", json={"resolution": "checked KK"},
                                         headers=far)).status_code == 404  # outside your area: as if missing
        assert (await registry.http.post(f"/data-quality/{item['id']}/resolve", json={"resolution": "checked KK"},
                                         headers=auth(settings, Role.village_office))).status_code == 403
        r = await registry.http.post(f"/data-quality/{item['id']}/resolve",
                                     json={"resolution": "KK shows Siti Aminah"}, headers=h)
        assert r.status_code == 200
        assert (await registry.http.post(f"/data-quality/{item['id']}/resolve", json={"resolution": "again"},
                                         headers=h)).status_code == 409
        assert (await registry.http.get("/data-quality", headers=h)).json()["total"] == 0
        assert (await registry.http.get("/data-quality", params={"status": "resolved"}, headers=h)).json()["total"] == 1


async def test_a_death_reported_while_another_program_pays_is_flagged(settings, nc, start):
    reps = [factories.enrolment("pkh") for _ in range(3)]
    dead = [{**r, "message_id": f"dead-{i}", "programme_identifier": "bpnt", "enrolment_status": "deceased",
             "status_change_date": "2026-04-01"} for i, r in enumerate(reps)]
    async with start("registry", settings) as registry:
        await send(nc, settings, reps)
        await send(nc, settings, dead)
        # the third one: pkh reports the exit first, so nothing to flag
        await send(nc, settings, [{**reps[2], "message_id": "exit", "enrolment_status": "exited",
                                   "status_change_date": "2026-05-01"}])
        h = auth(settings)
        page1 = (await registry.http.get("/data-quality", params={"limit": 1}, headers=h)).json()
        page2 = (await registry.http.get("/data-quality", params={"limit": 1, "offset": 1}, headers=h)).json()
        assert page1["total"] == 3 and len(page1["items"]) == 1 and len(page2["items"]) == 1
        assert page1["items"][0]["id"] != page2["items"][0]["id"]
        both = (await registry.http.get("/data-quality", params={"kind": "death_while_active", "limit": 10},
                                        headers=h)).json()
        assert both["total"] == 3
        assert all(i["details"] == {"deceased_in": ["bpnt"], "active_in": ["pkh"]} for i in both["items"])
        assert await count(registry, store.data_quality) == 3
        # the same situation reported again is not flagged twice
        await send(nc, settings, [{**dead[0], "message_id": "dead-again", "status_change_date": "2026-04-02"}])
        assert await count(registry, store.data_quality) == 3
        flagged = await events(nc, settings, "registry.conflict_flagged", 3)
        assert sorted(e["data"]["kind"] for e in flagged) == ["death_while_active"] * 3
