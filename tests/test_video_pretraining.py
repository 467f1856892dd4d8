"""Video first: `training_mode=video` on an action-free LeRobotDataset (made with LeRobot's own
`lerobot-edit-dataset`), then `lerobot-train --policy.path=<that checkpoint> --policy.training_mode=joint` on
an action dataset. The fine-tune keeps the pretrained video DiT and builds a fresh action head."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from helpers.reach_dataset import make_reach_dataset
from safetensors.torch import load_file
from utils import ACTION_DIM, BIN, IMG, inference_batch, offline_env, run, tiny_policy_flags

from lerobot_dit4dit import DiT4DiTPolicy

REPO, VIDEO_REPO = "local/dit4dit_reach", "local/dit4dit_reach_video"
# min_normalization_range of the fine-tune: wider than any state or action dim of the reach dataset moves.
FLOOR = 50.0


def flags(root, repo_id: str) -> list[str]:
    return [
        f"--dataset.repo_id={repo_id}",
        f"--dataset.root={root}",
        "--dataset.video_backend=pyav",
        "--num_workers=0",
        "--batch_size=4",
        "--log_freq=1",
        "--wandb.enable=false",
    ]


@pytest.fixture(scope="module")
def pretrained(tiny_base, reach_dataset, tmp_path_factory):
    """(camera-only dataset, video-pretrained checkpoint, lerobot-train's log)."""
    tmp = tmp_path_factory.mktemp("video_first")
    video_data = tmp / "video_data"
    run(
        [
            str(BIN / "lerobot-edit-dataset"),
            f"--repo_id={REPO}",
            f"--root={reach_dataset}",
            f"--new_repo_id={VIDEO_REPO}",
            f"--new_root={video_data}",
            "--operation.type=remove_feature",
            "--operation.feature_names=['action', 'observation.state']",
        ]
    )
    proc = run(
        [
            str(BIN / "lerobot-train"),
            *tiny_policy_flags(tiny_base),
            "--policy.training_mode=video",
            *flags(video_data, VIDEO_REPO),
            "--steps=2",
            "--save_freq=2",
            f"--output_dir={tmp / 'pretrain'}",
        ]
    )
    ckpt = tmp / "pretrain" / "checkpoints" / "000002" / "pretrained_model"
    return video_data, ckpt, proc.stdout + proc.stderr


def test_video_training_on_action_free_data(pretrained):
    video_data, ckpt, log = pretrained
    features = json.loads((video_data / "meta" / "info.json").read_text())["features"]
    assert "action" not in features and "observation.state" not in features
    assert "video_loss" in log and "action_loss" not in log
    config = json.loads((ckpt / "config.json").read_text())
    assert config["training_mode"] == "video" and "observation.state" not in config["input_features"]
    assert config["output_features"] == {}
    policy = DiT4DiTPolicy.from_pretrained(ckpt)
    with pytest.raises(RuntimeError, match="Fine-tune it on an action dataset first: lerobot-train"):
        policy.select_action(inference_batch())


def test_finetune_starts_from_the_pretrained_video_dit(pretrained, tiny_base, reach_dataset, tmp_path):
    _, ckpt, _ = pretrained
    out = tmp_path / "finetune"
    proc = run(
        [
            str(BIN / "lerobot-train"),
            f"--policy.path={ckpt}",
            "--policy.training_mode=joint",
            "--policy.push_to_hub=false",
            f"--policy.min_normalization_range={FLOOR}",
            *flags(reach_dataset, REPO),
            "--steps=2",
            "--save_freq=2",
            f"--output_dir={out}",
        ]
    )
    log = proc.stdout + proc.stderr
    assert "was trained with training_mode=video. From it: the video DiT" in log
    assert "observation.state (4,) taken from the fine-tuning dataset" in log
    assert "the processors are built from this config and the fine-tuning dataset's statistics" in log
    assert "action_loss" in log and "video_loss" in log
    model = out / "checkpoints" / "000002" / "pretrained_model"
    # The processors were built for the new dataset, not loaded from the video checkpoint (whose normaliser
    # knows no state or action): every state and action dim is normalised over at least the floor, and the
    # input check knows their sizes.
    stats = load_file(next(model.glob("policy_preprocessor_step_*_normalizer_processor.safetensors")))
    for key in ("observation.state", "action"):
        span = stats[f"{key}.max"] - stats[f"{key}.min"]
        assert torch.all(span >= FLOOR - 1e-4), (key, span)  # float32 centre +- FLOOR / 2
    steps = json.loads((model / "policy_preprocessor.json").read_text())["steps"]
    check = next(s["config"] for s in steps if s["registry_name"] == "dit4dit_input_check_processor")
    assert (check["state_dim"], check["action_dim"]) == (4, ACTION_DIM)
    tuned = DiT4DiTPolicy.from_pretrained(model)
    action = tuned.select_action(inference_batch())
    assert action.shape == (2, 4) and torch.isfinite(action).all()

    # What the fine-tune started from: the fine-tune's own config, loaded on the pretrained checkpoint.
    config = tuned.config
    config.pretrained_path = None
    start = DiT4DiTPolicy.from_pretrained(ckpt, config=config)
    saved = load_file(ckpt / "model.safetensors")
    state = start.state_dict()
    video_keys = [k for k in saved if k.startswith("video.transformer.")]
    head_keys = [k for k in saved if k.startswith("action_head.")]
    assert video_keys and head_keys
    assert all(torch.equal(state[k], saved[k]) for k in video_keys)  # the pretrained video DiT
    assert not all(torch.equal(state[k], saved[k]) for k in head_keys)  # a fresh action head
    base = DiT4DiTPolicy(config)  # the base's own video DiT, read from `tiny_base`
    assert not all(torch.equal(base.state_dict()[k], saved[k]) for k in video_keys)


def test_finetune_on_another_camera_name(pretrained, tmp_path):
    """The fine-tuning dataset names a camera differently from the video-pretraining one ("top" for "front"):
    lerobot-train refuses it naming both cameras, and trains with LeRobot's --rename_map, keeping the
    pretrained video DiT, whose camera names the fine-tuned policy and its preprocessor keep."""
    _, ckpt, _ = pretrained
    top, front = "observation.images.top", "observation.images.front"
    data, repo = tmp_path / "renamed", "local/dit4dit_reach_top"
    make_reach_dataset(
        data,
        repo_id=repo,
        num_episodes=2,
        episode_length=24,
        image_size=IMG,
        action_dim=ACTION_DIM,
        stop_on_success=False,
        rename={front: top},
    )
    cmd = [
        str(BIN / "lerobot-train"),
        f"--policy.path={ckpt}",
        "--policy.training_mode=joint",
        "--policy.push_to_hub=false",
        *flags(data, repo),
        "--steps=1",
        "--save_freq=1",
    ]
    refused = subprocess.run(
        [*cmd, f"--output_dir={tmp_path / 'refused'}"],
        capture_output=True,
        text=True,
        env=offline_env(),
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    message = refused.stdout + refused.stderr
    assert refused.returncode != 0, message[-3000:]
    # LeRobot's own check (make_policy) names the camera the policy lacks and the one the dataset adds.
    tail = message[-3000:]
    assert f"Missing features: ['{front}']" in message and f"Extra features: ['{top}']" in message, tail
    assert "--rename_map" in message
    assert not (tmp_path / "refused" / "checkpoints").exists()

    out = tmp_path / "renamed_run"
    proc = run([*cmd, f"--output_dir={out}", f"--rename_map={json.dumps({top: front})}"])
    assert "was trained with training_mode=video. From it: the video DiT" in proc.stdout + proc.stderr
    model = out / "checkpoints" / "000001" / "pretrained_model"
    tuned = DiT4DiTPolicy.from_pretrained(model)
    assert set(tuned.config.image_features) == {front, "observation.images.wrist"}
    # The saved preprocessor renames the robot's "top" camera as in training, so the policy runs on it.
    steps = json.loads((model / "policy_preprocessor.json").read_text())["steps"]
    renames = [s["config"]["rename_map"] for s in steps if "rename_map" in s.get("config", {})]
    assert renames == [{top: front}], steps
    action = tuned.select_action(inference_batch())
    assert action.shape == (2, ACTION_DIM) and torch.isfinite(action).all()
