"""Video first on the simulated G1: does a video DiT pretrained on action-free recordings need fewer
demonstrations? The paper's sample-efficiency claim (issue 28), through the same LeRobot CLIs as examples/g1.

Recordings (one simulator session, `lerobot_dit4dit.sim.g1_loop`):
    - the expert's press rate: lerobot-teleoperate for --rollout-minutes, measured as every policy is;
    - E action-labelled expert episodes (`g1_scripted_expert`), of which a cell with k demonstrations
      trains on the first k (`--dataset.episodes`);
    - M action-free episodes: the expert in `--teleop.behaviour=wander` (random reaching about the table, a
      press now and then, so the button is seen in many places), recorded with lerobot-record, then stripped
      of `action` and `observation.state` with LeRobot's
      `lerobot-edit-dataset --operation.type=remove_feature`.

Arms, for every k of --ks, each with the same training steps and batch at that k:
    dit4dit_joint       (a) dit4dit joint dual flow matching from the base (configs/unitree_g1_sim.json)
    dit4dit_action      (b) the same with --policy.training_mode=action (no video loss)
    dit4dit_video_joint (c) dit4dit `training_mode=video` on the M episodes (pretrained ONCE, its cost
                            reported apart), then --policy.path=<it> --policy.training_mode=joint
    act                 (d) LeRobot's ACT (its own defaults, from scratch, as `dit4dit-g1-loop --policy act`)

Every cell (arm, k, training seed) is scored by a lerobot-rollout from the simulator's start pose: RTC for
dit4dit with the loop's settings, synchronous for ACT (RTC needs a flow-matching policy). Its figure is the
presses in the --rollout-minutes after the first command, per minute, with the exact 95% Poisson interval of
the count; the expert's rate, measured the same way, stands beside it. Each finished cell writes
`<out>/cells/<arm>_k<k>_seed<seed>/result.json` and is skipped when run again; a cell made with other settings
is refused, naming the setting, rather than mixed into the table. At the end: `<out>/results.md` (table),
`<out>/presses_vs_demos.png` (plot) and `<out>/summary.json`.

    MUJOCO_GL=egl python -m benchmarks.g1_video_first --out outputs/g1_video_first       # the study
    MUJOCO_GL=egl python -m benchmarks.g1_video_first --out outputs/video_first_smoke --smoke  # tiny
    python -m benchmarks.g1_video_first --out outputs/g1_video_first --report-only       # table and plot

`bash examples/g1/video_first.sh` runs it with the environment set up. Run from the repository root (the
benchmarks live outside the wheel).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
from datetime import date
from pathlib import Path

from lerobot_dit4dit.sim.g1_loop import (
    PRESET,
    act_flags,
    bridge,
    build_base,
    dit4dit_flags,
    encode_latents,
    forked_clis,
    measure_expert,
    poisson_interval,
    presses_per_minute,
    record,
    rollout_command,
    run_cli,
    train_flags,
)
from lerobot_dit4dit.sim.scene_client import SceneClient
from lerobot_dit4dit.teleoperators.g1_scripted_expert import G1ScriptedExpertConfig

from .machine import cpu_name
from .sample_efficiency import check_reused

ARMS = {
    "dit4dit_joint": "(a) dit4dit joint, from the base",
    "dit4dit_action": "(b) dit4dit training_mode=action, from the base",
    "dit4dit_video_joint": "(c) dit4dit video-pretrained, then joint",
    "act": "(d) LeRobot ACT",
}
EXPERT_REPO, VIDEO_RAW_REPO, VIDEO_REPO = "local/g1_button", "local/g1_wander", "local/g1_wander_video"
# The instruction of the action-free episodes: what they show (the expert's task is "press the red button").
# It fits whole in the preset's max_prompt_tokens (160) with the small base's prompt template, which keeps 69
# tokens of an instruction: a longer one would be cut, and the video DiT pretrained on a truncated task.
VIDEO_TASK = "move the hand about the table and now and then press the red button"
TAG = "[video-first]"
# The study's scored cells, committed: a session on the docs' 2-core VM starts from a clean checkout and has
# time for a few 40-minute cells, so the study advances across sessions through this folder.
LEDGER = Path(__file__).resolve().parents[1] / "docs" / "video_first_g1" / "cells"

# The study (issue 28): k in {5, 15, 30}, M = 5 x 30 action-free episodes as long as the expert's, run 12's
# budget (9000 steps at batch 16, the preset's one data worker) for every arm, two seeds per dit4dit cell.
DEFAULTS = {
    "ks": [5, 15, 30],
    "steps": 9000,
    "pretrain_steps": 9000,
    "batch_size": None,  # the preset's
    "num_workers": None,  # the preset's
    "seeds": [1000, 1001],
    "act_seeds": [1000],
    "pretrain_seed": 1000,
    "expert_episodes": None,  # the largest k of the study (30), or of --ks if larger
    "episode_s": 15.0,
    "video_episodes": None,  # 5 x that
    "video_episode_s": 15.0,
    "rollout_minutes": 3.0,
}
# --smoke: every stage and every arm, as small as they run (one k below the expert episodes recorded, seconds
# of recording, 2 training steps, 3-second rollouts, one seed, no data worker process). Its figures mean
# nothing. Its time is nearly all process start-up, which --cli-start=fork (its default) pays once.
SMOKE = {
    "ks": [1],
    "steps": 2,
    "pretrain_steps": 2,
    "batch_size": 2,
    "num_workers": 0,
    "seeds": [1000],
    "act_seeds": [1000],
    "pretrain_seed": 1000,
    "expert_episodes": 2,
    "episode_s": 2.0,
    "video_episodes": 2,
    "video_episode_s": 2.0,
    "rollout_minutes": 0.05,
}


def log(message: str) -> None:
    print(f"{TAG} {message}", flush=True)


def stale(stamp: Path, settings: dict) -> bool:
    """Whether the stage stamped by `stamp` was made with other `settings` (or not finished)."""
    if not stamp.exists():
        return True
    saved = json.loads(stamp.read_text())
    return {k: saved.get(k) for k in settings} != settings


def steps_for(args, k: int) -> int:
    """Training steps at `k` demonstrations: --steps, or its --steps-for override."""
    return args.steps_for.get(k, args.steps)


def cell_seeds(args, arm: str) -> list[int]:
    return args.act_seeds if arm == "act" else args.seeds


def plan(args) -> list[tuple[str, int, int]]:
    """Every (arm, k, seed) cell, smallest k first, so a partial run already covers the curve's start."""
    return [(arm, k, seed) for k in sorted(args.ks) for arm in args.arms for seed in cell_seeds(args, arm)]


