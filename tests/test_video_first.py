"""Video first on the simulated G1 (issue 28, benchmarks/g1_video_first.py): the wandering expert that
records the action-free episodes and the press count's interval. The whole study in its --smoke mode is in
tests/test_g1.py, beside every other test that starts the simulator's bridge (its ports are fixed, and the
suite keeps a file on one worker)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lerobot_policy_dit4dit  # noqa: F401  (registers the teleoperator type)
from lerobot_dit4dit.sim.g1_loop import poisson_interval
from lerobot_dit4dit.teleoperators.g1_scripted_expert import G1ScriptedExpertConfig


def test_poisson_interval_is_the_docs_interval():
    # docs/unitree_g1_sim.md, run 12: 257 presses in 3 minutes -> 75.5-96.8 per minute; ACT 51 -> 12.7-22.4.
    for count, expected in ((257, (75.5, 96.8)), (51, (12.7, 22.4))):
        lo, hi = poisson_interval(count)
        assert (round(lo / 3, 1), round(hi / 3, 1)) == expected
    lo, hi = poisson_interval(0)
    assert lo == 0.0 and hi == pytest.approx(3.6889, abs=1e-4)  # -ln(0.025)
    with pytest.raises(ValueError, match="negative"):
        poisson_interval(-1)


def drive(behaviour: str, seconds: float, seed: int = 0) -> tuple[np.ndarray, int, list]:
    """The scripted expert driving the simulator's physics in this process (no bridge, no sockets used) at
    15 Hz with the robot's 0.1 rad step cap: (fingertip positions per tick, presses, wander targets drawn)."""
    from lerobot.robots.unitree_g1.config_unitree_g1 import _DEFAULT_KD, _DEFAULT_KP

    from lerobot_dit4dit.sim.g1_bridge import G1Sim
    from lerobot_dit4dit.teleoperators.g1_scripted_expert.g1_scripted_expert import G1ScriptedExpert

    sim = G1Sim("capsules", seed=3)
    expert = G1ScriptedExpert(G1ScriptedExpertConfig(behaviour=behaviour, wander_seed=seed))
    expert.connect()  # its sockets connect lazily; only the kinematics are used here
    last = sim.data.qpos[:29].copy()
    tips, targets = [], []
    try:
        for tick in range(int(15 * seconds)):
            q = sim.data.qpos[:29].copy()
            if behaviour == "wander":
                command = expert._wander(q, sim.button, sim.presses)
                if expert._target_actions == 0:
                    targets.append(expert._target)
            else:
                command = expert._step(q, sim.button)
            last = last + np.clip(command - last, -0.1, 0.1)
            gains = zip(last, _DEFAULT_KP, _DEFAULT_KD, strict=False)
            sim.command(
                [{"mode": 1, "q": c, "dq": 0.0, "kp": kp, "kd": kd, "tau": 0.0} for c, kp, kd in gains]
            )
            for _ in range(33):  # 2 ms physics steps: one 15 Hz control tick
                sim.step(tick / 15)
            tips.append(sim.data.site_xpos[sim.fingertip].copy())
    finally:
        expert.disconnect()
    return np.array(tips), sim.presses, targets


def test_wander_moves_about_the_table_and_presses_now_and_then():
    from lerobot_dit4dit.sim import g1_scene

    tips, presses, targets = drive("wander", 30)
    press_tips, press_presses, _ = drive("press", 30)
    points = [t for t in targets if not isinstance(t, str)]
    assert presses > 0 and len(points) >= 5 and len(points) < len(targets), (presses, targets)
    # The fingertip covers much more of the table than the press cycles do, beyond the button's region.
    assert tips[:, 1].std() > 1.5 * press_tips[:, 1].std(), (tips.std(0), press_tips.std(0))
    outside = (tips[:, 1] < g1_scene.BUTTON_Y[0] - 0.04) | (tips[:, 1] > g1_scene.BUTTON_Y[1] + 0.04)
    assert outside.mean() > 0.1, outside.mean()
    assert press_presses > presses  # the expert proper presses more often
    # The seed fixes the targets: another seed draws others.
    _, _, again = drive("wander", 4)
    _, _, other = drive("wander", 4, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(again, targets, strict=False))
    assert not all(np.array_equal(a, b) for a, b in zip(other, targets, strict=False))


