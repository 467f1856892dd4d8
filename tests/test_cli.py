"""The plugin as LeRobot users meet it: discovery, `--help`, and real `lerobot-train` runs."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from utils import BIN, ROOT, dataset_flags, offline_env, run, tiny_policy_flags

from lerobot_dit4dit.testing.tiny_base import TINY_POLICY_OVERRIDES


def test_distribution_name_is_a_lerobot_policy_plugin():
    dist = importlib.metadata.distribution("lerobot_policy_dit4dit")
    assert dist.metadata["Name"].startswith("lerobot_policy_")


def test_third_party_discovery_registers_dit4dit():
    code = (
        "from lerobot.utils.import_utils import register_third_party_plugins\n"
        "from lerobot.configs import PreTrainedConfig\n"
        "assert 'dit4dit' not in PreTrainedConfig.get_known_choices()\n"
        "register_third_party_plugins()\n"
        "from lerobot.policies.factory import get_policy_class, make_policy_config\n"
        "cls = get_policy_class('dit4dit'); cfg = make_policy_config('dit4dit', device='cpu')\n"
        "print(cls.__name__, type(cfg).__name__)\n"
    )
    out = run([sys.executable, "-c", code]).stdout
    assert "DiT4DiTPolicy DiT4DiTConfig" in out


@pytest.mark.parametrize("script", ["lerobot-train", "lerobot-eval", "lerobot-rollout"])
def test_cli_help_lists_every_field(script):
    from dataclasses import fields

    from lerobot_dit4dit import DiT4DiTConfig

    out = run([str(BIN / script), "--help", "--policy.type=dit4dit"]).stdout
    for f in fields(DiT4DiTConfig):
        assert f"--policy.{f.name}" in out, f.name


@pytest.fixture(scope="module")
def trained(tiny_base, reach_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    run(
        [
            str(BIN / "lerobot-train"),
            *tiny_policy_flags(tiny_base),
            *dataset_flags(reach_dataset),
            "--steps=3",
            "--save_freq=3",
            f"--output_dir={out}",
        ]
    )
    return out


def test_lerobot_train_writes_a_checkpoint(trained):
    ckpt = trained / "checkpoints" / "000003" / "pretrained_model"
    for name in ("config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"):
        assert (ckpt / name).is_file(), name
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["type"] == "dit4dit" and cfg["num_video_frames"] == 5
    with safe_open(ckpt / "model.safetensors", "pt") as f:
        keys = f.keys()  # a safe_open handle is not iterable
    assert keys and all(k.startswith(("video.transformer.", "action_head.")) for k in keys)
    pre = json.loads((ckpt / "policy_preprocessor.json").read_text())
    names = [s.get("registry_name") for s in pre["steps"]]
    for name in ("rename_observations_processor", "device_processor", "normalizer_processor"):
        assert name in names
    post = json.loads((ckpt / "policy_postprocessor.json").read_text())
    assert "unnormalizer_processor" in [s.get("registry_name") for s in post["steps"]]


def test_lerobot_train_resume(trained):
    cfg_path = trained / "checkpoints" / "last" / "pretrained_model" / "train_config.json"
    run(
        [
            str(BIN / "lerobot-train"),
            f"--config_path={cfg_path}",
            "--resume=true",
            "--steps=5",
            "--save_freq=5",
        ]
    )
    state = json.loads(
        (trained / "checkpoints" / "000005" / "training_state" / "training_step.json").read_text()
    )
    assert state["step"] == 5


def test_lerobot_train_finetune_from_policy_path(trained, reach_dataset, tmp_path):
    ckpt = trained / "checkpoints" / "000003" / "pretrained_model"
    out = tmp_path / "finetune"
    proc = run(
        [
            str(BIN / "lerobot-train"),
            f"--policy.path={ckpt}",
            "--policy.push_to_hub=false",
            *dataset_flags(reach_dataset),
            "--steps=2",
            "--save_freq=2",
            f"--output_dir={out}",
        ]
    )
    assert (out / "checkpoints" / "000002" / "pretrained_model" / "model.safetensors").is_file()
    log = proc.stdout + proc.stderr
    assert "action_loss" in log and "video_loss" in log
    # The reach episodes are long enough for the clips: the video loss has real (unpadded) targets.
    video_losses = [float(v) for v in re.findall(r"video_loss:([0-9.]+)", log)]
    assert video_losses and all(v > 0 for v in video_losses), video_losses


def test_quickstart_preset_fits_the_tiny_base():
    """The quickstart preset's features come from the tiny base's middle block, as the tests' tiny
    settings."""
    from lerobot_dit4dit.testing.tiny_base import TINY_BASE

    preset = json.loads((ROOT / "configs" / "metaworld_quickstart.json").read_text())["policy"]
    assert preset["extract_layer"] == TINY_POLICY_OVERRIDES["extract_layer"] < TINY_BASE.num_layers


def _dataset_with_nan_actions(source: str, target: Path) -> Path:
    """A copy of the reach dataset whose every 4th frame has a NaN action (so every chunk holds one)."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.copytree(source, target)
    for file in (target / "data").rglob("*.parquet"):
        table = pq.read_table(file)
        column = table.column("action")
        rows = column.to_pylist()
        for i in range(0, len(rows), 4):
            rows[i] = [float("nan")] * len(rows[i])
        table = table.set_column(
            table.schema.get_field_index("action"), "action", pa.array(rows, type=column.type)
        )
        pq.write_table(table, file)
    return target