class Study:
    """Paths, settings and stages of one invocation."""

    def __init__(self, args):
        self.args = args
        self.out = args.out
        self.logs = self.out / "logs"
        self.preset = json.loads(PRESET.read_text())
        self.size = args.image_size or self.preset["policy"]["image_resolution"][0]
        self.batch_size = args.batch_size or self.preset["batch_size"]
        self.num_workers = self.preset["num_workers"] if args.num_workers is None else args.num_workers
        self.expert_data = self.out / "data" / "expert"
        self.video_raw = self.out / "data" / "video_raw"
        self.video_data = self.out / "data" / "video"
        # Beside the datasets, not in them: a LeRobot dataset folder holds LeRobot's files only.
        self.expert_data_stamp = self.out / "data" / "expert.stamp.json"
        self.video_data_stamp = self.out / "data" / "video.stamp.json"
        self.base = self.out / "base"
        self.expert_latents = self.out / "latents_expert.safetensors"
        self.video_latents = self.out / "latents_video.safetensors"
        self.pretrain_dir = self.out / "pretrain"
        self.pretrain_ckpt = self.pretrain_dir / "train" / "checkpoints" / "last" / "pretrained_model"
        policy = self.preset["policy"]
        self.chunk_size, self.n_action_steps = policy["chunk_size"], policy["n_action_steps"]
        self.ledger = args.ledger

    # ------------------------------------------------------------------ settings
    def expert_settings(self) -> dict:
        a = self.args
        expert = dataclasses.asdict(G1ScriptedExpertConfig())
        return {"image_size": self.size, "fps": a.fps, "variant": a.variant, "expert": expert}

    def expert_data_settings(self) -> dict:
        a = self.args
        return {**self.expert_settings(), "expert_episodes": a.expert_episodes, "episode_s": a.episode_s}

    def wander_flags(self) -> list[str]:
        a = self.args
        return [
            "--teleop.behaviour=wander",
            f"--teleop.wander_seed={a.wander_seed}",
            f"--teleop.wander_press_prob={a.wander_press_prob}",
        ]

    def video_data_settings(self) -> dict:
        a = self.args
        return {
            **self.expert_settings(),
            "video_episodes": a.video_episodes,
            "video_episode_s": a.video_episode_s,
            "video_task": a.video_task,
            "wander": self.wander_flags(),
        }

    def rollout_settings(self, arm: str) -> dict:
        a = self.args
        inference = "sync" if arm == "act" else "rtc"
        return {
            "rollout_minutes": a.rollout_minutes,
            "scene_seed": a.scene_seed,
            "rollout_threads": a.rollout_threads,
            "inference": inference,
            # RTC as the G1 loop runs it: re-plan when chunk - n_action_steps actions are left, guide only
            # the n_action_steps that run while the next chunk is computed (docs/unitree_g1_sim.md).
            "queue_threshold": self.chunk_size - self.n_action_steps if inference == "rtc" else None,
            "rtc_execution_horizon": self.n_action_steps if inference == "rtc" else None,
        }

    def pretrain_settings(self) -> dict:
        a = self.args
        return {
            **self.video_data_settings(),
            "pretrain_steps": a.pretrain_steps,
            "pretrain_seed": a.pretrain_seed,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "preset": self.preset,
            "latent_cache": a.latent_cache,
        }

    def cell_settings(self, arm: str, k: int, seed: int) -> dict:
        """What a finished cell must share with this invocation to be reused."""
        settings = {
            "arm": arm,
            "k": k,
            "seed": seed,
            **self.expert_data_settings(),
            "steps": steps_for(self.args, k),
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            **self.rollout_settings(arm),
        }
        if arm != "act":
            settings["preset"] = self.preset
            settings["latent_cache"] = self.args.latent_cache
        if arm == "dit4dit_video_joint":
            settings["pretraining"] = self.pretrain_settings()
        return settings

    def cell_dir(self, arm: str, k: int, seed: int) -> Path:
        return self.out / "cells" / f"{arm}_k{k}_seed{seed}"

    # ------------------------------------------------------------------ stages
    def record_all(self, video: bool) -> None:
        """The expert's rate, the expert episodes and (with `video`) the action-free episodes, in one
        simulator session; each is skipped when it exists with the same settings."""
        a = self.args
        (self.out / "data").mkdir(parents=True, exist_ok=True)
        expert_file, expert_stamp = self.out / "expert.json", self.out / "expert.stamp.json"
        expert_settings = {
            **self.expert_settings(),
            "rollout_minutes": a.rollout_minutes,
            "seed": a.scene_seed,
        }
        expert_data_stamp, video_stamp = self.expert_data_stamp, self.video_data_stamp
        todo = {
            "expert": stale(expert_stamp, expert_settings) or not expert_file.exists(),
            "expert_data": stale(expert_data_stamp, self.expert_data_settings()),
            "video_data": video and stale(video_stamp, self.video_data_settings()),
        }
        if not any(todo.values()):
            return
        with bridge(self.size, a.variant, seed=a.scene_seed, log=self.logs / "bridge_record.log"):
            scene = SceneClient()
            if todo["expert"]:
                log(f"expert: lerobot-teleoperate for {a.rollout_minutes} min")
                rate, metrics = measure_expert(
                    scene, self.size, a.fps, a.rollout_minutes, a.scene_seed, self.logs / "expert.log"
                )
                expert_file.write_text(json.dumps(score(rate, metrics, a.rollout_minutes), indent=2))
                expert_stamp.write_text(json.dumps(expert_settings))
            if todo["expert_data"]:
                log(f"recording {a.expert_episodes} expert episodes of {a.episode_s} s at {a.fps} fps")
                # From the start pose every rollout starts from (docs/unitree_g1_sim.md, run 6).
                scene.reset(a.scene_seed + 1)
                expert_data_stamp.unlink(missing_ok=True)
                record(
                    self.expert_data,
                    a.expert_episodes,
                    a.episode_s,
                    a.fps,
                    self.size,
                    self.logs / "record_expert.log",
                )
                expert_data_stamp.write_text(json.dumps(self.expert_data_settings()))
            if todo["video_data"]:
                log(
                    f"recording {a.video_episodes} action-free episodes of {a.video_episode_s} s "
                    f"(the expert wandering, seed {a.wander_seed})"
                )
                scene.reset(a.scene_seed + 2)  # another first button than the expert episodes'
                video_stamp.unlink(missing_ok=True)
                record(
                    self.video_raw,
                    a.video_episodes,
                    a.video_episode_s,
                    a.fps,
                    self.size,
                    self.logs / "record_video.log",
                    teleop=self.wander_flags(),
                    repo_id=VIDEO_RAW_REPO,
                    task=a.video_task,
                )
                # LeRobot's own tool drops what an action-free recording does not have.
                shutil.rmtree(self.video_data, ignore_errors=True)
                run_cli(
                    [
                        "lerobot-edit-dataset",
                        f"--repo_id={VIDEO_RAW_REPO}",
                        f"--root={self.video_raw}",
                        f"--new_repo_id={VIDEO_REPO}",
                        f"--new_root={self.video_data}",
                        "--operation.type=remove_feature",
                        "--operation.feature_names=['action', 'observation.state']",
                    ],
                    self.logs / "strip_video.log",
                )
                video_stamp.write_text(json.dumps(self.video_data_settings()))
            scene.close()

    def dit4dit_args(self, steps: int, data: Path, output_dir: Path, repo_id: str = EXPERT_REPO) -> list[str]:
        """lerobot-train flags of a dit4dit run from the base on the preset (no program name)."""
        return [
            *dit4dit_flags(self.base, self.size, steps),
            *train_flags(data, output_dir, steps, self.batch_size, self.num_workers, repo_id),
        ]

    def latents(self, which: str) -> float:
        """Build the latent cache of the expert or the video recordings when its recordings changed;
        returns the minutes it took (0 when reused). The cache of all expert episodes serves every k."""
        a = self.args
        if not a.latent_cache:
            return 0.0
        if which == "expert":
            path, data_stamp = self.expert_latents, self.expert_data_stamp
            flags = self.dit4dit_args(1, self.expert_data, self.out / "unused")
        else:
            path, data_stamp = self.video_latents, self.video_data_stamp
            flags = self.dit4dit_args(1, self.video_data, self.out / "unused", VIDEO_REPO)
            flags.append("--policy.training_mode=video")
        stamp = path.with_suffix(".stamp.json")
        settings = {"data": json.loads(data_stamp.read_text()), "preset": self.preset, "size": self.size}
        if not stale(stamp, settings) and path.exists():
            return 0.0
        log(f"encoding the {which} recordings' latents once: {path.name}")
        stamp.unlink(missing_ok=True)
        minutes = encode_latents(path, flags, self.logs / f"latent_cache_{which}.log") / 60
        stamp.write_text(json.dumps(settings))
        return minutes

    def pretrain(self) -> dict:
        """(c)'s video-only pretraining on the action-free episodes, run once; returns its cost."""
        a = self.args
        stamp = self.pretrain_dir / "pretrain.json"
        settings = self.pretrain_settings()
        if stale(stamp, settings) or not (self.pretrain_ckpt / "model.safetensors").exists():
            stamp.unlink(missing_ok=True)
            shutil.rmtree(self.pretrain_dir / "train", ignore_errors=True)
            cache_minutes = self.latents("video")
            cmd = [
                "lerobot-train",
                *self.dit4dit_args(
                    a.pretrain_steps, self.video_data, self.pretrain_dir / "train", VIDEO_REPO
                ),
                "--policy.training_mode=video",
                f"--seed={a.pretrain_seed}",
            ]
            if a.latent_cache:
                cmd.append(f"--policy.latent_cache={self.video_latents}")
            log(f"video pretraining on {a.video_episodes} action-free episodes: {a.pretrain_steps} steps")
            minutes = run_cli(cmd, self.logs / "pretrain.log") / 60
            cost = {"train_minutes": minutes, "latent_cache_minutes": cache_minutes}
            cost["minutes"] = minutes + cache_minutes
            stamp.write_text(json.dumps({**settings, **cost, "checkpoint": str(self.pretrain_ckpt)}))
        return pretraining_cost(stamp)

    def train_cell(self, arm: str, k: int, seed: int) -> dict:
        """Train one cell unless its checkpoint exists with the same settings; returns the training stamp."""
        a = self.args
        run_dir = self.cell_dir(arm, k, seed)
        train_dir, stamp = run_dir / "train", run_dir / "train_settings.json"
        ckpt = train_dir / "checkpoints" / "last" / "pretrained_model"
        settings = self.cell_settings(arm, k, seed)
        train_keys = {key: v for key, v in settings.items() if key not in self.rollout_settings(arm)}
        if not stale(stamp, train_keys) and (ckpt / "config.json").exists():
            return json.loads(stamp.read_text())
        stamp.unlink(missing_ok=True)
        shutil.rmtree(train_dir, ignore_errors=True)
        steps = steps_for(a, k)
        common = [f"--dataset.episodes={list(range(k))}", f"--seed={seed}"]
        latents = [f"--policy.latent_cache={self.expert_latents if a.latent_cache else 'null'}"]
        if arm in ("dit4dit_joint", "dit4dit_action"):
            mode = arm.removeprefix("dit4dit_")
            cmd = ["lerobot-train", *self.dit4dit_args(steps, self.expert_data, train_dir)]
            cmd += [f"--policy.training_mode={mode}", *common, *latents]
        elif arm == "dit4dit_video_joint":
            # The pretrained checkpoint's config is the preset's with training_mode=video; the train-level
            # settings the preset gives arms (a) and (b) are passed here, the same for every arm.
            cmd = [
                "lerobot-train",
                f"--policy.path={self.pretrain_ckpt}",
                "--policy.training_mode=joint",
                "--policy.device=cpu",
                "--policy.push_to_hub=false",
                f"--policy.scheduler_decay_steps={steps}",
                f"--log_freq={self.preset['log_freq']}",
                *train_flags(self.expert_data, train_dir, steps, self.batch_size, self.num_workers),
                *common,
                *latents,
            ]
        else:
            cmd = [
                "lerobot-train",
                *act_flags(self.chunk_size, self.n_action_steps),
                *train_flags(self.expert_data, train_dir, steps, self.batch_size, self.num_workers),
                *common,
            ]
        train_log = run_dir / "train.log"
        minutes = run_cli(cmd, train_log) / 60
        text = train_log.read_text(errors="replace")
        saved = {**train_keys, "train_minutes": minutes, "checkpoint": str(ckpt)}
        if arm == "dit4dit_video_joint":
            # The fine-tune logs what it took from the video-pretrained checkpoint; without that line it
            # started from somewhere else and the cell would measure the wrong thing.
            if "trained with training_mode=video" not in text:
                raise RuntimeError(
                    f"{train_log}: no sign that the fine-tune started from {self.pretrain_ckpt}"
                )
            saved["started_from"] = str(self.pretrain_ckpt)
        else:
            saved["started_from"] = str(self.base) if arm != "act" else "scratch"
        stamp.write_text(json.dumps(saved))
        return saved

    def roll_out(self, scene: SceneClient, arm: str, k: int, seed: int, trained: dict) -> dict:
        """Score a trained cell with lerobot-rollout; writes and returns its result."""
        a = self.args
        run_dir = self.cell_dir(arm, k, seed)
        rollout = self.rollout_settings(arm)
        cmd = rollout_command(
            Path(trained["checkpoint"]),
            self.size,
            a.fps,
            a.rollout_minutes * 60,
            rollout["inference"],
            rollout["queue_threshold"],
            rollout["rtc_execution_horizon"],
        )
        rate, metrics = presses_per_minute(
            scene,
            lambda: run_cli(cmd, run_dir / "rollout.log", threads=a.rollout_threads),
            a.scene_seed,
            a.rollout_minutes * 60,
        )
        result = {**self.cell_settings(arm, k, seed), **trained, **score(rate, metrics, a.rollout_minutes)}
        result["session"] = self.session(arm)
        (run_dir / "result.json").write_text(json.dumps(result, indent=2))
        if self.ledger is not None:
            self.keep(arm, k, seed, result)
        return result

    def keep(self, arm: str, k: int, seed: int, result: dict) -> dict:
        """Copy a scored cell into the ledger (with its session, from this --out's recordings, if it has
        none) and return what was kept. Written whole, then renamed: a session that ends mid-write leaves no
        half cell behind."""
        result = {**result, "session": result.get("session") or self.session(arm)}
        self.ledger.mkdir(parents=True, exist_ok=True)
        tmp = self.ledger_file(arm, k, seed).with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(self.ledger_file(arm, k, seed))
        return result

    def session(self, arm: str) -> dict:
        """Where a scored cell comes from: the date, the machine, the expert's rate measured beside its
        recordings, and the recordings' digests."""
        recordings = {"expert_data": dataset_digest(self.expert_data)}
        if arm == "dit4dit_video_joint":
            recordings["video_data"] = dataset_digest(self.video_data)
        return {
            "date": date.today().isoformat(),
            "machine": {"cpu": cpu_name(), "cores": os.cpu_count()},
            "expert": json.loads((self.out / "expert.json").read_text()),
            "recordings": recordings,
        }

    def ledger_file(self, arm: str, k: int, seed: int) -> Path:
        return self.ledger / f"{arm}_k{k}_seed{seed}.json"


