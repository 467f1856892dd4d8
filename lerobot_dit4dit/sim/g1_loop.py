"""The whole offline G1 loop with LeRobot's own CLIs, on the simulated G1:

    start the bridge -> lerobot-teleoperate (the expert's press rate) -> lerobot-record N episodes
    -> lerobot-train -> lerobot-rollout (RTC for dit4dit) for M minutes -> presses per minute

    MUJOCO_GL=egl dit4dit-g1-loop --out outputs/g1
    MUJOCO_GL=egl dit4dit-g1-loop --out outputs/g1 --policy act   # same data, ACT

Each stage is skipped when its output exists with the same settings, so a run resumes. It ends with
    presses_per_minute=<policy> expert=<expert> episodes=<n> train_minutes=<m>
and writes `<out>/result_<policy>.json`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from ..recipes import preset_path
from .cli_launcher import Launcher, forkable
from .scene_client import SceneClient

PRESET = preset_path("unitree_g1_sim")
TASK = "press the red button"
ROBOT_TYPE = "unitree_g1_dit4dit"
EXPERT_TYPE = "g1_scripted_expert"
CAMERA = "head_camera"
REPO_ID = "local/g1_button"


def robot_flags(image_size: int, fps: int) -> list[str]:
    """`--robot.*` flags for the simulated G1: arm mode, the head camera at `image_size` px."""
    camera = (
        f"{{{CAMERA}: {{type: zmq, server_address: 127.0.0.1, port: 5555, camera_name: {CAMERA}, "
        f"width: {image_size}, height: {image_size}, fps: {fps}}}}}"
    )
    return [f"--robot.type={ROBOT_TYPE}", "--robot.mode=arm", f"--robot.cameras={camera}"]


@contextlib.contextmanager
def bridge(image_size: int, variant: str = "capsules", seed: int = 0, log: Path | None = None, timeout_s=120):
    """Run the simulator (`dit4dit-g1-bridge`) until the block ends; yields the Popen.

    Waits for its READY line (raises with its output on a timeout or an early exit) and always stops it."""
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    cmd = [sys.executable, "-m", "lerobot_dit4dit.scripts.g1_bridge", f"--image-size={image_size}"]
    cmd += [f"--variant={variant}", f"--seed={seed}"]
    # stderr goes to `log` or a temporary file, so an early exit can say why (a port another bridge holds).
    out = open(log, "w+") if log else tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=out, text=True, env=env)
    try:
        deadline = time.monotonic() + timeout_s
        lines = []
        os.set_blocking(proc.stdout.fileno(), False)
        while True:
            line = proc.stdout.readline()
            if line:
                lines.append(line)
                if line.strip() == "READY":
                    break
            elif proc.poll() is not None:
                out.seek(0)
                raise RuntimeError(
                    f"the G1 bridge exited ({proc.returncode}) before READY:\n{''.join(lines)}"
                    f"{out.read()[-2000:]}"
                )
            elif time.monotonic() > deadline:
                raise TimeoutError(f"the G1 bridge printed no READY within {timeout_s} s:\n{''.join(lines)}")
            else:
                time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out.close()


# What every CLI run gets in its environment: no Hub, no wandb.
CLI_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
_launcher: Launcher | None = None


@contextlib.contextmanager
def forked_clis(log: Path):
    """Within the block, `run_cli` forks each LeRobot CLI from one process that imported them once
    (`cli_launcher.Launcher`) instead of starting a new interpreter that imports them again."""
    global _launcher
    if _launcher is not None:
        raise RuntimeError("forked_clis() is already active")
    # The launcher imports with the runs' environment: huggingface_hub reads HF_HUB_OFFLINE at import.
    with mock.patch.dict(os.environ, CLI_ENV), Launcher(log) as launcher:
        _launcher = launcher
        try:
            yield launcher
        finally:
            _launcher = None


def run_cli(cmd: list[str], log: Path, timeout_s: float | None = None, threads: int | None = None) -> float:
    """Run a LeRobot CLI with its output in `log`; returns the wall time; raises with the log's tail.

    `lerobot-*` names resolve next to this interpreter first, so a virtual environment need not be active.
    `threads` pins the CLI's torch/OpenMP threads (OMP_NUM_THREADS). Inside `forked_clis()` the run is forked
    from the launcher when it can be (a console script or `python -m`), else started as a new process."""
    log.parent.mkdir(parents=True, exist_ok=True)
    script = Path(sys.executable).parent / cmd[0]
    if cmd[0].startswith("lerobot-") and script.exists():
        cmd = [str(script), *cmd[1:]]
    start = time.perf_counter()
    if _launcher is not None and forkable(cmd):
        env = {**os.environ, **CLI_ENV}
        returncode = _launcher.run(cmd, log, env=env, threads=threads, timeout_s=timeout_s)
    else:
        env = {**os.environ, **CLI_ENV}
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        with open(log, "w") as f:
            returncode = subprocess.run(
                cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, timeout=timeout_s
            ).returncode
    if returncode:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:])
        raise RuntimeError(f"{' '.join(cmd[:2])} failed (exit {returncode}); {log}:\n{tail}")
    return time.perf_counter() - start


def record(
    data: Path,
    episodes: int,
    episode_s: float,
    fps: int,
    image_size: int,
    log: Path,
    teleop: tuple[str, ...] | list[str] = (),
    repo_id: str = REPO_ID,
    task: str = TASK,
) -> float:
    """lerobot-record `episodes` expert episodes into `data` (a fresh folder); returns the wall time.

    `teleop`: more `--teleop.*` flags of the scripted expert (e.g. `--teleop.behaviour=wander`); `task`: the
    instruction stored with every frame."""
    shutil.rmtree(data, ignore_errors=True)
    return run_cli(
        [
            "lerobot-record",
            *robot_flags(image_size, fps),
            f"--teleop.type={EXPERT_TYPE}",
            *teleop,
            f"--dataset.repo_id={repo_id}",
            f"--dataset.root={data}",
            f"--dataset.num_episodes={episodes}",
            f"--dataset.episode_time_s={episode_s}",
            "--dataset.reset_time_s=0",
            f"--dataset.fps={fps}",
            f"--dataset.single_task={task}",
            "--dataset.push_to_hub=false",
            "--display_data=false",
        ],
        log,
    )


def presses_per_minute(scene: SceneClient, run, seed: int, duration_s: float) -> tuple[float, dict]:
    """Reset the scene (robot pose, button, counters), call `run()`, and return the presses per minute in
    the `duration_s` after the robot's first command, with the scene's final metrics."""
    scene.reset(seed)
    run()
    metrics = scene.scene()
    start = metrics["first_command_time"]
    if start is None:
        return 0.0, {**metrics, "window_presses": 0}
    presses = sum(1 for t in metrics["press_times"] if start <= t <= start + duration_s)
    # The count itself, for its interval (`poisson_interval`).
    return 60.0 * presses / duration_s, {**metrics, "window_presses": presses}


def poisson_interval(count: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Garwood) `level` interval of a Poisson mean from one observed `count`, the interval of the
    press counts in docs/unitree_g1_sim.md (257 presses: 226.5-290.4). Divide by the minutes for a rate."""
    from scipy.stats import chi2

    if count < 0:
        raise ValueError(f"a count cannot be negative: {count}")
    tail = (1.0 - level) / 2
    lower = 0.0 if count == 0 else float(chi2.ppf(tail, 2 * count)) / 2
    return lower, float(chi2.ppf(1.0 - tail, 2 * count + 2)) / 2