def test_wander_settings_are_checked():
    with pytest.raises(ValueError, match="behaviour='dance'"):
        G1ScriptedExpertConfig(behaviour="dance")
    with pytest.raises(ValueError, match="wander_press_prob"):
        G1ScriptedExpertConfig(wander_press_prob=1.5)


def test_report_gives_the_mean_and_range_over_seeds(tmp_path):
    # Three seeds of one cell and one seed of another, as the headline of issue 28 item 3 reports them.
    from benchmarks.g1_video_first import parse_args, report, score

    args = parse_args(["--arms", "dit4dit_joint", "act", "--ks", "30", "--out", str(tmp_path)])
    settings = {"batch_size": 16, "expert_episodes": 30, "episode_s": 15.0, "train_minutes": 40.0, "k": 30}
    metrics = {"commands": 2800, "commands_outside_limits": 0, "max_command_step": 0.1}

    def cell(arm: str, seed: int, presses: int) -> dict:
        figures = score(presses / 3, {**metrics, "window_presses": presses}, 3)
        return {**settings, "arm": arm, "seed": seed, **figures}

    results = [cell("dit4dit_joint", seed, n) for seed, n in ((1002, 270), (1000, 240), (1001, 300))]
    results.append(cell("act", 1000, 51))
    expert = score(151.3, {**metrics, "window_presses": 454}, 3)
    text = report(tmp_path, args, results, expert, None)
    assert "| (a) dit4dit joint, from the base | 90.0 (80.0-100.0, 3 seeds) |" in text, text
    assert "| (d) LeRobot ACT | 17.0 |" in text, text  # one seed: no range
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["means"]["dit4dit_joint"]["30"] == pytest.approx(90.0)
    assert summary["ranges"]["dit4dit_joint"]["30"] == [80.0, 100.0]
    assert [c["seed"] for c in summary["cells"]] == [1002, 1000, 1001, 1000]  # as given; the table sorts
    assert (tmp_path / "presses_vs_demos.png").stat().st_size > 0


# The launcher that forks LeRobot's CLIs from one process (lerobot_dit4dit.sim.cli_launcher, --cli-start=fork,
# the smoke's default): a run must see its own argv, environment and threads, its output must reach its log,
# and a failure or a hang must come back to the caller as it does from a new process.
PROBE = """
import json, os, sys, time
import torch
env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "DIT4DIT_PROBE")}
print(json.dumps({"argv": sys.argv[1:], "threads": torch.get_num_threads(), "env": env}))
if "--sleep" in sys.argv:
    time.sleep(60)
sys.exit(3 if "--fail" in sys.argv else 0)
"""


