"""The coordinator's and the companion's pages in real Chromium (issue 14): the coordinator
assigns, sees coverage and overdue cases per office (desktop and phone); the companion, at
phone width, files a visit report with no connection, sees it kept on the phone, and it is
sent once when the connection returns (also when the first answer is lost); the page works
without JavaScript. Screenshots go to SINERGI_SCREENSHOTS (default: a temporary folder)."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import tempfile
from pathlib import Path

import httpx
import pytest
import uvicorn

from contracts.agency import EnrolmentStatus
from contracts.registry import EnrolmentChange, EnrolmentsChanged
from services.intake import cases
from services.intake.app import create_app
from services.intake.domain import WIB
from services.kit.auth import Principal, Role
from services.kit.migrations import migrate
from tests.browser.test_intake_pages import KEC, OTHER_VILLAGE, VILLAGE, _free_port, chromium, tok
from tests.conftest import eventually
from tests.factories import kk, nik
from tests.integration.intake_support import fake_registry, person, publish_event

pytestmark = pytest.mark.integration

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
SHOTS = Path(os.environ.get("SINERGI_SCREENSHOTS") or tempfile.mkdtemp(prefix="sinergi-shots-"))
SHOTS.mkdir(parents=True, exist_ok=True)


@contextlib.asynccontextmanager
async def serving_app(settings):
    """As the harness's `serving`, also handing over the app (its use cases, for set-up)."""
    await migrate("intake", settings.db_url("intake"))
    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                                           lifespan="on"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def login(browser, base: str, token: str, viewport: dict, **options):
    ctx = await browser.new_context(viewport=viewport, **options)
    ctx.set_default_timeout(8_000)
    page = await ctx.new_page()
    await page.goto(f"{base}/ui/masuk")
    await page.fill("#token", token)
    await page.click("#login-token button")
    await page.wait_for_url(f"{base}/ui/")
    return page


async def shot(page, name: str) -> None:
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def elders_in(village: str, n: int, year: int = 1939) -> list[str]:
    return [nik(village, dt.date(year, 3, 1 + i), "F") for i in range(n)]


async def enrol(nc, settings, people: list[tuple[str, str]]) -> None:
    await publish_event(nc, settings, EnrolmentsChanged(changes=[EnrolmentChange(
        nik=n, no_kk=kk(v), village_code=v, birth_date=dt.date(1939, 3, 1), programme_identifier="kamalia_merekah",
        enrolment_status=EnrolmentStatus.active, status_change_date=dt.date(2026, 1, 1),
        reported_by="kamalia_merekah") for n, v in people]))


async def no_overflow(page) -> None:
    """Nothing wider than the screen (a phone user never scrolls sideways for the page itself)."""
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


async def tab_reaches(page, selector: str, limit: int = 80) -> None:
    """The keyboard alone reaches `selector` (Tab from the top of the page), focus visible."""
    await page.evaluate("document.activeElement && document.activeElement.blur()")
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await page.evaluate(f"document.activeElement && document.activeElement.matches({selector!r})"):
            outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert outline != "none", f"{selector} has no visible focus"
            return
    raise AssertionError(f"Tab never reached {selector}")


CONTRAST = """(sel) => {
  const rgb = s => s.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => { const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
                               return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bg = e => { for (; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
                                                    if (c.length < 4 || c[3] > 0) return c; } return [255, 255, 255]; };
  return [...document.querySelectorAll(sel)].filter(e => e.offsetParent && [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())).map(e => {
    const a = lum(rgb(getComputedStyle(e).color)), b = lum(bg(e));
    return [e.textContent.trim().slice(0, 40), (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
  }).filter(([, r]) => r < 4.5);
}"""


async def low_contrast(page, selector: str = "main *") -> list:
    """Text below WCAG AA (4.5:1) against the background it sits on."""
    return await page.evaluate(CONTRAST, selector)


async def unlabelled(page) -> list[str]:
    """Form controls without an accessible label (a <label for>, a wrapping label or aria-label)."""
    return await page.evaluate("""() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
        .map(e => e.outerHTML)""")


