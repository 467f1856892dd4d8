"""Guards for the upstream private or semi-private APIs dit4dit relies on.

Each test fails with a message naming the upstream function when a diffusers or LeRobot upgrade moves or
changes it, instead of letting the policy fail later with an unrelated error.
"""

from __future__ import annotations

import inspect

import pytest


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_diffusers_cosmos_prompt_embeds():
    """`video_backbone.encode_prompts` calls the pipeline's private `_get_prompt_embeds` (the
    Cosmos-Predict2.5 text conditioning: every decoder layer, standardised per token), which has no public
    equivalent."""
    from diffusers import Cosmos2_5_PredictBasePipeline

    fn = getattr(Cosmos2_5_PredictBasePipeline, "_get_prompt_embeds", None)
    where = "diffusers.Cosmos2_5_PredictBasePipeline._get_prompt_embeds"
    if fn is None:
        pytest.fail(f"{where} is gone; update CosmosVideoBackbone.encode_prompts")
    for name in ("prompt", "max_sequence_length", "device", "dtype"):
        assert name in _params(fn), f"{where} lost its `{name}` argument: {_params(fn)}"


def test_diffusers_cosmos_condition_mask_and_latents():
    """`create_condition_mask` and `retrieve_latents` build the condition frame exactly as diffusers'
    pipeline."""
    from diffusers import Cosmos2_5_PredictBasePipeline
    from diffusers.pipelines.cosmos import pipeline_cosmos2_5_predict

    where = "diffusers.Cosmos2_5_PredictBasePipeline.create_condition_mask"
    fn = getattr(Cosmos2_5_PredictBasePipeline, "create_condition_mask", None)
    assert fn is not None, f"{where} is gone; update CosmosVideoBackbone._condition"
    assert len(_params(fn)) >= 5, f"{where} changed its signature: {_params(fn)}"
    assert hasattr(pipeline_cosmos2_5_predict, "retrieve_latents"), (
        "diffusers.pipelines.cosmos.pipeline_cosmos2_5_predict.retrieve_latents is gone; update encode_video"
    )


def test_lerobot_card_context():
    """`DiT4DiTPolicy.generate_model_card` fills LeRobot's card context with the private
    `_build_card_context`."""
    from lerobot.policies import pretrained

    where = "lerobot.policies.pretrained._build_card_context"
    fn = getattr(pretrained, "_build_card_context", None)
    if fn is None:
        pytest.fail(f"{where} is gone; update DiT4DiTPolicy.generate_model_card")
    assert _params(fn)[:4] == ["cfg", "dataset_meta", "input_features", "output_features"], (
        f"{where} changed its signature: {_params(fn)}"
    )


def test_diffusers_wan_causal_conv_padding():
    """`fast_paths.SingleFrameConv` reads the private `WanCausalConv3d._padding` (F.pad order: W, W, H, H, T
    front, T back) to find a causal conv and its spatial padding."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    conv = WanCausalConv3d(2, 2, kernel_size=3, padding=1)
    where = "diffusers WanCausalConv3d._padding"
    assert hasattr(conv, "_padding"), f"{where} is gone; update fast_paths.SingleFrameConv"
    assert tuple(conv._padding) == (1, 1, 1, 1, 2, 0), f"{where} changed its layout: {conv._padding}"
    assert _params(WanCausalConv3d.forward)[1:] == ["x", "cache_x"], _params(WanCausalConv3d.forward)


def test_diffusers_wan_rms_norm_attributes():
    """`fast_paths.FastRMSNorm` re-implements `WanRMS_norm.forward` from its `channel_first`, `scale`, `gamma`
    and `bias`."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

    norm = WanRMS_norm(4, images=False)
    for name in ("channel_first", "scale", "gamma", "bias"):
        assert hasattr(norm, name), f"diffusers WanRMS_norm.{name} is gone; update fast_paths.FastRMSNorm"


def test_diffusers_cosmos_adaln_and_text_attention():
    """`fast_paths.PerFrameAdaLN` re-implements `CosmosAdaLayerNormZero.forward` from its `norm`,
    `activation`, `linear_1` and `linear_2`; the text K/V caches and the row gather rely on the Cosmos
    attention processor reading the text context through `to_k` / `to_v` only; `SkipProjection` hooks
    `crossattn_proj`."""
    from diffusers.models.transformers import transformer_cosmos

    norm = transformer_cosmos.CosmosAdaLayerNormZero(8, hidden_features=4)
    for name in ("norm", "activation", "linear_1", "linear_2"):
        assert hasattr(norm, name), f"CosmosAdaLayerNormZero.{name} is gone; update fast_paths.PerFrameAdaLN"
    assert _params(type(norm).forward)[1:4] == ["hidden_states", "embedded_timestep", "temb"]
    source = inspect.getsource(transformer_cosmos.CosmosAttnProcessor2_0.__call__)
    uses = [line.strip() for line in source.splitlines() if "encoder_hidden_states" in line and "=" in line]
    assert (
        "key = attn.to_k(encoder_hidden_states)" in uses
        and "value = attn.to_v(encoder_hidden_states)" in uses
    )
    assert "crossattn_proj" in inspect.getsource(transformer_cosmos.CosmosTransformer3DModel.__init__)


def test_torch_tensor_version_counter():
    """`fast_paths.tensor_version` reads the private `Tensor._version` (the in-place modification counter) so
    that a keyed cache and the shipped text contexts notice an optimizer step; inference tensors have none."""
    import torch

    from lerobot_dit4dit.fast_paths import tensor_version

    t = torch.zeros(3)
    before = t._version
    t.add_(1)
    assert t._version == before + 1, "torch.Tensor._version no longer counts in-place updates"
    assert tensor_version(t) == t._version
    with torch.inference_mode():
        assert tensor_version(torch.zeros(1)) == -1
