"""`sinergi deploy init CONFIG.yaml OUTDIR`: a regency's NATS configuration and credentials.

From a small YAML file (regency, programs and their agencies, payment channels, auditors,
optional TLS certificates) it writes:

  OUTDIR/nats/auth.conf          users with bcrypt-hashed passwords and their permissions
  OUTDIR/nats/nats.conf          one node: JetStream on file storage, `sync_interval: always`
  OUTDIR/nats/nats-{1,2,3}.conf  the three-node cluster (compose profile `cluster`)
  OUTDIR/nats/tls/               copies of the certificates, when given
  OUTDIR/credentials/<user>.env  one file per party: URL, user, password, inbox prefix
  OUTDIR/.env                    for docker-compose: service passwords, auth secret, database password
  OUTDIR/permissions.md          what each identity may publish and subscribe to

Passwords are fresh (256 bits from `secrets`) on every run; the server only sees bcrypt hashes.
An existing OUTDIR is never overwritten without --force: rotating every credential at once is
a deliberate act. --update adds and removes parties (a new program, a retired channel) and
keeps every existing credential and secret.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import typer
import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from contracts import wilayah
from services.kit import natsperm
from services.kit.natsperm import Identity

TOKEN = r"^[a-z][a-z0-9_]{0,31}$"  # one NATS subject token; no dots, wildcards or dashes
BCRYPT_COST = 11
CLUSTER_NODES = 3


class Program(BaseModel):
    code: str = Field(pattern=TOKEN, description="program code as on agency.<code>.enrolments, e.g. pkh")
    agency: str = Field(min_length=1, description="the agency that reports enrolments, e.g. Kemensos")


class Tls(BaseModel):
    cert: Path
    key: Path
    ca: Path | None = None  # given: clients must present a certificate signed by it
    verify_clients: bool = False


class DeployConfig(BaseModel):
    regency: str = Field(description="kode kabupaten, 4 digits (e.g. 33.17 Rembang)")
    programs: list[Program] = Field(min_length=1)
    channels: list[str] = Field(default_factory=list, description="payment channels, e.g. bri, pos")
    auditors: list[str] = Field(default_factory=lambda: ["inspektorat"])
    tls: Tls | None = None
    nats_host: str = "nats"  # the name parties use to reach the server (goes into their credentials)
    cluster: bool = False  # three NATS nodes, streams with three replicas (compose profile `cluster`)

    @field_validator("regency")
    @classmethod
    def _regency(cls, v: str) -> str:
        d = wilayah.digits(v)
        if len(d) != 4 or not wilayah.exists(d):
            raise ValueError(f"{v!r} is not a known kabupaten/kota code (4 digits, e.g. 33.17)")
        return d

    @field_validator("channels", "auditors")
    @classmethod
    def _tokens(cls, v: list[str]) -> list[str]:
        import re
        bad = [x for x in v if not re.match(TOKEN, x)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: use lower-case letters, digits and _ (one subject token)")
        if len(set(v)) != len(v):
            raise ValueError("names must be unique")
        return v

    @field_validator("programs")
    @classmethod
    def _unique(cls, v: list[Program]) -> list[Program]:
        codes = [p.code for p in v]
        if len(set(codes)) != len(codes):
            raise ValueError("program codes must be unique")
        return v


def load_config(path: Path) -> DeployConfig:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}") from None
    try:
        return DeployConfig.model_validate(raw or {})
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise typer.BadParameter(f"{path} is not a valid deployment config:\n" + "\n".join(lines)) from None


# --- NATS configuration text -------------------------------------------------------------

def _value(v: Any, indent: int) -> str:
    pad = "  " * indent
    if isinstance(v, dict):
        inner = "\n".join(f"{pad}  {k}: {_value(x, indent + 1)}" for k, x in v.items())
        return "{\n" + inner + f"\n{pad}}}"
    if isinstance(v, list):
        if all(not isinstance(x, (dict, list)) for x in v):
            return "[" + ", ".join(_value(x, indent) for x in v) + "]"
        inner = "\n".join(f"{pad}  {_value(x, indent + 1)}" for x in v)
        return "[\n" + inner + f"\n{pad}]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, Raw):
        return str(v)
    return json.dumps(str(v))  # always quoted: `$JS...` unquoted would be a variable reference


class Raw(str):
    """A value written as is (e.g. `always`, sizes)."""


def render(conf: dict[str, Any]) -> str:
    # `include` is a directive, not a key: no colon
    return "\n".join(f"include {v}" if k == "include" else f"{k}: {_value(v, 0)}" for k, v in conf.items()) + "\n"


def auth_block(ids: list[Identity], passwords: dict[str, str]) -> dict[str, Any]:
    users = []
    for ident in ids:
        hashed = bcrypt.hashpw(passwords[ident.user].encode(), bcrypt.gensalt(BCRYPT_COST)).decode()
        users.append({"user": ident.user, "password": hashed, "permissions": ident.permissions()})
    return {"authorization": {"users": users, "timeout": 2}}


def server_conf(*, name: str, port: int, store_dir: str, conf_dir: str, tls: Tls | None,
                monitor_port: int | None = 8222, cluster: dict[str, Any] | None = None,
                listen_host: str = "0.0.0.0") -> dict[str, Any]:
    conf: dict[str, Any] = {"server_name": name, "listen": f"{listen_host}:{port}"}
    if monitor_port:
        conf["http_port"] = monitor_port  # /healthz for docker-compose; not published outside
    conf["max_payload"] = 1048576
    conf["jetstream"] = {"store_dir": store_dir,
                         # money: fsync before the PubAck (Jepsen 2025: the default loses acked writes)
                         "sync_interval": Raw("always")}
    if tls:
        block = {"cert_file": f"{conf_dir}/tls/server.pem", "key_file": f"{conf_dir}/tls/server-key.pem",
                 "min_version": "1.2", "timeout": 2}
        if tls.ca:
            block["ca_file"] = f"{conf_dir}/tls/ca.pem"
            block["verify"] = tls.verify_clients
        conf["tls"] = block
    if cluster:
        conf["cluster"] = cluster
    conf["include"] = Raw('"auth.conf"')  # relative to this file
    return conf


def node_host(n: int) -> str:
    """Compose service name of cluster node n: node 1 is the `nats` service of the default profile."""
    return "nats" if n == 1 else f"nats-{n}"


@dataclass(frozen=True)
class Node:
    """Where one cluster node listens and keeps its store. In docker-compose every node is its
    own container (same ports, own volume); the test cluster (tests/cluster_support.py) runs
    all three on one host's loopback with ports and directories of their own."""

    host: str                 # how the other nodes reach its route port
    port: int                 # client port
    cluster_port: int = 6222  # route port
    store_dir: str = "/data/jetstream"
    monitor_port: int | None = 8222


