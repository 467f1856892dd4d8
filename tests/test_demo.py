"""The README's main command, `examples/offline_demo.sh --fast`, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_offline_demo_fast(tmp_path):
    out = tmp_path / "demo"
    # Run in this interpreter's environment, which already has the project installed.
    env = dict(os.environ, OUT=str(out), DIT4DIT_VENV=sys.prefix, DIT4DIT_SKIP_INSTALL="1")
    proc = subprocess.run(
        ["bash", str(ROOT / "examples" / "offline_demo.sh"), "--fast"],
        capture_output=True, text=True, env=env, timeout=900, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("success_rate=") and "episodes=2" in last and "train_minutes=" in last, last

    assert (out / "data" / "meta" / "info.json").is_file()
    ckpt = out / "train" / "checkpoints" / "000020" / "pretrained_model"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "config.json").is_file()
    info = json.loads((out / "eval_info.json").read_text())
    assert info["episodes"] == 2 and 0.0 <= info["success_rate"] <= 100.0
    assert info["expert_success_rate"] == 100.0
    assert len(info["per_episode_success"]) == 2

    # Idempotent: a second run reuses every stage.
    again = subprocess.run(["bash", str(ROOT / "examples" / "offline_demo.sh"), "--fast"],
                           capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)  # fmt: skip
    assert again.returncode == 0 and again.stdout.count("reusing") == 3, again.stdout
