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

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("metaworld", reason="needs the [metaworld] extra (installed by scripts/test.sh)")


def _quickstart(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "examples" / "quickstart.sh"), "--fast"],
        capture_output=True, text=True, env=env, timeout=900, cwd=ROOT,
    )  # fmt: skip


def test_quickstart_fast(tmp_path):
    out = tmp_path / "quickstart"
    # Run in this interpreter's environment, which already has the project and its extras installed.
    env = dict(os.environ, OUT=str(out), DIT4DIT_VENV=sys.prefix, DIT4DIT_SKIP_INSTALL="1")
    proc = _quickstart(env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"success_rate=\d+(\.\d+)? episodes=1 train_minutes=\d+(\.\d+)?", last), last

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
    assert overall["n_episodes"] == 1 and 0.0 <= overall["pc_success"] <= 100.0
    episodes = eval_info["per_task"][0]["metrics"]
    assert len(episodes["successes"]) == 1
    assert all(Path(p).is_file() for p in overall["video_paths"]) and overall["video_paths"]

    # Idempotent: a second run reuses every stage and prints the same result.
    again = _quickstart(env)
    assert again.returncode == 0 and again.stdout.count("reusing") == 4, again.stdout
    assert again.stdout.strip().splitlines()[-1] == last
