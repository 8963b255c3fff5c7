"""deploy/: every file parses, has the shape its tool needs, and uses only what the worker exports.

The metric check builds the worker's own registry (every metrics class of ``worker.core.metrics``
and ``worker.amqp.metrics``)
and compares each ``asi_optimiser_*`` name in the alert rules and the dashboard with it: a
counter only as ``<name>_total``, a histogram only as ``_bucket``/``_sum``/``_count``, and every
label in a matcher, a ``by (...)`` clause or a legend must be one the metric has (or ``job``,
``instance``, ``le``). Each check also has a test feeding it a broken copy, so it can fail.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

import worker.amqp.metrics
import worker.core.metrics
from schemas import ActionKind, EnactmentRecord, EnactmentStatus, ImprovementAction
from tests.support.paths import ROOT
from worker.settings import ENV_PREFIX, load_settings, setting_fields

DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"
K8S = DEPLOY / "k8s"

REQUIRED_ALERTS = {
    "OptimiserEnactmentFailureRateHigh",
    "OptimiserHotSwapSuccessRateLow",
    "OptimiserWorkerDown",
    "OptimiserPlansParked",
    "OptimiserPausedTooLong",
    "OptimiserNotReady",
}
#: Metrics the dashboard must show (series names, as PromQL uses them).
DASHBOARD_METRICS = {
    "asi_optimiser_actions_enacted_total",
    "asi_optimiser_actions_rate_limited_total",
    "asi_optimiser_hot_swaps_total",
    "asi_optimiser_enact_duration_seconds_bucket",
    "asi_optimiser_plan_duration_seconds_bucket",
    "asi_optimiser_paused",
    "asi_optimiser_ready",
}
#: Labels Prometheus adds to every scraped series, and the histogram bucket label.
TARGET_LABELS = frozenset({"job", "instance"})
SEVERITIES = {"critical", "warning", "info"}
RUNBOOK = re.compile(r"self-optimiser (status|review list|resume|pause|tail)")

_METRIC = re.compile(r"\b(asi_optimiser_[a-zA-Z0-9_]+)\b\s*(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


# --- what the worker exports ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    family: str
    type: str
    labels: frozenset[str]


def exported_series() -> dict[str, Series]:
    """Every series name the worker's registry exposes, with its family's type and labels."""
    registry = CollectorRegistry()
    # Every metrics class of the two (they take the registry and nothing else).
    factories: list[Callable[[CollectorRegistry], object]] = [
        cls
        for module in (worker.core.metrics, worker.amqp.metrics)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__
        and list(inspect.signature(cls).parameters) == ["registry"]
    ]
    instances = [factory(registry) for factory in factories]
    assert {type(i).__name__ for i in instances} >= {"OptimiserMetrics", "WorkerMetrics"}
    for instance in instances:
        _give_every_family_a_sample(instance)
    series: dict[str, Series] = {}
    for family in registry.collect():
        labels = frozenset(name for s in family.samples for name in s.labels) - {"le"}
        if family.type == "counter":
            names = [f"{family.name}_total"]
        elif family.type == "histogram":
            names = [f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")]
        else:
            names = [family.name]
        for name in names:
            with_le = labels | {"le"} if name.endswith("_bucket") else labels
            series[name] = Series(family.name, family.type, with_le)
    return series


def _give_every_family_a_sample(instance: object) -> None:
    """Labelled families show their labels only once they have a sample."""
    if isinstance(instance, worker.core.metrics.OptimiserMetrics):
        record = EnactmentRecord(
            action=ImprovementAction(
                action_id="a-1",
                module_name="m",
                action_kind=ActionKind.HOT_SWAP_MODULE,
                parameters={},
                rationale="test",
            ),
            status=EnactmentStatus.RATE_LIMITED,
            attempted_at=datetime.now(UTC),
        )
        instance.enact_call()
        instance.observe(record, dispatched=True)
        instance.hot_swap("m", True)
        instance.breakers = lambda: [("m", "HOT_SWAP_MODULE", True)]
    for value in vars(instance).values():
        labelnames = getattr(value, "_labelnames", ())
        if isinstance(value, MetricWrapperBase) and labelnames:
            value.labels(*["x"] * len(labelnames))


@pytest.fixture(scope="module")
def exported() -> dict[str, Series]:
    return exported_series()


# --- what deploy/ uses -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    where: str
    expr: str
    legend: str = ""


def alert_queries(rules: dict[str, Any]) -> list[Query]:
    return [
        Query(f"alert {rule.get('alert')}", str(rule.get("expr", "")))
        for group in rules.get("groups") or []
        for rule in group.get("rules") or []
    ]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])


def dashboard_queries(dashboard: dict[str, Any]) -> list[Query]:
    return [
        Query(
            f"panel {panel.get('title')!r} {target.get('refId')}",
            str(target.get("expr", "")),
            str(target.get("legendFormat", "")),
        )
        for panel in _panels(dashboard.get("panels") or [])
        for target in panel.get("targets") or []
    ]


def metric_problems(queries: list[Query], exported: dict[str, Series]) -> list[str]:
    """Names the worker does not export, wrong suffixes, and labels its metrics do not have."""
    problems = []
    for query in queries:
        allowed = set(TARGET_LABELS)
        used: set[str] = set()
        names = []
        for match in _METRIC.finditer(query.expr):
            name, selector = match.group(1), match.group(2) or ""
            names.append(name)
            used |= set(_MATCHER.findall(selector))
            series = exported.get(name)
            if series is not None:
                allowed |= series.labels
                continue
            base = re.sub(r"_(total|bucket|sum|count)$", "", name)
            family = next((s for s in exported.values() if s.family == base), None)
            if family is None:
                problems.append(f"{query.where}: {name} is not exported by the worker")
            elif family.type == "counter":
                problems.append(f"{query.where}: {name}: counter, use {base}_total")
            else:
                problems.append(f"{query.where}: {name}: {family.type}, not a series of it")
        if not names:
            continue
        for clause in _GROUPING.findall(query.expr):
            used |= {label.strip() for label in clause.split(",") if label.strip()}
        used |= set(_LEGEND.findall(query.legend))
        problems += [
            f"{query.where}: label {label!r} is not one of {sorted(allowed)}"
            for label in sorted(used - allowed)
        ]
    return problems


def rule_problems(rules: dict[str, Any]) -> list[str]:
    problems = []
    groups = rules.get("groups") or []
    if [g.get("name") for g in groups] != ["self-optimiser", "self-optimiser-records"]:
        problems.append("want exactly one group, self-optimiser, and its recording rules")
    for group in groups[1:]:
        for rule in group.get("rules") or []:
            if not str(rule.get("record", "")).startswith("asi_optimiser:") or not rule.get("expr"):
                problems.append(f"recording rule {rule}: want record asi_optimiser:... and expr")
    names = []
    for group in groups[:1]:
        for rule in group.get("rules") or []:
            name = rule.get("alert")
            names.append(name)
            where = f"alert {name}"
            if not name:
                problems.append(f"a rule without `alert`: {rule}")
            if not str(rule.get("expr", "")).strip():
                problems.append(f"{where}: no expr")
            if not re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))):
                problems.append(f"{where}: no `for` duration")
            if (rule.get("labels") or {}).get("severity") not in SEVERITIES:
                problems.append(f"{where}: labels.severity not one of {sorted(SEVERITIES)}")
            annotations = rule.get("annotations") or {}
            if not annotations.get("summary"):
                problems.append(f"{where}: no annotations.summary")
            if not RUNBOOK.search(str(annotations.get("description", ""))):
                problems.append(f"{where}: the description names no self-optimiser command")
    if len(names) != len(set(names)):
        problems.append(f"duplicate alert names: {names}")
    problems += [f"alert {n} is missing" for n in sorted(REQUIRED_ALERTS - set(names))]
    return problems


def dockerfile_problems(text: str) -> list[str]:
    """The final stage runs as a numeric non-root user and is the worker."""
    lines = re.sub(r"\\\n", " ", text).splitlines()
    instructions = [line.strip() for line in lines if line.strip() and line.strip()[0] != "#"]
    stages: list[list[str]] = []
    for instruction in instructions:
        if instruction.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    if len(stages) < 2:
        return ["not a multi-stage build"]
    final = stages[-1]
    problems = []
    users = [i.split(None, 1)[1] for i in final if i.upper().startswith("USER ")]
    if not users:
        problems.append("the final stage has no USER: it runs as root")
    else:
        uid = users[-1].split(":")[0]
        if not uid.isdigit() or int(uid) == 0:
            problems.append(f"USER {users[-1]}: want a numeric non-root uid (runAsNonRoot)")
    expected = (
        r'ENTRYPOINT \["self-optimiser"\]',
        r'CMD \["run"\]',
        r"EXPOSE 9464\b",
        r"HEALTHCHECK .*http://127\.0\.0\.1:9464/healthz",
        r"STOPSIGNAL SIGTERM",
    )
    for pattern in expected:
        if not any(re.match(pattern, i) for i in final):
            problems.append(f"the final stage lacks {pattern!r}")
    return problems


def deployment_problems(deployment: dict[str, Any]) -> list[str]:
    problems = []
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if ports.get("metrics") != 9464:
        problems.append("no container port 9464 named metrics")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (container.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path or get.get("port") not in ("metrics", 9464):
            problems.append(f"{probe}: want httpGet {path} on port 9464")
    if not ((container.get("lifecycle") or {}).get("preStop")):
        problems.append("no preStop hook")
    if pod.get("terminationGracePeriodSeconds", 30) < 60:
        problems.append("terminationGracePeriodSeconds < 60: the drain may be cut short")
    if not (pod.get("securityContext") or {}).get("runAsNonRoot"):
        problems.append("pod securityContext lacks runAsNonRoot")
    security = container.get("securityContext") or {}
    if not security.get("readOnlyRootFilesystem"):
        problems.append("container lacks readOnlyRootFilesystem")
    if security.get("allowPrivilegeEscalation") is not False:
        problems.append("container allows privilege escalation")
    env = {e["name"]: e for e in container.get("env", [])}
    secret = ((env.get("OPTIMISER_AMQP_URL") or {}).get("valueFrom") or {}).get("secretKeyRef")
    if secret != {"name": "self-optimiser-amqp", "key": "url"}:
        problems.append("OPTIMISER_AMQP_URL does not come from secret self-optimiser-amqp, url")
    if (env.get("OPTIMISER_DECLARE_TOPOLOGY") or {}).get("value") != "false":
        problems.append("OPTIMISER_DECLARE_TOPOLOGY is not false: the worker user cannot declare")
    for kind in ("requests", "limits"):
        if not (container.get("resources") or {}).get(kind):
            problems.append(f"no resource {kind}")
    return problems


# --- the deploy/ files themselves ------------------------------------------------------------


def load_yaml(path: Path) -> dict[str, Any]:
    [document] = yaml.safe_load_all(path.read_text())
    assert isinstance(document, dict), path
    return document


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])


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
