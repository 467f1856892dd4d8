"""The model card of a dit4dit checkpoint (`hub_cards/dit4dit_model_card.md`), rendered offline.

`lerobot-train --policy.push_to_hub=true` writes it through `DiT4DiTPolicy.generate_model_card`. To publish
measured results with a model, render it again with lerobot-eval's `eval_info.json` and upload the README:

    dit4dit-model-card --checkpoint outputs/.../pretrained_model \
        --eval-info outputs/eval/eval_info.json        # writes <checkpoint>/README.md
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from .configuration_dit4dit import DiT4DiTConfig

# Licences of known bases: weights fine-tuned from them fall under the base's licence.
NVIDIA_OPEN_MODEL_LICENSE = {
    "license": "other",
    "license_name": "nvidia-open-model-license",
    "license_link": "https://www.nvidia.com/en-us/agreements/enterprise-software/nvidia-open-model-license/",
}
BASE_LICENSES = {"nvidia/Cosmos-Predict2.5": NVIDIA_OPEN_MODEL_LICENSE}
# Weights in bf16 at real width (parameter counts: `python -m benchmarks.speed --param-counts`).
HARDWARE = (
    "At real width (Cosmos-Predict2.5-2B) in bf16, inference holds the video DiT (2.06 B parameters), "
    "the action head (0.16 B) and the Wan VAE (0.13 B): about 4.4 GiB of weights plus activations, so a "
    "12 GB GPU suffices for the shipped instructions. An instruction that is not shipped loads the "
    "Qwen2.5-VL-7B text encoder (8.3 B parameters with its vision tower, 15.4 GiB in bf16) once, which "
    "needs a 24 GB-class GPU (or "
    "add the instruction beforehand with `dit4dit-text-conditioning`)."
)


def base_license(base_model: str) -> dict[str, str] | None:
    """Card licence fields of a known hub base, or None (a local or unknown base)."""
    return next((lic for prefix, lic in BASE_LICENSES.items() if base_model.startswith(prefix)), None)


def _versions() -> dict[str, str]:
    out = {}
    for name, dist in (
        ("lerobot", "lerobot"),
        ("diffusers", "diffusers"),
        ("transformers", "transformers"),
        ("plugin", "lerobot_policy_dit4dit"),
    ):
        try:
            out[name] = version(dist)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def evaluation_rows(eval_info: dict) -> list[dict]:
    """Per-group and overall success rows of a lerobot-eval `eval_info.json`."""
    rows = [
        {"group": group, "episodes": g.get("n_episodes"), "success": f"{g['pc_success']:.1f}"}
        for group, g in sorted((eval_info.get("per_group") or {}).items())
    ]
    overall = eval_info.get("overall") or eval_info.get("aggregated")
    if overall:
        rows.append(
            {
                "group": "**overall**",
                "episodes": overall.get("n_episodes"),
                "success": f"**{overall['pc_success']:.1f}**",
            }
        )
    return rows


def build_model_card(
    config: DiT4DiTConfig,
    *,
    dataset_repo_id: str | None = None,
    license: str | None = None,
    tags: list[str] | None = None,
    train_cfg=None,
    dataset_meta=None,
    instructions: list[tuple[str, bool]] | None = None,
    eval_info: dict | None = None,
    eval_machine: str | None = None,
) -> ModelCard:
    """Render the card; `instructions` lists (instruction, conditioning shipped) pairs."""
    from lerobot.policies.pretrained import _build_card_context  # guarded in tests/test_upstream.py

    known = base_license(config.base_model)
    hub_base = known is not None or (
        not Path(config.base_model).exists() and config.base_model.count("/") == 1
    )
    if known is not None:
        licence, license_text = (
            dict(known),
            (
                f"weights fine-tuned from `{config.base_model}` fall under its licence, the "
                f"[NVIDIA Open Model License]({known['license_link']})."
            ),
        )
    elif license:
        licence, license_text = {"license": license}, f"`{license}`."
    else:
        licence = {"license": "other", "license_name": "base-model-license"}
        license_text = f"the licence of the base model `{config.base_model}` applies to these weights."
    card_data = ModelCardData(
        **licence,
        library_name="lerobot",
        pipeline_tag="robotics",
        tags=sorted(set(tags or []) | {"robotics", "lerobot", "dit4dit", "video-diffusion"}),
        model_name="dit4dit",
        datasets=dataset_repo_id,
        base_model=config.base_model if hub_base else None,
        base_model_relation="finetune" if hub_base else None,
    )
    context = _build_card_context(train_cfg, dataset_meta, config.input_features, config.output_features)
    features = [
        (key, {"type": f.type.value, "shape": list(f.shape)})
        for key, f in {**config.input_features, **config.output_features}.items()
    ]
    seen = [(t, False) for t in (context.get("dataset") or {}).get("tasks", [])]
    merged = dict(seen)
    merged.update(dict(instructions or []))
    evaluation = None
    if eval_info is not None:
        evaluation = {"rows": evaluation_rows(eval_info), "machine": eval_machine}
    template = (files("lerobot_dit4dit") / "hub_cards" / "dit4dit_model_card.md").read_text(encoding="utf-8")
    return ModelCard.from_template(
        card_data,
        template_str=template,
        **{
            **context,
            "policy_repo_id": config.repo_id,
            "repo": config.repo_id or "<this repo>",
            "base_model_id": config.base_model,
            "base_model_revision": config.base_model_revision,
            "base_model_relation": "fine-tuned" if hub_base else "local base",
            "license_text": license_text,
            "extract_layer": config.extract_layer,
            "cameras": config.cameras,
            "image_resolution": "x".join(map(str, config.image_resolution)),
            "num_video_frames": config.num_video_frames,
            "video_frame_stride": config.video_frame_stride,
            "chunk_size": config.chunk_size,
            "n_action_steps": config.n_action_steps,
            "training_mode": config.training_mode,
            "dtype": config.dtype,
            "features": features,
            "instructions": sorted(merged.items()),
            "optimizer": "AdamW",
            "lr_video": config.optimizer_lr_video,
            "lr_action": config.optimizer_lr_action,
            "warmup": config.scheduler_warmup_steps,
            "versions": _versions(),
            "hardware": HARDWARE,
            "evaluation": evaluation,
        },
    )
