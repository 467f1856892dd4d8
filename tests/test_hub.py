"""The Hub round trip with the real `huggingface_hub` client against the Hub test server
(tests/hub_server.py): the base model as a hub repo on a branch -> lerobot-train --policy.push_to_hub ->
load by repo id in a fresh cache (bit-identical actions), a second version by commit sha and by tag, an
offline reload from the same cache, and lerobot-eval --policy.path=<repo id> on a MetaWorld episode."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hub_server import hub_env
from utils import BIN, dataset_flags, run, tiny_policy_flags

pytest.importorskip("metaworld", reason="needs the [metaworld] extra (installed by scripts/test.sh)")

BASE_REPO = "tester/tiny-cosmos-predict2.5"
BASE_REVISION = "diffusers/base/post-trained"
POLICY_REPO = "tester/dit4dit-metaworld"
TASK = "button-press-topdown-v3"

# Loads the policy and processors by repo id (or path) and acts on a fixed observation; writes the actions.
ACT = """
import sys, torch
from safetensors.torch import save_file
from lerobot.policies.factory import make_pre_post_processors
from lerobot_dit4dit import DiT4DiTPolicy
path, revision, out = sys.argv[1], (sys.argv[2] or None), sys.argv[3]
policy = DiT4DiTPolicy.from_pretrained(path, revision=revision)
pre, post = make_pre_post_processors(policy.config, pretrained_path=path,
                                     pretrained_revision=revision)  # the processors of that revision
g = torch.Generator().manual_seed(0)
obs = {"observation.image": torch.rand(2, 3, 480, 480, generator=g),
       "observation.state": torch.rand(2, 4, generator=g) * 2 - 1,
       "task": ["Press a button from the top"] * 2}
noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim, generator=g)
actions = post(policy.predict_action_chunk(pre(obs), noise=noise))
save_file({"actions": actions.contiguous()}, out)
print("text_encoder_loaded", policy.video.text_encoder_loaded)
"""


def _python(code: str, env: dict, *args) -> str:
    return run([sys.executable, "-c", code, *map(str, args)], env=env, timeout=600).stdout


def _actions(path: Path):
    from safetensors.torch import load_file

    return load_file(path)["actions"]


@pytest.fixture(scope="module")
def pushed(hub_server, tiny_base, tmp_path_factory):
    """The tiny base on a hub branch, a small MetaWorld recording, and a policy trained from the hub base and
    pushed with lerobot-train."""
    tmp = tmp_path_factory.mktemp("hub_roundtrip")
    train_home = tmp / "home_train"
    env = hub_env(hub_server.url, train_home)
    _python(
        "import sys\n"
        "from huggingface_hub import HfApi\n"
        "api = HfApi()\n"
        "api.create_repo(sys.argv[1], exist_ok=True)\n"
        "api.create_branch(sys.argv[1], branch=sys.argv[2], exist_ok=True)\n"
        "api.upload_folder(repo_id=sys.argv[1], folder_path=sys.argv[3], revision=sys.argv[2])\n",
        env,
        BASE_REPO,
        BASE_REVISION,
        tiny_base,
    )
    data = tmp / "data"
    _python(  # in its own process: MuJoCo's GL backend is chosen at import
        "import sys; from lerobot_dit4dit.envs.metaworld import record\n"
        "record(sys.argv[1], [sys.argv[2]], episodes=2, resolution=64, max_steps=200)",
        {**env, "MUJOCO_GL": "egl"},
        data,
        TASK,
    )
    out = tmp / "train"
    proc = run(
        [
            str(BIN / "lerobot-train"),
            *tiny_policy_flags(BASE_REPO, resolution=64, revision=BASE_REVISION),
            "--policy.push_to_hub=true",  # after the flags' default: the later value wins
            f"--policy.repo_id={POLICY_REPO}",
            *dataset_flags(data, repo_id="local/mw", batch_size=2),
            "--steps=2",
            "--save_freq=2",
            f"--output_dir={out}",
        ],
        env={**env, "HF_DATASETS_OFFLINE": "1"},
    )
    local = out / "checkpoints" / "last" / "pretrained_model"
    return {"tmp": tmp, "local": local, "env": env, "train_log": proc.stdout + proc.stderr}


def test_push_then_load_by_repo_id_is_bit_identical(pushed, hub_server):
    tmp = pushed["tmp"]
    fresh = hub_env(hub_server.url, tmp / "home_fresh")
    files = _python(
        "import sys; from huggingface_hub import HfApi; print(*HfApi().list_repo_files(sys.argv[1]))",
        fresh,
        POLICY_REPO,
    ).split()
    for name in (
        "model.safetensors",
        "config.json",
        "text_conditioning.safetensors",
        "README.md",
        "policy_preprocessor.json",
        "policy_postprocessor.json",
    ):
        assert name in files, (name, files)
    card = json.loads(
        _python(
            "import sys, json; from huggingface_hub import ModelCard\n"
            "print(json.dumps(ModelCard.load(sys.argv[1]).data.to_dict()))",
            fresh,
            POLICY_REPO,
        ).splitlines()[-1]
    )
    assert card["base_model"] == BASE_REPO and card["base_model_relation"] == "finetune"
    assert card["license"] == "other" and "dit4dit" in card["tags"]
    out = _python(ACT, fresh, POLICY_REPO, "", tmp / "hub.safetensors")
    assert "text_encoder_loaded False" in out  # the training instruction ships its conditioning
    _python(ACT, pushed["env"], pushed["local"], "", tmp / "local.safetensors")
    hub, local = _actions(tmp / "hub.safetensors"), _actions(tmp / "local.safetensors")
    assert hub.shape == (2, 8, 4) and hub.equal(local)
    # The fresh cache holds the base's parts the policy uses, and never its text encoder.
    cached = [p.as_posix() for p in (tmp / "home_fresh").rglob("*") if p.is_file()]
    assert any("/vae/" in p for p in cached) and not any("/text_encoder/" in p for p in cached)


def test_offline_reload_from_the_same_cache(pushed, hub_server):
    tmp = pushed["tmp"]
    home = tmp / "home_offline"
    _python(ACT, hub_env(hub_server.url, home), POLICY_REPO, "", tmp / "online.safetensors")
    _python(ACT, hub_env(hub_server.url, home, offline=True), POLICY_REPO, "", tmp / "offline.safetensors")
    assert _actions(tmp / "online.safetensors").equal(_actions(tmp / "offline.safetensors"))


def test_second_version_by_sha_and_tag(pushed, hub_server):
    tmp = pushed["tmp"]
    env = pushed["env"]
    first_sha = _python(
        "import sys; from huggingface_hub import HfApi; api = HfApi()\n"
        "sha = api.model_info(sys.argv[1]).sha\n"
        "api.create_tag(sys.argv[1], tag='v1', revision=sha); print(sha)",
        env,
        POLICY_REPO,
    ).split()[-1]
    # Version 2: the same checkpoint with every trained weight moved, pushed with the policy's own mixin.
    _python(
        "import sys, torch\n"
        "from lerobot_dit4dit import DiT4DiTPolicy\n"
        "policy = DiT4DiTPolicy.from_pretrained(sys.argv[2])\n"
        "with torch.no_grad():\n"
        "    for p in policy.action_head.parameters(): p.add_(0.05)\n"
        "policy.push_to_hub(sys.argv[1])\n",
        env,
        POLICY_REPO,
        pushed["local"],
    )
    fresh = hub_env(hub_server.url, tmp / "home_versions")
    _python(ACT, fresh, POLICY_REPO, "", tmp / "v2.safetensors")
    _python(ACT, fresh, POLICY_REPO, first_sha, tmp / "v1_sha.safetensors")
    _python(ACT, fresh, POLICY_REPO, "v1", tmp / "v1_tag.safetensors")
    _python(ACT, env, pushed["local"], "", tmp / "v1_local.safetensors")
    v1_sha, v1_tag = _actions(tmp / "v1_sha.safetensors"), _actions(tmp / "v1_tag.safetensors")
    assert v1_sha.equal(v1_tag) and v1_sha.equal(_actions(tmp / "v1_local.safetensors"))
    assert not _actions(tmp / "v2.safetensors").equal(v1_sha)


def test_lerobot_eval_by_repo_id(pushed, hub_server):
    """lerobot-eval --policy.path=<repo id>, run as `dit4dit-metaworld-eval`: lerobot-eval's
    main with the episode capped at 40 steps (LeRobot fixes MetaWorld at 500): one short episode."""
    tmp = pushed["tmp"]
    env = {**hub_env(hub_server.url, tmp / "home_eval"), "MUJOCO_GL": "egl"}
    out = tmp / "eval"
    run(
        [
            sys.executable,
            "-m",
            "lerobot_dit4dit.scripts.metaworld_eval",
            "--step-limit=40",
            f"--policy.path={POLICY_REPO}",
            "--policy.device=cpu",
            "--env.type=metaworld",
            f"--env.task={TASK}",
            "--eval.n_episodes=1",
            "--eval.batch_size=1",
            "--eval.use_async_envs=false",
            "--seed=100000",
            f"--output_dir={out}",
        ],
        env=env,
        timeout=900,
    )
    info = json.loads((out / "eval_info.json").read_text())
    assert info["overall"]["n_episodes"] == 1
