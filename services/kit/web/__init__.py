"""One look and one login for the pages of every service (issue 14).

Each service serves its own server-rendered pages (Jinja2, under `/ui/`); the kit gives them
the base template, one stylesheet (`/ui/kit/sinergi.css`, served by every service), the
navigation by role, the login and logout pages and the staff-token cookie. Bahasa Indonesia,
no JavaScript, no CDN, no web fonts: usable on the regency network without internet.

One login for all pages: the cookie holds the staff token (a JWT signed with the shared secret
that every service verifies), and a browser sends a host's cookies to every port of that host
(cookies are per host, not per port: RFC 6265 section 8.5). `SameSite=Strict` still lets it
through on a link from one service's page to another's: ports do not make another *site*. A
link to another service is formed from `SINERGI_WEB_URLS` when set (behind a reverse proxy),
else from the host the browser used and that service's port (`Settings.port`), as `sinergi up`
runs them all on one host.
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from contracts import wilayah
from services.kit import login as kit_login
from services.kit.auth import decode_token, issue_token, staff_accounts
from services.kit.principal import Principal, Role
from services.kit.settings import SERVICES, Settings

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
COOKIE = "sinergi_token"
STATIC = "/ui/kit"  # the shared stylesheet, the same path on every service
LOGIN, LOGOUT = "/ui/masuk", "/ui/keluar"

ROLE_NAMES: dict[Role, str] = {
    Role.village_office: "Puskesos desa", Role.kecamatan: "Supervisor SLRT kecamatan",
    Role.kabupaten: "Manajer SLRT kabupaten", Role.companion: "Pendamping",
    Role.coordinator: "Koordinator pendamping", Role.verifier: "Verifikator Dinas Sosial",
    Role.program_manager: "Pengelola program", Role.auditor: "Auditor",
}


@dataclass(frozen=True)
class Link:
    """One page in the navigation: which service serves it, its path, its label, who sees it."""

    service: str
    path: str
    label: str
    roles: frozenset[Role]


def _roles(*roles: Role) -> frozenset[Role]:
    return frozenset(roles)


_PUSKESOS = _roles(Role.village_office, Role.kecamatan, Role.kabupaten)
# The navigation of every page, in order. A service adding a page adds its line here, so that
# every service's header shows it to the roles that use it.
NAV: tuple[Link, ...] = (
    Link("intake", "/ui/daftar", "Daftar pengaduan", _roles(Role.village_office)),
    Link("intake", "/ui/cek", "Cek warga", _PUSKESOS),
    Link("intake", "/ui/antrean", "Antrean", _PUSKESOS),
    Link("intake", "/ui/antrean?terlambat=1", "Lewat tenggat", _PUSKESOS),
    Link("intake", "/ui/pendamping", "Penerima manfaat saya", _roles(Role.companion)),
    Link("intake", "/ui/koordinator", "Penugasan", _roles(Role.coordinator)),
    Link("intake", "/ui/koordinator/cakupan", "Cakupan kunjungan", _roles(Role.coordinator)),
    Link("intake", "/ui/rekap", "Rekap kunjungan", _roles(Role.coordinator)),
    Link("intake", "/ui/koordinator/terlambat", "Kasus lewat tenggat", _roles(Role.coordinator)),
    Link("registry", "/ui/usulan", "Usulan", _roles(Role.verifier)),
    Link("registry", "/ui/mutu", "Mutu data", _roles(Role.verifier)),
    Link("registry", "/ui/verivali", "Verivali", _roles(Role.verifier)),
    Link("registry", "/ui/warga", "Cari warga", _roles(Role.verifier)),
    Link("reporting", "/dashboard", "Dasbor", _roles(Role.kabupaten, Role.program_manager, Role.auditor)),
    Link("reporting", "/publik/realisasi", "Realisasi (publik)", frozenset(Role)),
)
# where a role lands after login (and on a service's /ui/ when it has nothing for that role)
HOME: dict[Role, tuple[str, str]] = {
    Role.village_office: ("intake", "/ui/"), Role.kecamatan: ("intake", "/ui/"),
    Role.kabupaten: ("intake", "/ui/"), Role.companion: ("intake", "/ui/"),
    Role.coordinator: ("intake", "/ui/"), Role.verifier: ("registry", "/ui/"),
    Role.program_manager: ("reporting", "/dashboard"), Role.auditor: ("reporting", "/dashboard"),
}


def web_urls(settings: Settings) -> dict[str, str]:
    """`SINERGI_WEB_URLS`: each service's base URL as the browser reaches it, as JSON
    (`{"registry": "https://sinergi.example:8443"}`) or `name=url,name=url`."""
    raw = (getattr(settings, "web_urls", None) or "").strip()
    if not raw:
        return {}
    if raw.startswith("{"):
        data = json.loads(raw)
        return {str(k): str(v).rstrip("/") for k, v in data.items()}
    pairs = (p.split("=", 1) for p in raw.split(",") if "=" in p)
    return {k.strip(): v.strip().rstrip("/") for k, v in pairs}


def service_url(request: Request, service: str, path: str) -> str:
    """The address of `path` on `service` as this browser reaches it: relative on this service,
    else SINERGI_WEB_URLS, else this host at that service's port."""
    kit = request.app.state.kit
    configured = web_urls(kit.settings)
    if service in configured:
        return configured[service] + path
    if service == kit.service:
        return path
    if service not in SERVICES:
        raise ValueError(f"unknown service {service}")
    host = request.url.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"{request.url.scheme}://{host}:{kit.settings.port(service)}{path}"