async def test_coordinator_assigns_sees_coverage_and_overdue(settings, nc):
    elders = elders_in(VILLAGE, 3)
    second = elders_in(OTHER_VILLAGE, 1, 1941)[0]
    known = nik(VILLAGE, dt.date(1950, 1, 1), "F")
    async with fake_registry(nc, settings, {known: person(known, VILLAGE, ["pkh"])}), \
            serving_app(settings) as (base, app), chromium() as browser:
        await enrol(nc, settings, [(e, VILLAGE) for e in elders] + [(second, OTHER_VILLAGE)])
        # three weeks ago the village office registered two complaints; one went up to the kecamatan
        office = Principal(user="fo-sri", role=Role.village_office, area=VILLAGE)
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=21)
        tickets = [(await cases.register(app.state.deps, office, cases.CaseIn.model_validate({
            "reporter": {"nik": known}, "village_code": VILLAGE, "category": "not_receiving_aid",
            "channel": "walk_in", "text": "Bantuan belum diterima"}), now=long_ago))["ticket"] for _ in range(2)]
        await cases.act(app.state.deps, office, tickets[0], "refer", note="perlu kecamatan",
                        now=long_ago + dt.timedelta(days=1))

        page = await login(browser, base, tok(settings, Role.coordinator, KEC, "koord"), DESKTOP)
        await page.click("main >> text=Penugasan pendamping")
        await eventually(lambda: _board_rows(page, 4))
        assert await unlabelled(page) == []
        assert "Belum ada" in await page.inner_text(f"#board tr[data-nik='{elders[0]}']")

        # assign two to wati and one to budi with the keyboard-reachable row forms
        for n, who in ((elders[0], "wati"), (elders[1], "wati"), (second, "budi")):
            row = page.locator(f"#board tr[data-nik='{n}']")
            await row.locator("input[name=companion]").fill(who)
            await row.locator("form.assign button").click()
            assert f"ditugaskan ke {who}" in await page.inner_text("#pesan")
            assert who in await page.inner_text(f"#board tr[data-nik='{n}'] td:nth-child(4)")
        # a wrong NIK-less post or a move is explained, not a crash: move elder 1 to budi, then end it
        row = page.locator(f"#board tr[data-nik='{elders[1]}']")
        await row.locator("input[name=companion]").fill("budi")
        await row.locator("form.assign button").click()
        assert "budi" in await page.inner_text(f"#board tr[data-nik='{elders[1]}'] td:nth-child(4)")
        await page.locator(f"#board tr[data-nik='{elders[1]}'] form[action$='/akhiri'] button").click()
        assert "diakhiri" in await page.inner_text("#pesan")
        # the filter: only the unassigned (elder 1 again, and elder 2)
        await page.check("#f-belum")
        await page.click("#filter button")
        assert sorted(await page.locator("#board tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.nik)")) == sorted([elders[1], elders[2]])
        await tab_reaches(page, "#board input[name=companion]")
        assert await low_contrast(page) == []
        await shot(page, "koordinator-penugasan-desktop")

        # wati visits elder 0 this month (through the API, as her phone would)
        wati = {"Authorization": "Bearer " + tok(settings, Role.companion, KEC, "wati")}
        today = dt.datetime.now(WIB).date()
        async with httpx.AsyncClient(base_url=base) as http:
            r = await http.post("/visits", headers=wati, json={
                "nik": elders[0], "visit_date": today.isoformat(), "physical_condition": "fair",
                "social_condition": "good", "aid_use": "as_intended"})
            assert r.status_code == 201, r.text

        await page.click("text=Cakupan kunjungan")
        assert re.search(r"Dikunjungi 1 dari 2 ", await page.inner_text("#total"))
        rows = [r.split("\t") for r in (await page.inner_text("#coverage tbody")).splitlines()]
        assert [r[:4] for r in rows] == [["budi", _name(OTHER_VILLAGE), "0", "1"], ["wati", _name(VILLAGE), "1", "1"]]
        assert await unlabelled(page) == [] and await low_contrast(page) == []
        await shot(page, "koordinator-cakupan-desktop")

        await page.click("text=Kasus lewat tenggat")
        assert "2 kasus" in await page.inner_text("#total")
        rows = [r.split("\t") for r in (await page.inner_text("#overdue tbody")).splitlines()]
        assert [(r[0], r[2]) for r in rows] == [(f"Puskesos {_name(VILLAGE)}", "1"), (f"Kecamatan {_name(KEC)}", "1")]
        body = await page.inner_text("main")
        assert "Bantuan belum diterima" not in body and known not in body and "fo-sri" not in body
        await shot(page, "koordinator-terlambat-desktop")

        # the same pages on a phone: nothing wider than the screen but the tables' own scroll
        phone = await login(browser, base, tok(settings, Role.coordinator, KEC, "koord"), PHONE,
                            is_mobile=True, has_touch=True)
        for path, name in (("/ui/koordinator", "penugasan"), ("/ui/koordinator/cakupan", "cakupan"),
                           ("/ui/koordinator/terlambat", "terlambat")):
            await phone.goto(base + path)
            await no_overflow(phone)
            await shot(phone, f"koordinator-{name}-phone")

        # a companion cannot open the coordinator's pages
        comp = await login(browser, base, tok(settings, Role.companion, KEC, "wati"), PHONE)
        resp = await comp.goto(f"{base}/ui/koordinator")
        assert resp.status == 403


def _name(code: str) -> str:
    from contracts import wilayah
    return wilayah.name_of(code) or code


async def _board_rows(page, n: int) -> bool:
    await page.reload()
    return await page.locator("#board tbody tr[data-nik]").count() == n


