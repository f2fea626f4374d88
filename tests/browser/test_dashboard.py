"""The dashboard in a real headless browser (Debian's Chromium driven by Playwright): it
loads with no request leaving the machine, and its three charts actually draw."""
from __future__ import annotations

import asyncio
import io
import os
import shutil
from pathlib import Path

import httpx
import pytest
import uvicorn

from services.kit.embedded import free_port
from services.kit.migrations import migrate
from tests.integration.test_reporting_recap import PERIOD, publish_known_dataset

pytestmark = pytest.mark.integration
CHROMIUM = os.environ.get("SINERGI_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
README_SHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"


def coloured_pixels(png: bytes) -> int:
    """Pixels that are neither white nor near-grey: bars drawn in the chart colours."""
    from PIL import Image
    img = Image.open(io.BytesIO(png)).convert("RGB")
    return sum(1 for r, g, b in img.getdata() if max(r, g, b) - min(r, g, b) > 40)


@pytest.fixture
async def served(settings):
    """The reporting service on a real TCP port (a browser cannot use the in-process client)."""
    from services.reporting.app import create_app
    await migrate("reporting", settings.db_url("reporting"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, lifespan="on",
                                           log_config=None, access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest.mark.skipif(not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists(), reason="no Chromium installed")
async def test_dashboard_renders_its_charts_offline(settings, nc, served, tmp_path):
    from playwright.async_api import async_playwright
    await publish_known_dataset(nc.jetstream(), settings.names)
    async with httpx.AsyncClient(base_url=served) as http:
        for _ in range(200):
            r = (await http.get("/reports/monthly", params={"period": PERIOD})).json()
            if len(r["funding_sources"]) == 5 and r["visits"]["done"] == 3 and r["complaints"]["resolved"] == 3:
                break
            await asyncio.sleep(0.1)

    outside: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})

        async def only_here(route):
            if route.request.url.startswith(served):
                await route.continue_()
            else:
                outside.append(route.request.url)
                await route.abort()
        await page.route("**/*", only_here)
        resp = await page.goto(f"{served}/dashboard?period={PERIOD}")
        assert resp.status == 200
        assert await page.locator("html").get_attribute("lang") == "id"
        assert await page.locator("h1").inner_text() == "Dasbor penanggulangan kemiskinan"
        text = await page.locator("body").inner_text()
        assert "Realisasi anggaran per sumber dana" in text and "46,53 %" in text and "APBDes" in text

        for section, bars in (("#chart-realisasi", 5), ("#chart-pengaduan", None), ("#chart-kunjungan", 2)):
            chart = page.locator(f"{section} svg.chart")
            await chart.wait_for()
            box = await chart.bounding_box()
            assert box and box["width"] > 300 and box["height"] > 40, section
            if bars is not None:
                assert await chart.locator("rect.bar").count() == bars, section
            shot = await chart.screenshot()
            (tmp_path / f"{section[1:]}.png").write_bytes(shot)
            assert coloured_pixels(shot) > 500, f"{section} drew (almost) nothing"
        # the realisation bar for APBDes (46.53 %) is about half the width of a 100 % bar would be
        bars = dict(await page.locator("#chart-realisasi rect.bar").evaluate_all(
            "els => els.map(e => [e.textContent.split(':')[0], e.getBoundingClientRect().width])"))
        assert 0.44 < bars["APBDes"] / 380 < 0.49 and 0.20 < bars["APBN"] / 380 < 0.24
        assert bars["Baznas"] == 0  # no allocation: no percentage, no bar

        full = await page.screenshot(full_page=True)
        if os.environ.get("SINERGI_SAVE_DASHBOARD"):
            README_SHOT.parent.mkdir(parents=True, exist_ok=True)
            README_SHOT.write_bytes(full)
        await browser.close()
    assert outside == [], f"the dashboard tried to reach {outside}"
