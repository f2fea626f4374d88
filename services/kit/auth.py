"""Staff authentication for every service's HTTP API: roles and area scope.

A bearer token (JWT, HS256 pinned, signed with `SINERGI_AUTH_SECRET`, audience
`sinergi-staff`, at most 12 hours) names the user, their role and their area (a region code: a village office holds a 10-digit village
code, the kecamatan SLRT supervisor 6 digits, the kabupaten 4). Every route declares the
roles it accepts with `require(...)` and checks area with `Principal.covers(code)`.
Tokens come from `POST /auth/token` (staff accounts in kit.users); with SINERGI_USERS_FILE set,
a disabled account's tokens stop working at once.
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any, Literal

import jwt
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from services.kit.principal import Principal, Role

__all__ = ["Principal", "Role"]  # defined in kit.principal (pure), re-exported for routes

if TYPE_CHECKING:
    from services.kit.users import UsersFile


ALGORITHM = "HS256"
AUDIENCE = "sinergi-staff"
MAX_TTL = dt.timedelta(hours=12)  # one working day at most: a lost token expires by tomorrow
DEV_SECRET = "dev-only-change-me-0123456789abcdef"  # Settings' default; refused in production
MIN_SECRET = 32


def check_secret(secret: str, env: str) -> None:
    """Refuse to run production with the development secret or a short one (anyone could mint tokens)."""
    if env == "production" and (secret == DEV_SECRET or len(secret) < MIN_SECRET):
        raise RuntimeError("SINERGI_AUTH_SECRET is the development default or shorter than "
                           f"{MIN_SECRET} characters: run `sinergi deploy init` and use the .env it writes")


def issue_token(p: Principal, secret: str, ttl: dt.timedelta = dt.timedelta(hours=8)) -> str:
    now = dt.datetime.now(dt.UTC)
    ttl = min(ttl, MAX_TTL)
    return jwt.encode({"sub": p.user, "role": p.role.value, "area": p.area, "programs": list(p.programs),
                       "aud": AUDIENCE, "iat": now, "exp": now + ttl}, secret, algorithm=ALGORITHM)


def decode_token(token: str, secret: str) -> Principal:
    try:
        # the algorithm is pinned: a token saying `alg: none` or RS256 is refused
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], audience=AUDIENCE, leeway=30,
                            options={"require": ["exp", "iat", "sub", "role", "aud"]})
        if claims["exp"] - claims["iat"] > MAX_TTL.total_seconds() + 1:
            raise jwt.InvalidTokenError("lifetime too long")
        return _principal(claims)
    except jwt.ExpiredSignatureError:
        raise HTTPException(401, detail={"error": "token expired: log in again"}) from None
    except (jwt.InvalidTokenError, ValueError, KeyError, TypeError):
        raise HTTPException(401, detail={"error": "invalid token"}) from None


def _principal(claims: dict[str, Any]) -> Principal:
    """The claims, each of its declared type: a signed token with `area: 3317` (an integer)
    answered 500 from `covers` before (issue 15); now it is an invalid token."""
    area, programs = claims.get("area", ""), claims.get("programs", [])
    if not (isinstance(claims["sub"], str) and isinstance(claims["role"], str) and isinstance(area, str)
            and area in ("", area.strip()) and (area == "" or area.isdigit())
            and isinstance(programs, list) and all(isinstance(x, str) for x in programs)):
        raise jwt.InvalidTokenError("a claim has the wrong type")
    return Principal(user=claims["sub"], role=Role(claims["role"]), area=area, programs=tuple(programs))


_bearer = HTTPBearer(auto_error=False)


def staff_accounts(request: Request) -> UsersFile | None:
    """The staff accounts file of this service (SINERGI_USERS_FILE), or None when not configured."""
    from services.kit.users import UsersFile

    path = getattr(request.app.state.kit.settings, "users_file", None)
    if not path:
        return None
    cache: dict[str, UsersFile] = request.app.state.__dict__.setdefault("_sinergi_users", {})
    return cache.setdefault(path, UsersFile(path))


def current_principal(request: Request,
                      creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
    if creds is None:
        raise HTTPException(401, detail={"error": "missing bearer token (Authorization: Bearer ...)"},
                            headers={"WWW-Authenticate": "Bearer"})
    settings = request.app.state.kit.settings
    p = decode_token(creds.credentials, settings.auth_secret)
    users = staff_accounts(request)
    # a disabled or deleted account loses access at once, not when its token expires
    if users is not None and not users.active(p.user):
        raise HTTPException(401, detail={"error": f"account {p.user} is disabled or unknown"})
    request.state.principal = p  # for the audit trail and access logs
    return p


class require:  # noqa: N801 - used like the function it was: Depends(require(Role.verifier))
    """A FastAPI dependency: the caller must hold one of `roles` (none: any staff role).
    `roles` stays readable, so tests derive who may call each route from the route table
    (tests/integration/test_authz_matrix.py)."""

    def __init__(self, *roles: Role) -> None:
        self.roles: tuple[Role, ...] = roles

    def allows(self, role: Role) -> bool:
        return not self.roles or role in self.roles

    def __call__(self, p: Principal = Depends(current_principal)) -> Principal:
        if not self.allows(p.role):
            raise HTTPException(403, detail={"error": f"role {p.role.value} may not do this; "
                                                      f"needs one of {', '.join(r.value for r in self.roles)}"})
        return p


def require_program(p: Principal, program: str) -> None:
    """A program manager acts only for the programs named in their token (`programs`; none
    named: every program, as before issue 15); other roles are limited by `require`."""
    if p.role is Role.program_manager and p.programs and program not in p.programs:
        raise HTTPException(403, detail={"error": f"program {program} is outside your programs "
                                                  f"({', '.join(p.programs)})"})


def _program_scope(request: Request, p: Principal = Depends(current_principal)) -> Principal:
    program = request.path_params.get("program", request.path_params.get("code"))
    if program is not None:
        require_program(p, str(program))
    return p


# for routes naming a program in their path ({program}, or {code} on /programs): `_s: ProgramScope`
# beside the role dependency; the route table shows it to tests/integration/test_authz_matrix.py
ProgramScope = Annotated[Principal, Depends(_program_scope)]


def require_area(p: Principal, region_code: str) -> None:
    if not p.covers(region_code):
        raise HTTPException(403, detail={"error": f"region {region_code} is outside your area {p.area or '-'}"})


# --- login -------------------------------------------------------------------------------

class TokenAnswer(BaseModel):
    """OAuth2's token response, with who the token is for (the pages pick the navigation)."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds until the token expires (at most 12 hours)")
    role: Role
    area: str = Field(description="region code digits the account covers; empty: the whole regency")