def compose_nodes(port: int, store_dir: str, monitor_port: int | None) -> list[Node]:
    return [Node(node_host(n), port, 6222, store_dir, monitor_port) for n in range(1, CLUSTER_NODES + 1)]


def cluster_conf(nodes: list[Node], n: int, route_pw: str, *, conf_dir: str, tls: Tls | None,
                 listen_host: str = "0.0.0.0") -> dict[str, Any]:
    """The configuration of node `n` (1-based) of `nodes`."""
    me = nodes[n - 1]
    cluster = {"name": "sinergi", "listen": f"{listen_host}:{me.cluster_port}",
               "authorization": {"user": "route", "password": route_pw, "timeout": 2},
               "routes": [f"nats-route://route:{route_pw}@{m.host}:{m.cluster_port}" for m in nodes if m is not me]}
    return server_conf(name=f"nats-{n}", port=me.port, store_dir=me.store_dir, conf_dir=conf_dir, tls=tls,
                       monitor_port=me.monitor_port, cluster=cluster, listen_host=listen_host)


def _write(path: Path, text: str, secret: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if secret:
        os.chmod(path, 0o600)


def generate(cfg: DeployConfig, outdir: Path, *, port: int = 4222, store_dir: str = "/data/jetstream",
             conf_dir: str = "/etc/nats", monitor_port: int | None = 8222, force: bool = False,
             update: bool = False, nodes: list[Node] | None = None, listen_host: str = "0.0.0.0") -> dict[str, str]:
    """Write everything; returns the password of every identity (for tests and the caller).
    With `update`, existing parties and the .env secrets keep their values. `nodes` places the
    cluster's nodes (default: docker-compose's `nats`, `nats-2`, `nats-3`)."""
    outdir = Path(outdir)
    exists = (outdir / "nats" / "auth.conf").exists()
    if exists and not (force or update):
        raise FileExistsError(f"{outdir} already holds a deployment: pass --update to add or remove parties "
                              "keeping existing credentials, or --force to replace every credential")
    ids = natsperm.identities({p.code: p.agency for p in cfg.programs}, cfg.channels, cfg.auditors)
    kept = _existing(outdir) if update else {}
    passwords = {i.user: kept.get(f"cred:{i.user}") or secrets.token_urlsafe(32) for i in ids}
    if update:  # parties no longer in the config lose their credentials file (and their user)
        for f in (outdir / "credentials").glob("*.env"):
            if f.stem not in passwords:
                f.unlink()
    nats_dir = outdir / "nats"
    _write(nats_dir / "auth.conf", "# generated by `sinergi deploy init`: users, bcrypt hashes, permissions\n"
           + render(auth_block(ids, passwords)), secret=True)
    if cfg.tls:
        for src, dst in ((cfg.tls.cert, "server.pem"), (cfg.tls.key, "server-key.pem"), (cfg.tls.ca, "ca.pem")):
            if src:
                (nats_dir / "tls").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, nats_dir / "tls" / dst)
        os.chmod(nats_dir / "tls" / "server-key.pem", 0o600)
    single = server_conf(name="sinergi-nats", port=port, store_dir=store_dir, conf_dir=conf_dir, tls=cfg.tls,
                         monitor_port=monitor_port, listen_host=listen_host)
    _write(nats_dir / "nats.conf", "# one node (docker-compose default profile)\n" + render(single))
    route_pw = kept.get("NATS_ROUTE_PASSWORD") or secrets.token_urlsafe(24)
    nodes = nodes or compose_nodes(port, store_dir, monitor_port)
    for n in range(1, len(nodes) + 1):
        node = cluster_conf(nodes, n, route_pw, conf_dir=conf_dir, tls=cfg.tls, listen_host=listen_host)
        _write(nats_dir / f"nats-{n}.conf", f"# cluster node {n} of {len(nodes)} (compose profile `cluster`)\n"
               + render(node), secret=True)

    scheme = "tls" if cfg.tls else "nats"
    for ident in ids:
        _write(outdir / "credentials" / f"{ident.user}.env",
               f"# {ident.description}: give this file to that party only, over a safe channel\n"
               f"NATS_URL={scheme}://{cfg.nats_host}:{port}\nNATS_USER={ident.user}\n"
               f"NATS_PASSWORD={passwords[ident.user]}\n"
               f"# connect with this inbox prefix (nats-py: inbox_prefix=...; nats CLI: --inbox-prefix)\n"
               f"NATS_INBOX_PREFIX={ident.inbox_prefix}\n", secret=True)
    env = [
        "# generated by `sinergi deploy init`; keep it next to docker-compose.yml, mode 0600",
        "COMPOSE_PROJECT_NAME=sinergi",  # volumes sinergi_pg-data, sinergi_nats-data (docs/DEPLOY.md)
        "SINERGI_ENV=production",
        f"SINERGI_REGENCY={cfg.regency}",
        f"SINERGI_AUTH_SECRET={kept.get('SINERGI_AUTH_SECRET') or secrets.token_urlsafe(48)}",
        f"POSTGRES_PASSWORD={kept.get('POSTGRES_PASSWORD') or secrets.token_urlsafe(32)}",
        f"SINERGI_NATS_SCHEME={scheme}",
        # a private CA: the services trust it through OpenSSL's SSL_CERT_FILE
        f"SINERGI_CA_FILE={'/etc/sinergi/tls/ca.pem' if cfg.tls and cfg.tls.ca else '/etc/ssl/certs/ca-certificates.crt'}",
        *(["COMPOSE_PROFILES=cluster", "NATS_CONFIG=nats-1.conf", "SINERGI_STREAM_REPLICAS=3",
           # the services list every node: they start, and carry on, whichever one is down
           "SINERGI_NATS_URLS=" + ",".join(f"{scheme}://{node_host(n)}:{port}" for n in range(1, CLUSTER_NODES + 1))]
          if cfg.cluster else ["NATS_CONFIG=nats.conf", "SINERGI_STREAM_REPLICAS=1"]),
        f"NATS_OPS_PASSWORD={passwords['ops']}",
        "# cluster routes between the three NATS nodes",
        f"NATS_ROUTE_PASSWORD={route_pw}",
        *[f"NATS_{s.upper()}_PASSWORD={passwords['svc-' + s]}" for s in natsperm.SERVICES],
    ]
    _write(outdir / ".env", "\n".join(env) + "\n", secret=True)
    _write(outdir / "permissions.md", permissions_table(ids))
    return passwords


