"""The verifier's pages (registry, issue 14) in real Chromium, at phone and desktop widths:
proposals decided, the data-quality queue resolved (a death reported while another program
pays included), a verification round opened, worked and closed, a person's and a household's
pages with history; one form done with the keyboard only; nothing outside the area shown.
Screenshots go to SINERGI_SCREENSHOTS (default: a temporary folder)."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import json
import os
import tempfile
from pathlib import Path

import httpx
import pytest
import uvicorn

from services.kit.auth import Role
from services.kit.migrations import migrate
from services.registry.app import create_app
from tests import factories
from tests.browser.test_intake_pages import _free_port, chromium, tok
from tests.integration.registry_support import auth, send

pytestmark = pytest.mark.integration

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
SHOTS = Path(os.environ.get("SINERGI_SCREENSHOTS") or tempfile.mkdtemp(prefix="sinergi-shots-"))
SHOTS.mkdir(parents=True, exist_ok=True)
KEC = "331701"


@contextlib.asynccontextmanager
async def serving(settings, service: str = "registry", port: int | None = None):
    await migrate(service, settings.db_url(service))
    port = port or _free_port()
    app = create_app(settings) if service == "registry" else importlib.import_module(
        f"services.{service}.app").create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
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


async def open_page(browser, base: str, token: str, viewport: dict, js: bool = True):
    ctx = await browser.new_context(viewport=viewport, java_script_enabled=js)
    ctx.set_default_timeout(8_000)
    page = await ctx.new_page()
    outside: list[str] = []

    async def only_here(route):  # no CDN, no web font: nothing leaves the machine
        if route.request.url.startswith(base):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()
    await page.route("**/*", only_here)
    await page.goto(f"{base}/ui/usulan")
    assert "/ui/masuk?next=" in page.url  # not logged in: the login page, coming back here after
    await page.fill("#token", token)
    await page.click("#login-token button")
    await page.wait_for_url(f"{base}/ui/usulan")
    return page, outside


async def shot(page, name: str) -> None:
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def proposal(name: str, village: str, born: dt.date) -> dict:
    return {"nik": factories.nik(village, born, "F"), "no_kk": factories.kk(village), "name": name, "sex": "F",
            "birth_date": born.isoformat(), "village_code": village, "address": "Dukuh Krajan RT 2",
            "programme_identifier": "kamalia_merekah"}


async def seed(nc, settings, base: str, village: str, other: str) -> dict:
    """Two proposals in the village and one in another kecamatan; four enrolled people, one of
    them reported under another name by a second program, one reported dead by PKH while
    Kamalia still pays."""
    front = auth(settings, Role.village_office, area=village, user="puskesos-1")
    far = auth(settings, Role.village_office, area=other, user="puskesos-far")
    props = [proposal("Ngatijem", village, dt.date(1941, 2, 3)), proposal("Tukinah", village, dt.date(1950, 6, 7))]
    outside = proposal("Orang Luar", other, dt.date(1945, 1, 1))
    async with httpx.AsyncClient(base_url=base) as http:
        for body, h in ((props[0], front), (props[1], front), (outside, far)):
            r = await http.post("/proposals", json=body, headers=h)
            assert r.status_code == 201, r.text
            body["proposal_id"] = r.json()["proposal_id"]
    people = [factories.enrolment("pkh", village_code=village, birth=dt.date(1950 + i, 1, 2)) for i in range(4)]
    same_kk = {**people[1], "no_kk": people[0]["no_kk"]}
    people[1] = same_kk
    await send(nc, settings, people)
    renamed = {**people[0], "message_id": "k-1", "programme_identifier": "kamalia", "name": "Siti Aminah Wati"}
    dead = {**people[2], "message_id": "d-1", "enrolment_status": "deceased", "status_change_date": "2026-03-05"}
    kamalia = {**people[2], "message_id": "k-2", "programme_identifier": "kamalia", "status_change_date": "2026-03-10"}
    await send(nc, settings, [renamed])
    await send(nc, settings, [kamalia])
    await send(nc, settings, [dead])
    return {"props": props, "outside": outside, "people": people}


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
async def test_a_verifier_decides_resolves_and_works_a_round(settings, nc, viewport):
    size = "desktop" if viewport is DESKTOP else "phone"
    village, other = "3317012001", "3317022001"
    async with serving(settings) as base, chromium() as browser:
        data = await seed(nc, settings, base, village, other)
        # no JavaScript at all: every page is plain HTML forms
        page, outside = await open_page(browser, base, tok(settings, Role.verifier, KEC, "dinsos-ani"), viewport,
                                        js=False)
        assert await page.locator("html").get_attribute("lang") == "id"
        assert "dinsos-ani" in await page.inner_text("#who") and "Verifikator" in await page.inner_text("#who")

        # proposals: only the kecamatan's two; a rejection needs a reason
        assert "2 usulan" in await page.inner_text("#jumlah")
        assert "Orang Luar" not in await page.inner_text("main")
        await shot(page, f"registry-usulan-{size}")
        first = page.locator("article", has_text="Ngatijem")
        await first.locator("input[value=rejected]").check()
        await first.locator("button").click()
        assert "alasan wajib" in await page.inner_text("#pesan")
        first = page.locator("article", has_text="Ngatijem")
        await first.locator("input[value=accepted]").check()
        await first.locator("button").click()
        assert "Ngatijem diterima" in await page.inner_text("#pesan")
        second = page.locator("article", has_text="Tukinah")
        await second.locator("input[value=rejected]").check()
        await second.locator("textarea").fill("Sudah terdaftar di KK lain")
        await second.locator("button").click()
        assert "Tukinah ditolak: Sudah terdaftar di KK lain" in await page.inner_text("#pesan")
        assert "Tidak ada usulan" in await page.inner_text("main")
        await page.click(".tabs >> text=Ditolak")
        assert "dinsos-ani" in await page.inner_text("main") and "Sudah terdaftar di KK lain" in await page.inner_text("main")

        # the data-quality queue: a name disagreement and a death while another program pays
        await page.goto(f"{base}/ui/")
        await shot(page, f"registry-beranda-{size}")
        assert await page.inner_text("#n-mutu") == "2"
        await page.click("main >> text=Buka antrean mutu data")
        await shot(page, f"registry-mutu-{size}")
        name_item = page.locator("article", has_text="Nama berbeda")
        assert "Siti Aminah Wati" in await name_item.inner_text()
        await name_item.locator("textarea").fill("Dicek ke KK: nama yang benar Siti Aminah")
        await name_item.locator("button").click()
        assert "tersimpan" in await page.inner_text("#pesan")
        death = page.locator("article", has_text="Dilaporkan meninggal")
        assert "Diperselisihkan" in await death.inner_text()
        await death.locator("input[value=deceased]").check()
        await death.locator("textarea").fill("Kunjungan rumah: meninggal 5 Maret, surat kematian desa")
        await death.locator("button").click()
        assert "status hidup: Meninggal" in await page.inner_text("#pesan")
        assert "Tidak ada temuan" in await page.inner_text("main")

        # the dead person's page: life status and its history, enrolments, identity reports
        await page.goto(f"{base}/ui/warga/{data['people'][2]['nik']}")
        assert "Meninggal" in await page.inner_text("#status-hidup")
        assert "Verifikator" in await page.inner_text("#riwayat-hidup")
        assert "kamalia" in await page.inner_text("#riwayat-kepesertaan")
        await shot(page, f"registry-warga-{size}")
        await page.fill("#pada", "2026-03-07")  # after PKH's death report, before Kamalia's
        await page.click("#pada-tanggal button")
        then = await page.inner_text("#keadaan")
        assert "pkh (Meninggal sejak 2026-03-05)" in then and "kamalia" not in then

        # a verification round: open for the village, record one result, close
        await page.goto(f"{base}/ui/verivali")
        await page.fill("#area", village)
        await page.click("#buka button")
        assert "Putaran dibuka" in await page.inner_text("#pesan")
        worklist = await page.inner_text("#daftar-kerja")
        assert data["people"][0]["nik"] in worklist and data["props"][0]["nik"] in worklist  # the accepted proposal
        await shot(page, f"registry-putaran-{size}")
        nik0 = data["people"][0]["nik"]
        await page.select_option(f"#r-{nik0}", "verified")
        await page.fill(f"#n-{nik0}", "Dikunjungi, data benar")
        await page.locator(f"form.result-form:has(#r-{nik0}) button").click()
        assert "Terverifikasi" in await page.inner_text("#pesan")
        assert nik0 not in await page.inner_text("#daftar-kerja")
        await page.click("#tutup button")
        assert "Putaran ditutup: 1 terverifikasi" in await page.inner_text("#pesan")

        # a household: both members, the head's page one click away; search by No. KK
        await page.goto(f"{base}/ui/warga?no_kk={data['people'][0]['no_kk']}")
        assert (await page.inner_text("#hasil")).count("Siti Aminah") == 2
        await page.click(f"#hasil >> text={data['people'][0]['no_kk']}")
        assert (await page.inner_text("#anggota")).count("pkh") >= 2
        await shot(page, f"registry-keluarga-{size}")

        # outside the area: the same "not found" as a NIK that does not exist
        far_nik = data["outside"]["nik"]
        resp = await page.goto(f"{base}/ui/warga/{far_nik}")
        assert resp.status == 404 and "tidak ditemukan di wilayah Anda" in await page.inner_text(".error")
        resp = await page.goto(f"{base}/ui/warga/{factories.nik(village, dt.date(1999, 9, 9), 'M')}")
        assert resp.status == 404
        # a decision posted for a proposal outside the area: refused as not found, nothing decided
        token = tok(settings, Role.verifier, KEC, "dinsos-ani")
        async with httpx.AsyncClient(base_url=base, cookies={"sinergi_token": token}) as http:
            r = await http.post(f"/ui/usulan/{data['outside']['proposal_id']}/keputusan",
                                data={"decision": "accepted"})
            assert r.status_code == 303 and "Tidak+ditemukan+di+wilayah+Anda" in r.headers["location"]
            r = await http.get(f"/proposals/{data['outside']['proposal_id']}",
                               headers=auth(settings, Role.verifier, user="dinsos-kab"))
            assert r.json()["status"] == "proposed"
        assert not outside, outside


async def test_other_roles_and_the_keyboard(settings, nc):
    """A village office is told the pages are a verifier's; the decision form works with the
    keyboard alone (skip link first, focus always visible)."""
    village = "3317012001"
    async with serving(settings) as base, chromium() as browser:
        front = auth(settings, Role.village_office, area=village, user="puskesos-1")
        async with httpx.AsyncClient(base_url=base) as http:
            r = await http.post("/proposals", json=proposal("Sarinah", village, dt.date(1948, 4, 5)), headers=front)
            assert r.status_code == 201
        ctx = await browser.new_context(viewport=DESKTOP)
        ctx.set_default_timeout(8_000)
        # logged in elsewhere on this host: the cookie is the host's, whichever service set it
        await ctx.add_cookies([{"name": "sinergi_token", "url": base,
                                "value": tok(settings, Role.village_office, village, "puskesos-1")}])
        page = await ctx.new_page()
        resp = await page.goto(f"{base}/ui/usulan")
        assert resp.status == 403 and "untuk verifikator" in await page.inner_text("main")

        page, _ = await open_page(browser, base, tok(settings, Role.verifier, KEC, "dinsos-ani"), DESKTOP)
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Langsung ke isi"
        outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline == "solid"  # the focus is visible
        await page.keyboard.press("Enter")
        # from the content: Tab to the "accept" radio, Space, Tab past "reject" to the reason, Enter on the button
        for _ in range(40):
            await page.keyboard.press("Tab")
            if await page.evaluate("document.activeElement.value") == "accepted":
                break
        else:
            pytest.fail("the accept choice cannot be reached with Tab")
        assert await page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
        await page.keyboard.press("Space")
        await page.keyboard.press("Tab")  # a radio group is one stop: on to the reason
        await page.keyboard.type("Layak, rumah tidak layak huni")
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Simpan keputusan"
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#pesan")
        assert "Sarinah diterima" in await page.inner_text("#pesan")


async def test_one_login_for_the_pages_of_every_service(settings, nc):
    """Logged in on intake's page, a verifier lands on the registry's pages (another port of the
    same host) with the same cookie; logging out there logs out of intake's pages too."""
    ports = {"intake": _free_port(), "registry": _free_port()}
    urls = {svc: f"http://127.0.0.1:{port}" for svc, port in ports.items()}
    settings = settings.model_copy(update={"web_urls": json.dumps(urls)})
    async with serving(settings, "intake", ports["intake"]), serving(settings, "registry", ports["registry"]), \
            chromium() as browser:
        ctx = await browser.new_context(viewport=DESKTOP)
        ctx.set_default_timeout(8_000)
        page = await ctx.new_page()
        await page.goto(f"{urls['intake']}/ui/masuk")
        await page.fill("#token", tok(settings, Role.verifier, KEC, "dinsos-ani"))
        await page.click("#login-token button")
        await page.wait_for_url(f"{urls['registry']}/ui/")  # the verifier's home is the registry's
        assert "dinsos-ani" in await page.inner_text("#who")
        # the menu links to the other services' pages by their own addresses
        assert await page.get_attribute("nav >> text=Realisasi (publik)", "href") == \
            f"http://127.0.0.1:{settings.port('reporting')}/publik/realisasi"
        await page.goto(f"{urls['intake']}/ui/cek")  # the same cookie on intake's port
        assert "dinsos-ani" in await page.inner_text("#who")
        await page.goto(f"{urls['intake']}/ui/")  # intake's home sends a verifier to theirs
        await page.wait_for_url(f"{urls['registry']}/ui/")
        await page.goto(f"{urls['registry']}/ui/")
        await page.click("#who + button")  # Keluar
        await page.wait_for_url(f"{urls['registry']}/ui/masuk")
        await page.goto(f"{urls['intake']}/ui/antrean")
        assert page.url.startswith(f"{urls['intake']}/ui/masuk")  # logged out everywhere
