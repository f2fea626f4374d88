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