def test_lerobot_train_refuses_nan_actions_and_saves_nothing(tiny_base, reach_dataset, tmp_path):
    data = _dataset_with_nan_actions(reach_dataset, tmp_path / "nan_data")
    out = tmp_path / "run"
    cmd = [
        str(BIN / "lerobot-train"),
        *tiny_policy_flags(tiny_base),
        *dataset_flags(str(data)),
        "--steps=3",
        "--save_freq=1",
        f"--output_dir={out}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=offline_env(), timeout=600)
    assert proc.returncode != 0
    assert (
        "DiT4DiT: action contains NaN or Inf" in proc.stderr and "Batch rows: {'episode_index'" in proc.stderr
    )
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())


def test_lerobot_train_resumes_after_sigkill(tiny_base, reach_dataset, tmp_path):
    """Kill lerobot-train with SIGKILL right after its first checkpoint, resume it, and finish with the
    expected step count and a loadable checkpoint."""
    import signal
    import time

    from lerobot_dit4dit import DiT4DiTPolicy

    out = tmp_path / "run"
    cmd = [
        str(BIN / "lerobot-train"),
        *tiny_policy_flags(tiny_base),
        *dataset_flags(reach_dataset),
        "--steps=400",
        "--save_freq=2",
        f"--output_dir={out}",
    ]
    checkpoints = out / "checkpoints"
    # LeRobot writes a checkpoint's files, then points `last` at it: `last` is the completion marker
    # (training_state/training_step.json alone is written before the optimizer state).
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=offline_env())
    try:
        deadline = time.monotonic() + 300
        while not (checkpoints / "last").is_symlink() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (checkpoints / "last").is_symlink(), "no checkpoint was completed"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    if (checkpoints / "last").is_symlink():
        resume_from = checkpoints / "last"
    else:  # killed between LeRobot's unlink of `last` and its new link: the newest checkpoint is complete
        resume_from = max(p for p in checkpoints.iterdir() if p.name.isdigit())
    last = checkpoints / "last" / "pretrained_model"
    killed_at = json.loads((resume_from / "training_state" / "training_step.json").read_text())
    assert killed_at["step"] % 2 == 0 and killed_at["step"] < 400  # the newest complete checkpoint
    run(
        [
            str(BIN / "lerobot-train"),
            f"--config_path={resume_from / 'pretrained_model' / 'train_config.json'}",
            "--resume=true",
            f"--steps={killed_at['step'] + 4}",
        ]
    )
    final = json.loads((out / "checkpoints" / "last" / "training_state" / "training_step.json").read_text())
    assert final["step"] == killed_at["step"] + 4
    policy = DiT4DiTPolicy.from_pretrained(last)
    assert all(torch.isfinite(p).all() for p in policy.parameters())


