"""The official LIBERO protocol through `lerobot-eval`: 4 suites x 10 tasks x 50 episodes, fixed seeds,
resumable.

    MUJOCO_GL=egl python -m benchmarks.libero_protocol \
        --policy-path outputs/dit4dit_libero_official --output-dir outputs/libero_protocol \
        --device cuda --batch-size 10
    python -m benchmarks.libero_aggregate outputs/libero_protocol

Each (suite, task) is one `lerobot-eval --env.type=libero --env.task=<suite> --env.task_ids=[<task>]` run
into `<output-dir>/<suite>/task_<NN>/`; the rollout, success check and videos are lerobot-eval's own. A task
whose `eval_info.json` exists with the requested episode count is skipped, so an interrupted run resumes
where it stopped (a task that did not finish is re-run from its first episode). Episodes use LIBERO's fixed
init states (episode i of a task uses init state i) and seeds `seed + i`, so a rerun reproduces the same
episodes. `protocol.json` in the output dir records the settings and the machine; `libero_aggregate` reads
both.

Episode lengths are the official client's per-suite limits (spatial 220, object 280, goal 300, libero_10 520
steps after LIBERO's 10 settling steps); `--max-steps lerobot` uses LeRobot's defaults (280/280/300/520)
instead. Arguments after `--` go to every lerobot-eval call (e.g. `-- --policy.save_predicted_video=true`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lerobot_dit4dit.envs.libero import SUITES, TASKS_PER_SUITE

from .machine import machine_info

# The paper's protocol: the four suites of its LIBERO table.
PROTOCOL_SUITES = SUITES[:4]
OFFICIAL_MAX_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
LEROBOT_MAX_STEPS = {
    "libero_spatial": 280,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}


def task_dir(output_dir: Path, suite: str, task_id: int) -> Path:
    return output_dir / suite / f"task_{task_id:02d}"


def is_done(out: Path, n_episodes: int) -> bool:
    """True when `out/eval_info.json` holds a finished run of `n_episodes` episodes."""
    path = out / "eval_info.json"
    if not path.is_file():
        return False
    try:
        info = json.loads(path.read_text())
        return int(info["overall"]["n_episodes"]) == n_episodes
    except (ValueError, KeyError, TypeError):
        return False


def plan(output_dir: Path, suites, n_episodes: int, task_ids=None) -> list[dict]:
    """Every (suite, task) of the protocol, with its output dir and whether it is already done."""
    rows = []
    for suite in suites:
        ids = task_ids if task_ids is not None else range(TASKS_PER_SUITE[suite])
        for tid in ids:
            out = task_dir(output_dir, suite, tid)
            rows.append({"suite": suite, "task_id": tid, "output_dir": out, "done": is_done(out, n_episodes)})
    return rows


def eval_command(args, suite: str, task_id: int, out: Path) -> list[str]:
    steps = (OFFICIAL_MAX_STEPS if args.max_steps == "official" else LEROBOT_MAX_STEPS)[suite]
    exe = shutil.which("lerobot-eval") or str(Path(sys.executable).parent / "lerobot-eval")
    return [
        exe,
        f"--policy.path={args.policy_path}",
        f"--policy.device={args.device}",
        "--env.type=libero",
        f"--env.task={suite}",
        f"--env.task_ids=[{task_id}]",
        f"--env.episode_length={steps}",
        f"--eval.n_episodes={args.episodes}",
        f"--eval.batch_size={args.batch_size}",
        f"--seed={args.seed}",
        f"--output_dir={out}",
        *args.extra,
    ]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policy-path", required=True, help="checkpoint dir (or Hub id) for --policy.path")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--suites", default=",".join(PROTOCOL_SUITES))
    parser.add_argument(
        "--task-ids", default=None, help="comma-separated task ids (default: all of each suite)"
    )
    parser.add_argument("--episodes", type=int, default=50, help="episodes per task (official: 50)")
    parser.add_argument("--batch-size", type=int, default=1, help="parallel envs per lerobot-eval run")
    parser.add_argument("--seed", type=int, default=7, help="start seed (official client: 7)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--max-steps", choices=("official", "lerobot"), default="official")
    parser.add_argument("--dry-run", action="store_true", help="list the tasks and their state, run nothing")
    args = parser.parse_args(argv)
    args.extra = extra
    output_dir = Path(args.output_dir)
    suites = [s for s in args.suites.split(",") if s]
    unknown = [s for s in suites if s not in TASKS_PER_SUITE]
    if unknown:
        parser.error(f"unknown suite(s) {unknown}; known: {list(TASKS_PER_SUITE)}")
    task_ids = [int(t) for t in args.task_ids.split(",")] if args.task_ids else None
    rows = plan(output_dir, suites, args.episodes, task_ids)
    todo = [r for r in rows if not r["done"]]
    print(
        f"[protocol] {len(rows)} tasks x {args.episodes} episodes: "
        f"{len(rows) - len(todo)} done, {len(todo)} to run"
    )
    if args.dry_run:
        for r in rows:
            state = "done" if r["done"] else "todo"
            print(f"{state} {r['suite']} task {r['task_id']:2d} -> {r['output_dir']}")
            if not r["done"]:
                print("     " + " ".join(eval_command(args, r["suite"], r["task_id"], r["output_dir"])))
        return 0
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "policy_path": args.policy_path,
        "suites": suites,
        "task_ids": task_ids,
        "episodes": args.episodes,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "max_steps": args.max_steps,
        "extra_args": extra,
        "machine": machine_info(),
    }
    (output_dir / "protocol.json").write_text(json.dumps(manifest, indent=2))
    start = time.time()
    for i, r in enumerate(todo, 1):
        out = r["output_dir"]
        if out.exists():
            shutil.rmtree(out)  # an unfinished run: start the task again
        cmd = eval_command(args, r["suite"], r["task_id"], out)
        print(f"[protocol] ({i}/{len(todo)}) {r['suite']} task {r['task_id']}: {' '.join(cmd)}", flush=True)
        t0 = time.time()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        out.mkdir(parents=True, exist_ok=True)
        (out / "lerobot_eval.log").write_text(proc.stdout)
        if proc.returncode != 0 or not is_done(out, args.episodes):
            print(proc.stdout[-4000:])
            print(
                f"[protocol] {r['suite']} task {r['task_id']} failed (exit {proc.returncode}); log: "
                f"{out / 'lerobot_eval.log'}. Re-run the same command to resume."
            )
            return 1
        rate = json.loads((out / "eval_info.json").read_text())["overall"]["pc_success"]
        eta = (time.time() - start) / i * (len(todo) - i)
        print(
            f"[protocol] {r['suite']} task {r['task_id']}: {rate:.1f}% in {time.time() - t0:.0f}s; "
            f"about {eta / 60:.0f} min left",
            flush=True,
        )
    print(f"[protocol] all {len(rows)} tasks done; table: python -m benchmarks.libero_aggregate {output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