def pretraining_cost(stamp: Path) -> dict:
    """The video pretraining's cost and settings, from its stamp."""
    saved = json.loads(stamp.read_text())
    return {
        "minutes": saved["minutes"],
        "train_minutes": saved["train_minutes"],
        "latent_cache_minutes": saved["latent_cache_minutes"],
        "steps": saved["pretrain_steps"],
        "seed": saved["pretrain_seed"],
        "episodes": saved["video_episodes"],
        "episode_s": saved["video_episode_s"],
        "checkpoint": saved["checkpoint"],
    }


def flatten(settings: dict, prefix: str = "") -> dict:
    """Nested settings as dotted keys, so that a refusal names the one setting that changed
    (`pretraining.pretrain_steps`, `preset.policy.chunk_size`), not a whole block."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def dataset_digest(root: Path) -> str:
    """sha256 of a recorded LeRobot dataset's frames and videos (its parquet and mp4 files), the first 16 hex
    digits: which recording a cell trained on. The simulator runs in real time, so two recordings with the
    same settings differ; cells carried over from another session (`--ledger`) can be told apart by it."""
    files = sorted(p for p in root.rglob("*") if p.suffix in (".parquet", ".mp4"))
    if not files:
        raise FileNotFoundError(f"no recorded frames (parquet, mp4) under {root}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def score(rate: float, metrics: dict, minutes: float) -> dict:
    """A rollout's figures: presses per minute with the exact 95% interval of the count, per minute, and
    what the simulator saw of the commands."""
    lo, hi = poisson_interval(metrics["window_presses"])
    return {
        "presses": metrics["window_presses"],
        "presses_per_minute": rate,
        "interval_per_minute": [lo / minutes, hi / minutes],
        "commands": metrics["commands"],
        "commands_outside_limits": metrics["commands_outside_limits"],
        "max_command_step": metrics["max_command_step"],
    }


def fmt_rate(r: dict) -> str:
    lo, hi = r["interval_per_minute"]
    return f"{r['presses_per_minute']:.1f} ({lo:.1f}-{hi:.1f})"


def report(out: Path, args, results: list[dict], expert: dict, pretraining: dict | None) -> str:
    """Write results.md, presses_vs_demos.png and summary.json; return the markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({r["k"] for r in results})
    arms = [arm for arm in ARMS if any(r["arm"] == arm for r in results)]
    by_cell: dict[tuple[str, int], list[dict]] = {}
    for r in sorted(results, key=lambda r: r["seed"]):
        by_cell.setdefault((r["arm"], r["k"]), []).append(r)
    rates = {
        arm: {k: [r["presses_per_minute"] for r in rs] for (a, k), rs in by_cell.items() if a == arm}
        for arm in arms
    }
    means = {arm: {k: sum(v) / len(v) for k, v in per_k.items()} for arm, per_k in rates.items()}
    ranges = {arm: {k: [min(v), max(v)] for k, v in per_k.items()} for arm, per_k in rates.items()}
    steps = {k: steps_for(args, k) for k in ks}
    lines = [
        f"Report of {date.today().isoformat()} on {cpu_name()}, {os.cpu_count()} CPU cores (each cell's own "
        "date and machine: its `session`, listed below the tables). Presses per minute in a "
        f"{args.rollout_minutes}-minute lerobot-rollout from the start pose (scene seed {args.scene_seed}; "
        "dit4dit RTC, ACT sync): the mean over training seeds and, with more than one "
        "seed, their range; 95% intervals are the exact Poisson interval of each rollout's press count.",
        "",
        "| arm | " + " | ".join(f"k = {k}" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]

    def mean_and_range(arm: str, k: int) -> str:
        if k not in means[arm]:
            return "-"
        lo, hi = ranges[arm][k]
        n = len(rates[arm][k])
        return f"{means[arm][k]:.1f}" + (f" ({lo:.1f}-{hi:.1f}, {n} seeds)" if n > 1 else "")

    for arm in arms:
        cells = [mean_and_range(arm, k) for k in ks]
        lines.append(f"| {ARMS[arm]} | " + " | ".join(cells) + " |")
    lines.append("| expert (lerobot-teleoperate) | " + " | ".join(fmt_rate(expert) for _ in ks) + " |")
    lines += [
        "",
        "| arm | k | seed | presses | presses/min (95% interval) | train min |",
        "|---|---|---|---|---|---|",
    ]
    for arm in arms:
        for k in ks:
            for r in by_cell.get((arm, k), []):
                lines.append(
                    f"| {ARMS[arm]} | {k} | {r['seed']} | {r['presses']} | {fmt_rate(r)} | "
                    f"{r['train_minutes']:.1f} |"
                )
    lines += [
        "",
        "Training steps per k (every arm alike): "
        + ", ".join(f"k = {k}: {s}" for k, s in steps.items())
        + f", batch {results[0]['batch_size']}; {results[0]['expert_episodes']} expert episodes of "
        f"{results[0]['episode_s']} s recorded at {args.fps} fps, the first k of them per cell.",
    ]
    sessions: dict[str, tuple[dict, list[str]]] = {}
    for r in results:
        if r.get("session"):
            digest = r["session"]["recordings"]["expert_data"]
            name = f"{r['arm']} k={r['k']} seed {r['seed']}"
            sessions.setdefault(digest, (r["session"], []))[1].append(name)
    if sessions:
        # The simulator runs in real time: each session's recordings differ, and so may its expert's rate;
        # the rollouts' inference latency depends on the machine's CPU.
        lines.append(
            f"Demonstrations from {len(sessions)} recording session(s) (same settings; digest of the frames, "
            "date, machine, the expert's rate measured there, cells): "
            + "; ".join(
                f"{digest} ({sess['date']}, {sess.get('machine', {}).get('cpu', '?')}, expert "
                f"{fmt_rate(sess['expert'])}): {', '.join(names)}"
                for digest, (sess, names) in sessions.items()
            )
            + "."
        )
    if pretraining:
        lines.append(
            f"Video pretraining of (c), once for every k and seed: {pretraining['episodes']} action-free "
            f"episodes of {pretraining['episode_s']} s, {pretraining['steps']} steps "
            f"(seed {pretraining['seed']}), "
            f"{pretraining['minutes']:.1f} min ({pretraining['latent_cache_minutes']:.1f} of them the latent "
            "cache); not counted in the cells' train minutes."
        )
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for i, arm in enumerate(arms):
        xs = [k for k in ks if k in means[arm]]
        line = ax.plot(xs, [means[arm][k] for k in xs], marker="o", label=ARMS[arm])[0]
        for k in xs:
            for r in by_cell[(arm, k)]:
                lo, hi = r["interval_per_minute"]
                x = k * (1 + 0.03 * (i - 1.5))  # side by side, so the intervals do not hide each other
                y = r["presses_per_minute"]
                ax.errorbar(x, y, yerr=[[y - lo], [hi - y]], fmt=".", color=line.get_color(), alpha=0.5)
    lo, hi = expert["interval_per_minute"]
    ax.axhline(expert["presses_per_minute"], color="black", linestyle="--", label="expert")
    ax.axhspan(lo, hi, color="black", alpha=0.08)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("action-labelled demonstrations (k)")
    ax.set_ylabel("presses per minute")
    ax.set_title("Simulated G1: video first vs demonstrations")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "presses_vs_demos.png", dpi=120)
    plt.close(fig)

    summary = {
        "date": date.today().isoformat(),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count()},
        "smoke": args.smoke,
        "ks": ks,
        "steps_per_k": steps,
        "expert": expert,
        "pretraining": pretraining,
        "means": {arm: {str(k): v for k, v in m.items()} for arm, m in means.items()},
        "ranges": {arm: {str(k): v for k, v in m.items()} for arm, m in ranges.items()},
        "cells": results,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return text