def _env_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#")


def _existing(outdir: Path) -> dict[str, str]:
    """Secrets of an earlier run: `cred:<user>` passwords and the .env values."""
    found = _env_file(outdir / ".env")
    for f in (outdir / "credentials").glob("*.env"):
        pw = _env_file(f).get("NATS_PASSWORD")
        if pw:
            found[f"cred:{f.stem}"] = pw
    return found


def permissions_table(ids: list[Identity]) -> str:
    lines = ["# NATS identities and permissions (generated)", "",
             "| user | who | may publish | may subscribe |", "|---|---|---|---|"]
    for i in ids:
        pub = "<br>".join(f"`{s}`" for s in i.publish) + ("<br>replies to requests" if i.allow_responses else "")
        lines.append(f"| `{i.user}` | {i.description} | {pub} | {'<br>'.join(f'`{s}`' for s in i.subscribe)} |")
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    from services.kit import privacy, users

    users.register_cli(app)    # `sinergi users ...`
    privacy.register_cli(app)  # `sinergi privacy export ...`
    deploy_app = typer.Typer(help="Deployment: NATS identities, credentials, docker-compose environment.",
                             no_args_is_help=True)
    app.add_typer(deploy_app, name="deploy")

    @deploy_app.command("init")
    def init(config: Path = typer.Argument(..., exists=True, dir_okay=False, help="the regency's YAML file"),
             outdir: Path = typer.Argument(..., help="where to write nats/, credentials/ and .env"),
             port: int = typer.Option(4222, help="NATS client port"),
             store_dir: str = typer.Option("/data/jetstream", help="JetStream store inside the NATS container"),
             conf_dir: str = typer.Option("/etc/nats", help="where OUTDIR/nats is mounted for nats-server"),
             force: bool = typer.Option(False, "--force", help="replace an existing deployment's credentials"),
             update: bool = typer.Option(False, "--update",
                                         help="add/remove parties, keeping existing credentials and secrets")) -> None:
        """Generate the NATS configuration (one identity per party) and fresh credentials."""
        from rich.console import Console

        cfg = load_config(config)
        try:
            passwords = generate(cfg, outdir, port=port, store_dir=store_dir, conf_dir=conf_dir, force=force,
                                 update=update)
        except FileExistsError as exc:
            raise typer.BadParameter(str(exc)) from None
        out = Console(stderr=True)
        out.print(f"[green]wrote {outdir}/nats (auth.conf, nats.conf, nats-1..3.conf), .env, permissions.md")
        out.print(f"[green]{len(passwords)} identities; credentials in {outdir}/credentials/ (one file per party)")
