"""Staff authentication for every service's HTTP API: roles and area scope.

A bearer token (JWT, HS256, signed with `SINERGI_AUTH_SECRET`, with an expiry) names the
user, their role and their area (a region code: a village office holds a 10-digit village
code, the kecamatan SLRT supervisor 6 digits, the kabupaten 4). Every route declares the
roles it accepts with `require(...)` and checks area with `Principal.covers(code)`.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum

import jwt
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from contracts import wilayah


class Role(StrEnum):
    village_office = "village_office"      # Puskesos front/back office (desa)
    kecamatan = "kecamatan"                # SLRT supervisor
    kabupaten = "kabupaten"                # SLRT manager
    companion = "companion"                # pendamping
    coordinator = "coordinator"            # koordinator pendamping
    verifier = "verifier"                  # Dinas Sosial verivali
    program_manager = "program_manager"    # runs payment cycles, sets budgets
    auditor = "auditor"                    # read-only


@dataclass(frozen=True)
class Principal:
    user: str
    role: Role
    area: str  # region code digits; "" means the whole regency deployment
    programs: tuple[str, ...] = field(default_factory=tuple)

    def covers(self, region_code: str) -> bool:
        """True if `region_code` lies inside this user's area."""
        return wilayah.digits(region_code).startswith(self.area)


ALGORITHM = "HS256"


def issue_token(p: Principal, secret: str, ttl: dt.timedelta = dt.timedelta(hours=8)) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return jwt.encode({"sub": p.user, "role": p.role.value, "area": p.area, "programs": list(p.programs),
                       "iat": now, "exp": now + ttl}, secret, algorithm=ALGORITHM)


def decode_token(token: str, secret: str) -> Principal:
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "role"]})
        return Principal(user=claims["sub"], role=Role(claims["role"]), area=claims.get("area", ""),
                         programs=tuple(claims.get("programs", ())))
    except jwt.ExpiredSignatureError:
        raise HTTPException(401, detail={"error": "token expired: log in again"}) from None
    except (jwt.InvalidTokenError, ValueError, KeyError):
        raise HTTPException(401, detail={"error": "invalid token"}) from None


_bearer = HTTPBearer(auto_error=False)


def current_principal(request: Request,
                      creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
    if creds is None:
        raise HTTPException(401, detail={"error": "missing bearer token (Authorization: Bearer ...)"},
                            headers={"WWW-Authenticate": "Bearer"})
    return decode_token(creds.credentials, request.app.state.runtime.settings.auth_secret)


def require(*roles: Role):
    """A FastAPI dependency: the caller must hold one of `roles`."""
    def _dep(p: Principal = Depends(current_principal)) -> Principal:
        if roles and p.role not in roles:
            raise HTTPException(403, detail={"error": f"role {p.role.value} may not do this; "
                                                      f"needs one of {', '.join(r.value for r in roles)}"})
        return p
    return _dep


def require_area(p: Principal, region_code: str) -> None:
    if not p.covers(region_code):
        raise HTTPException(403, detail={"error": f"region {region_code} is outside your area {p.area or '-'}"})
