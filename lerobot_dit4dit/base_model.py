"""Loading the Cosmos-Predict2.5 base: the parts of a diffusers `Cosmos2_5_PredictBasePipeline` (hub id or
local directory) that the policy uses, fetched part by part, with the Wan VAE decoder left unread until frames
are decoded. The text encoder is loaded lazily by `text_conditioning`."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, Cosmos2_5_PredictBasePipeline, CosmosTransformer3DModel


class NoSafetyChecker:
    """Stand-in for Cosmos' guardrail, which the pipeline would otherwise instantiate (and download).

    Only `Cosmos2_5_PredictBasePipeline.__call__` consults it; the policy never calls the pipeline.
    """

    def to(self, *args, **kwargs):
        return self


# The parts of a Cosmos-Predict2.5 pipeline directory the policy loads (the text encoder is loaded lazily).
REQUIRED_BASE_PARTS = ("model_index.json", "transformer", "vae", "scheduler", "tokenizer")


def check_base_model(base_model: str) -> None:
    """For a local `base_model`, raise naming a directory that is gone or the parts it lacks.

    Hub ids are left to huggingface_hub (its errors name the repo).
    """
    path = Path(base_model).expanduser()
    if not path.exists():
        if looks_local(base_model):
            raise FileNotFoundError(
                f"DiT4DiT: base_model directory {base_model} does not exist. A checkpoint records the base "
                "it was trained on; if that base moved, point to it with --policy.base_model=<dir or hub id> "
                "(Python: load the config, set config.base_model, pass config= to from_pretrained)."
            )
        return
    missing = [part for part in REQUIRED_BASE_PARTS if not (path / part).exists()]
    if missing:
        raise FileNotFoundError(
            f"DiT4DiT: base_model {base_model} lacks {missing}; it must be a diffusers "
            "Cosmos2_5_PredictBasePipeline directory (save_pretrained output)."
        )


def looks_local(path: str) -> bool:
    """True when `path` can only be a local path (a hub id is exactly `<owner>/<name>`)."""
    return (
        Path(path).expanduser().exists()
        or Path(path).is_absolute()
        or path.startswith((".", "~"))
        or (path.count("/") != 1)
    )


def resolve_base_model(
    base_model: str, revision: str | None, *, transformer_weights: bool, text_encoder: bool = False
) -> str:
    """A local directory holding the parts of `base_model` the policy uses; hub ids are fetched part by part.

    Only model_index.json, the scheduler, the tokenizer, the VAE and the transformer config are fetched (the
    transformer weights only when `transformer_weights`, the text encoder only when `text_encoder`), so that
    a robot that loaded a checkpoint online can reload it with HF_HUB_OFFLINE=1 from the same cache: diffusers
    asks for the whole snapshot offline, which an incomplete cache cannot give.
    """
    if looks_local(base_model):
        return base_model
    from huggingface_hub import snapshot_download

    patterns = ["model_index.json", "scheduler/*", "tokenizer/*", "vae/*", "transformer/config.json"]
    if transformer_weights:
        patterns.append("transformer/*")
    if text_encoder:
        patterns.append("text_encoder/*")
    return snapshot_download(base_model, revision=revision, allow_patterns=patterns)


# State-dict prefixes of the Wan VAE that only decoding runs (imagined frames); the action path never does.
VAE_DECODER_PREFIXES = ("decoder.", "post_quant_conv.")

VAE_WEIGHTS = "diffusion_pytorch_model.safetensors"


def load_vae_without_decoder(local: str) -> AutoencoderKLWan | None:
    """The base's Wan VAE with only the encoder read: built on the meta device (no random initialisation), the
    encoder and `quant_conv` tensors assigned from the file, `decoder` and `post_quant_conv` left as None.

    diffusers' `AutoencoderKLWan` accepts a None decoder (its conv counts are cached at construction, and
    only `decode` touches the decoder). Returns None when the VAE is not stored as one safetensors file (a
    sharded or .bin VAE), so the caller loads it whole.
    """
    from safetensors import safe_open

    file = Path(local) / "vae" / VAE_WEIGHTS
    if not file.is_file():
        return None
    with torch.device("meta"):
        vae = AutoencoderKLWan.from_config(AutoencoderKLWan.load_config(local, subfolder="vae"))
    vae.decoder = None
    vae.post_quant_conv = None
    with safe_open(str(file), framework="pt") as f:
        names = [k for k in f.keys() if not k.startswith(VAE_DECODER_PREFIXES)]  # noqa: SIM118 (not a dict)
        # fp32 like the pipeline's torch_dtype; frozen_dtype is applied afterwards
        state = {k: f.get_tensor(k).float() for k in names}
    missing, unexpected = vae.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(
            f"DiT4DiT: the VAE in {file} does not match its config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return vae.eval()


def load_pipeline(
    base_model: str,
    revision: str | None,
    transformer: CosmosTransformer3DModel | None,
    vae: AutoencoderKLWan | None = None,
):
    kwargs = {"text_encoder": None, "safety_checker": NoSafetyChecker(), "torch_dtype": torch.float32}
    if transformer is not None:
        kwargs["transformer"] = transformer
    if vae is not None:
        kwargs["vae"] = vae
    pipeline_logger = logging.getLogger("diffusers.pipelines.pipeline_utils")
    level = pipeline_logger.level
    pipeline_logger.setLevel(logging.ERROR)  # silences the expected "Expected types for safety_checker"
    try:
        return Cosmos2_5_PredictBasePipeline.from_pretrained(base_model, revision=revision, **kwargs)
    finally:
        pipeline_logger.setLevel(level)
