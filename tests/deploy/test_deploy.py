"""deploy/: every file parses, has the shape its tool needs, and uses only what the worker exports.

The checks are in ``tests/deploy/checks.py``; each also has a test here feeding it a broken copy,
so it can fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.checks import (
    ALERTS,
    DASHBOARD,
    DASHBOARD_METRICS,
    DEPLOY,
    K8S,
    REQUIRED_ALERTS,
    Series,
    alert_queries,
    dashboard_queries,
    deployment_problems,
    dockerfile_problems,
    exported_series,
    load_yaml,
    metric_problems,
    rule_problems,
    yaml_files,
)
from tests.deploy.checks import METRIC as _METRIC
from tests.deploy.checks import all_panels as _panels
from tests.support.paths import ROOT
from worker.settings import ENV_PREFIX, load_settings, setting_fields


@pytest.fixture(scope="module")
def exported() -> dict[str, Series]:
    return exported_series()


def test_deploy_has_every_file() -> None:
    expected = [
        "Dockerfile",
        "compose.yaml",
        ".env.example",
        "README.md",
        "rabbitmq/rabbitmq.conf",
        "rabbitmq/enabled_plugins",
        "prometheus/prometheus.yml",
        "prometheus/alerts.yml",
        "grafana/dashboard.json",
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/self-optimiser.yml",
        "k8s/deployment.yaml",
        "k8s/service.yaml",
        "k8s/rabbitmq-cluster.yaml",
        "k8s/README.md",
    ]
    assert [f for f in expected if not (DEPLOY / f).is_file()] == []
    assert (ROOT / ".dockerignore").is_file()


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    documents = list(yaml.safe_load_all(path.read_text()))
    assert documents
    assert all(isinstance(d, dict) for d in documents)


def test_alert_rules_have_what_prometheus_and_people_need() -> None:
    assert rule_problems(load_yaml(ALERTS)) == []


def test_every_metric_the_alerts_and_the_dashboard_use_is_exported(
    exported: dict[str, Series],
) -> None:
    queries = alert_queries(load_yaml(ALERTS)) + dashboard_queries(
        json.loads(DASHBOARD.read_text())
    )
    assert len(queries) > 20
    assert metric_problems(queries, exported) == []


def test_promtool_passes_the_rules_their_unit_tests_and_the_config() -> None:
    """Every alert fires on its condition and stays quiet when healthy, in a real
    Prometheus rule engine (`deploy/prometheus/tests/`); promtool is Debian's `prometheus`."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs promtool (apt-get install prometheus)", pytrace=False)
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    for argv in (
        ["check", "rules", str(ALERTS)],
        ["test", "rules", str(DEPLOY / "prometheus" / "tests" / "alerts_test.yml")],
    ):
        done = subprocess.run([promtool, *argv], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_promtool_test() -> None:
    tests = (DEPLOY / "prometheus" / "tests" / "alerts_test.yml").read_text()
    alerts = {r["alert"] for g in load_yaml(ALERTS)["groups"] for r in g["rules"] if "alert" in r}
    assert {a for a in alerts if f'alertname="{a}"' not in tests} == set()


def test_the_dashboard_is_a_grafana_dashboard_showing_the_worker() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"]
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    panels = list(_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "prometheus", panel["title"]
    used = {m for q in dashboard_queries(dashboard) for m in _METRIC.findall(q.expr)}
    assert DASHBOARD_METRICS - {name for name, _ in used} == set()
    # Queue depths and consumers as the broker counts them: true while the worker is down.
    exprs = " ".join(q.expr for q in dashboard_queries(dashboard))
    assert "rabbitmq_detailed_queue_messages" in exprs
    assert "rabbitmq_detailed_queue_consumers" in exprs
    quantiles = [q.expr for q in dashboard_queries(dashboard) if "histogram_quantile" in q.expr]
    for metric in ("enact_duration", "plan_duration"):
        for q in ("0.5", "0.9", "0.99"):
            assert any(f"({q}," in e and metric in e for e in quantiles), (metric, q)


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    [source] = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert (source["uid"], source["type"], source["url"]) == (
        "prometheus",
        "prometheus",
        "http://prometheus:9090",
    )
    [provider] = load_yaml(provisioning / "dashboards" / "self-optimiser.yml")["providers"]
    mounts = load_yaml(DEPLOY / "compose.yaml")["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboard.json:{provider['options']['path']}/dashboard.json:ro" in mounts


def test_compose_runs_the_worker_twice_after_rabbitmq_with_its_definitions() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    services = load_yaml(DEPLOY / "compose.yaml")["services"]
    assert set(services) == {"definitions", "rabbitmq", "worker", "prometheus", "grafana"}
    worker_service = services["worker"]
    assert worker_service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert worker_service["deploy"]["replicas"] == 2
    assert worker_service["stop_grace_period"] == "60s"
    assert worker_service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert worker_service["environment"]["OPTIMISER_DECLARE_TOPOLOGY"] == "false"
    url = worker_service["environment"]["OPTIMISER_AMQP_URL"]
    assert url.startswith("amqp://optimiser-worker:${OPTIMISER_PASSWORD_WORKER:?")
    assert url.endswith("@rabbitmq:5672/optimiser")
    rabbitmq = services["rabbitmq"]
    assert rabbitmq["image"].startswith("rabbitmq:3.13-management")
    assert rabbitmq["depends_on"]["definitions"]["condition"] == "service_completed_successfully"
    assert "definitions:/etc/rabbitmq/definitions:ro" in rabbitmq["volumes"]
    assert "check_port_connectivity" in rabbitmq["healthcheck"]["test"]
    definitions = services["definitions"]
    assert definitions["command"][:2] == ["definitions", "--password-env"]
    # Every bind mount exists, and every variable compose insists on is in .env.example.
    for service in services.values():
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (DEPLOY / volume.split(":")[0]).exists(), volume
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = set(re.findall(r"^(\w+)=", (DEPLOY / ".env.example").read_text(), re.M))
    assert required - example == set()
    assert {f"OPTIMISER_PASSWORD_{r}" for r in ("ADMIN", "PLANNER", "WORKER")} <= required


def test_the_workers_environment_is_settings_the_worker_accepts() -> None:
    """A misspelt OPTIMISER_* variable would be ignored silently; a bad value stops the worker."""
    known = {ENV_PREFIX + field.name.upper() for field, _ in setting_fields()}
    services = load_yaml(DEPLOY / "compose.yaml")["services"]
    container = _container(load_yaml(K8S / "deployment.yaml"))
    environments = {
        "compose worker": dict(services["worker"]["environment"]),
        "compose definitions": dict(services["definitions"]["environment"]),
        "k8s deployment": {
            e["name"]: e.get("value", "amqp://u:p@rabbitmq/optimiser") for e in container["env"]
        },
    }
    for where, environment in environments.items():
        settings = {k: re.sub(r"\$\{[^}]*\}", "x", v) for k, v in environment.items()}
        passwords = {k for k in settings if k.startswith(f"{ENV_PREFIX}PASSWORD_")}
        assert set(settings) - passwords - known == set(), where
        load_settings({k: v for k, v in settings.items() if k not in passwords})


def test_rabbitmq_imports_the_definitions_and_has_no_guest_from_elsewhere() -> None:
    conf = (DEPLOY / "rabbitmq" / "rabbitmq.conf").read_text()
    settings = dict(
        re.findall(r"^([a-z_.0-9]+)\s*=\s*(.+?)\s*$", conf, re.M)
    )  # uncommented lines only
    assert settings["definitions.local.path"] == "/etc/rabbitmq/definitions/definitions.json"
    assert settings["loopback_users.guest"] == "true"
    assert "default_user" not in settings
    assert "listeners.tcp" not in settings  # TLS-only is documented, commented out
    assert "# listeners.ssl.default = 5671" in conf
    plugins = (DEPLOY / "rabbitmq" / "enabled_plugins").read_text().strip()
    assert plugins == "[rabbitmq_management,rabbitmq_prometheus]."


def test_prometheus_scrapes_every_worker_replica_and_loads_the_rules() -> None:
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    for rule_file in config["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).is_file()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    [discovery] = jobs["self-optimiser"]["dns_sd_configs"]
    assert (discovery["names"], discovery["type"], discovery["port"]) == (["worker"], "A", 9464)
    assert jobs["rabbitmq"]["static_configs"] == [{"targets": ["rabbitmq:15692"]}]


def test_the_image_runs_the_worker_as_a_numeric_non_root_user() -> None:
    assert dockerfile_problems((DEPLOY / "Dockerfile").read_text()) == []
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "bench/results"} <= set(ignored)


def test_the_k8s_worker_has_probes_a_pre_stop_hook_and_no_root() -> None:
    deployment = load_yaml(K8S / "deployment.yaml")
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["replicas"] == 2
    assert deployment_problems(deployment) == []


def test_k8s_selectors_select_the_worker_pods() -> None:
    pod_labels = load_yaml(K8S / "deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    service = load_yaml(K8S / "service.yaml")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP"}
    ]
    selectors = [service["spec"]["selector"]]
    for name in ("podmonitor.yaml", "poddisruptionbudget.yaml"):
        if (K8S / name).exists():
            selectors.append(load_yaml(K8S / name)["spec"]["selector"]["matchLabels"])
    for selector in selectors:
        assert selector.items() <= pod_labels.items()


def test_the_rabbitmq_cluster_has_three_nodes_and_imports_the_definitions() -> None:
    cluster = load_yaml(K8S / "rabbitmq-cluster.yaml")
    assert cluster["kind"] == "RabbitmqCluster"
    assert cluster["spec"]["replicas"] == 3
    assert "definitions.local.path" in cluster["spec"]["rabbitmq"]["additionalConfig"]


# --- each check fails on a broken copy -------------------------------------------------------


def _alerts_with(old: str, new: str) -> dict[str, Any]:
    text = ALERTS.read_text()
    assert old in text
    broken: dict[str, Any] = yaml.safe_load(text.replace(old, new, 1))
    return broken


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("asi_optimiser_plans_parked_total", "asi_optimiser_plans_parkd_total", "not exported"),
        ("asi_optimiser_actions_enacted_total", "asi_optimiser_actions_enacted", "counter, use"),
        ("asi_optimiser_paused ==", "asi_optimiser_pausd ==", "not exported"),
        ('{status="FAILED"}', '{kind="FAILED"}', "label 'kind'"),
        (
            "asi_optimiser_hot_swaps_total unless asi_optimiser_hot_swaps_total offset",
            "asi_optimiser_hot_swap_total unless asi_optimiser_hot_swaps_total offset",
            "not exported",
        ),
    ],
)
def test_the_metric_check_catches_a_broken_alert(
    exported: dict[str, Series], old: str, new: str, problem: str
) -> None:
    problems = metric_problems(alert_queries(_alerts_with(old, new)), exported)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (
            "asi_optimiser_enact_duration_seconds_bucket",
            "asi_optimiser_enact_duration_seconds",
            "histogram",
        ),
        ("asi_optimiser_plans_consumed_total", "asi_optimiser_plans_consume_total", "not exported"),
        ("by (action_kind)", "by (kind)", "label 'kind'"),
        ('"legendFormat": "{{module}}"', '"legendFormat": "{{modul}}"', "label 'modul'"),
    ],
)
def test_the_metric_check_catches_a_broken_dashboard(
    exported: dict[str, Series], old: str, new: str, problem: str
) -> None:
    text = DASHBOARD.read_text()
    assert old in text
    problems = metric_problems(dashboard_queries(json.loads(text.replace(old, new))), exported)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda r: r["groups"][0]["rules"][0].pop("for"), "no `for`"),
        (lambda r: r["groups"][0]["rules"][1]["labels"].pop("severity"), "severity"),
        (lambda r: r["groups"][0]["rules"][2]["annotations"].pop("summary"), "summary"),
        (lambda r: r["groups"][0]["rules"][3]["annotations"].update(description="x"), "command"),
        (lambda r: r["groups"][0]["rules"].pop(0), "is missing"),
        (lambda r: r["groups"][0].update(name="other"), "exactly one group"),
    ],
)
def test_the_rule_check_catches_a_broken_rule(
    mutate: Callable[[dict[str, Any]], object], problem: str
) -> None:
    rules = load_yaml(ALERTS)
    rules["groups"][0]["rules"].sort(key=lambda r: r["alert"] not in REQUIRED_ALERTS)
    mutate(rules)
    assert any(problem in p for p in rule_problems(rules)), rule_problems(rules)


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("USER 10001:10001", "", "no USER"),
        ("USER 10001:10001", "USER root", "numeric non-root"),
        ("USER 10001:10001", "USER 0", "numeric non-root"),
        ("127.0.0.1:9464/healthz", "127.0.0.1:9464/metrics", "HEALTHCHECK"),
        ('CMD ["run"]', 'CMD ["demo"]', "CMD"),
    ],
)
def test_the_dockerfile_check_catches_root(old: str, new: str, problem: str) -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert old in text
    assert any(problem in p for p in dockerfile_problems(text.replace(old, new)))


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda d: _container(d).pop("readinessProbe"), "readinessProbe"),
        (lambda d: _container(d).pop("livenessProbe"), "livenessProbe"),
        (lambda d: _container(d)["livenessProbe"]["httpGet"].update(path="/"), "livenessProbe"),
        (lambda d: _container(d).pop("lifecycle"), "preStop"),
        (lambda d: d["spec"]["template"]["spec"].pop("securityContext"), "runAsNonRoot"),
        (lambda d: _container(d)["securityContext"].pop("readOnlyRootFilesystem"), "readOnly"),
        (lambda d: d["spec"]["template"]["spec"].pop("terminationGracePeriodSeconds"), "60"),
        (lambda d: _container(d)["env"].pop(0), "OPTIMISER_AMQP_URL"),
        (lambda d: _container(d)["env"].pop(), "OPTIMISER_DECLARE_TOPOLOGY"),
    ],
)
def test_the_deployment_check_catches_a_missing_probe_or_root(
    mutate: Callable[[dict[str, Any]], object], problem: str
) -> None:
    deployment = load_yaml(K8S / "deployment.yaml")
    mutate(deployment)
    assert any(problem in p for p in deployment_problems(deployment))