def test_forked_cli_runs_like_a_new_process(tmp_path, monkeypatch):
    import subprocess
    import sys

    from lerobot_dit4dit.sim import g1_loop

    (tmp_path / "dit4dit_probe.py").write_text(PROBE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    probe = [sys.executable, "-m", "dit4dit_probe"]

    def ran(log_name: str) -> dict:
        return json.loads((tmp_path / log_name).read_text().splitlines()[0])

    monkeypatch.setenv("DIT4DIT_PROBE", "now")
    g1_loop.run_cli([*probe, "a", "b=1"], tmp_path / "exec.log", threads=1)
    monkeypatch.setenv("DIT4DIT_PROBE", "when the launcher started")
    with g1_loop.forked_clis(tmp_path / "launcher.log") as launcher:
        monkeypatch.setenv("DIT4DIT_PROBE", "now")  # a run sees the caller's environment of its own start
        g1_loop.run_cli([*probe, "a", "b=1"], tmp_path / "fork.log", threads=1)
        env = {"HF_HUB_OFFLINE": "1", "DIT4DIT_PROBE": "now"}
        expected = {"argv": ["a", "b=1"], "threads": 1, "env": env}
        assert ran("fork.log") == ran("exec.log") == expected
        with pytest.raises(RuntimeError, match=r"failed \(exit 3\)[\s\S]*--fail"):
            g1_loop.run_cli([*probe, "--fail"], tmp_path / "fail.log")
        with pytest.raises(subprocess.TimeoutExpired):
            g1_loop.run_cli([*probe, "--sleep"], tmp_path / "sleep.log", timeout_s=2)
        # A LeRobot console script: lerobot-train refusing a key that does not exist, by name, as it does
        # in a new process.
        bad = ["lerobot-train", "--policy.type=dit4dit", "--dataset.repo_id=x", "--policy.no_such_key=1"]
        with pytest.raises(RuntimeError, match="no_such_key"):
            g1_loop.run_cli(bad, tmp_path / "train.log")
        with pytest.raises(RuntimeError, match="already active"), g1_loop.forked_clis(tmp_path / "again.log"):
            pass
        helper = launcher.proc
    assert helper.poll() is not None  # the launcher exits with the block
    assert g1_loop._launcher is None


def test_ledger_carries_cells_across_sessions(tmp_path):
    # Two sessions of the study: the first scored seed 1000 in its --out, the second finds seed 1001 in the
    # ledger only (its --out is new). The ledger gets the first session's cell; the report has both, and says
    # they come from two recording sessions; a ledger cell made with other settings is refused by name.
    from benchmarks.g1_video_first import Study, dataset_digest, main, parse_args, score

    out, ledger = tmp_path / "out", tmp_path / "ledger"
    argv = ["--arms", "dit4dit_joint", "--ks", "30", "--seeds", "1000", "1001", "--out", str(out)]
    argv += ["--ledger", str(ledger)]
    study = Study(parse_args(argv))
    metrics = {"commands": 2800, "commands_outside_limits": 0, "max_command_step": 0.1}
    expert = score(151.3, {**metrics, "window_presses": 454}, 3)

    def cell(seed: int, presses: int, digest: str) -> dict:
        session = {"date": "2026-12-07", "expert": expert, "recordings": {"expert_data": digest}}
        figures = score(presses / 3, {**metrics, "window_presses": presses}, 3)
        return {**study.cell_settings("dit4dit_joint", 30, seed), "train_minutes": 41.0, **figures,
                "session": session}  # fmt: skip

    # The first session's cell predates sessions: the ledger copy gets one from that --out's recordings.
    first = out / "cells" / "dit4dit_joint_k30_seed1000"
    first.mkdir(parents=True)
    (first / "result.json").write_text(json.dumps({**cell(1000, 284, ""), "session": None}))
    frames = out / "data" / "expert" / "data" / "chunk-000" / "file-000.parquet"
    frames.parent.mkdir(parents=True)
    frames.write_bytes(b"frames of the first session")
    digest = dataset_digest(out / "data" / "expert")
    (out / "expert.json").write_text(json.dumps(expert))
    ledger.mkdir()
    (ledger / "dit4dit_joint_k30_seed1001.json").write_text(json.dumps(cell(1001, 291, "b" * 16)))

    main([*argv, "--report-only"])
    kept = json.loads((ledger / "dit4dit_joint_k30_seed1000.json").read_text())
    assert kept["presses"] == 284 and kept["session"]["recordings"] == {"expert_data": digest}, kept
    table = (out / "results.md").read_text()
    assert "| (a) dit4dit joint, from the base | 95.8 (94.7-97.0, 2 seeds) |" in table, table
    assert "from 2 recording session(s)" in table and digest in table and "b" * 16 in table, table
    # A clean checkout: the report from the ledger alone, with the expert measured beside its cells.
    fresh = tmp_path / "fresh"
    main([*argv[:-4], "--out", str(fresh), "--ledger", str(ledger), "--report-only"])
    assert "| expert (lerobot-teleoperate) | 151.3 (" in (fresh / "results.md").read_text()
    frames.write_bytes(b"other frames")
    assert dataset_digest(out / "data" / "expert") != digest
    with pytest.raises(FileNotFoundError, match="no recorded frames"):
        dataset_digest(tmp_path / "empty")

    changed = {**cell(1001, 291, "b" * 16), "steps": 3000}
    (ledger / "dit4dit_joint_k30_seed1001.json").write_text(json.dumps(changed))
    with pytest.raises(SystemExit, match="was made with steps=3000, but this invocation asks for steps=9000"):
        main([*argv, "--report-only"])
