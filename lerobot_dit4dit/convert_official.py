"""Convert an official DiT4DiT checkpoint (github Mondo-Robotics/DiT4DiT) into a dit4dit checkpoint directory.

    dit4dit-convert-official \
        --checkpoint <run>/checkpoints/steps_80000_pytorch_model.pt \
        --config <run>/config.yaml \
        --output outputs/dit4dit_libero_official

(--checkpoint also takes a .safetensors file, or <org>/<repo>/<file> on the Hub.)

The output holds config.json (settings that reproduce the official model), a slim model.safetensors (video DiT
+ action head) and the pre/post processors with the official normalisation (from `dataset_statistics.json`
next to the config, when present). It loads with `DiT4DiTPolicy.from_pretrained` and `lerobot-eval
--policy.path`.

Every key of the official state dict is accounted for: the video transformer and the action model are
converted, the frozen VAE and text encoder are checked against `--base-model` (they are re-loaded from there),
and anything else is an error naming the key.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import yaml
from lerobot.configs import FeatureType, NormalizationMode, PolicyFeature

from .configuration_dit4dit import DTYPES, DiT4DiTConfig
from .recipes import recipe_for_data_mix

# Official prefix -> our prefix (trained parts) or None (frozen parts, re-loaded from the base model).
PREFIX_MAP = {
    "backbone_interface.extractor.transformer.": "video.transformer.",
    "action_model.": "action_head.",
    "backbone_interface.extractor.vae.": None,
    "backbone_interface.extractor.text_encoder.": None,
}
# The official `action_model_type` table: (input_embedding_dim, attention_head_dim, num_attention_heads).
DIT_TYPES = {"DiT-B": (768, 64, 12), "DiT-L": (1536, 48, 32)}
# Defaults of the official code where they differ from `DiT4DiTConfig`'s, for keys its config.yaml may omit.
OFFICIAL_DEFAULTS = {
    "extract_layer": 19,
    "conditional_frame_timestep": 1e-3,
    "torch_dtype": "bfloat16",
    "repeated_diffusion_steps": 4,
    "time_distribution": "logit_normal",
    "video_delta_indices": list(range(9)),
}


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
    """Translate the official (merged) config.yaml into a `DiT4DiTConfig` that reproduces the model.

    Only what the yaml states is passed on; a key it omits takes the `DiT4DiTConfig` default (or, for the
    few keys whose official default differs from ours, `OFFICIAL_DEFAULTS`). Cameras and the state encoding
    come from the recipe its `data_mix` names (`recipes.RECIPES`) unless given.
    """
    fw = official["framework"]
    cosmos = fw["cosmos25"]
    am = fw["action_model"]
    dit_cfg = am.get("diffusion_model_cfg", {})
    trainer = official.get("trainer", {})
    data = official.get("datasets", {}).get("vla_data", {})
    recipe = recipe_for_data_mix(str(data.get("data_mix", "")))

    table = dict(DIT_TYPES)
    table.update(
        {
            k: tuple(v[f] for f in ("input_embedding_dim", "attention_head_dim", "num_attention_heads"))
            for k, v in official.get("fixture", {}).get("dit_type_table", {}).items()
        }
    )
    if am["action_model_type"] not in table:
        raise ValueError(f"Unknown action_model_type {am['action_model_type']!r}; known: {sorted(table)}.")
    _, head_dim, heads = table[am["action_model_type"]]
    for key, expected in (
        ("interleave_self_attention", True),
        ("norm_type", "ada_norm"),
        ("positional_embeddings", None),
    ):
        if dit_cfg.get(key, expected) != expected:
            raise ValueError(
                f"action_model.diffusion_model_cfg.{key}={dit_cfg[key]!r} is not supported "
                f"(expected {expected!r})."
            )

    kwargs: dict = {}

    def take(field: str, mapping: dict, key: str, convert=lambda v: v) -> None:
        if mapping.get(key) is not None:
            kwargs[field] = convert(mapping[key])

    if base_model is None:
        base_model = cosmos["base_model"]
        if not Path(base_model).is_absolute() and (config_dir / base_model).exists():
            base_model = str((config_dir / base_model).resolve())
    dtype = cosmos.get("torch_dtype", OFFICIAL_DEFAULTS["torch_dtype"])
    kwargs["extract_layer"] = int(cosmos.get("extract_layer", OFFICIAL_DEFAULTS["extract_layer"]))
    kwargs["conditional_frame_timestep"] = float(
        cosmos.get("conditional_frame_timestep", OFFICIAL_DEFAULTS["conditional_frame_timestep"])
    )
    kwargs["num_action_noise_draws"] = int(
        trainer.get("repeated_diffusion_steps", OFFICIAL_DEFAULTS["repeated_diffusion_steps"])
    )
    flow = cosmos.get("flow_matching") or {}
    time_distribution = flow.get("time_distribution") or OFFICIAL_DEFAULTS["time_distribution"]
    kwargs["video_time_distribution"] = "uniform" if time_distribution == "uniform" else "logit_normal"
    take("video_high_sigma_ratio", flow, "high_sigma_ratio", float)
    take("video_high_sigma_min", flow, "high_sigma_min", float)
    take("training_mode", cosmos, "training", str)

    delta = data.get("video_delta_indices", OFFICIAL_DEFAULTS["video_delta_indices"])
    ratio = int(data.get("action_video_freq_ratio", 1))
    kwargs["num_video_frames"] = len(range(0, len(delta), ratio))
    kwargs["video_frame_stride"] = ratio
    if data.get("default_image_resolution"):
        kwargs["image_resolution"] = tuple(int(x) for x in data["default_image_resolution"][-2:])
    horizon = am.get("action_horizon")
    if horizon is None and "future_action_window_size" in am:
        horizon = int(am["future_action_window_size"]) + 1
    if horizon is not None:  # the official clients execute the whole chunk
        kwargs["chunk_size"] = kwargs["n_action_steps"] = int(horizon)
    take("max_state_dim", am, "state_dim", int)
    take("max_action_dim", am, "action_dim", int)
    take("action_num_layers", dit_cfg, "num_layers", int)
    kwargs["action_num_heads"], kwargs["action_head_dim"] = heads, head_dim
    take("action_hidden_size", am, "hidden_size", int)
    take("action_dit_output_dim", dit_cfg, "output_dim", int)
    take("action_dropout", dit_cfg, "dropout", float)
    take("action_max_seq_len", am, "max_seq_len", int)
    take("action_beta_alpha", am, "noise_beta_alpha", float)
    take("action_beta_beta", am, "noise_beta_beta", float)
    take("action_noise_s", am, "noise_s", float)
    take("num_timestep_buckets", am, "num_timestep_buckets", int)
    take("num_inference_steps", am, "num_inference_timesteps", int)
    take("optimizer_lr_video", trainer.get("learning_rate", {}), "backbone_interface", float)
    take("optimizer_lr_action", trainer.get("learning_rate", {}), "action_model", float)
    take("optimizer_betas", trainer.get("optimizer", {}), "betas", tuple)
    take("optimizer_weight_decay", trainer.get("optimizer", {}), "weight_decay", float)
    take("optimizer_grad_clip_norm", trainer, "max_grad_norm", float)
    take("scheduler_warmup_steps", trainer, "num_warmup_steps", int)
    take("scheduler_decay_steps", trainer, "max_train_steps", int)
    take("scheduler_decay_lr", trainer.get("scheduler_specific_kwargs", {}), "min_lr", float)

    defaults = DiT4DiTConfig.__dataclass_fields__
    cameras = cameras or (list(recipe.cameras) if recipe else ["observation.images.image"])
    state_encoding = state_encoding or (recipe.state_encoding if recipe else "none")
    max_state_dim = kwargs.get("max_state_dim", defaults["max_state_dim"].default)
    state_dim = state_dim or (max_state_dim // 2 if state_encoding != "none" else max_state_dim)
    action_dim = action_dim or kwargs.get("max_action_dim", defaults["max_action_dim"].default)
    h, w = kwargs.get("image_resolution", defaults["image_resolution"].default)

    return DiT4DiTConfig(
        **kwargs,
        base_model=base_model,
        base_model_revision=base_model_revision,
        dtype=dtype,
        cast_feature_sigma_to_model_dtype=dtype != "float32",  # the official code casts σ_f in bf16
        camera_order=cameras,
        state_encoding=state_encoding,
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
    through raw. MIN_MAX with min = -1, max = 1 on those dims is the identity, so one MIN_MAX step reproduces
    it.
    """
    if len(statistics) != 1:
        raise ValueError(
            f"dataset_statistics.json has embodiments {sorted(statistics)}; pass the one to use."
        )
    stats = next(iter(statistics.values()))
    action = stats["action"]
    lo, hi = (
        torch.tensor(action["min"], dtype=torch.float32),
        torch.tensor(action["max"], dtype=torch.float32),
    )
    if lo.numel() != action_dim:
        raise ValueError(f"dataset_statistics.json has {lo.numel()} action dims, the config {action_dim}.")
    mask = torch.tensor(action.get("mask", [True] * action_dim), dtype=torch.bool)
    return {
        "action": {
            "min": torch.where(mask, lo, -torch.ones_like(lo)),
            "max": torch.where(mask, hi, torch.ones_like(hi)),
        }
    }


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
    checkpoint_dtype: str = "float32",
) -> Path:
    """Convert and write the checkpoint directory; returns its path. See the module docstring."""
    from .checkpointing import load_trained_state_dict
    from .modeling_dit4dit import DiT4DiTPolicy
    from .processor_dit4dit import (
        ActionClipProcessorStep,
        GripperBinarizeProcessorStep,
        make_dit4dit_pre_post_processors,
    )

    if checkpoint_dtype not in DTYPES:  # before the minutes of reading the checkpoint
        raise ValueError(f"checkpoint_dtype={checkpoint_dtype!r}; expected one of {tuple(DTYPES)}.")
    start = time.perf_counter()
    config_path = Path(config)
    official = yaml.safe_load(config_path.read_text())
    cfg = config_from_official(
        official,
        config_path.parent,
        base_model=base_model,
        base_model_revision=base_model_revision,
        cameras=cameras,
        state_dim=state_dim,
        action_dim=action_dim,
        state_encoding=state_encoding,
    )
    cfg.checkpoint_dtype = checkpoint_dtype  # model.safetensors is written in it (`save_pretrained`)
    source = load_official_state_dict(checkpoint)

    trained, frozen, unknown = {}, {}, []
    for key, tensor in source.items():
        prefix = next((p for p in PREFIX_MAP if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
        elif PREFIX_MAP[prefix] is None:
            frozen[key] = tensor
        else:
            trained[PREFIX_MAP[prefix] + key[len(prefix) :]] = tensor.float()
    if unknown:
        raise ValueError(
            "Official checkpoint keys with no place in dit4dit: "
            f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}"
        )

    policy = DiT4DiTPolicy(cfg, load_base_transformer_weights=False)  # every trained weight is set below
    load_trained_state_dict(policy, trained, source=str(checkpoint))

    checked = 0
    if verify_frozen and frozen:
        policy.video.load_vae_decoder()  # the official checkpoint holds the whole VAE
        references = {"backbone_interface.extractor.vae.": policy.video.vae.state_dict()}
        if any(k.startswith("backbone_interface.extractor.text_encoder.") for k in frozen):
            references["backbone_interface.extractor.text_encoder."] = (
                policy.video.load_text_encoder().state_dict()
            )
        for key, tensor in frozen.items():
            prefix = next(p for p in references if key.startswith(p))
            ref = references[prefix].get(key[len(prefix) :])
            if ref is None or ref.shape != tensor.shape:
                raise ValueError(
                    f"Frozen official key {key} has no counterpart of shape {tuple(tensor.shape)} "
                    f"in {cfg.base_model}."
                )
            if not torch.equal(ref.to(tensor.dtype), tensor):
                raise ValueError(
                    f"Frozen official weight {key} differs from {cfg.base_model}: "
                    "dit4dit re-loads frozen parts from the base model, "
                    "so pass the base model this checkpoint was trained from (--base-model)."
                )
            checked += 1
        policy.video.release_text_encoder()

    output = Path(output)
    policy.save_pretrained(output)
    stats_path = (
        Path(dataset_statistics) if dataset_statistics else config_path.parent / "dataset_statistics.json"
    )
    stats = (
        stats_from_official(json.loads(stats_path.read_text()), cfg.action_dim)
        if stats_path.exists()
        else None
    )
    pre, post = make_dit4dit_pre_post_processors(cfg, dataset_stats=stats)
    # The official clients clip the normalised chunk to [-1, 1] before un-normalising it...
    post.steps.insert(0, ActionClipProcessorStep(-1.0, 1.0))
    # ...and LIBERO's thresholds the gripper (model: 1 = open) into the simulator's -1 open / +1 close.
    if gripper_dim == "auto":
        recipe = recipe_for_data_mix(
            str(official.get("datasets", {}).get("vla_data", {}).get("data_mix", ""))
        )
        gripper_dim = recipe.binarize_gripper_dim if recipe else None
    if gripper_dim is not None:
        post.steps.insert(
            -1,
            GripperBinarizeProcessorStep(
                dim=int(gripper_dim), threshold=0.5, value_at_or_above=-1.0, value_below=1.0
            ),
        )
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
