"""Tables, verdicts and the plot of an end-to-end run (``bench.e2e.run_all``'s results)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from bench.e2e import CANDIDATES, FASTSTREAM, RELAY, WORKER

#: The issue's targets (benchmarks, not tests).
TARGET_VS_RELAY: Final = 1.0
TARGET_VS_FASTSTREAM: Final = 1.3
TARGET_STRETCH_VS_RELAY: Final = 1.2
#: At one action a plan, where the per-plan machinery weighs most.
TARGET_SINGLE_VS_RELAY: Final = 0.9
TARGET_IDLE_P99_VS_RELAY: Final = 1.2
TARGET_OVERHEAD: Final = 0.05
#: Issue 15: back in seconds after a busy hour (from its checkpoints), in little memory.
TARGET_RESTART_S: Final = 15.0
TARGET_RESTART_MB: Final = 150.0
TARGET_MEMORY_FLAT: Final = 0.10


def _median_spread(values: list[float]) -> tuple[float, float]:
    median = statistics.median(values)
    return median, (max(values) - min(values)) / median if median else 0.0


def curve(
    runs: list[dict[str, Any]], key: Callable[[dict[str, Any]], bool], field: str
) -> dict[Any, dict[str, tuple[float, float, float]]]:
    """{x: {candidate: (median actions/s, spread, median CPU µs per action)}} of matching runs."""
    grouped: dict[Any, dict[str, list[dict[str, Any]]]] = {}
    for run in runs:
        if key(run["scenario"]):
            x = run["scenario"][field]
            grouped.setdefault(x, {}).setdefault(run["candidate"], []).append(run)
    points = {}
    for x, by_candidate in grouped.items():
        points[x] = {}
        for candidate, chosen in by_candidate.items():
            rate, spread = _median_spread([r["actions_per_s"] for r in chosen])
            cpu = statistics.median(r["cpu_us_per_action"] for r in chosen)
            points[x][candidate] = (rate, spread, cpu)
    return dict(sorted(points.items(), key=lambda item: str(item[0]).zfill(8)))


def _base(scenario: dict[str, Any]) -> bool:
    return bool(scenario["prefetch"] == 32 and scenario["queue_type"] == "quorum")


CURVES: Final = {
    "actions per plan": (_base, "actions_per_plan"),
    "prefetch": (
        lambda s: s["actions_per_plan"] == 10 and s["queue_type"] == "quorum",
        "prefetch",
    ),
    "plans queue": (lambda s: s["actions_per_plan"] == 10 and s["prefetch"] == 32, "queue_type"),
}


def summarise(e2e: dict[str, Any], micro: dict[str, Any] | None) -> dict[str, Any]:
    """Every curve as numbers, the head-to-head ratios and the verdict on each target."""
    runs = e2e["runs"]
    curves = {name: curve(runs, key, field) for name, (key, field) in CURVES.items()}
    head = curves["actions per plan"][10]
    worker, relay, faststream = head[WORKER][0], head[RELAY][0], head[FASTSTREAM][0]
    single = curves["actions per plan"].get(1)
    summary: dict[str, Any] = {
        "curves": {
            name: {str(x): {c: list(v) for c, v in by.items()} for x, by in points.items()}
            for name, points in curves.items()
        },
        "worker_vs_relay": worker / relay,
        "worker_vs_faststream": worker / faststream,
    }
    if single is not None:
        summary["worker_vs_relay_one_action"] = single[WORKER][0] / single[RELAY][0]
    idle = _idle_p99(e2e.get("latency", []))
    if idle is not None:
        summary["idle_p99_vs_relay"] = idle
    memory = {m["backlog_plans"]: m["peak_rss_mb"] for m in e2e["memory"]}
    small, large = min(memory), max(memory)
    summary["memory_growth"] = memory[large] / memory[small] - 1
    if micro is not None:
        no_op = next(m for m in micro["enact"] if "metrics on" in m["name"])["median_per_s"]
        summary["optimiser_share_of_e2e_cost"] = worker / no_op
    summary["verdicts"] = {
        f"worker >= {TARGET_VS_RELAY}x the aio-pika relay": summary["worker_vs_relay"]
        >= TARGET_VS_RELAY,
        f"worker >= {TARGET_VS_FASTSTREAM}x the FastStream relay": summary["worker_vs_faststream"]
        >= TARGET_VS_FASTSTREAM,
        f"stretch: worker >= {TARGET_STRETCH_VS_RELAY}x the aio-pika relay": summary[
            "worker_vs_relay"
        ]
        >= TARGET_STRETCH_VS_RELAY,
        f"memory flat (+-{TARGET_MEMORY_FLAT:.0%}) from {small:,} to {large:,} plans": abs(
            summary["memory_growth"]
        )
        <= TARGET_MEMORY_FLAT,
    }
    if "worker_vs_relay_one_action" in summary:
        summary["verdicts"][
            f"worker >= {TARGET_SINGLE_VS_RELAY}x the aio-pika relay at one action a plan"
        ] = summary["worker_vs_relay_one_action"] >= TARGET_SINGLE_VS_RELAY
    if "idle_p99_vs_relay" in summary:
        summary["verdicts"][f"idle p99 <= {TARGET_IDLE_P99_VS_RELAY}x the relay's"] = (
            summary["idle_p99_vs_relay"] <= TARGET_IDLE_P99_VS_RELAY
        )
    if e2e.get("startup"):
        big = max(e2e["startup"], key=lambda s: s["records"])
        seconds = big.get("checkpoint_seconds", math.inf)
        peak = big.get("checkpoint_peak_rss_mb", math.inf)
        summary["verdicts"][
            f"restart with {big['records']:,} records in the window <= {TARGET_RESTART_S:g} s "
            f"and <= {TARGET_RESTART_MB:g} MB"
        ] = seconds <= TARGET_RESTART_S and peak <= TARGET_RESTART_MB
    if "optimiser_share_of_e2e_cost" in summary:
        summary["verdicts"][
            f"optimiser + metrics <= {TARGET_OVERHEAD:.0%} of the cost per action"
        ] = summary["optimiser_share_of_e2e_cost"] <= TARGET_OVERHEAD
    return summary


def _idle_p99(latencies: list[dict[str, Any]]) -> float | None:
    """The worker's p99 over the relay's at the lowest rate each was measured at."""
    idle = {}
    for candidate in (WORKER, RELAY):
        points = [p for p in latencies if p["candidate"] == candidate]
        if not points:
            return None
        idle[candidate] = min(points, key=lambda p: p["plans_per_s"])["p99_ms"]
    return float(idle[WORKER] / idle[RELAY]) if idle[RELAY] else None


def markdown(e2e: dict[str, Any], summary: dict[str, Any]) -> str:
    """The tables bench/README.md shows."""
    lines = [
        "| curve | point | " + " | ".join(CANDIDATES) + " | worker vs relay |",
        "|---" * 6 + "|",
    ]
    for name, points in summary["curves"].items():
        for x, by in points.items():
            cells = []
            for candidate in CANDIDATES:
                rate, spread, cpu = by[candidate]
                cells.append(f"{rate:,.0f}/s ±{spread / 2:.0%} ({cpu:,.0f} µs CPU)")
            ratio = by[WORKER][0] / by[RELAY][0]
            lines.append(f"| {name} | {x} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    lines += ["", "| latency | " + " | ".join(CANDIDATES) + " |", "|---" * 4 + "|"]
    for load, picks in (("idle", 0), ("50% of peak", 1)):
        cells = []
        for candidate in CANDIDATES:
            mine = [x for x in e2e["latency"] if x["candidate"] == candidate][picks]
            cells.append(
                f"p50 {mine['p50_ms']:.1f} ms, p99 {mine['p99_ms']:.1f} ms "
                f"({mine['plans_per_s']:,.0f} plans/s, {mine['samples']:,} plans in "
                f"{mine.get('rounds', 1)} round(s))"
            )
        lines.append(f"| {load} | " + " | ".join(cells) + " |")
    lines += ["", "| worker resident memory | peak |", "|---|---|"]
    for m in e2e["memory"]:
        lines.append(
            f"| backlog of {m['backlog_plans']:,} plans, while enacting the first "
            f"{m['processed_actions']:,} actions | {m['peak_rss_mb']:.1f} MB |"
        )
    lines += [
        "",
        "| worker start-up (to consuming) | from checkpoints | peak resident | reading every "
        "record | peak resident |",
        "|---|---|---|---|---|",
    ]
    for s in e2e["startup"]:
        lines.append(
            f"| {s['records']:,} records in the state window "
            f"| {s.get('checkpoint_seconds', float('nan')):.2f} s "
            f"| {s.get('checkpoint_peak_rss_mb', 0):.0f} MB "
            f"| {s['seconds']:.2f} s | {s.get('peak_rss_mb', 0):.0f} MB |"
        )
    return "\n".join(lines)


def plot(e2e: dict[str, Any], summary: dict[str, Any], path: Path) -> None:
    """One PNG with every curve."""
    import matplotlib  # noqa: PLC0415 - a bench-only dependency, loaded when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(2, 3, figsize=(16, 9))
    colours = dict(zip(CANDIDATES, ("tab:grey", "tab:orange", "tab:blue"), strict=True))
    for axis, name in zip(axes[0], ("actions per plan", "prefetch"), strict=False):
        points = summary["curves"][name]
        xs = [int(x) for x in points]
        for candidate in CANDIDATES:
            axis.plot(xs, [points[str(x)][candidate][0] for x in xs], "o-", label=candidate,
                      color=colours[candidate])  # fmt: skip
        axis.set_xscale("log")
        axis.set_xticks(xs, [str(x) for x in xs])
        axis.set_xlabel(name)
        axis.set_ylabel("actions/s (median)")
        axis.set_title(f"throughput vs {name}")
        axis.legend()
        axis.grid(alpha=0.3)
    by_queue = summary["curves"]["plans queue"]
    _bars(
        axes[0][2],
        {q: [by_queue[q][c][0] for c in CANDIDATES] for q in ("classic", "quorum")},
        colours, "actions/s (median)", "throughput by plans queue type",
    )  # fmt: skip
    latency = {
        load: [
            [x for x in e2e["latency"] if x["candidate"] == c][index]["p99_ms"] for c in CANDIDATES
        ]
        for index, load in enumerate(("idle", "50% of peak"))
    }
    _bars(
        axes[1][0], latency, colours, "p99 ms, plan published -> last record",
        "latency (p99), at idle and at half of each one's own peak",
    )  # fmt: skip
    for axis, bars, title, ylabel in (
        (
            axes[1][1], {f"{m['backlog_plans']:,}": m["peak_rss_mb"] for m in e2e["memory"]},
            "worker resident memory vs backlog (plans)", "MB (peak)",
        ),
        (
            axes[1][2],
            {f"{s['records']:,} records": s.get("checkpoint_seconds", 0) for s in e2e["startup"]},
            "worker start-up from checkpoints", "seconds to consuming",
        ),
    ):  # fmt: skip
        axis.bar(list(bars), list(bars.values()), color=colours[WORKER])
        axis.set_title(title)
        axis.set_ylabel(ylabel)
    figure.suptitle(
        f"self-optimiser vs relays: worker {summary['worker_vs_relay']:.2f}x the aio-pika relay, "
        f"{summary['worker_vs_faststream']:.2f}x the FastStream relay "
        f"(10 actions/plan, prefetch 32)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _bars(axis: Any, groups: dict[str, list[float]], colours: dict[str, str], ylabel: str,
          title: str) -> None:  # fmt: skip
    width = 0.8 / len(CANDIDATES)
    for index, candidate in enumerate(CANDIDATES):
        xs = [g + index * width for g in range(len(groups))]
        axis.bar(xs, [values[index] for values in groups.values()], width, label=candidate,
                 color=colours[candidate])  # fmt: skip
    axis.set_xticks([g + width for g in range(len(groups))], list(groups))
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend()
