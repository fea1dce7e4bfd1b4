"""deploy/helm/engram: rendered by Helm itself (helm-python-sdk: Helm v4's Go SDK as a
library) with the default and production values, every manifest validated against the
Kubernetes schemas (kubernetes-validate), and the values `engram size` prints accepted."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from engram.api.health import router as health_router
from engram.config import load_settings
from tests.fix_server import ENGRAM

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "engram"
KUBE_VERSION = "1.30"  # the oldest minor the chart is checked against (AKS LTS)
# Prometheus Operator kinds: no schema in kubernetes-validate; checked by hand below.
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1",
        "PrometheusRule")}  # fmt: skip
MINIMAL = {"database": {"existingSecret": "engram-db"}}


def production() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values-production.yaml").read_text())
    return values


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(str(CHART)) as c:
        yield c


def render(chart: helm.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object an install would create (hooks included), in template order."""
    out = chart.render(values, name="engram", namespace="memory", is_install=True)
    docs: list[dict[str, Any]] = []
    for name in sorted(out):
        if not name.endswith((".yaml", ".yml")):
            continue
        docs.extend(d for d in yaml.safe_load_all(out[name]) if d)
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


def container(doc: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def flat_keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for k, v in tree.items():
        path = f"{prefix}{k}"
        keys.add(path)
        if isinstance(v, dict) and v:
            keys |= flat_keys(v, path + ".")
    return keys


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.mark.parametrize("values", [MINIMAL, production()], ids=["default", "production"])
def test_every_manifest_is_valid_kubernetes(chart: helm.Chart, values: dict[str, Any]) -> None:
    docs = render(chart, values)
    assert len(docs) >= 8
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            assert doc["spec"], doc["kind"]
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_without_a_database_the_chart_says_what_to_set(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmError, match=r"database\.existingSecret"):
        chart.render({}, name="engram", namespace="memory")


@pytest.mark.parametrize(
    ("drop", "named"),
    [(("tls", "existingSecret"), r"tls\.existingSecret"),
     (("pgbouncer", "tlsSecret"), r"pgbouncer\.tlsSecret")],
)  # fmt: skip
def test_production_without_tls_says_what_to_set(
    chart: helm.Chart, drop: tuple[str, str], named: str
) -> None:
    # `engram serve` would refuse these at start; the chart refuses them at render time.
    values = production()
    values[drop[0]][drop[1]] = ""
    with pytest.raises(helm.HelmError, match=named):
        chart.render(values, name="engram", namespace="memory")


def test_production_pods_serve_https_with_the_mounted_certificate(
    chart: helm.Chart, tmp_path: Path
) -> None:
    docs = render(chart, production())
    api = find(docs, "Deployment", "engram-api")
    c = container(api)
    assert {c[p]["httpGet"]["scheme"] for p in ("startupProbe", "livenessProbe",
            "readinessProbe")} == {"HTTPS"}  # fmt: skip
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in api["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-tls"]["secret"]["secretName"] == "engram-api-tls"
    assert volumes["db-ca"]["secret"]["secretName"] == "engram-database-ca"
    config = tmp_path / "config.yaml"
    config.write_text(find(docs, "ConfigMap", "engram")["data"]["config.yaml"])
    settings = load_settings(config)
    assert settings.tls.certfile is not None and settings.tls.keyfile is not None
    assert str(settings.tls.certfile.parent) == mounts["api-tls"]
    assert mounts["db-ca"] == "/etc/engram-db-ca"
    ini = find(docs, "ConfigMap", "engram-pgbouncer")["data"]["pgbouncer.ini"]
    assert "client_tls_sslmode = require" in ini
    assert find(docs, "ServiceMonitor", "engram")["spec"]["endpoints"][0]["scheme"] == "https"


def test_lint_finds_no_errors() -> None:
    report = helm.lint(str(CHART), MINIMAL, strict=True)
    errors = [m for m in report["messages"] if m["severity"] >= 2]
    assert not errors and not report["errors"], report


def test_defaults_run_hardened_pods_with_probes_on_the_health_routes(chart: helm.Chart) -> None:
    docs = render(chart, MINIMAL)
    routes = {r.path for r in health_router.routes}  # type: ignore[attr-defined]
    api = find(docs, "Deployment", "engram-api")
    worker = find(docs, "Deployment", "engram-worker")
    assert api["spec"]["replicas"] == 3 and worker["spec"]["replicas"] == 2
    c = container(api)
    assert c["args"] == ["serve", "--no-worker"]
    probes = {p: c[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe",
              "readinessProbe")}  # fmt: skip
    assert probes["readinessProbe"] == "/readyz" and set(probes.values()) <= routes
    for doc in (api, worker, find(docs, "Job", "engram-migrate")):
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        sc = container(doc)["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert container(doc)["resources"]["requests"]["memory"]
        mounts = {m["mountPath"] for m in container(doc)["volumeMounts"]}
        assert {"/tmp", "/var/lib/engram", "/etc/engram"} <= mounts
    assert container(worker)["args"] == ["worker", "--concurrency", "1"]
    kinds = {d["kind"] for d in docs}
    assert {"PodDisruptionBudget", "Service", "ConfigMap", "Secret"} <= kinds
    assert not kinds & {"HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor"}


def test_a_shared_local_key_file_is_copied_into_every_pod(chart: helm.Chart) -> None:
    docs = render(chart, merge(MINIMAL, {"localKeys": {"existingSecret": "engram-kek"}}))
    for name in ("engram-api", "engram-worker"):
        pod = find(docs, "Deployment", name)["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        # Where the local provider looks by default (data_dir/keys/kek.json), mode 0600.
        assert "-m 0600" in init["command"][-1]
        assert init["command"][-1].endswith("/var/lib/engram/keys/kek.json")
        secret = next(v for v in pod["volumes"] if v["name"] == "local-keys")
        assert secret["secret"]["secretName"] == "engram-kek"


def test_migrations_run_as_the_owner_before_install_and_upgrade(chart: helm.Chart) -> None:
    docs = render(chart, production())
    job = find(docs, "Job", "engram-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    c = container(job)
    assert c["args"] == ["migrate"]
    owner = env(c)["ENGRAM_MIGRATE_DATABASE_URL"]["secretKeyRef"]
    assert owner == {"name": "engram-database", "key": "migrate-database-url"}
    assert "ENGRAM_DATABASE_URL" not in env(c)
    # The Job's ConfigMap is a hook too, made before the Job (pre-install has no release
    # objects yet), with the same settings as the pods'.
    hook_cm = find(docs, "ConfigMap", "engram-migrate")
    assert int(hook_cm["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    assert hook_cm["data"] == find(docs, "ConfigMap", "engram")["data"]


def test_development_values_make_the_secrets_and_a_hook_secret_for_migrations(
    chart: helm.Chart,
) -> None:
    dsn = "postgresql://{}@db/engram?sslmode=require"
    docs = render(chart, {"database": {"url": dsn.format("app"), "ownerUrl": dsn.format("own")}})
    db = find(docs, "Secret", "engram-database")
    assert db["stringData"]["database-url"].startswith("postgresql://app@")
    hook = find(docs, "Secret", "engram-migrate")
    assert "pre-install" in hook["metadata"]["annotations"]["helm.sh/hook"]
    assert hook["stringData"]["migrate-database-url"].startswith("postgresql://own@")
    key = find(docs, "Secret", "engram-api-key")
    assert len(key["data"]["api-key"]) >= 40  # generated once, then kept


def test_production_values(chart: helm.Chart) -> None:
    docs = render(chart, production())
    api = find(docs, "Deployment", "engram-api")
    assert "replicas" not in api["spec"]  # the HPA owns it
    hpa = find(docs, "HorizontalPodAutoscaler", "engram-api")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 8)
    # API pods through PgBouncer (no prepared statements), workers straight to PostgreSQL
    # so that LISTEN/NOTIFY tells them of jobs at once.
    api_env = env(container(api))
    assert api_env["ENGRAM_POOL__POOLER"] == "transaction"
    assert api_env["ENGRAM_DATABASE_URL"]["secretKeyRef"]["key"] == "database-url"
    w_env = env(container(find(docs, "Deployment", "engram-worker")))
    assert "ENGRAM_POOL__POOLER" not in w_env
    assert w_env["ENGRAM_DATABASE_URL"]["secretKeyRef"]["key"] == "direct-database-url"
    ini = find(docs, "ConfigMap", "engram-pgbouncer")["data"]["pgbouncer.ini"]
    assert "pool_mode = transaction" in ini and "default_pool_size = 26" in ini
    assert find(docs, "Deployment", "engram-pgbouncer")["spec"]["replicas"] == 2
    ingress = find(docs, "Ingress", "engram")
    assert ingress["spec"]["tls"][0]["secretName"] == "engram-tls"
    policy = find(docs, "NetworkPolicy", "engram")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    # The PrometheusRule is deploy/monitoring/alerts.yaml, which promtool tests.
    rules = find(docs, "PrometheusRule", "engram")
    alerts = yaml.safe_load((ROOT / "deploy" / "monitoring" / "alerts.yaml").read_text())
    assert rules["spec"] == alerts
    monitor = find(docs, "ServiceMonitor", "engram")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # Prometheus scrapes the metrics port (every figure, no credentials): the pod
    # serves it (metrics.port), the Service names it, the NetworkPolicy lets it in.
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    api_container = container(find(docs, "Deployment", "engram-api"))
    ports = {p["name"]: p["containerPort"] for p in api_container["ports"]}
    config = yaml.safe_load(find(docs, "ConfigMap", "engram")["data"]["config.yaml"])
    assert ports["metrics"] == config["metrics"]["port"] != ports["http"]
    service = find(docs, "Service", "engram")
    assert {"name": "metrics", "port": ports["metrics"], "targetPort": "metrics",
            "protocol": "TCP"} in service["spec"]["ports"]  # fmt: skip
    allowed = {p["port"] for p in policy["spec"]["ingress"][0]["ports"]}
    assert {"http", "metrics"} <= allowed
    assert "engram.json" in find(docs, "ConfigMap", "engram-dashboard")["data"]


@pytest.mark.parametrize("values", [MINIMAL, production()], ids=["default", "production"])
def test_rendered_settings_are_valid_engram_settings(
    chart: helm.Chart, values: dict[str, Any], tmp_path: Path
) -> None:
    docs = render(chart, values)
    config = tmp_path / "config.yaml"
    config.write_text(find(docs, "ConfigMap", "engram")["data"]["config.yaml"])
    settings = load_settings(config)
    assert settings.host == "0.0.0.0"  # noqa: S104
    assert settings.profile == values.get("config", {}).get("profile", "development")
    assert str(settings.data_dir) == "/var/lib/engram"
    assert settings.pool.max_size == values.get("config", {}).get("pool", {}).get("max_size", 10)


@pytest.mark.parametrize(
    "args",
    [
        ["--sessions", "20000", "--messages-per-session", "40"],
        ["--sessions", "100000", "--messages-per-session", "40", "--index", "ivfflat"],
        # So many pods that no server takes their connections: PgBouncer is recommended.
        ["--sessions", "1000", "--messages-per-session", "10", "--replicas", "400"],
    ],
    ids=["hnsw", "ivfflat", "pgbouncer"],
)
def test_sizing_helm_values_are_chart_values(
    chart: helm.Chart, args: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "plan.yaml"
    r = subprocess.run([ENGRAM, "size", *args, "--output", str(out)], capture_output=True,
                       text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    suggested = yaml.safe_load(out.read_text())["helm_values"]
    unknown = flat_keys(suggested) - flat_keys(chart.values)
    assert not unknown, f"engram size suggests values the chart does not have: {unknown}"
    values = merge(MINIMAL, suggested)
    if suggested["pgbouncer"]["enabled"]:
        values = merge(values, {"pgbouncer": {"upstream": {"host": "db"},
                                              "existingSecret": "userlist"}})  # fmt: skip
    docs = render(chart, values)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    config = yaml.safe_load(find(docs, "ConfigMap", "engram")["data"]["config.yaml"])
    assert config["pool"]["max_size"] == suggested["config"]["pool"]["max_size"]
    assert config["vector"]["index"] == suggested["config"]["vector"]["index"]
    api = find(docs, "Deployment", "engram-api")
    assert api["spec"]["replicas"] == suggested["api"]["replicas"]
