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
import time
from pathlib import Path

from ..recipes import preset_path
from .scene_client import SceneClient

PRESET = preset_path("unitree_g1_sim")
TASK = "press the red button"
ROBOT_TYPE = "unitree_g1_dit4dit"
EXPERT_TYPE = "g1_scripted_expert"
CAMERA = "head_camera"


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
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
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
                raise RuntimeError(
                    f"the G1 bridge exited ({proc.returncode}) before READY:\n{''.join(lines)}"
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
        if log:
            out.close()


def run_cli(cmd: list[str], log: Path, timeout_s: float | None = None, threads: int | None = None) -> float:
    """Run a LeRobot CLI with its output in `log`; returns the wall time; raises with the log's tail.

    `lerobot-*` names resolve next to this interpreter first, so a virtual environment need not be active.
    `threads` pins the CLI's torch/OpenMP threads (OMP_NUM_THREADS)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    script = Path(sys.executable).parent / cmd[0]
    if cmd[0].startswith("lerobot-") and script.exists():
        cmd = [str(script), *cmd[1:]]
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(log, "w") as f:
        proc = subprocess.run(
            cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, timeout=timeout_s
        )
    if proc.returncode:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:])
        raise RuntimeError(f"{' '.join(cmd[:2])} failed (exit {proc.returncode}); {log}:\n{tail}")
    return time.perf_counter() - start


def record(data: Path, episodes: int, episode_s: float, fps: int, image_size: int, log: Path) -> float:
    """lerobot-record `episodes` expert episodes into `data` (a fresh folder); returns the wall time."""
    shutil.rmtree(data, ignore_errors=True)
    return run_cli(
        [
            "lerobot-record",
            *robot_flags(image_size, fps),
            f"--teleop.type={EXPERT_TYPE}",
            "--dataset.repo_id=local/g1_button",
            f"--dataset.root={data}",
            f"--dataset.num_episodes={episodes}",
            f"--dataset.episode_time_s={episode_s}",
            "--dataset.reset_time_s=0",
            f"--dataset.fps={fps}",
            f"--dataset.single_task={TASK}",
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
        return 0.0, metrics
    presses = sum(1 for t in metrics["press_times"] if start <= t <= start + duration_s)
    return 60.0 * presses / duration_s, metrics
