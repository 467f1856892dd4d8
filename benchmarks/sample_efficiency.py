"""The paper's sample-efficiency claim in miniature, on MetaWorld (a benchmark script, not a test).

For every task: record the largest dataset size once (scripted expert, successful episodes only), then for
every size N train on its first N episodes, with the same number of steps and batch size for every method:

    dit4dit          joint dual flow matching (configs/metaworld_quickstart.json)
    dit4dit_action   the same preset with training_mode=action (no video loss: the paper's ablation)
    diffusion        LeRobot's built-in diffusion policy, sized for CPU (configs/metaworld_diffusion.json)

and evaluate each checkpoint with the real `lerobot-eval --env.type=metaworld`, with seeds disjoint from the
recording seeds. Every run writes `runs/<task>/<method>_<N>/result.json`; finished runs are skipped, so the
script resumes where it stopped. At the end it writes `results.md` (table with seeds and wall times) and
`success_vs_episodes.png` to --out.

Recording and evaluation both render without MuJoCo shadows unless --shadows is given: on a CPU renderer
shadows are most of the simulator's cost (72 -> 28 ms per 480x480 frame here). Runs made with other settings
(steps, batch, seed, resolution, evaluation episodes, step limit, shadows) are refused rather than mixed into
the table.

    MUJOCO_GL=egl python -m benchmarks.sample_efficiency --out outputs/sample_efficiency
    python -m benchmarks.sample_efficiency --out outputs/sample_efficiency --report-only

Run from the repository root (the benchmarks live outside the wheel).

On a 2-core machine, one single-threaded process per task uses both cores (same --out; then --report-only):

    for t in pick-place-v3 push-v3; do
        OMP_NUM_THREADS=1 python -m benchmarks.sample_efficiency --tasks $t &
    done; wait
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from lerobot_dit4dit.envs.metaworld import record
from lerobot_dit4dit.recipes import preset_path

from .machine import cpu_name

# The presets ship in the wheel (`recipes.preset_path`); the repository's configs/ is their source.
QUICKSTART = f"--config_path={preset_path('metaworld_quickstart')}"
METHODS = {
    "dit4dit": [QUICKSTART],
    "dit4dit_action": [QUICKSTART, "--policy.training_mode=action"],
    "diffusion": [f"--config_path={preset_path('metaworld_diffusion')}"],
}
EVAL_SEED = 100_000


def _run(cmd: list[str], log: Path) -> float:
    """Run `cmd` with its output in `log`; return the wall time. Raise with the log's tail on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise RuntimeError(f"{' '.join(cmd[:2])} failed (exit {proc.returncode}); {log}:\n{tail}")
    return time.perf_counter() - start


def run_settings(args) -> tuple[dict, dict]:
    """(training settings, evaluation settings) that a finished run must share with this invocation."""
    train = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "train_seed": args.seed,
        "resolution": args.resolution,
    }
    evaluation = {
        "eval_episodes": args.eval_episodes,
        "eval_step_limit": args.episode_length,
        "shadows": args.shadows,
    }
    return train, evaluation


def check_reused(result: dict, settings: dict, where: Path) -> None:
    """Refuse to reuse a finished run made with other settings (a key the old run lacks is not compared)."""
    for key, value in settings.items():
        if key in result and result[key] != value:
            raise SystemExit(
                f"{where} was made with {key}={result[key]!r}, but this invocation asks for {key}={value!r}. "
                f"Use another --out, or delete {where.parent} to run it again."
            )