def run_pending(study: Study, args, cells: list[tuple[str, int, int]], finished: dict) -> dict | None:
    """Record, pretrain, train and roll out what the unfinished cells need; adds each scored cell to
    `finished`. Returns the video pretraining's cost when (c) had cells to run, else None."""
    pending_arms = {arm for arm, k, seed in cells if (arm, k, seed) not in finished}
    pretraining = None
    study.record_all(video="dit4dit_video_joint" in pending_arms)
    if pending_arms - {"act"}:
        build_base(study.base)
        study.latents("expert")
    if "dit4dit_video_joint" in pending_arms:
        pretraining = study.pretrain()
        log(
            f"pretraining cost (once, apart from the cells): {pretraining['minutes']:.1f} min "
            f"({pretraining['steps']} steps on {pretraining['episodes']} action-free episodes, "
            f"{pretraining['latent_cache_minutes']:.1f} min of it the latent cache)"
        )
    expert = json.loads((args.out / "expert.json").read_text())
    log(f"expert: {fmt_rate(expert)} presses/min")
    for k in sorted(args.ks):
        todo = [(arm, kk, seed) for arm, kk, seed in cells if kk == k and (arm, kk, seed) not in finished]
        trained = {}
        for arm, _, seed in todo:
            i = cells.index((arm, k, seed)) + 1
            log(f"{i}/{len(cells)} k={k} {arm} seed {seed}: training {steps_for(args, k)} steps")
            trained[(arm, seed)] = study.train_cell(arm, k, seed)
            log(f"{i}/{len(cells)}   trained in {trained[(arm, seed)]['train_minutes']:.1f} min")
        if not todo:
            continue
        # One simulator session rolls out every cell of this k: the simulator runs in real time and
        # would take CPU from the training runs.
        with bridge(study.size, args.variant, seed=args.scene_seed, log=study.logs / f"bridge_k{k}.log"):
            scene = SceneClient()
            for arm, _, seed in todo:
                i = cells.index((arm, k, seed)) + 1
                result = study.roll_out(scene, arm, k, seed, trained[(arm, seed)])
                finished[(arm, k, seed)] = result
                log(
                    f"{i}/{len(cells)} k={k} {arm} seed {seed}: {fmt_rate(result)} presses/min "
                    f"(expert {expert['presses_per_minute']:.1f})"
                )
            scene.close()
    return pretraining


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/g1_video_first"))
    parser.add_argument(
        "--smoke", action="store_true", help="tiny settings, every stage and arm (flags given still win)"
    )
    parser.add_argument("--report-only", action="store_true", help="only rebuild the table and plot")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))

    def both(key: str, what: str) -> str:
        """A help text with the study's default and --smoke's (None: see the text)."""
        study = {
            "batch_size": "the preset's",
            "num_workers": "the preset's",
            "expert_episodes": "30, or the largest k if larger",
        }
        study["video_episodes"] = "5 x the expert episodes' default"
        return f"{what} (study: {study.get(key, DEFAULTS[key])}; --smoke: {SMOKE[key]})"

    parser.add_argument("--ks", nargs="+", type=int, default=None, help=both("ks", "demonstration counts k"))
    parser.add_argument(
        "--steps", type=int, default=None, help=both("steps", "training steps, every arm and k")
    )
    parser.add_argument(
        "--steps-for",
        nargs="+",
        default=[],
        metavar="K=STEPS",
        help="training steps at one k, for every arm (overrides --steps there)",
    )
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=None,
        help=both("pretrain_steps", "video pretraining steps of (c)"),
    )
    parser.add_argument("--batch-size", type=int, default=None, help=both("batch_size", "batch size"))
    parser.add_argument("--num-workers", type=int, default=None, help=both("num_workers", "data workers"))
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=None, help=both("seeds", "training seeds of dit4dit cells")
    )
    parser.add_argument(
        "--act-seeds",
        nargs="+",
        type=int,
        default=None,
        help=both("act_seeds", "training seeds of ACT cells"),
    )
    parser.add_argument("--pretrain-seed", type=int, default=None, help=both("pretrain_seed", "its seed"))
    parser.add_argument(
        "--expert-episodes", type=int, default=None, help=both("expert_episodes", "expert episodes E")
    )
    parser.add_argument("--episode-s", type=float, default=None, help=both("episode_s", "their length (s)"))
    parser.add_argument(
        "--video-episodes", type=int, default=None, help=both("video_episodes", "action-free episodes M")
    )
    parser.add_argument(
        "--video-episode-s", type=float, default=None, help=both("video_episode_s", "their length (s)")
    )
    parser.add_argument("--video-task", default=VIDEO_TASK, help="instruction of the action-free episodes")
    parser.add_argument("--wander-seed", type=int, default=0, help="seed of the wandering expert's targets")
    parser.add_argument(
        "--wander-press-prob", type=float, default=0.3, help="its chance to aim at the button"
    )
    parser.add_argument(
        "--rollout-minutes", type=float, default=None, help=both("rollout_minutes", "each rollout's length")
    )
    parser.add_argument("--rollout-threads", type=int, default=1, help="as dit4dit-g1-loop's")
    parser.add_argument("--scene-seed", type=int, default=0, help="scene seed of the rollouts and the expert")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--image-size", type=int, default=None, help="default: the preset's resolution")
    parser.add_argument("--variant", choices=["capsules", "meshes"], default="capsules")
    parser.add_argument(
        "--ledger",
        default=None,
        help="folder of scored cells kept across sessions and machines (one JSON file per cell): a cell "
        "found there is not run again, and every newly scored cell is copied there; 'none' for no ledger "
        "(study: docs/video_first_g1/cells, committed; --smoke: none)",
    )
    parser.add_argument(
        "--cli-start",
        choices=["exec", "fork"],
        default=None,
        help="start each LeRobot CLI as a new process (exec), or fork it from one process that imported "
        "LeRobot once (fork: the same entry points and argv, seconds less per run; "
        "lerobot_dit4dit.sim.cli_launcher). Not a setting of any cell (study: exec; --smoke: fork)",
    )
    parser.add_argument(
        "--latent-cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="dit4dit: train on latents encoded once (as dit4dit-g1-loop; the cost counts in the minutes)",
    )
    args = parser.parse_args(argv)
    if args.ledger is None:
        args.ledger = None if args.smoke else LEDGER
    args.ledger = None if str(args.ledger).lower() == "none" else Path(args.ledger).resolve()
    if args.cli_start is None:
        args.cli_start = "fork" if args.smoke else "exec"
    for key, value in (SMOKE if args.smoke else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    overrides = {}
    for item in args.steps_for:
        k, _, steps = item.partition("=")
        if not (k.isdigit() and steps.isdigit()):
            parser.error(f"--steps-for takes K=STEPS, got {item!r}")
        overrides[int(k)] = int(steps)
    args.steps_for = overrides
    largest = max(args.ks)
    # Recordings are sized by the design's largest k, not by the --ks of this invocation: a run of some k
    # only (one session's share of the study) records what the whole study does, so its cells match.
    design = max(largest, max((SMOKE if args.smoke else DEFAULTS)["ks"]))
    if args.expert_episodes is None:
        args.expert_episodes = design
    if args.video_episodes is None:
        args.video_episodes = 5 * design
    if args.expert_episodes < largest:
        parser.error(f"--expert-episodes {args.expert_episodes} is fewer than the largest k ({largest})")
    if not args.smoke and args.video_episodes < 5 * largest:
        # The design: at least 5x more action-free episodes than the most demonstrations.
        parser.error(f"--video-episodes {args.video_episodes} is under 5 x the largest k ({5 * largest})")
    if "dit4dit_video_joint" in args.arms and not args.video_episodes:
        parser.error("arm dit4dit_video_joint needs --video-episodes > 0")
    args.out = args.out.resolve()
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MUJOCO_GL", "egl")
    study = Study(args)
    cells = plan(args)
    log(
        f"{len(cells)} cells: arms {', '.join(args.arms)}; k {args.ks}; steps "
        + ", ".join(f"{k}: {steps_for(args, k)}" for k in sorted(args.ks))
        + f"; seeds {args.seeds} (ACT {args.act_seeds}); {args.expert_episodes} expert and "
        f"{args.video_episodes} action-free episodes; {args.rollout_minutes}-minute rollouts; out {args.out}"
    )
    # Refuse a changed setting before anything is recorded or trained again.
    finished = {}
    for arm, k, seed in cells:
        # The ledger's copy first (it carries the cell's session), else this run's own.
        candidates = [study.cell_dir(arm, k, seed) / "result.json"]
        if study.ledger is not None:
            candidates.insert(0, study.ledger_file(arm, k, seed))
        for result_file in candidates:
            if result_file.exists():
                result = json.loads(result_file.read_text())
                check_reused(flatten(result), flatten(study.cell_settings(arm, k, seed)), result_file)
                finished[(arm, k, seed)] = result
                break
    if study.ledger is not None:
        # A cell scored in this --out but missing from the ledger (an earlier run without one) goes there too.
        for (arm, k, seed), result in finished.items():
            if not study.ledger_file(arm, k, seed).exists():
                finished[(arm, k, seed)] = study.keep(arm, k, seed, result)
    # Only what an unfinished cell needs runs: a finished study is only reported again.
    pending = [cell for cell in cells if cell not in finished]
    pretraining = None
    if pending and not args.report_only:
        start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            if args.cli_start == "fork":
                stack.enter_context(forked_clis(study.logs / "cli_launcher.log"))
            pretraining = run_pending(study, args, cells, finished)
        log(f"done in {(time.perf_counter() - start) / 60:.1f} min")
    stamp = study.pretrain_dir / "pretrain.json"
    if pretraining is None and "dit4dit_video_joint" in args.arms and stamp.exists():
        pretraining = pretraining_cost(stamp)
    if not finished:
        raise SystemExit(f"No finished cells under {args.out / 'cells'}")
    results = [finished[c] for c in cells if c in finished]
    expert_file = args.out / "expert.json"
    if expert_file.exists():
        expert = json.loads(expert_file.read_text())
    else:  # a report from the ledger alone (a clean checkout): the expert measured beside the first cell
        sessions = [r["session"]["expert"] for r in results if "session" in r]
        if not sessions:
            raise SystemExit(f"No {expert_file}, and no cell carries the expert's rate of its session")
        expert = sessions[0]
    print(report(args.out, args, results, expert, pretraining), flush=True)
    missing = [c for c in cells if c not in finished]
    if missing:
        log(f"{len(missing)} cells not run yet: {missing}")


if __name__ == "__main__":
    main()