async def test_companion_files_offline_and_it_is_sent_once(settings, nc):
    elders = elders_in(VILLAGE, 3, 1938)
    coord = {"Authorization": "Bearer " + tok(settings, Role.coordinator, KEC, "koord")}
    wati_token = tok(settings, Role.companion, KEC, "wati")
    wati = {"Authorization": "Bearer " + wati_token}
    async with serving_app(settings) as (base, _app), chromium() as browser, \
            httpx.AsyncClient(base_url=base) as http:
        await enrol(nc, settings, [(e, VILLAGE) for e in elders])

        async def assign(n):
            r = await http.post("/assignments", json={"companion": "wati", "nik": n}, headers=coord)
            return r.status_code == 201
        for e in elders:
            await eventually(lambda n=e: assign(n))

        async def filed() -> list[dict]:
            return (await http.get("/visits", headers=wati)).json()["items"]

        page = await login(browser, base, wati_token, PHONE, is_mobile=True, has_touch=True)
        await page.click("main >> text=Penerima manfaat saya")
        assert "0 dari 3" in await page.inner_text("#ringkas")
        assert (await page.inner_text("#caseload")).count("Belum dikunjungi") == 3
        assert await unlabelled(page) == []
        await no_overflow(page)
        # the phone keeps the page and its stylesheet (service worker) before the signal goes
        await page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        await eventually(lambda: page.evaluate("caches.has('sinergi-pendamping-v1')"))
        await tab_reaches(page, "#visit-form button[type=submit]")
        assert await low_contrast(page) == []
        await shot(page, "pendamping-daftar-phone")

        # no connection: fill in and send; it is kept on the phone, visibly
        await page.context.set_offline(True)
        await page.select_option("#v-who", f"{elders[0]}/kamalia_merekah")
        await page.select_option("#v-physical", "poor")
        await page.check("#need-health")
        await page.fill("#v-notes", "Atap bocor di kamar")
        await page.click("#visit-form button[type=submit]")
        assert "tersimpan di ponsel, akan dikirim" in await page.inner_text("#kirim-status")
        assert "Tersimpan di ponsel" in await page.inner_text(f"#caseload li[data-nik='{elders[0]}']")
        kept = await page.evaluate("JSON.parse(localStorage.getItem('sinergi.kunjungan.antrian'))")
        assert len(kept) == 1
        assert await low_contrast(page) == []
        await shot(page, "pendamping-offline-phone")
        # still offline, the page opens again from the phone's copy with the report still kept
        offline = await page.goto(f"{base}/ui/pendamping")
        assert offline.from_service_worker and "Penerima manfaat saya" in await page.inner_text("h1")
        assert "tersimpan di ponsel" in await page.inner_text("#kirim-status")
        assert await filed() == []  # nothing reached the server

        # the connection returns: it is sent, once
        await page.context.set_offline(False)
        await page.wait_for_selector("#antrian li.sent")
        assert "terkirim" in await page.inner_text("#antrian")
        assert "1 dari 3" in await page.inner_text("#ringkas")
        assert await low_contrast(page) == []
        assert "Dikunjungi" in await page.inner_text(f"#caseload li[data-nik='{elders[0]}']")
        visits = await filed()
        assert [(v["nik"], v["visit_id"], v["physical_condition"], v["needs"], v["notes"]) for v in visits] == [
            (elders[0], kept[0]["id"], "poor", ["health"], "Atap bocor di kamar")]
        assert await page.evaluate("localStorage.getItem('sinergi.kunjungan.antrian')") == "[]"
        await shot(page, "pendamping-terkirim-phone")

        # the server files the next report but its answer is lost on the way: the phone keeps
        # it, sends it again, and the server answers with the first one (one visit)
        lost = []

        async def lose_answer(route):
            if not lost:
                lost.append(await route.fetch())  # reaches the server
                await route.abort("connectionreset")
            else:
                await route.continue_()
        await page.route("**/ui/pendamping/lapor", lose_answer)
        await page.select_option("#v-who", f"{elders[1]}/kamalia_merekah")
        await page.click("#visit-form button[type=submit]")
        await eventually(lambda: lost)
        assert lost[0].status == 200
        assert "tersimpan di ponsel" in await page.inner_text("#kirim-status")
        await page.evaluate("window.dispatchEvent(new Event('online'))")
        await page.wait_for_selector(f"#caseload li.done[data-nik='{elders[1]}']")
        assert sorted(v["nik"] for v in await filed()) == sorted(elders[:2])

        # without JavaScript the form is a plain post, and works
        plain = await login(browser, base, wati_token, PHONE, java_script_enabled=False)
        await plain.goto(f"{base}/ui/pendamping")
        assert await plain.locator(f"#v-who option[value='{elders[0]}/kamalia_merekah']").is_disabled()
        await plain.select_option("#v-who", f"{elders[2]}/kamalia_merekah")
        await plain.select_option("#v-aid", "partly")
        form_id = await plain.get_attribute("#visit-form input[name=visit_id]", "value")
        await plain.click("#visit-form button[type=submit]")
        assert "terkirim" in await plain.inner_text("#pesan")
        assert "3 dari 3" in await plain.inner_text("#ringkas")
        # the same form posted again (a double tap, a resubmitted page): still one report
        again = await plain.request.post(f"{base}/ui/pendamping/lapor", max_redirects=0, form={
            "visit_id": form_id, "beneficiary": f"{elders[2]}/kamalia_merekah",
            "visit_date": dt.datetime.now(WIB).date().isoformat(), "physical_condition": "good",
            "social_condition": "good", "aid_use": "partly"})
        assert again.status == 303 and "gagal" not in again.headers["location"]
        assert len(await filed()) == 3
