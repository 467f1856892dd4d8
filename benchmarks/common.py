"""What the benchmarks share: the public configs of the real-size components and the training recipes."""

from __future__ import annotations

from pathlib import Path

from lerobot_dit4dit.testing.tiny_base import REAL_WIDTH_BASE, transformer_config

# Public configs of the real components (diffusers' Cosmos-2.5-Predict-Base-2B conversion table, Wan 2.1
# VAE, Qwen2.5-VL-7B); used only to count parameters on the meta device. The video DiT (after REAL_TEXT) is
# the benchmarks' real-width base, reading the real text encoder's embedding.
REAL_VAE = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
}
REAL_TEXT = {
    "text_config": {
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
    },
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 3584,
        "fullatt_block_indexes": [7, 15, 23, 31],
    },
}
# Cosmos-Predict2.5 concatenates every decoder layer's hidden state: 28 x 3,584 = 100,352 channels.
REAL_TEXT_EMBEDDING = REAL_TEXT["text_config"]["num_hidden_layers"] * REAL_TEXT["text_config"]["hidden_size"]
REAL_TRANSFORMER = {
    **transformer_config(REAL_WIDTH_BASE),
    "crossattn_proj_in_channels": REAL_TEXT_EMBEDDING,
}


# Recipe -> policy-config overrides (and, for "lora", LeRobot's PEFT wrap with dit4dit's default targets).
RECIPES = {
    "full": {"gradient_checkpointing": False},
    "checkpointing": {"gradient_checkpointing": True},
    "lora": {"gradient_checkpointing": True},
    "frozen-video": {
        "gradient_checkpointing": True,
        "training_mode": "action",
        "detach_video_features": True,
    },
}
RECIPE_TITLES = {
    "full": "full fine-tune (both DiTs)",
    "checkpointing": "full fine-tune + gradient checkpointing",
    "lora": "LoRA r={r} (both DiTs) + embodiment layers, checkpointing",
    "frozen-video": "frozen video DiT (training_mode=action), checkpointing",
}


def recipe_policy(cfg, recipe: str, lora_rank: int = 16, load_base_transformer_weights: bool = True):
    """The policy lerobot-train trains for `recipe`, from `cfg` with the `RECIPES[recipe]` overrides already
    applied; for "lora", wrapped by LeRobot's PEFT support with dit4dit's default target modules.

    Returns:
        (the policy to train, the `DiT4DiTPolicy` inside it).
    """
    from lerobot_dit4dit.modeling_dit4dit import DiT4DiTPolicy

    policy = DiT4DiTPolicy(cfg, load_base_transformer_weights=load_base_transformer_weights)
    if recipe != "lora":
        return policy, policy
    # LeRobot refuses LoRA on a policy with no pretrained path; the base stands in for the checkpoint.
    cfg.pretrained_path = Path(cfg.base_model)
    policy = policy.wrap_with_peft(peft_cli_overrides={"method_type": "lora", "r": lora_rank})
    return policy, policy.get_base_model()


def trained_param_groups(policy, recipe: str) -> list[dict]:
    """The optimizer parameter groups lerobot-train builds for `recipe`'s policy (from `recipe_policy`)."""
    if recipe == "lora":  # the adapters and the fully trained embodiment copies
        return [{"params": [p for p in policy.parameters() if p.requires_grad]}]
    return policy.get_optim_params()