def run_one(args, task: str, method: str, n: int, data: Path, base: Path) -> dict:
    run_dir = args.out / "runs" / task / f"{method}_{n}"
    result_file = run_dir / "result.json"
    train_settings, eval_settings = run_settings(args)
    if result_file.exists():
        result = json.loads(result_file.read_text())
        check_reused(result, {**train_settings, **eval_settings}, result_file)
        return result
    train_dir = run_dir / "train"
    ckpt = train_dir / "checkpoints" / "last" / "pretrained_model"
    settings_file = run_dir / "train_settings.json"
    train_s = None
    reusable = settings_file.exists() and json.loads(settings_file.read_text()) == train_settings
    if not ((ckpt / "model.safetensors").exists() and reusable):
        settings_file.unlink(missing_ok=True)
        shutil.rmtree(train_dir, ignore_errors=True)
        cmd = [
            "lerobot-train",
            *METHODS[method],
            f"--dataset.root={data}",
            f"--dataset.episodes={list(range(n))}",
            f"--output_dir={train_dir}",
            f"--steps={args.steps}",
            f"--save_freq={args.steps}",
            f"--batch_size={args.batch_size}",
            f"--seed={args.seed}",
        ]
        size = f"[{args.resolution},{args.resolution}]"  # lerobot-eval renders 480x480; both resize in-policy
        if method.startswith("dit4dit"):
            cmd += [
                f"--policy.base_model={base}",
                f"--policy.scheduler_decay_steps={args.steps}",
                f"--policy.image_resolution={size}",
            ]
        else:
            cmd += [f"--policy.resize_shape={size}"]
        train_s = _run(cmd, run_dir / "train.log")
        settings_file.write_text(json.dumps(train_settings))
    eval_dir = run_dir / "eval"
    shutil.rmtree(eval_dir, ignore_errors=True)
    # lerobot-eval with LeRobot's MetaworldEnv capped at a step limit (LeRobot fixes 500; every expert here
    # finishes in under 100) and, when recorded so, without shadows: see `envs.metaworld`.
    shadow_flags = [] if args.shadows else ["--no-shadows"]
    eval_s = _run(
        [
            sys.executable,
            "-m",
            "lerobot_dit4dit.scripts.metaworld_eval",
            f"--step-limit={args.episode_length}",
            *shadow_flags,
            f"--policy.path={ckpt}",
            "--policy.device=cpu",
            "--env.type=metaworld",
            f"--env.task={task}",
            f"--eval.n_episodes={args.eval_episodes}",
            f"--eval.batch_size={args.eval_batch_size}",
            "--eval.use_async_envs=false",
            f"--seed={EVAL_SEED}",
            f"--output_dir={eval_dir}",
        ],
        run_dir / "eval.log",
    )
    info = json.loads((eval_dir / "eval_info.json").read_text())["overall"]
    result = {
        "task": task,
        "method": method,
        "episodes": n,
        **train_settings,
        **eval_settings,
        "eval_seeds": [EVAL_SEED, EVAL_SEED + args.eval_episodes - 1],
        "eval_episodes": info["n_episodes"],
        "success": info["pc_success"],
        "train_minutes": None if train_s is None else train_s / 60,
        "eval_minutes": eval_s / 60,
    }
    result_file.write_text(json.dumps(result, indent=2))
    return result


