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