def test_finetune_on_another_embodiment(trained, tiny_base, tmp_path):
    """A 4-D-action checkpoint on a 6-D-action dataset: refused by default; with the opt-in, both DiTs are
    kept, the embodiment layers re-initialised (each key logged), and training runs with fresh processors."""
    from helpers.reach_dataset import make_reach_dataset
    from safetensors.torch import load_file

    from lerobot_dit4dit import DiT4DiTPolicy
    from lerobot_dit4dit.checkpointing import EMBODIMENT_PREFIXES

    data = tmp_path / "reach6"
    make_reach_dataset(data, num_episodes=2, episode_length=24, image_size=32, action_dim=6)
    ckpt = trained / "checkpoints" / "000003" / "pretrained_model"
    cmd = [
        str(BIN / "lerobot-train"),
        f"--policy.path={ckpt}",
        "--policy.push_to_hub=false",
        *dataset_flags(str(data)),
        "--steps=2",
        "--save_freq=2",
    ]
    refused = subprocess.run(
        [*cmd, f"--output_dir={tmp_path / 'a'}"],
        capture_output=True,
        text=True,
        env=offline_env(),
        timeout=600,
    )
    assert refused.returncode != 0 and "action dim 4 -> 6" in refused.stderr
    assert "--policy.reinit_embodiment_layers=true" in refused.stderr

    proc = run([*cmd, "--policy.reinit_embodiment_layers=true", f"--output_dir={tmp_path / 'b'}"])
    log = proc.stdout + proc.stderr
    source = load_file(ckpt / "model.safetensors")
    embodiment = sorted(k for k in source if k.startswith(EMBODIMENT_PREFIXES))
    assert embodiment and all(f"re-initialising {k}" in log for k in embodiment)
    out = tmp_path / "b" / "checkpoints" / "000002" / "pretrained_model"
    assert json.loads((out / "config.json").read_text())["output_features"]["action"]["shape"] == [6]

    # In process: the DiTs are the checkpoint's, the embodiment layers are not.
    config = DiT4DiTPolicy.from_pretrained(out).config
    config.reinit_embodiment_layers, config.pretrained_path = True, None
    config.output_features["action"].shape = (6,)
    policy = DiT4DiTPolicy.from_pretrained(ckpt, config=config)
    own = policy.state_dict()
    assert all(torch.equal(own[k], v) for k, v in source.items() if k not in embodiment)
    assert not all(torch.equal(own[k], source[k]) for k in embodiment)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A rank of the two-process run that is still running after this many seconds prints every thread's stack and
# exits (tests/fixtures/rank_dump): the test takes about 20 s alone on 2 cores, 32 s beside a CPU hog.
RANK_HANG_S = 150


