"""The sample-efficiency benchmark's report (table + plot) from per-run results; the runs themselves are a
benchmark (`benchmarks.sample_efficiency`), not a test."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import sample_efficiency as se

pytest.importorskip("matplotlib")


def test_report_writes_table_and_plot(tmp_path):
    results = [
        {
            "task": task,
            "method": method,
            "episodes": n,
            "steps": 600,
            "batch_size": 16,
            "eval_step_limit": 100,
            "train_seed": 1000,
            "eval_seeds": [100000, 100019],
            "eval_episodes": 20,
            "success": float(i * 5 + j),
            "train_minutes": 3.0,
            "eval_minutes": 4.0,
        }
        for i, (task, method) in enumerate(
            [("push-v3", "dit4dit"), ("push-v3", "diffusion"), ("reach-v3", "dit4dit")]
        )
        for j, n in enumerate([5, 15])
    ]
    text = se.report(tmp_path, results, {"push-v3": 100.0, "reach-v3": 96.0})
    assert (tmp_path / "results.md").read_text() == text
    assert "| task | method | 5 episodes | 15 episodes |" in text
    assert "| push-v3 | dit4dit | 0 | 1 |" in text and "| push-v3 | diffusion | 5 | 6 |" in text
    assert "| reach-v3 | diffusion | - | - |" in text  # a run that is missing shows as such
    assert "seeds 100000..100019" in text and "at most 100 steps" in text and "reach-v3 96%" in text
    png = (tmp_path / "success_vs_episodes.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_finished_run_with_other_settings_is_refused(tmp_path):
    """Resuming must never mix runs made with other settings (e.g. a 600-step run in a 1200-step table)."""
    args = argparse.Namespace(
        steps=1200,
        batch_size=16,
        seed=1000,
        resolution=64,
        eval_episodes=50,
        episode_length=100,
        shadows=False,
    )
    train, evaluation = se.run_settings(args)
    where = tmp_path / "runs" / "push-v3" / "dit4dit_5" / "result.json"
    se.check_reused(
        {**train, **evaluation, "success": 40.0}, {**train, **evaluation}, where
    )  # same: accepted
    with pytest.raises(SystemExit, match=r"steps=600.*steps=1200"):
        se.check_reused({**train, **evaluation, "steps": 600}, {**train, **evaluation}, where)
    with pytest.raises(SystemExit, match=r"shadows=True.*shadows=False"):
        se.check_reused({**train, **evaluation, "shadows": True}, {**train, **evaluation}, where)