def measure_expert(scene: SceneClient, image_size: int, fps: int, minutes: float, seed: int, log: Path):
    """The scripted expert's press rate, measured as a policy's is: lerobot-teleoperate for `minutes` from the
    scene reset with `seed`. Returns `presses_per_minute`'s (rate, metrics)."""
    return presses_per_minute(
        scene,
        lambda: run_cli(
            [
                "lerobot-teleoperate",
                *robot_flags(image_size, fps),
                f"--teleop.type={EXPERT_TYPE}",
                f"--fps={fps}",
                f"--teleop_time_s={minutes * 60}",
            ],
            log,
        ),
        seed,
        minutes * 60,
    )


def build_base(base: Path) -> Path:
    """The small Cosmos-shaped base (random weights, seed 0) at `base`, built once: what `dit4dit-tiny-base
    --output=<base>` writes, built in this process, which has imported what it needs already (a new process
    would spend about 10 s importing LeRobot again). Built aside and renamed, so a half-written base is
    never taken for one."""
    from ..testing.tiny_base import build_tiny_cosmos_base

    if not (base / "model_index.json").exists():
        partial = base.with_name(base.name + f".partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        build_tiny_cosmos_base(partial)
        shutil.rmtree(base, ignore_errors=True)
        partial.rename(base)
    return base


def train_flags(
    data: Path, output_dir: Path, steps: int, batch_size: int, num_workers: int, repo_id: str = REPO_ID
) -> list[str]:
    """`lerobot-train` flags that every policy of the G1 loop shares: the recordings, budget and output."""
    return [
        f"--dataset.root={data}",
        f"--dataset.repo_id={repo_id}",
        "--dataset.video_backend=pyav",
        f"--output_dir={output_dir}",
        f"--steps={steps}",
        f"--save_freq={steps}",
        f"--batch_size={batch_size}",
        f"--num_workers={num_workers}",
        "--wandb.enable=false",
    ]


def dit4dit_flags(base: Path, image_size: int, steps: int) -> list[str]:
    """`lerobot-train` flags of a dit4dit run from `base` with the G1 preset, its schedule over `steps`."""
    return [
        f"--config_path={PRESET}",
        f"--policy.base_model={base}",
        f"--policy.image_resolution=[{image_size},{image_size}]",
        f"--policy.scheduler_decay_steps={steps}",
    ]


def act_flags(chunk_size: int, n_action_steps: int) -> list[str]:
    """`lerobot-train` flags of LeRobot's ACT on the G1 recordings: its own defaults, on CPU, from scratch
    (no backbone download) like dit4dit, with dit4dit's chunk and executed steps."""
    return [
        "--policy.type=act",
        "--policy.device=cpu",
        "--policy.push_to_hub=false",
        "--policy.pretrained_backbone_weights=null",
        f"--policy.chunk_size={chunk_size}",
        f"--policy.n_action_steps={n_action_steps}",
        "--log_freq=100",
    ]


def encode_latents(latents: Path, train_args: list[str], log: Path) -> float:
    """Encode the recordings of a dit4dit `lerobot-train` command line (its flags, without the program) once
    with the frozen VAE into `latents` (`dit4dit-latent-cache`); returns the wall time. The recordings are not
    augmented, so their latents never change, and encoding them was most of a step of the small model."""
    latents.unlink(missing_ok=True)
    return run_cli(
        [
            sys.executable,
            "-m",
            "lerobot_dit4dit.scripts.latent_cache",
            f"--output={latents}",
            "--batch-size=16",
            *train_args,
        ],
        log,
    )


def rollout_command(
    ckpt: Path,
    image_size: int,
    fps: int,
    duration_s: float,
    inference: str,
    queue_threshold: int | None = None,
    execution_horizon: int | None = None,
) -> list[str]:
    """`lerobot-rollout` of the checkpoint `ckpt` on the simulated G1 for `duration_s`; with
    `inference="rtc"`, RTC re-plans when `queue_threshold` actions are left and guides the first
    `execution_horizon` actions of a new chunk (docs/unitree_g1_sim.md, RTC settings)."""
    cmd = [
        "lerobot-rollout",
        "--strategy.type=base",
        f"--policy.path={ckpt}",
        "--policy.device=cpu",
        *robot_flags(image_size, fps),
        f"--task={TASK}",
        f"--fps={fps}",
        f"--duration={duration_s}",
        f"--inference.type={inference}",
    ]
    if inference == "rtc":
        cmd += [
            f"--inference.queue_threshold={queue_threshold}",
            f"--inference.rtc.execution_horizon={execution_horizon}",
        ]
    return cmd