def test_two_process_accelerate_training_keeps_ranks_identical(tiny_base, reach_dataset, tmp_path):
    """Two-process CPU training on LeRobot's engine: `accelerate launch --multi_gpu --num_processes 2
    lerobot-train` (torchrun; with no GPU, Accelerate uses DDP over gloo). 2 steps, then a two-process
    `--resume` for 2 more; both ranks end each run with identical weights (each rank dumps its weights after
    every step: tests/fixtures/rank_dump).

    `--cpu` is not used: with accelerate 1.x it selects the single-process launcher, whatever
    `--num_processes` says.

    The run used to hang about once in 3 runs on a loaded core (2 of about 6 on 2026-11-29): one rank
    exited, the other never did. That rank had finished training and was deadlocked in its exit, in the gloo
    process group's destructor run under the GIL. The policy now holds the group until exit
    (`lerobot_dit4dit/distributed.py` has the cause, with the upstream lines), and this test runs with no
    workaround of its own. A rank still running after `RANK_HANG_S` prints every thread's stack and
    exits, and the test fails with them."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    train = [*tiny_policy_flags(tiny_base), *dataset_flags(reach_dataset), f"--output_dir={out}"]
    log, ranks = _two_processes(tmp_path / "ranks", [*train, "--steps=2", "--save_freq=2"])
    saved = load_file(out / "checkpoints" / "000002" / "pretrained_model" / "model.safetensors")
    # Exact: the checkpoint holds the very tensors rank 0 dumped (a save, no arithmetic).
    assert all(torch.equal(saved[k], ranks[0][k]) for k in saved)
    assert "[rank1]" in log and "smpl:16" in log  # 2 processes x batch 4 x 2 steps

    # Two processes resume from that checkpoint for 2 more steps: still identical, and moved on from it.
    config = out / "checkpoints" / "last" / "pretrained_model" / "train_config.json"
    resume = [f"--config_path={config}", "--resume=true", "--steps=4", "--save_freq=2"]
    log, resumed = _two_processes(tmp_path / "ranks_resumed", resume)
    assert "smpl:32" in log and "step:3 " in log and "step:1 " not in log, log[-3000:]
    final = load_file(out / "checkpoints" / "000004" / "pretrained_model" / "model.safetensors")
    # Exact, as above; and training on from step 2 changed the weights.
    assert all(torch.equal(final[k], resumed[0][k]) for k in final)
    assert not all(torch.equal(final[k], saved[k]) for k in final)


def _two_processes(dump: Path, train_args: list[str]) -> tuple[str, list[dict]]:
    """`accelerate launch` two CPU ranks of `lerobot-train train_args`; returns the log and each rank's
    weights after its last step, which must be identical. A rank still running after `RANK_HANG_S` fails the
    test with its stacks."""
    from safetensors.torch import load_file

    dump.mkdir()
    env = offline_env(
        DIT4DIT_RANK_DUMP=str(dump),
        DIT4DIT_RANK_HANG_S=str(RANK_HANG_S),
        PYTHONPATH=str(Path(__file__).parent / "fixtures" / "rank_dump"),
        OMP_NUM_THREADS="1",
    )
    cmd = [
        str(BIN / "accelerate"),
        "launch",
        "--multi_gpu",
        "--main_process_port",
        str(_free_port()),
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(BIN / "lerobot-train"),
        *train_args,
    ]
    # The rank timeout ends a hang first; this bound covers the launcher itself.
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=2 * RANK_HANG_S, stdin=subprocess.DEVNULL
    )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0 and re.search(r"Timeout \(\d+:\d\d:\d\d\)!", proc.stderr):
        pytest.fail(f"a rank hung for {RANK_HANG_S} s; its stacks:\n{proc.stderr[-6000:]}")
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{log[-6000:]}"
    assert (dump / "rank1.safetensors").is_file(), "the second rank never trained"
    ranks = [load_file(dump / f"rank{i}.safetensors") for i in range(2)]
    assert ranks[0].keys() == ranks[1].keys()
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    return log, ranks


def test_lora_fine_tuning_through_lerobot_peft(trained, reach_dataset, tmp_path):
    """`lerobot-train --policy.path=<ckpt> --peft.method_type=lora`: dit4dit's default targets put adapters on
    both DiTs and train the embodiment layers in full; the adapters save and reload through LeRobot's
    make_policy, and the reloaded policy acts."""
    pytest.importorskip("peft", reason="LoRA goes through LeRobot's PEFT support (the `peft` package)")
    from lerobot.configs import PreTrainedConfig
    from lerobot.policies.factory import make_policy
    from safetensors.torch import load_file

    ckpt = trained / "checkpoints" / "000003" / "pretrained_model"
    out = tmp_path / "lora"
    run(
        [
            str(BIN / "lerobot-train"),
            f"--policy.path={ckpt}",
            "--policy.push_to_hub=false",
            "--peft.method_type=lora",
            "--peft.r=4",
            *dataset_flags(reach_dataset),
            "--steps=2",
            "--save_freq=2",
            f"--output_dir={out}",
        ]
    )
    adapter_dir = out / "checkpoints" / "000002" / "pretrained_model"
    adapters = load_file(adapter_dir / "adapter_model.safetensors")
    assert any(k.startswith("base_model.model.video.transformer.") and "lora_A" in k for k in adapters)
    assert any(k.startswith("base_model.model.action_head.model.") and "lora_A" in k for k in adapters)
    assert any(".action_head.state_encoder." in k for k in adapters)  # trained in full

    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    cfg = PreTrainedConfig.from_pretrained(adapter_dir)
    cfg.pretrained_path = adapter_dir
    policy = make_policy(cfg, ds_meta=LeRobotDatasetMetadata("local/dit4dit_reach", root=reach_dataset))
    loaded = policy.state_dict()
    lora_key = next(k for k in adapters if "video.transformer." in k and "lora_B" in k)
    own_key = lora_key.replace(".lora_B.weight", ".lora_B.default.weight")
    assert torch.equal(loaded[own_key], adapters[lora_key])
    from utils import inference_batch

    policy.eval()
    batch = inference_batch()
    assert policy.predict_action_chunk(batch).shape == (2, 8, 4)


def test_real_width_benchmark_base_is_the_real_video_dit_config():
    """`--width real` builds Cosmos-Predict2.5-2B's video DiT: its public config (diffusers' conversion of
    Cosmos-Predict2.5-2B) in every field but the width of the tiny text encoder's embedding that
    `crossattn_proj` reads. Its text K/V project the 1,024-wide context, not one as wide as the DiT."""
    from diffusers import CosmosTransformer3DModel

    from benchmarks.speed import REAL_TRANSFORMER
    from lerobot_dit4dit.testing.tiny_base import BENCH_BASES, TINY_BASE, transformer_config

    public = {
        "in_channels": 17,
        "out_channels": 16,
        "num_attention_heads": 16,
        "attention_head_dim": 128,
        "num_layers": 28,
        "mlp_ratio": 4.0,
        "text_embed_dim": 1024,
        "adaln_lora_dim": 256,
        "max_size": (128, 240, 240),
        "patch_size": (1, 2, 2),
        "rope_scale": (1.0, 3.0, 3.0),
        "concat_padding_mask": True,
        "extra_pos_embed_type": None,
        "use_crossattn_projection": True,
        "crossattn_proj_in_channels": 100352,
        "encoder_hidden_states_channels": 1024,
    }
    assert public == REAL_TRANSFORMER
    real = transformer_config(BENCH_BASES["real"])
    assert {k for k in public if real[k] != public[k]} == {"crossattn_proj_in_channels"}
    with torch.device("meta"):  # 2.06 B parameters, as diffusers' conversion of the 2B model has
        n = sum(p.numel() for p in CosmosTransformer3DModel(**REAL_TRANSFORMER).parameters())
    assert n == 2_059_174_912
    assert transformer_config(TINY_BASE)["text_embed_dim"] == 64  # the tiny DiT's width


@pytest.mark.parametrize(
    "mode",
    [[], ["--latent-cache"], ["--no-fast-norms"], ["--recipe", "lora"]],
    ids=["vae", "latent_cache", "diffusers_norms", "lora"],
)
def test_speed_benchmark_prints_and_writes_every_stage(tmp_path, mode):
    """`python -m benchmarks.speed` at tiny width (its CI-size run): it pins the thread count,
    times the train step, the chunk and each inference stage, and writes them with the machine to its JSON.
    No figure is compared with a bound: a benchmark prints figures, the test only checks they are there."""
    out = tmp_path / "speed.json"
    proc = run(
        [sys.executable, "-m", "benchmarks.speed", "--threads", "1", "--batch-size", "2"]
        + ["--warmup", "0", "--repeats", "1", "--json", str(out), *mode],
        timeout=300,
    )
    assert "torch threads: 1" in proc.stdout, proc.stdout
    figures = json.loads(out.read_text())
    assert figures["config"]["latent_cache"] == ("--latent-cache" in mode)
    assert figures["config"]["fast_vae_norms"] == ("--no-fast-norms" not in mode)
    assert figures["config"]["compile_model"] is False
    lora = "lora" in mode  # LeRobot's PEFT wrap, with gradient checkpointing (train_memory.RECIPES)
    assert figures["config"]["recipe"] == ("lora" if lora else None)
    assert figures["config"]["gradient_checkpointing"] is lora
    assert figures["threads"] == 1 and figures["machine"]["cpu_count"] >= 1
    stages = ("train_step_ms", "chunk_ms", "stage_vae_encode_frame0_ms", "stage_feature_forward_ms")
    for key in (*stages, "stage_action_sampling_ms", "peak_memory_mib"):
        assert figures["results"][key] > 0, (key, figures["results"])
        assert key in proc.stdout
