"""The kit's one look and one login (kit.web), without a browser: links between services,
the cookie every service reads, and the login's `next` that never leaves this service."""
from __future__ import annotations

from types import SimpleNamespace

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from services.kit import web
from services.kit.auth import Principal, Role, issue_token
from services.kit.settings import Settings


def app_for(service: str, **settings: object) -> FastAPI:
    app = FastAPI()
    app.state.kit = SimpleNamespace(service=service, settings=Settings(_env_file=None, **settings))
    pages = web.Pages(service, None, "Uji")
    pages.mount(app)

    @app.get("/ui/")
    async def home(request: Request, p: web.Viewer):  # type: ignore[no-untyped-def]
        if p is None:
            return web.login_redirect(request)
        return pages.render(request, "base.html", p)
    return app


def token(role: Role, area: str = "3317") -> str:
    return issue_token(Principal("uji", role, area), Settings(_env_file=None).auth_secret)


def test_a_token_login_sets_one_cookie_for_every_service_and_goes_to_the_roles_home():
    client = TestClient(app_for("intake"), base_url="http://sinergi.local:8001")
    r = client.post("/ui/masuk", data={"token": token(Role.verifier)}, follow_redirects=False)
    assert r.status_code == 303
    # the verifier's pages are on the registry: same host, the registry's port
    assert r.headers["location"] == "http://sinergi.local:8002/ui/"
    cookie = r.headers["set-cookie"]
    assert "sinergi_token=" in cookie and "Path=/" in cookie and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Domain" not in cookie  # host-only: every port of this host


def test_links_follow_web_urls_when_set_and_the_next_page_stays_on_this_service():
    urls = '{"registry": "https://sinergi.example/registry"}'
    client = TestClient(app_for("intake", web_urls=urls), base_url="http://127.0.0.1:8001")
    r = client.post("/ui/masuk", data={"token": token(Role.verifier)}, follow_redirects=False)
    assert r.headers["location"] == "https://sinergi.example/registry/ui/"
    for bad in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        r = client.post("/ui/masuk", data={"token": token(Role.village_office), "next": bad}, follow_redirects=False)
        assert r.headers["location"] == "/ui/", bad
    r = client.post("/ui/masuk", data={"token": token(Role.village_office), "next": "/ui/antrean?x=1"},
                    follow_redirects=False)
    assert r.headers["location"] == "/ui/antrean?x=1"


def test_pages_redirect_to_login_then_show_the_navigation_of_the_role():
    client = TestClient(app_for("registry"), base_url="http://127.0.0.1:8002")
    r = client.get("/ui/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/masuk?next=%2Fui%2F"
    assert client.get("/ui/masuk").status_code == 200
    client.cookies.set(web.COOKIE, token(Role.verifier, "331701"))
    html = client.get("/ui/").text
    assert 'lang="id"' in html and 'href="#isi"' in html and "/ui/kit/sinergi.css" in html
    assert 'href="/ui/usulan"' in html  # this service: relative
    assert "Verifikator Dinas Sosial" in html
    assert "/ui/daftar" not in html  # the village office's page is not in a verifier's menu
    client.cookies.set(web.COOKIE, token(Role.village_office, "3317012001"))
    html = client.get("/ui/").text
    assert 'href="http://127.0.0.1:8001/ui/daftar"' in html  # another service: its port
    assert client.get("/ui/kit/sinergi.css").status_code == 200
    r = client.post("/ui/keluar", follow_redirects=False)
    assert r.headers["location"] == "/ui/masuk" and 'sinergi_token=""' in r.headers["set-cookie"]


def test_a_forged_cookie_is_no_login():
    client = TestClient(app_for("registry"))
    client.cookies.set(web.COOKIE, "nonsense")
    assert client.get("/ui/", follow_redirects=False).status_code == 303


def test_numbers_in_indonesian():
    assert web.rupiah(12_345_678) == "Rp12.345.678" and web.number(46.5) == "46,50" and web.number(None) == "-"


def _luminance(hex_colour: str) -> float:
    h = hex_colour.lstrip("#")
    h = "".join(c * 2 for c in h) if len(h) == 3 else h
    chans = [int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in chans]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_the_stylesheet_keeps_text_contrast_at_wcag_aa():
    """Every rule of the shared stylesheet that sets both a text colour and a background meets
    4.5:1, and so do text colours on the page and card backgrounds they sit on."""
    import re

    css = (web.HERE / "static" / "sinergi.css").read_text()
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    pairs = []
    for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        fg = re.search(r"(?<![-\w])color:\s*(#[0-9a-fA-F]{3,6})", body)
        bg = re.search(r"background(?:-color)?:\s*(#[0-9a-fA-F]{3,6})", body)
        if fg and bg:
            pairs.append((selector.strip(), fg.group(1), bg.group(1)))
    assert len(pairs) >= 8  # the parse found the rules (a vacuous pass otherwise)
    page, card, header = "#f6f6f3", "#ffffff", "#14532d"
    pairs += [("body text on a card", "#1b1b1b", card), ("link on the page", "#14532d", page),
              ("link on a card", "#14532d", card), ("muted on the page", "#4b5563", page),
              ("muted on a card", "#4b5563", card), ("header link", "#ffffff", header),
              ("badge warn", "#92400e", card), ("badge bad", "#991b1b", card), ("badge good", "#166534", card),
              ("error text", "#1b1b1b", "#fee2e2"), ("late row", "#1b1b1b", "#fff1f2")]
    low = [(s, fg, bg, round(contrast(fg, bg), 2)) for s, fg, bg in pairs if contrast(fg, bg) < 4.5]
    assert not low, low
