"""The model card, rendered offline and parsed back."""

from __future__ import annotations

import json

from huggingface_hub import ModelCard
from lerobot.configs import FeatureType, PolicyFeature
from utils import tiny_config

from lerobot_dit4dit.model_card import build_model_card
from lerobot_dit4dit.scripts.model_card import main


def _cosmos_config(tiny_base: str):
    cfg = tiny_config(tiny_base, base_model="nvidia/Cosmos-Predict2.5-2B")
    cfg.repo_id = "someone/dit4dit_libero"
    return cfg


def test_card_for_a_cosmos_finetune(tiny_base):
    eval_info = {
        "per_group": {"libero_spatial": {"pc_success": 98.0, "n_episodes": 50}},
        "overall": {"pc_success": 98.0, "n_episodes": 50},
    }
    card = build_model_card(
        _cosmos_config(tiny_base),
        dataset_repo_id="HuggingFaceVLA/libero",
        instructions=[("pick up the bowl", True), ("open the drawer", False)],
        eval_info=eval_info,
        eval_machine="1x H100",
    )
    parsed = ModelCard(str(card))
    data = parsed.data.to_dict()
    assert data["license"] == "other" and data["license_name"] == "nvidia-open-model-license"
    assert data["license_link"].startswith("https://www.nvidia.com/")
    assert data["base_model"] == "nvidia/Cosmos-Predict2.5-2B" and data["base_model_relation"] == "finetune"
    assert data["library_name"] == "lerobot" and "dit4dit" in data["tags"]
    text = parsed.text
    assert "| `observation.images.front` | VISUAL | [3, 32, 32] |" in text
    assert "| `action` | ACTION | [4] |" in text
    assert (
        '"pick up the bowl" (conditioning shipped)' in text
        and '"open the drawer" (needs the text encoder)' in text
    )
    assert "lerobot-eval --policy.path=someone/dit4dit_libero" in text
    assert "lerobot-rollout --policy.path=someone/dit4dit_libero" in text
    assert "| libero_spatial | 50 | 98.0 |" in text and "on 1x H100" in text
    assert "12 GB GPU" in text and "Intended use and limitations" in text
    assert "2603.10448" in text and "cadene2024lerobot" in text


def test_card_of_a_saved_checkpoint_with_eval_info(make_policy, tmp_path, capsys):
    policy = make_policy()
    policy.video.encode_prompts(["push the red block"])
    ckpt = tmp_path / "ckpt"
    policy.save_pretrained(ckpt)
    eval_info = tmp_path / "eval_info.json"
    eval_info.write_text(json.dumps({"overall": {"pc_success": 40.0, "n_episodes": 10}}))
    main(["--checkpoint", str(ckpt), "--eval-info", str(eval_info)])
    card = ModelCard.load(ckpt / "README.md")
    assert card.data.license == "other" and card.data.license_name == "base-model-license"  # a local base
    assert '"push the red block" (conditioning shipped)' in card.text
    assert "| **overall** | 10 | **40.0** |" in card.text


def test_card_from_generate_model_card_lists_features_and_license(make_policy):
    policy = make_policy(output_features={"action": PolicyFeature(FeatureType.ACTION, (4,))})
    card = policy.generate_model_card("local/reach", "dit4dit", None, ["extra"])
    assert "extra" in card.data.tags and "2603.10448" in card.text
