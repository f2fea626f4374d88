"""The Puskesos pages in a real headless Chromium (Debian's), against a real intake service
on a real port, real NATS and PostgreSQL; the registry lookup is answered in the test."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket

import pytest
import uvicorn

from contracts import wilayah
from services.intake.app import create_app
from services.kit.auth import Principal, Role, issue_token
from services.kit.migrations import migrate
from tests.factories import nik
from tests.integration.intake_support import fake_registry, person

playwright = pytest.importorskip("playwright.async_api")

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
KEC = "331701"
VILLAGE, OTHER_VILLAGE = wilayah.villages_in(KEC)[:2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(settings):
    """The intake app under uvicorn, in this event loop, on a free port."""
    await migrate("intake", settings.db_url("intake"))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@contextlib.asynccontextmanager
async def chromium():
    async with playwright.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
        try:
            yield browser
        finally:
            await browser.close()


def tok(settings, role: Role, area: str, user: str) -> str:
    return issue_token(Principal(user=user, role=role, area=area), settings.auth_secret)


async def login(browser, base: str, token: str):
    ctx = await browser.new_context()
    ctx.set_default_timeout(8_000)  # a page that is not there fails fast, not after 30 s
    page = await ctx.new_page()
    await page.goto(f"{base}/ui/")
    assert page.url.endswith("/ui/masuk")  # not logged in: sent to the login page
    await page.fill("#token", token)
    await page.click("#login-token button")
    await page.wait_for_url(f"{base}/ui/")
    return page


async def test_front_office_registers_and_back_office_refers(settings, nc):
    known = nik(VILLAGE, dt.date(1955, 8, 9), "F")
    async with fake_registry(nc, settings, {known: person(known, VILLAGE, ["pkh"])}), serving(settings) as base, \
            chromium() as browser:
        page = await login(browser, base, tok(settings, Role.village_office, VILLAGE, "fo-sri"))
        assert "Selamat datang" in await page.inner_text("h1")

        # look the citizen up first; their programs show; register from the result
        await page.click("main >> text=Cek warga")
        await page.fill("#cek-nik", known)
        await page.click("main button[type=submit]")
        assert "pkh" in await page.inner_text("#people")
        await page.click("#people a")
        assert await page.input_value("#nik") == known

        # register: a bad NIK is refused with a message that says what is wrong, input kept
        await page.fill("#nik", "1234")
        await page.select_option("#category", "not_receiving_aid")
        await page.fill("#text", "Bantuan PKH bulan ini belum cair")
        await page.click("main button[type=submit]")
        err = await page.inner_text(".error")
        assert "NIK" in err and "16 digits" in err
        assert await page.input_value("#text") == "Bantuan PKH bulan ini belum cair"

        await page.fill("#nik", known)
        await page.select_option("#channel", "phone")
        await page.click("main button[type=submit]")
        ticket = await page.inner_text("#ticket")
        assert ticket.startswith(f"PSK-{VILLAGE}-")
        assert "Terdaftar" in await page.inner_text("#person")
        assert "pkh" in await page.inner_text(".facts")

        # follow the case by ticket from the home page
        await page.goto(f"{base}/ui/")
        await page.fill("#tiket", ticket.lower())
        await page.click("form[action='/ui/cari'] button")
        assert ticket in await page.inner_text("h1")

        # back office: queue -> answer -> refer to the kecamatan
        await page.click("text=Antrean")
        assert "1 kasus" in await page.inner_text(".muted")
        await page.click(f"text={ticket}")
        await page.fill("#answer", "Sedang kami cek ke pendamping PKH")
        await page.click("form[action$='/answer'] button")
        assert "Dijawab" in await page.inner_text("#status")
        await page.fill("#note-refer", "Perlu keputusan kecamatan")
        await page.click("form[action$='/refer'] button")
        assert "Kecamatan" in await page.inner_text("#level")
        assert await page.locator("form[action$='/resolve']").count() == 0  # no longer ours to act on
        history = await page.inner_text("#history")
        assert "fo-sri" in history and "Dirujuk" in history and "Perlu keputusan kecamatan" in history

        # another village's office cannot see it
        other = await login(browser, base, tok(settings, Role.village_office, OTHER_VILLAGE, "fo-lain"))
        resp = await other.goto(f"{base}/ui/kasus/{ticket}")
        assert resp.status == 404 and "tidak ditemukan" in await other.inner_text(".error")
        await other.goto(f"{base}/ui/antrean")
        assert "Tidak ada kasus" in await other.inner_text("main")

        # the kecamatan supervisor resolves it
        kec = await login(browser, base, tok(settings, Role.kecamatan, KEC, "slrt-kec"))
        await kec.click("text=Buka antrean")
        await kec.click(f"text={ticket}")
        await kec.select_option("#outcome", "resolved")
        await kec.fill("#note-resolve", "Bantuan dicairkan")
        await kec.click("form[action$='/resolve'] button")
        assert "Selesai" in await kec.inner_text("#status")
        assert "slrt-kec" in await kec.inner_text("#history")

        # a forged or expired cookie is no login
        bad = await browser.new_context()
        bad.set_default_timeout(8_000)
        await bad.add_cookies([{"name": "sinergi_token", "value": "nonsense", "url": base}])
        p = await bad.new_page()
        await p.goto(f"{base}/ui/antrean")
        assert p.url.endswith("/ui/masuk")
        await p.fill("#token", "nonsense")
        await p.click("#login-token button")
        assert "tidak sah" in await p.inner_text(".error")


async def test_proposal_shown_when_not_in_registry(settings, nc):
    async with fake_registry(nc, settings, {}), serving(settings) as base, chromium() as browser:
        page = await login(browser, base, tok(settings, Role.village_office, VILLAGE, "fo-tari"))
        await page.goto(f"{base}/ui/daftar")
        new = nik(VILLAGE, dt.date(1988, 1, 2), "M")
        await page.fill("#nik", new)
        await page.fill("#name", "Slamet")
        await page.fill("#no_kk", f"{VILLAGE[:6]}0101200077")
        await page.select_option("#category", "excluded_from_program")
        await page.fill("#text", "Belum terdaftar di DTKS")
        await page.click("main button[type=submit]")
        assert "diusulkan" in await page.inner_text("#person")
        await page.goto(f"{base}/ui/cek?nik={new}")
        assert "Tidak ditemukan" in await page.inner_text("#not-found")


async def test_login_with_a_staff_account(settings, nc, tmp_path):
    from services.kit.users import UsersFile

    users = UsersFile(tmp_path / "users.json")
    users.add("sri", "kata-sandi-panjang-1", Role.village_office, VILLAGE)
    settings = settings.model_copy(update={"users_file": str(tmp_path / "users.json")})
    async with serving(settings) as base, chromium() as browser:
        ctx = await browser.new_context()
        ctx.set_default_timeout(8_000)
        page = await ctx.new_page()
        await page.goto(f"{base}/ui/masuk")
        await page.fill("#username", "sri")
        await page.fill("#password", "salah-sekali-ini")
        await page.click("#login-password button")
        assert "salah" in await page.inner_text(".error")
        await page.fill("#username", "sri")
        await page.fill("#password", "kata-sandi-panjang-1")
        await page.click("#login-password button")
        await page.wait_for_url(f"{base}/ui/")
        assert "sri" in await page.inner_text("header")
        cookie = next(c for c in await ctx.cookies() if c["name"] == "sinergi_token")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        # a disabled account is out at once, cookie or not
        users.set_disabled("sri")
        await page.goto(f"{base}/ui/antrean")
        assert page.url.endswith("/ui/masuk")


async def test_companion_files_a_visit_and_the_coordinator_sees_it(settings, nc):
    import httpx

    from contracts.agency import EnrolmentStatus
    from contracts.registry import EnrolmentChange, EnrolmentsChanged
    from tests.conftest import eventually
    from tests.factories import kk
    from tests.integration.intake_support import publish_event

    elders = [nik(VILLAGE, dt.date(1939, 3, 1 + i), "F") for i in range(2)]
    async with serving(settings) as base, chromium() as browser:
        await publish_event(nc, settings, EnrolmentsChanged(changes=[EnrolmentChange(
            nik=e, no_kk=kk(VILLAGE), village_code=VILLAGE, birth_date=dt.date(1939, 3, 1),
            programme_identifier="kamalia_merekah", enrolment_status=EnrolmentStatus.active,
            status_change_date=dt.date(2026, 1, 1), reported_by="kamalia_merekah") for e in elders]))
        coord = {"Authorization": "Bearer " + tok(settings, Role.coordinator, KEC, "koord")}
        async with httpx.AsyncClient(base_url=base) as http:
            async def assign(n):
                r = await http.post("/assignments", json={"companion": "wati", "nik": n}, headers=coord)
                return r.status_code == 201
            for e in elders:
                await eventually(lambda n=e: assign(n))

        page = await login(browser, base, tok(settings, Role.companion, KEC, "wati"))
        await page.click("main >> text=Penerima manfaat saya")
        assert (await page.inner_text("#caseload")).count("Belum dikunjungi") == 2
        await page.select_option("#v-who", f"{elders[0]}/kamalia_merekah")
        await page.select_option("#v-physical", "poor")
        await page.check("input[name=needs][value=health]")
        await page.fill("#v-notes", "Atap bocor di kamar")
        await page.click("#visit-form button[type=submit]")
        await page.wait_for_selector("#antrian li.sent")
        await page.reload()
        assert (await page.inner_text("#caseload")).count("Belum dikunjungi") == 1
        # the visited person is no longer offered this month
        assert await page.locator(f"#v-who option[value='{elders[0]}/kamalia_merekah']").is_disabled()

        boss = await login(browser, base, tok(settings, Role.coordinator, KEC, "koord"))
        await boss.click("main >> text=Rekap kunjungan")
        row = await boss.inner_text("#recap tbody tr")
        assert row.split("\t")[:4] == ["wati", "2", "1", "1"] and elders[1] in row
