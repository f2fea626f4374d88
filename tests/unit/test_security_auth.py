"""Staff authentication: accounts (Argon2id), tokens that expire, login on every service's app,
disabled accounts locked out at once, the development secret refused in production."""
from __future__ import annotations

import datetime as dt

import httpx
import jwt
import pytest
import sqlalchemy as sa
from fastapi import Depends, HTTPException

from services.kit import auth, users
from services.kit.auth import Principal, Role, decode_token, issue_token, require, require_area
from services.kit.outbox import inbox_table, outbox_table
from services.kit.runtime import Kit
from services.kit.settings import Settings

SECRET = "s" * 48
VILLAGE_A, VILLAGE_B = "3317012001", "3317012002"


def _settings(**kw) -> Settings:
    return Settings(auth_secret=SECRET, _env_file=None, **kw)


def test_token_round_trip_and_expiry():
    p = Principal("ani", Role.village_office, VILLAGE_A)
    assert decode_token(issue_token(p, SECRET), SECRET) == p
    expired = issue_token(p, SECRET, ttl=dt.timedelta(minutes=-5))
    with pytest.raises(HTTPException) as exc:
        decode_token(expired, SECRET)
    assert exc.value.status_code == 401 and "expired" in exc.value.detail["error"]


def test_tokens_are_capped_at_twelve_hours():
    claims = jwt.decode(issue_token(Principal("a", Role.auditor, ""), SECRET, ttl=dt.timedelta(days=30)),
                        SECRET, algorithms=["HS256"], audience=auth.AUDIENCE)
    assert claims["exp"] - claims["iat"] <= 12 * 3600


@pytest.mark.parametrize("forge", ["other-secret", "none", "no-aud", "long", "no-exp", "bad-role"])
def test_forged_or_malformed_tokens_are_refused(forge):
    now = int(dt.datetime.now(dt.UTC).timestamp())
    claims = {"sub": "x", "role": "program_manager", "area": "", "aud": auth.AUDIENCE, "iat": now, "exp": now + 600}
    if forge == "other-secret":
        token = jwt.encode(claims, "another-secret-of-sufficient-length-xx", algorithm="HS256")
    elif forge == "none":
        token = jwt.encode(claims, None, algorithm="none")
    else:
        if forge == "no-aud":
            del claims["aud"]
        elif forge == "long":
            claims["exp"] = now + 30 * 24 * 3600  # minted by someone holding the secret, but for a month
        elif forge == "no-exp":
            del claims["exp"]
        elif forge == "bad-role":
            claims["role"] = "superuser"
        token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(HTTPException) as exc:
        decode_token(token, SECRET)
    assert exc.value.status_code == 401


def test_production_refuses_the_development_or_a_short_secret():
    md = sa.MetaData()
    outbox_table(md), inbox_table(md)
    for secret in (auth.DEV_SECRET, "short-secret"):
        with pytest.raises(RuntimeError, match="SINERGI_AUTH_SECRET"):
            Kit("registry", Settings(env="production", auth_secret=secret, _env_file=None), md)
    assert Settings(_env_file=None).auth_secret == auth.DEV_SECRET  # the default is what we refuse
    Kit("registry", Settings(env="production", auth_secret=SECRET, _env_file=None), md)
    Kit("registry", Settings(_env_file=None), md)  # development may use the default


def test_users_file_hashes_with_argon2_and_checks_role_areas(tmp_path):
    f = users.UsersFile(tmp_path / "users.yaml")
    f.add("ani", "kata-sandi-panjang-1", Role.village_office, VILLAGE_A)
    text = (tmp_path / "users.yaml").read_text()
    assert "kata-sandi-panjang-1" not in text and "$argon2id$" in text
    assert f.authenticate("ani", "kata-sandi-panjang-1") == Principal("ani", Role.village_office, VILLAGE_A)
    assert f.authenticate("ani", "wrong-password-xx") is None
    assert f.authenticate("nobody", "kata-sandi-panjang-1") is None
    for bad in [("budi", "short", Role.auditor, ""), ("budi", "kata-sandi-panjang-1", Role.village_office, "3317"),
                ("budi", "kata-sandi-panjang-1", Role.kecamatan, VILLAGE_A),
                ("budi", "kata-sandi-panjang-1", Role.auditor, "9999"),
                ("ani", "kata-sandi-panjang-2", Role.auditor, ""), ("budi", "budi-is-my-password", Role.auditor, "")]:
        with pytest.raises(users.UserError):
            f.add(*bad)
    f.set_disabled("ani")
    assert f.authenticate("ani", "kata-sandi-panjang-1") is None and not f.active("ani")