def report(out: Path, results: list[dict], expert: dict) -> str:
    """Write results.md and success_vs_episodes.png; return the markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in results})
    methods = [m for m in METHODS if any(r["method"] == m for r in results)]
    sizes = sorted({r["episodes"] for r in results})
    lookup = {(r["task"], r["method"], r["episodes"]): r for r in results}
    lines = [
        f"Measured {date.today().isoformat()} on {cpu_name()}, "
        f"{os.cpu_count()} CPU cores, no GPU. Success rate (%) over lerobot-eval episodes.",
        "",
        "| task | method | " + " | ".join(f"{n} episodes" for n in sizes) + " |",
        "|---|---|" + "---|" * len(sizes),
    ]
    for task in tasks:
        for method in methods:
            cells = []
            for n in sizes:
                r = lookup.get((task, method, n))
                cells.append("-" if r is None else f"{r['success']:.0f}")
            lines.append(f"| {task} | {method} | " + " | ".join(cells) + " |")
    any_r = results[0]
    lines += [
        "",
        "Expert success while recording: "
        + ", ".join(f"{t} {v:.0f}%" for t, v in sorted(expert.items()))
        + ".",
        f"Each run: {any_r['steps']} training steps at batch {any_r['batch_size']} (train seed "
        f"{any_r['train_seed']}), evaluated on {any_r['eval_episodes']} episodes with seeds "
        f"{any_r['eval_seeds'][0]}..{any_r['eval_seeds'][1]} (recording seeds start at 0), at most "
        f"{any_r['eval_step_limit']} steps per episode, rendered "
        f"{'with' if any_r.get('shadows', True) else 'without'} shadows (recording and evaluation alike).",
        "",
        "| task | method | episodes | train min | eval min |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: (r["task"], r["method"], r["episodes"])):
        train = "-" if r["train_minutes"] is None else f"{r['train_minutes']:.1f}"
        lines.append(f"| {r['task']} | {r['method']} | {r['episodes']} | {train} | {r['eval_minutes']:.1f} |")
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)

    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for method in methods:
            pts = [(n, lookup[(task, method, n)]["success"]) for n in sizes if (task, method, n) in lookup]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=method)
        ax.set_title(task)
        ax.set_xlabel("demonstration episodes")
        ax.set_ylabel("success rate (%)")
        ax.set_xscale("log")
        ax.minorticks_off()  # only the dataset sizes are labelled, not log-scale minor ticks
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(out / "success_vs_episodes.png", dpi=120)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/sample_efficiency"))
    parser.add_argument("--tasks", nargs="+", default=["pick-place-v3", "push-v3"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[5, 15, 45])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=1200, help="training steps, the same for every run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--eval-batch-size", type=int, default=10)
    parser.add_argument(
        "--episode-length", type=int, default=100, help="eval step limit (LeRobot: 500; experts need < 100)"
    )
    parser.add_argument("--seed", type=int, default=1000, help="training seed")
    parser.add_argument(
        "--shadows",
        action="store_true",
        help="render with MuJoCo shadows as plain lerobot-eval does (2.6x slower on CPU)",
    )
    parser.add_argument("--report-only", action="store_true", help="only rebuild the table and plot")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MUJOCO_GL", "egl")

    base = args.out / "base"
    if not args.report_only and not (base / "model_index.json").exists():
        from lerobot_dit4dit.testing.tiny_base import build_tiny_cosmos_base

        # Build aside and rename: one process per task may start at once, and the first rename wins.
        partial = build_tiny_cosmos_base(args.out / f"base.partial-{os.getpid()}")
        try:
            partial.rename(base)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
    results, expert = [], {}
    plan = [(t, m, n) for t in args.tasks for n in sorted(args.sizes) for m in args.methods]
    for i, (task, method, n) in enumerate(plan):
        data = args.out / "data" / task
        if not (data / "recording.json").exists():
            if args.report_only:
                continue
            print(f"[sample-efficiency] recording {max(args.sizes)} expert episodes of {task}", flush=True)
            record(data, [task], max(args.sizes), args.resolution, shadows=args.shadows)
        recording = json.loads((data / "recording.json").read_text())
        recorded = {"shadows": recording.get("shadows", True), "resolution": recording["resolution"]}
        for key, value in {"shadows": args.shadows, "resolution": args.resolution}.items():
            if recorded[key] != value and not args.report_only:
                raise SystemExit(
                    f"{data} was recorded with {key}={recorded[key]!r}, but this run asks for "
                    f"{key}={value!r}; pass the recording's setting or delete {data} to record again."
                )
        if recording["tasks"][task]["episodes"] < max(args.sizes):
            raise SystemExit(
                f"{data} holds {recording['tasks'][task]['episodes']} episodes of {task}, fewer than "
                f"--sizes asks for ({max(args.sizes)}); delete {data} to record again."
            )
        expert[task] = recording["tasks"][task]["expert_success_rate"]
        result_file = args.out / "runs" / task / f"{method}_{n}" / "result.json"
        if args.report_only and not result_file.exists():
            continue
        print(f"[sample-efficiency] {i + 1}/{len(plan)} {task} {method} {n} episodes", flush=True)
        r = run_one(args, task, method, n, data, base)
        print(
            f"[sample-efficiency]   success {r['success']:.0f}% over {r['eval_episodes']} episodes",
            flush=True,
        )
        results.append(r)
    if not results:
        raise SystemExit(f"No finished runs under {args.out / 'runs'}")
    print(report(args.out, results, expert))


if __name__ == "__main__":
    main()
