"""Convert an official DiT4DiT checkpoint (github Mondo-Robotics/DiT4DiT) into a dit4dit checkpoint directory.

    python -m lerobot_dit4dit.convert_official \
        --checkpoint <run>/checkpoints/steps_80000_pytorch_model.pt   # or .safetensors, or <org>/<repo>/<file> on the Hub
        --config <run>/config.yaml \
        --output outputs/dit4dit_libero_official

The output holds config.json (settings that reproduce the official model), a slim model.safetensors (video DiT
+ action head) and the pre/post processors with the official normalisation (from `dataset_statistics.json`
next to the config, when present). It loads with `DiT4DiTPolicy.from_pretrained` and `lerobot-eval
--policy.path`.

Every key of the official state dict is accounted for: the video transformer and the action model are
converted, the frozen VAE and text encoder are checked against `--base-model` (they are re-loaded from there),
and anything else is an error naming the key.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml
from lerobot.configs import FeatureType, NormalizationMode, PolicyFeature

from .configuration_dit4dit import DiT4DiTConfig

# Official prefix -> our prefix (trained parts) or None (frozen parts, re-loaded from the base model).
PREFIX_MAP = {
    "backbone_interface.extractor.transformer.": "video.transformer.",
    "action_model.": "action_head.",
    "backbone_interface.extractor.vae.": None,
    "backbone_interface.extractor.text_encoder.": None,
}
# The official `action_model_type` table: (input_embedding_dim, attention_head_dim, num_attention_heads).
DIT_TYPES = {"DiT-B": (768, 64, 12), "DiT-L": (1536, 48, 32)}
# Defaults of the official code for keys its saved config.yaml may omit.
OFFICIAL_DEFAULTS = {"extract_layer": 19, "conditional_frame_timestep": 1e-3, "torch_dtype": "bfloat16",
                     "repeated_diffusion_steps": 4}  # fmt: skip
# Camera keys of the official recipes' LeRobot datasets, in the official tiling order (non-wrist views first).
RECIPE_CAMERAS = {
    "libero": ["observation.images.image", "observation.images.wrist_image"],
    "robocasa": ["observation.images.ego_view"],
    "gr1": ["observation.images.ego_view"],
    "g1": ["observation.images.ego_view"],
}
RECIPE_STATE_ENCODING = {"libero": "sincos_interleaved", "robocasa": "sincos_blocked", "gr1": "sincos_blocked",
                         "g1": "sincos_blocked"}  # fmt: skip


def _recipe(data_mix: str) -> str | None:
    data_mix = data_mix.lower()
    return next((name for name in RECIPE_CAMERAS if name in data_mix), None)


def load_official_state_dict(checkpoint: str) -> dict[str, torch.Tensor]:
    """Read a .safetensors / .pt official checkpoint, local or `<org>/<repo>/<path in repo>` on the Hub."""
    path = Path(checkpoint)
    if not path.exists():
        parts = checkpoint.split("/")
        if len(parts) < 3:
            raise FileNotFoundError(f"{checkpoint} is neither a file nor <org>/<repo>/<file> on the Hub.")
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(repo_id="/".join(parts[:2]), filename="/".join(parts[2:])))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("module", "model", "state_dict"):  # wrappers some trainers add
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def config_from_official(
    official: dict,
    config_dir: Path,
    *,
    base_model: str | None = None,
    base_model_revision: str | None = None,
    cameras: list[str] | None = None,
    state_dim: int | None = None,
    action_dim: int | None = None,
    state_encoding: str | None = None,
) -> DiT4DiTConfig:
    """Translate the official (merged) config.yaml into a `DiT4DiTConfig` that reproduces the model."""
    fw = official["framework"]
    cosmos = fw["cosmos25"]
    am = fw["action_model"]
    dit_cfg = am.get("diffusion_model_cfg", {})
    trainer = official.get("trainer", {})
    data = official.get("datasets", {}).get("vla_data", {})
    recipe = _recipe(str(data.get("data_mix", "")))

    table = dict(DIT_TYPES)
    table.update({k: tuple(v[f] for f in ("input_embedding_dim", "attention_head_dim", "num_attention_heads"))
                  for k, v in official.get("fixture", {}).get("dit_type_table", {}).items()})  # fmt: skip
    if am["action_model_type"] not in table:
        raise ValueError(f"Unknown action_model_type {am['action_model_type']!r}; known: {sorted(table)}.")
    width, head_dim, heads = table[am["action_model_type"]]
    for key, expected in (("interleave_self_attention", True), ("norm_type", "ada_norm"),
                          ("positional_embeddings", None)):  # fmt: skip
        if dit_cfg.get(key, expected) != expected:
            raise ValueError(f"action_model.diffusion_model_cfg.{key}={dit_cfg[key]!r} is not supported (expected {expected!r}).")

    if base_model is None:
        base_model = cosmos["base_model"]
        if not Path(base_model).is_absolute() and (config_dir / base_model).exists():
            base_model = str((config_dir / base_model).resolve())
    flow = cosmos.get("flow_matching", {}) or {}
    dtype = cosmos.get("torch_dtype", OFFICIAL_DEFAULTS["torch_dtype"])
    delta = data.get("video_delta_indices", list(range(9)))
    ratio = int(data.get("action_video_freq_ratio", 1))
    num_frames = len(range(0, len(delta), ratio))
    resolution = data.get("default_image_resolution") or [3, 224, 224]
    cameras = cameras or RECIPE_CAMERAS.get(recipe) or ["observation.images.image"]
    state_encoding = state_encoding or RECIPE_STATE_ENCODING.get(recipe, "none")
    max_state_dim = int(am.get("state_dim", 16))
    max_action_dim = int(am.get("action_dim", 8))
    state_dim = state_dim or (max_state_dim // 2 if state_encoding != "none" else max_state_dim)
    action_dim = action_dim or max_action_dim
    lr = trainer.get("learning_rate", {})
    opt = trainer.get("optimizer", {})
    h, w = int(resolution[-2]), int(resolution[-1])

    return DiT4DiTConfig(
        base_model=base_model,
        base_model_revision=base_model_revision,
        dtype=dtype,
        cast_feature_sigma_to_model_dtype=dtype != "float32",  # the official code casts σ_f in bf16
        camera_order=cameras,
        image_resolution=(h, w),
        num_video_frames=num_frames,
        video_frame_stride=ratio,
        state_encoding=state_encoding,
        extract_layer=int(cosmos.get("extract_layer", OFFICIAL_DEFAULTS["extract_layer"])),
        conditional_frame_timestep=float(
            cosmos.get("conditional_frame_timestep", OFFICIAL_DEFAULTS["conditional_frame_timestep"])
        ),
        feature_sigma=None,
        feature_noise_seed=0,
        detach_video_features=True,
        video_time_distribution={"uniform": "uniform"}.get(flow.get("time_distribution"), "logit_normal"),
        video_high_sigma_ratio=float(flow.get("high_sigma_ratio") or 0.0),
        video_high_sigma_min=float(flow.get("high_sigma_min") or 0.98),
        chunk_size=int(am.get("action_horizon", int(am.get("future_action_window_size", 7)) + 1)),
        n_action_steps=int(am.get("action_horizon", int(am.get("future_action_window_size", 7)) + 1)),
        max_state_dim=max_state_dim,
        max_action_dim=max_action_dim,
        action_num_layers=int(dit_cfg.get("num_layers", 16)),
        action_num_heads=heads,
        action_head_dim=head_dim,
        action_hidden_size=int(am.get("hidden_size", 2560)),
        action_dit_output_dim=int(dit_cfg.get("output_dim", am.get("hidden_size", 2560))),
        action_dropout=float(dit_cfg.get("dropout", 0.2)),
        action_max_seq_len=int(am.get("max_seq_len", 1024)),
        action_beta_alpha=float(am.get("noise_beta_alpha", 1.5)),
        action_beta_beta=float(am.get("noise_beta_beta", 1.0)),
        action_noise_s=float(am.get("noise_s", 0.999)),
        num_timestep_buckets=int(am.get("num_timestep_buckets", 1000)),
        num_action_noise_draws=int(trainer.get("repeated_diffusion_steps", OFFICIAL_DEFAULTS["repeated_diffusion_steps"])),
        num_inference_steps=int(am.get("num_inference_timesteps", 4)),
        training_mode={"joint": "joint", "video": "video", "action": "action"}.get(cosmos.get("training", "joint"), "joint"),
        optimizer_lr_video=float(lr.get("backbone_interface", 1e-5)),
        optimizer_lr_action=float(lr.get("action_model", 1e-4)),
        optimizer_betas=tuple(opt.get("betas", (0.9, 0.95))),
        optimizer_weight_decay=float(opt.get("weight_decay", 1e-8)),
        optimizer_grad_clip_norm=float(trainer.get("max_grad_norm", 1.0)),
        scheduler_warmup_steps=int(trainer.get("num_warmup_steps", 5000)),
        scheduler_decay_steps=int(trainer.get("max_train_steps", 80000)),
        scheduler_decay_lr=float(trainer.get("scheduler_specific_kwargs", {}).get("min_lr", 5e-7)),
        normalization_mapping={
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.IDENTITY,  # the official recipes feed sin/cos of the raw state
            "ACTION": NormalizationMode.MIN_MAX,
        },
        input_features={
            **{cam: PolicyFeature(FeatureType.VISUAL, (3, h, w)) for cam in cameras},
            "observation.state": PolicyFeature(FeatureType.STATE, (state_dim,)),
        },
        output_features={"action": PolicyFeature(FeatureType.ACTION, (action_dim,))},
        device="cpu",
        push_to_hub=False,
    )


def stats_from_official(statistics: dict, action_dim: int) -> dict[str, dict[str, torch.Tensor]]:
    """LeRobot stats reproducing the official action normalisation from `dataset_statistics.json`.

    Official: 2 (a - min) / (max - min) - 1 on dims whose `mask` is True; masked-out dims (grippers) pass
    through raw. MIN_MAX with min = -1, max = 1 on those dims is the identity, so one MIN_MAX step reproduces it.
    """
    if len(statistics) != 1:
        raise ValueError(f"dataset_statistics.json has embodiments {sorted(statistics)}; pass the one to use.")
    stats = next(iter(statistics.values()))
    action = stats["action"]
    lo, hi = torch.tensor(action["min"], dtype=torch.float32), torch.tensor(action["max"], dtype=torch.float32)
    if lo.numel() != action_dim:
        raise ValueError(f"dataset_statistics.json has {lo.numel()} action dims, the config {action_dim}.")
    mask = torch.tensor(action.get("mask", [True] * action_dim), dtype=torch.bool)
    return {"action": {"min": torch.where(mask, lo, -torch.ones_like(lo)), "max": torch.where(mask, hi, torch.ones_like(hi))}}


def convert_official(
    checkpoint: str,
    config: str | Path,
    output: str | Path,
    *,
    base_model: str | None = None,
    base_model_revision: str | None = None,
    cameras: list[str] | None = None,
    state_dim: int | None = None,
    action_dim: int | None = None,
    state_encoding: str | None = None,
    dataset_statistics: str | Path | None = None,
    gripper_dim: int | str | None = "auto",
    verify_frozen: bool = True,
) -> Path:
    """Convert and write the checkpoint directory; returns its path. See the module docstring."""
    from .modeling_dit4dit import DiT4DiTPolicy, load_trained_state_dict
    from .processor_dit4dit import (
        ActionClipProcessorStep,
        GripperBinarizeProcessorStep,
        make_dit4dit_pre_post_processors,
    )

    start = time.perf_counter()
    config_path = Path(config)
    official = yaml.safe_load(config_path.read_text())
    cfg = config_from_official(
        official, config_path.parent, base_model=base_model, base_model_revision=base_model_revision,
        cameras=cameras, state_dim=state_dim, action_dim=action_dim, state_encoding=state_encoding,
    )  # fmt: skip
    source = load_official_state_dict(checkpoint)

    trained, frozen, unknown = {}, {}, []
    for key, tensor in source.items():
        prefix = next((p for p in PREFIX_MAP if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
        elif PREFIX_MAP[prefix] is None:
            frozen[key] = tensor
        else:
            trained[PREFIX_MAP[prefix] + key[len(prefix):]] = tensor.float()
    if unknown:
        raise ValueError(f"Official checkpoint keys with no place in dit4dit: {unknown[:10]}{' ...' if len(unknown) > 10 else ''}")

    DiT4DiTPolicy._init_from_checkpoint = True  # the base transformer weights are overwritten below
    try:
        policy = DiT4DiTPolicy(cfg)
    finally:
        DiT4DiTPolicy._init_from_checkpoint = False
    load_trained_state_dict(policy, trained, source=str(checkpoint))

    checked = 0
    if verify_frozen and frozen:
        references = {"backbone_interface.extractor.vae.": policy.video.vae.state_dict()}
        if any(k.startswith("backbone_interface.extractor.text_encoder.") for k in frozen):
            references["backbone_interface.extractor.text_encoder."] = policy.video._get_text_encoder().state_dict()
        for key, tensor in frozen.items():
            prefix = next(p for p in references if key.startswith(p))
            ref = references[prefix].get(key[len(prefix):])
            if ref is None or ref.shape != tensor.shape:
                raise ValueError(f"Frozen official key {key} has no counterpart of shape {tuple(tensor.shape)} in {cfg.base_model}.")
            if not torch.equal(ref.to(tensor.dtype), tensor):
                raise ValueError(
                    f"Frozen official weight {key} differs from {cfg.base_model}: dit4dit re-loads frozen parts from "
                    "the base model, so pass the base model this checkpoint was trained from (--base-model)."
                )
            checked += 1
        policy.video.release_text_encoder()

    output = Path(output)
    policy.save_pretrained(output)
    stats_path = Path(dataset_statistics) if dataset_statistics else config_path.parent / "dataset_statistics.json"
    stats = stats_from_official(json.loads(stats_path.read_text()), cfg.action_dim) if stats_path.exists() else None
    pre, post = make_dit4dit_pre_post_processors(cfg, dataset_stats=stats)
    # The official clients clip the normalised chunk to [-1, 1] before un-normalising it...
    post.steps.insert(0, ActionClipProcessorStep(-1.0, 1.0))
    # ...and LIBERO's thresholds the gripper (model: 1 = open) into the simulator's -1 open / +1 close.
    if gripper_dim == "auto":
        gripper_dim = 6 if _recipe(str(official.get("datasets", {}).get("vla_data", {}).get("data_mix", ""))) == "libero" else None
    if gripper_dim is not None:
        post.steps.insert(-1, GripperBinarizeProcessorStep(dim=int(gripper_dim), threshold=0.5, value_at_or_above=-1.0,
                                                           value_below=1.0))  # fmt: skip
    pre.save_pretrained(output)
    post.save_pretrained(output)
    summary = {
        "source_checkpoint": str(checkpoint),
        "source_config": str(config_path),
        "converted_keys": len(trained),
        "frozen_keys_verified_against_base": checked,
        "frozen_keys_not_verified": 0 if verify_frozen else len(frozen),
        "dataset_statistics": str(stats_path) if stats is not None else None,
        "seconds": round(time.perf_counter() - start, 2),
    }
    (output / "conversion.json").write_text(json.dumps(summary, indent=2))
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="official .pt/.safetensors, local or <org>/<repo>/<file>")
    parser.add_argument("--config", required=True, help="the official config.yaml of that run")
    parser.add_argument("--output", required=True, help="directory to write the dit4dit checkpoint to")
    parser.add_argument("--base-model", default=None, help="Cosmos-Predict2.5 base (hub id or dir); default: the yaml's")
    parser.add_argument("--base-model-revision", default=None, help="e.g. diffusers/base/post-trained for the hub id")
    parser.add_argument("--cameras", default=None, help="comma-separated LeRobot camera keys in tiling order")
    parser.add_argument("--state-dim", type=int, default=None, help="raw state dim of the dataset/env")
    parser.add_argument("--action-dim", type=int, default=None, help="action dim of the dataset/env")
    parser.add_argument("--state-encoding", default=None, choices=["none", "sincos_interleaved", "sincos_blocked"])
    parser.add_argument("--dataset-statistics", default=None, help="official dataset_statistics.json")
    parser.add_argument("--gripper-dim", default="auto",
                        help="action dim the postprocessor binarises like the official LIBERO client: an index, "
                             "'none', or 'auto' (6 for LIBERO, none otherwise)")  # fmt: skip
    parser.add_argument("--no-verify-frozen", action="store_true",
                        help="do not compare the checkpoint's VAE/text encoder with the base model's")  # fmt: skip
    args = parser.parse_args()
    out = convert_official(
        args.checkpoint, args.config, args.output, base_model=args.base_model,
        base_model_revision=args.base_model_revision,
        cameras=args.cameras.split(",") if args.cameras else None, state_dim=args.state_dim,
        action_dim=args.action_dim, state_encoding=args.state_encoding,
        dataset_statistics=args.dataset_statistics, verify_frozen=not args.no_verify_frozen,
        gripper_dim={"auto": "auto", "none": None}.get(args.gripper_dim.lower()) if not args.gripper_dim.lstrip("-").isdigit()
        else int(args.gripper_dim),
    )  # fmt: skip
    print(json.dumps(json.loads((out / "conversion.json").read_text()), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
