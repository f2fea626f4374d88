"""The public realisation page (reporting, issue 14) in real Chromium at phone and desktop
widths: no login, nothing leaves the machine, realisation per funding source and per village
adds up to the recap's figures, no NIK, no pseudonym, no staff name, small counts hidden, and
the printed page drops the menu and the form. Screenshots go to SINERGI_SCREENSHOTS."""
from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.browser.test_dashboard import ARGS, CHROMIUM, served  # noqa: F401 - `served` is a fixture
from tests.integration.test_reporting_recap import PERIOD, _paid, publish, publish_known_dataset

pytestmark = pytest.mark.integration
SHOTS = Path(os.environ.get("SINERGI_SCREENSHOTS") or tempfile.mkdtemp(prefix="sinergi-shots-"))
SHOTS.mkdir(parents=True, exist_ok=True)


BUSY, QUIET = "3317012001", "3317022002"  # three people paid in one village, one in the other
EXTRA = 4 * 150_000


def rp(n: int) -> str:
    return "Rp" + f"{n:,}".replace(",", ".")


async def test_the_public_sees_realisation_per_source_and_village(settings, nc, served):  # noqa: F811
    from playwright.async_api import async_playwright
    js = nc.jetstream()
    await publish_known_dataset(js, settings.names)
    for i, village in enumerate((BUSY, BUSY, BUSY, QUIET)):
        paid = _paid(f"v{i}", "rtlh", PERIOD, ("apbdes", 150_000)).model_copy(update={"village_code": village})
        await publish(js, settings.names, paid)
    async with httpx.AsyncClient(base_url=served) as http:
        for _ in range(200):
            r = (await http.get("/reports/monthly", params={"period": PERIOD})).json()
            apbdes = next((s for s in r["funding_sources"] if s["funding_source"] == "apbdes"), {})
            if len(r["funding_sources"]) == 5 and r["visits"]["done"] == 3 and r["complaints"]["resolved"] == 3 \
                    and apbdes.get("realised") == 399_976_000 + EXTRA:
                break
            await asyncio.sleep(0.1)
        recap = {s["label"]: s for s in r["funding_sources"]}
        bad = await http.get("/publik/realisasi", params={"period": "2026-13"})
        assert bad.status_code == 400 and "tidak dikenal" in bad.text

    outside: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        for size, viewport in (("desktop", {"width": 1280, "height": 800}), ("phone", {"width": 390, "height": 844})):
            # no cookie (nobody logged in), no JavaScript
            ctx = await browser.new_context(viewport=viewport, java_script_enabled=False)
            ctx.set_default_timeout(8_000)
            page = await ctx.new_page()

            async def only_here(route):
                if route.request.url.startswith(served):
                    await route.continue_()
                else:
                    outside.append(route.request.url)
                    await route.abort()
            await page.route("**/*", only_here)
            resp = await page.goto(f"{served}/publik/realisasi?period={PERIOD}")
            assert resp.status == 200 and page.url.endswith(f"/publik/realisasi?period={PERIOD}")  # no login
            assert await page.locator("html").get_attribute("lang") == "id"
            assert "Maret 2026" in await page.inner_text("h1")
            sources = await page.inner_text("#per-sumber")
            assert "APBDes" in sources and "46,60 %" in sources and rp(399_976_000 + EXTRA) in sources
            # every source's column in the village table adds up to what the recap says it realised
            foot = await page.locator("#per-desa tfoot td").all_inner_texts()
            labels = await page.locator("#per-desa thead th").all_inner_texts()
            for label, amount in zip(labels[2:2 + len(recap)], foot[1:1 + len(recap)], strict=True):
                assert amount == rp(recap[label]["realised"]), label
            rows = {}
            for tr in await page.locator("#per-desa tbody tr").all():
                cells = [c.strip() for c in await tr.locator("th, td").all_inner_texts()]
                rows[cells[1]] = cells
            assert set(rows) == {"Ronggo Mulyo", "Sendangmulyo", "Desa tidak tercatat"}, rows
            assert rows["Ronggo Mulyo"][-1] == "3" and rows["Sendangmulyo"][-1] == "< 3"  # one person: not shown
            body = await page.inner_text("body")
            assert not re.search(r"\d{16}", body)  # no NIK, no No. KK
            assert "pseudo-" not in body and "pm-1" not in body  # no pseudonym, no staff name
            assert "Masuk petugas" in await page.inner_text("header")
            await page.screenshot(path=str(SHOTS / f"publik-realisasi-{size}.png"), full_page=True)
            if size == "desktop":
                await page.emulate_media(media="print")
                assert not await page.locator("#pilih-bulan").is_visible()
                assert await page.locator("#per-desa").is_visible()
                await page.screenshot(path=str(SHOTS / "publik-realisasi-print.png"), full_page=True)
            await ctx.close()
        await browser.close()
    assert outside == [], f"the page tried to reach {outside}"
