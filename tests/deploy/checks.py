"""The checks test_deploy.py runs on deploy/, each a function a test can also feed a broken copy.

The metric check builds the worker's own registry (every metrics class of ``worker.core.metrics``
and ``worker.amqp.metrics``)
and compares each ``asi_optimiser_*`` name in the alert rules and the dashboard with it: a
counter only as ``<name>_total``, a histogram only as ``_bucket``/``_sum``/``_count``, and every
label in a matcher, a ``by (...)`` clause or a legend must be one the metric has (or ``job``,
``instance``, ``le``).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

import worker.amqp.metrics
import worker.core.metrics
from schemas import ActionKind, EnactmentRecord, EnactmentStatus, ImprovementAction
from tests.support.paths import ROOT

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

METRIC = re.compile(r"\b(asi_optimiser_[a-zA-Z0-9_]+)\b\s*(\{[^}]*\})?")
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


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those in a row too."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels") or [])


def dashboard_queries(dashboard: dict[str, Any]) -> list[Query]:
    return [
        Query(
            f"panel {panel.get('title')!r} {target.get('refId')}",
            str(target.get("expr", "")),
            str(target.get("legendFormat", "")),
        )
        for panel in all_panels(dashboard.get("panels") or [])
        for target in panel.get("targets") or []
    ]


def metric_problems(queries: list[Query], exported: dict[str, Series]) -> list[str]:
    """Names the worker does not export, wrong suffixes, and labels its metrics do not have."""
    problems = []
    for query in queries:
        allowed = set(TARGET_LABELS)
        used: set[str] = set()
        names = []
        for match in METRIC.finditer(query.expr):
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
