"""Issue 12: payee details come from the agency's enrolment report. The registry checks them
(a receipt names what is unusable), keeps them with the person's enrolment, and passes them
to disbursement in registry.enrolments_changed; disbursement keeps them in its own copy."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from services.disbursement import store as dstore
from services.registry import store as rstore
from tests import factories
from tests.conftest import eventually
from tests.integration.registry_support import events, send

pytestmark = pytest.mark.integration
BRI = {"kind": "bank_account", "bank_code": "002", "account_number": "0123456789"}


async def test_financial_address_from_report_to_disbursement(settings, nc, start):
    good = factories.enrolment("kamalia_merekah", financial_address=BRI,
                               proxy={"name": "Budi Santoso", "relationship": "anak"})
    bad_fa = factories.enrolment("kamalia_merekah", financial_address={"kind": "bank_account", "bank_code": "2",
                                                                       "account_number": "12ab"})
    bad_proxy = factories.enrolment("kamalia_merekah", proxy={"relationship": "anak"})
    plain = factories.enrolment("kamalia_merekah")
    async with start("registry", settings) as reg, start("disbursement", settings) as dis:
        got = await send(nc, settings, [good, bad_fa, bad_proxy, plain])
        assert got[good["message_id"]]["status"] == "succ" and got[plain["message_id"]]["status"] == "succ"
        codes = {m: {r["status_reason_code"] for r in got[m]["status_reasons"]} for m in
                 (bad_fa["message_id"], bad_proxy["message_id"])}
        assert codes == {bad_fa["message_id"]: {"rjct.financial_address.invalid"},
                         bad_proxy["message_id"]: {"rjct.proxy.invalid"}}, got
        async with reg.rt.sessions() as s:
            kept = (await s.execute(sa.select(rstore.enrolments.c.payee)
                                    .where(rstore.enrolments.c.nik == good["nik"]))).scalar()
        assert '"account_number":"0123456789"' in kept
        changes = await events(nc, settings, "registry.enrolments_changed", 1, items="changes")
        by_nik = {c["nik"]: c for c in changes}
        assert by_nik[good["nik"]]["payee"]["financial_address"] == BRI
        assert by_nik[plain["nik"]]["payee"] is None

        # a later report without payee details keeps the known ones
        await send(nc, settings, [factories.enrolment("kamalia_merekah", nik=good["nik"], no_kk=good["no_kk"],
                                                      village_code=good["village_code"], birth=dt_of(good),
                                                      effective="2026-02-01")])

        async def in_disbursement():
            async with dis.rt.sessions() as s:
                row = (await s.execute(sa.select(dstore.enrolments.c.payee, dstore.enrolments.c.status_change_date)
                                       .where(dstore.enrolments.c.nik == good["nik"]))).first()
            return row if row and str(row.status_change_date) == "2026-02-01" else None
        row = await eventually(in_disbursement, timeout=15)
        assert row.payee["name"] == "Siti Aminah" and row.payee["proxy"]["name"] == "Budi Santoso"
        assert row.payee["financial_address"] == BRI
        async with reg.rt.sessions() as s:
            kept = (await s.execute(sa.select(rstore.enrolments.c.payee)
                                    .where(rstore.enrolments.c.nik == good["nik"]))).scalar()
        assert '"0123456789"' in kept


def dt_of(report: dict):
    import datetime as dt
    return dt.date.fromisoformat(report["birth_date"])