def _app(tmp_path, **kw):
    """A service app as every service builds it (Kit.http_app), without starting it."""
    md = sa.MetaData()
    outbox_table(md), inbox_table(md)
    rt = Kit("intake", _settings(users_file=str(tmp_path / "users.yaml"), **kw), md)
    app = rt.http_app("test")

    @app.get("/villages/{code}/cases")
    async def cases(code: str, p: Principal = Depends(require(Role.village_office, Role.kecamatan))) -> dict:
        require_area(p, code)
        return {"village": code}

    @app.post("/cycles")
    async def run_cycle(p: Principal = Depends(require(Role.program_manager))) -> dict:
        return {"run_by": p.user}
    return app


async def _login(client, user, password="kata-sandi-panjang-1") -> httpx.Response:
    return await client.post("/auth/token", data={"username": user, "password": password})


async def test_login_then_role_and_area_checks_on_a_service_app(tmp_path):
    f = users.UsersFile(tmp_path / "users.yaml")
    f.add("ani", "kata-sandi-panjang-1", Role.village_office, VILLAGE_A)
    f.add("pm", "kata-sandi-panjang-1", Role.program_manager, "3317", ["pkh"])
    f.add("kab", "kata-sandi-panjang-1", Role.kabupaten, "3317")
    app = _app(tmp_path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await _login(c, "ani")
        assert r.status_code == 200 and r.json()["token_type"] == "bearer" and r.json()["expires_in"] == 8 * 3600
        ani = {"Authorization": f"Bearer {r.json()['access_token']}"}
        assert (await c.get("/auth/me", headers=ani)).json() == {"user": "ani", "role": "village_office",
                                                                 "area": VILLAGE_A, "programs": []}
        assert (await c.get(f"/villages/{VILLAGE_A}/cases", headers=ani)).status_code == 200
        r = await c.get(f"/villages/{VILLAGE_B}/cases", headers=ani)
        assert r.status_code == 403 and "outside your area" in r.json()["error"]
        assert (await c.post("/cycles", headers=ani)).status_code == 403
        kab = {"Authorization": f"Bearer {(await _login(c, 'kab')).json()['access_token']}"}
        assert (await c.post("/cycles", headers=kab)).status_code == 403
        pm = {"Authorization": f"Bearer {(await _login(c, 'pm')).json()['access_token']}"}
        assert (await c.post("/cycles", headers=pm)).json() == {"run_by": "pm"}
        assert (await c.post("/cycles")).status_code == 401
        # disabling an account ends its sessions now, not at token expiry
        f.set_disabled("ani")
        r = await c.get(f"/villages/{VILLAGE_A}/cases", headers=ani)
        assert r.status_code == 401 and "disabled" in r.json()["error"]
        assert (await _login(c, "ani")).status_code == 401


async def test_wrong_passwords_slow_down_but_never_lock_out_the_right_one(tmp_path):
    """Issue 15: five wrong passwords refused even the right one for 15 minutes (429), so anyone
    could lock a colleague out; now they only earn a growing delay (kit.login)."""
    users.UsersFile(tmp_path / "users.yaml").add("pm", "kata-sandi-panjang-1", Role.program_manager, "")
    app = _app(tmp_path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60) as c:
        for _ in range(5):
            r = await _login(c, "pm", "wrong-guess-123456")
            assert r.status_code == 401 and "wrong username or password" in r.json()["error"]
        r = await _login(c, "pm")  # the right password, after the earned delay
        assert r.status_code == 200 and r.json()["access_token"]
        assert (await _login(c, "someone-else", "x" * 12)).status_code == 401


async def test_login_without_a_users_file_says_so(tmp_path):
    md = sa.MetaData()
    outbox_table(md), inbox_table(md)
    app = Kit("intake", _settings(), md).http_app("test")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await _login(c, "pm")
        assert r.status_code == 503 and "SINERGI_USERS_FILE" in r.json()["error"]


def test_users_cli_adds_lists_disables_and_explains_bad_input(tmp_path):
    from typer.testing import CliRunner

    from services.cli import app
    f = str(tmp_path / "users.yaml")
    run = CliRunner().invoke
    r = run(app, ["users", "add", "ani", "--role", "village_office", "--area", VILLAGE_A, "--password-stdin",
                  "--file", f], input="kata-sandi-panjang-1\n")
    assert r.exit_code == 0, r.output
    r = run(app, ["users", "add", "budi", "--role", "village_office", "--area", "3317", "--password-stdin",
                  "--file", f], input="kata-sandi-panjang-1\n")
    assert r.exit_code != 0 and "needs a village" in r.output
    r = run(app, ["users", "add", "rina", "--role", "wizard", "--file", f], input="kata-sandi-panjang-1\n")
    assert r.exit_code != 0
    assert "ani" in run(app, ["users", "list", "--file", f]).output
    assert run(app, ["users", "disable", "ani", "--file", f]).exit_code == 0
    assert not users.UsersFile(f).active("ani")
    r = run(app, ["users", "disable", "nobody", "--file", f])
    assert r.exit_code != 0 and "no user" in r.output
    r = run(app, ["privacy", "export", "123", "--out", str(tmp_path / "x.json")])
    assert r.exit_code != 0 and "16 digits" in r.output