def home_url(request: Request, p: Principal) -> str:
    service, path = HOME[p.role]
    return service_url(request, service, path)


AREA_KIND = {2: "Prov.", 4: "Kab.", 6: "Kec.", 10: "Desa"}


def area_name(area: str) -> str:
    """A staff area in words: "Kec. Sumber", "Desa Ronggo Mulyo", "seluruh kabupaten"."""
    if not area:
        return "seluruh kabupaten"
    name = wilayah.name_of(area)
    return f"{AREA_KIND.get(len(area), '')} {name}".strip() if name else area


def role_label(p: Principal | None) -> str:
    if p is None:
        return ""
    return f"{ROLE_NAMES.get(p.role, p.role.value)} · {area_name(p.area)}"


def principal_of(request: Request, tok: str | None) -> Principal | None:
    """The staff member behind a token; None if absent, invalid, expired, or the account has
    since been disabled (the same checks as kit.auth.current_principal)."""
    if not tok:
        return None
    try:
        p = decode_token(tok, request.app.state.kit.settings.auth_secret)
    except HTTPException:
        return None
    users = staff_accounts(request)
    if users is not None and not users.active(p.user):
        return None
    request.state.principal = p  # for the audit trail and access logs
    return p


def principal(request: Request) -> Principal | None:
    """The staff member behind the login cookie, or None."""
    return principal_of(request, request.cookies.get(COOKIE))


# a page's viewer: None sends them to the login page (a page answers with a redirect, not 401)
Viewer = Annotated[Principal | None, Depends(principal)]