class Me(BaseModel):
    """Who a bearer token belongs to."""

    user: str
    role: Role
    area: str
    programs: list[str] = Field(description="the programs a program manager acts for; empty: all")


def router() -> APIRouter:
    """`POST /auth/token` (OAuth2 password form: username, password) and `GET /auth/me`;
    included in every service's app by ServiceRuntime.http_app."""
    from services.kit import login
    from services.kit import logging as klog

    log = klog.get(__name__)
    r = APIRouter(prefix="/auth", tags=["auth"])
    guard = login.LoginGuard()  # growing delays and bounded Argon2 checks, never a lockout (kit.login)

    @r.post("/token", summary="log in with a staff account; returns a bearer token that expires")
    async def token(request: Request, form: OAuth2PasswordRequestForm = Depends()) -> TokenAnswer:
        settings = request.app.state.kit.settings
        users = staff_accounts(request)
        if users is None:
            raise HTTPException(503, detail={"error": "no staff accounts configured (SINERGI_USERS_FILE)"})
        try:
            p = await login.authenticate(guard, users, login.client_of(request), form.username, form.password)
        except login.Busy as exc:
            raise HTTPException(429, detail={"error": str(exc)},
                                headers={"Retry-After": str(exc.retry_after)}) from None
        if p is None:
            log.warning("auth.login_failed", user=form.username)
            raise HTTPException(401, detail={"error": "wrong username or password, or account disabled"},
                                headers={"WWW-Authenticate": "Bearer"})
        ttl = dt.timedelta(minutes=getattr(settings, "token_ttl_minutes", 480))
        log.info("auth.login", user=p.user, role=p.role.value)
        return TokenAnswer(access_token=issue_token(p, settings.auth_secret, ttl),
                           expires_in=int(min(ttl, MAX_TTL).total_seconds()), role=p.role, area=p.area)

    @r.get("/me", summary="who the bearer token belongs to")
    async def me(p: Principal = Depends(current_principal)) -> Me:
        return Me(user=p.user, role=p.role, area=p.area, programs=list(p.programs))

    return r
