"""Per-suite LIBERO success table, in the paper's format, from lerobot-eval's eval_info.json files.

    python -m benchmarks.libero_aggregate outputs/libero_protocol [--json summary.json]

Reads every `eval_info.json` under the directory (as written by `libero_protocol`, or by any `lerobot-eval
--env.type=libero` run): the per-episode successes of each (suite, task) in `per_task`. A task that appears in
several files is counted once (the file with more episodes wins). Prints one row per suite and the average
(the mean of the suite rates, as the paper reports it), each with a 95% Wilson score interval, next to the
paper's numbers, and the machine the evaluation ran on (from `protocol.json`, else this machine).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .machine import machine_info

PAPER = {"libero_spatial": 98.4, "libero_object": 99.6, "libero_goal": 98.6, "libero_10": 97.6}
PAPER_AVERAGE = 98.6
NAMES = {
    "libero_spatial": "Spatial",
    "libero_object": "Object",
    "libero_goal": "Goal",
    "libero_10": "Long (10)",
    "libero_90": "LIBERO-90",
}
Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (as fractions in [0, 1])."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def collect(root: Path) -> dict[tuple[str, int], list[bool]]:
    """(suite, task_id) -> per-episode successes, from every eval_info.json under `root`."""
    tasks: dict[tuple[str, int], list[bool]] = {}
    for path in sorted(root.rglob("eval_info.json")):
        info = json.loads(path.read_text())
        for entry in info.get("per_task", []):
            key = (entry["task_group"], int(entry["task_id"]))
            successes = [bool(s) for s in entry["metrics"]["successes"]]
            if len(successes) > len(tasks.get(key, [])):
                tasks[key] = successes
    return tasks


def summarise(tasks: dict[tuple[str, int], list[bool]]) -> dict:
    suites: dict[str, dict] = {}
    for (suite, tid), succ in sorted(tasks.items()):
        s = suites.setdefault(suite, {"tasks": 0, "episodes": 0, "successes": 0, "per_task": {}})
        s["tasks"] += 1
        s["episodes"] += len(succ)
        s["successes"] += sum(succ)
        s["per_task"][tid] = 100.0 * sum(succ) / len(succ) if succ else float("nan")
    for s in suites.values():
        s["rate"] = 100.0 * s["successes"] / s["episodes"] if s["episodes"] else float("nan")
        lo, hi = wilson_interval(s["successes"], s["episodes"])
        s["ci95"] = (100.0 * lo, 100.0 * hi)
    summary = {"suites": suites}
    if suites:
        n = sum(s["episodes"] for s in suites.values())
        k = sum(s["successes"] for s in suites.values())
        lo, hi = wilson_interval(k, n)
        summary["average"] = {
            "rate": sum(s["rate"] for s in suites.values()) / len(suites),  # mean of suite rates (paper)
            "pooled_rate": 100.0 * k / n,
            "ci95": (100.0 * lo, 100.0 * hi),  # pooled over all episodes
            "episodes": n,
            "successes": k,
        }
    return summary


def format_table(summary: dict, machine: dict | None = None) -> str:
    lines = [
        "| suite | tasks | episodes | success (%) | 95% CI (Wilson) | paper (%) |",
        "|---|---:|---:|---:|---|---:|",
    ]
    order = [s for s in (*PAPER, "libero_90") if s in summary["suites"]]
    order += sorted(s for s in summary["suites"] if s not in order)
    for name in order:
        s = summary["suites"][name]
        paper = f"{PAPER[name]:.1f}" if name in PAPER else "-"
        lines.append(
            f"| {NAMES.get(name, name)} | {s['tasks']} | {s['episodes']} | {s['rate']:.1f} | "
            f"[{s['ci95'][0]:.1f}, {s['ci95'][1]:.1f}] | {paper} |"
        )
    if "average" in summary:
        a = summary["average"]
        paper = f"{PAPER_AVERAGE:.1f}" if set(summary["suites"]) == set(PAPER) else "-"
        lines.append(
            f"| **Average** | {sum(s['tasks'] for s in summary['suites'].values())} | {a['episodes']} | "
            f"**{a['rate']:.1f}** | [{a['ci95'][0]:.1f}, {a['ci95'][1]:.1f}] (pooled) | {paper} |"
        )
    if machine:
        gpu = machine.get("gpu") or "no GPU"
        lines.append("")
        lines.append(
            f"Machine: {machine.get('cpu', '?')} ({machine.get('cpu_count', '?')} CPUs), {gpu}; "
            f"torch {machine.get('torch', '?')}, lerobot {machine.get('lerobot', '?')}, "
            f"{machine.get('platform', '?')}."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "root", help="directory holding eval_info.json files (e.g. eval_protocol's --output-dir)"
    )
    parser.add_argument("--json", default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    root = Path(args.root)
    tasks = collect(root)
    if not tasks:
        print(f"no eval_info.json with LIBERO results under {root}", file=sys.stderr)
        return 1
    manifest = root / "protocol.json"
    machine = json.loads(manifest.read_text()).get("machine") if manifest.is_file() else None
    if machine is None:
        machine = {**machine_info(), "note": "machine running the aggregator (no protocol.json)"}
    summary = summarise(tasks)
    print(format_table(summary, machine))
    if args.json:
        Path(args.json).write_text(json.dumps({**summary, "machine": machine}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