def login_redirect(request: Request) -> RedirectResponse:
    """To the login page of this service, coming back to this page afterwards."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{LOGIN}?next={quote(here, safe='')}", status_code=303)


def _safe_next(target: str) -> str | None:
    """Only a path on this service: never another host (an open redirect)."""
    parts = urlsplit(target)
    if not target.startswith("/") or target.startswith("//") or parts.scheme or parts.netloc or "\\" in target:
        return None
    return target


def nav_for(request: Request, p: Principal | None) -> list[dict[str, Any]]:
    if p is None:
        return []
    here = request.app.state.kit.service
    out = []
    for link in NAV:
        if p.role in link.roles:
            current = link.service == here and request.url.path == link.path.split("?")[0]
            out.append({"label": link.label, "url": service_url(request, link.service, link.path),
                        "current": current and ("?" not in link.path or bool(request.url.query))})
    return out


class Pages:
    """A service's pages: its templates (found first) over the kit's (base.html, masuk.html)."""

    def __init__(self, service: str, templates: Path | None = None, title: str = "Sinergi") -> None:
        dirs = [str(templates)] if templates else []
        self.service, self.title = service, title
        self.templates = Jinja2Templates(directory=[*dirs, str(TEMPLATES)])
        self.templates.env.globals.update(region_name=lambda c: wilayah.name_of(c) or c, area_name=area_name,
                                          rupiah=rupiah, number=number, STATIC=STATIC, service_title=title)

    def render(self, request: Request, name: str, p: Principal | None, status_code: int = 200,
               **ctx: Any) -> HTMLResponse:
        link: Callable[[str, str], str] = lambda service, path: service_url(request, service, path)  # noqa: E731
        home = home_url(request, p) if p is not None else service_url(request, self.service, "/ui/")
        base = {"me": p, "role_label": role_label(p), "nav": nav_for(request, p), "link": link, "home": home,
                "login_url": LOGIN, "logout_url": LOGOUT}
        return self.templates.TemplateResponse(request, name, {**base, **ctx}, status_code=status_code)

    def mount(self, app: FastAPI) -> None:
        """The shared stylesheet and the login/logout pages on this service."""
        app.mount(STATIC, StaticFiles(directory=str(HERE / "static")), name=f"{self.service}-kit-static")
        app.include_router(login_router(self))


def login_router(pages: Pages) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    guard = kit_login.LoginGuard()  # the same protection as POST /auth/token (kit.login)

    def form(request: Request, status: int = 200, error: str | None = None, nxt: str = "") -> HTMLResponse:
        return pages.render(request, "masuk.html", None, status, error=error, next=nxt)

    @r.get(LOGIN)
    async def login_form(request: Request, next: str = "") -> Response:  # noqa: A002 - the query's name
        p = principal(request)
        if p is not None:  # already logged in (on any service of this host): straight on
            return RedirectResponse(_safe_next(next) or home_url(request, p), status_code=303)
        return form(request, nxt=_safe_next(next) or "")

    @r.post(LOGIN)
    async def login(request: Request) -> Response:
        data = await request.form()
        username, password = str(data.get("username", "")).strip(), str(data.get("password", ""))
        tok = str(data.get("token", "")).strip()
        nxt = _safe_next(str(data.get("next", ""))) or ""
        settings = request.app.state.kit.settings
        ttl = dt.timedelta(minutes=settings.token_ttl_minutes)
        if username:
            users = staff_accounts(request)
            if users is None:
                return form(request, 503, "Akun staf belum dikonfigurasi di server; masuk dengan token.", nxt)
            try:
                p = await kit_login.authenticate(guard, users, kit_login.client_of(request), username, password)
            except kit_login.Busy as exc:
                return form(request, 429, f"Terlalu banyak percobaan masuk; coba lagi {exc.retry_after} detik lagi.",
                            nxt)
            if p is None:
                return form(request, 401, "Nama pengguna atau kata sandi salah.", nxt)
            tok = issue_token(p, settings.auth_secret, ttl)
        else:
            found = principal_of(request, tok)
            if found is None:
                return form(request, 401, "Token tidak sah atau kedaluwarsa.", nxt)
            p = found
        resp = RedirectResponse(nxt or home_url(request, p), status_code=303)
        # HttpOnly: no script reads it; SameSite=Strict: a form on another site cannot post with it;
        # path "/": every page of every service on this host
        resp.set_cookie(COOKIE, tok, httponly=True, samesite="strict", path="/", max_age=int(ttl.total_seconds()),
                        secure=settings.env == "production")
        return resp

    @r.post(LOGOUT)
    async def logout() -> Response:
        resp = RedirectResponse(LOGIN, status_code=303)
        resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return resp

    return r


def rupiah(value: Any) -> str:
    """12345678 -> "Rp12.345.678" (Indonesian thousands separator)."""
    if value is None:
        return "-"
    return "Rp" + number(value)


def number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        whole, frac = f"{value:,.2f}".split(".")
        return whole.replace(",", ".") + "," + frac
    return f"{int(value):,}".replace(",", ".")
