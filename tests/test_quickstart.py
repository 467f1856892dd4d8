"""The README's main command, `examples/quickstart.sh --fast`, end to end on the real MetaWorld simulator:
record 2 scripted-expert episodes -> lerobot-train dit4dit for a few steps -> lerobot-eval 1 episode."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from utils import ROOT, run

from lerobot_dit4dit.envs import metaworld

pytest.importorskip("metaworld", reason="needs the [metaworld] extra (installed by scripts/test.sh)")


def _quickstart(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "examples" / "quickstart.sh"), "--fast"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=ROOT,
    )


def test_quickstart_fast(tmp_path):
    out = tmp_path / "quickstart"
    # Run in this interpreter's environment, which already has the project and its extras installed.
    env = dict(os.environ, OUT=str(out), DIT4DIT_VENV=sys.prefix, DIT4DIT_SKIP_INSTALL="1")
    proc = _quickstart(env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    printed = re.fullmatch(r"success_rate=(\d+(?:\.\d+)?) episodes=1 train_minutes=\d+(\.\d+)?", last)
    assert printed, last

    # The dataset: what lerobot-eval's MetaWorld env emits, downsized, with MetaWorld's task description.
    info = json.loads((out / "data" / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2 and info["codebase_version"] == "v3.0"
    assert info["features"]["observation.image"]["shape"] == [64, 64, 3]
    assert info["features"]["observation.state"]["shape"] == [4]
    assert info["features"]["action"]["shape"] == [4]
    tasks = (out / "data" / "meta" / "tasks.parquet").read_bytes()
    assert b"Press a button from the top" in tasks
    recording = json.loads((out / "data" / "recording.json").read_text())
    assert recording["tasks"]["button-press-topdown-v3"]["expert_success_rate"] == 100.0

    # The checkpoint: a dit4dit policy with its processors, trained from the preset.
    ckpt = out / "train" / "checkpoints" / "last" / "pretrained_model"
    config = json.loads((ckpt / "config.json").read_text())
    assert config["type"] == "dit4dit" and config["image_resolution"] == [64, 64]
    assert config["input_features"]["observation.image"]["shape"] == [3, 64, 64]
    assert (ckpt / "model.safetensors").is_file()
    assert (ckpt / "policy_preprocessor.json").is_file() and (ckpt / "policy_postprocessor.json").is_file()

    # lerobot-eval's own output.
    eval_info = json.loads((out / "eval" / "eval_info.json").read_text())
    overall = eval_info["overall"]
    (task,) = eval_info["per_task"]
    successes = task["metrics"]["successes"]
    assert overall["n_episodes"] == len(successes) == 1 and isinstance(successes[0], bool)  # as asked
    # Any outcome is right for a policy trained a few steps; the rate must be the episode's outcome, and the
    # script must print that rate.
    rate = 100.0 * sum(successes) / len(successes)
    assert overall["pc_success"] == pytest.approx(rate)
    assert float(printed.group(1)) == pytest.approx(rate, abs=0.05)  # printed with one decimal
    assert all(Path(p).is_file() for p in overall["video_paths"]) and overall["video_paths"]

    # Idempotent: a second run reuses every stage and prints the same result.
    again = _quickstart(env)
    assert again.returncode == 0 and again.stdout.count("reusing") == 4, again.stdout
    assert again.stdout.strip().splitlines()[-1] == last


def test_recorder_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="divisible by 16.*60"):
        metaworld.record(tmp_path / "data", ["button-press-topdown-v3"], episodes=1, resolution=60)
    with pytest.raises(ValueError, match="Unknown MetaWorld task 'button-press-sideways-v9'"):
        metaworld.record(tmp_path / "data", ["button-press-sideways-v9"], episodes=1, resolution=64)
    assert not list(tmp_path.iterdir())  # validated before anything is written


def test_recorder_resize_matches_the_preprocessor():
    """Frames are downsized as the dit4dit preprocessor downsizes lerobot-eval's 480x480 renders."""
    import numpy as np
    import torch

    from lerobot_dit4dit.processor_dit4dit import DiT4DiTObservationProcessorStep

    frame = np.random.default_rng(0).integers(0, 256, (480, 480, 3), dtype=np.uint8)
    ours = metaworld.resize_frame(frame, 64)
    step = DiT4DiTObservationProcessorStep(cameras=["observation.image"], resolution=(64, 64))
    image = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0
    theirs = step.observation({"observation.image": image})["observation.image"]  # [-1, 1]
    expected = ((theirs[0].permute(1, 2, 0) + 1) / 2 * 255).round().numpy()
    assert ours.shape == (64, 64, 3) and np.abs(ours.astype(float) - expected).max() <= 1.0


def _python_in_fresh_process(code: str):
    """Run `code` in a new interpreter: the render switches are process-wide and must not leak here."""
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return run([sys.executable, "-c", code], env=env, timeout=300, cwd=ROOT)


def test_disable_shadows_applies_to_envs_built_afterwards():
    """The study's faster rendering: envs built after `disable_shadows()` cast no shadows, earlier ones keep
    theirs.

    Run in a subprocess because the switch is process-wide (it must also reach lerobot-eval's env factory).
    """
    code = (
        "import numpy as np\n"
        "from lerobot_dit4dit.envs.metaworld import ExpertRollout, disable_shadows\n"
        "before = ExpertRollout('push-v3'); disable_shadows(); disable_shadows(); "
        "after = ExpertRollout('push-v3')\n"
        "a = before.env.reset(seed=3)[0]['pixels']; b = after.env.reset(seed=3)[0]['pixels']\n"
        "print(int(before.env._env.model.light_castshadow.sum()), "
        "int(after.env._env.model.light_castshadow.sum()),"
        " a.shape == b.shape, bool((a != b).any()))\n"
    )
    out = _python_in_fresh_process(code)
    with_shadow_lights, without_shadow_lights, same_shape, pixels_differ = out.stdout.split()[-4:]
    assert int(with_shadow_lights) > 0 and int(without_shadow_lights) == 0
    assert same_shape == "True" and pixels_differ == "True"


def test_cap_episode_steps_applies_to_envs_built_afterwards():
    """`cap_episode_steps` (the study's evaluation limit) sets the step limit lerobot-eval's rollout reads
    (`_max_episode_steps`) on envs built afterwards; a second, different cap in the process is refused."""
    code = (
        "from lerobot_dit4dit.envs.metaworld import ExpertRollout, cap_episode_steps\n"
        "before = ExpertRollout('push-v3'); cap_episode_steps(7); cap_episode_steps(7); "
        "after = ExpertRollout('push-v3')\n"
        "try:\n"
        "    cap_episode_steps(9); refused = False\n"
        "except ValueError as e:\n"
        "    refused = 'already capped at 7' in str(e)\n"
        "print(before.env._max_episode_steps, after.env._max_episode_steps, refused)\n"
    )
    out = _python_in_fresh_process(code)
    before, after, refused = out.stdout.split()[-3:]
    assert int(before) == 500 and int(after) == 7 and refused == "True"
