"""Build a tiny, randomly initialised Cosmos-Predict2.5 base pipeline, offline.

It uses the SAME classes as `nvidia/Cosmos-Predict2.5-2B` (CosmosTransformer3DModel, AutoencoderKLWan,
Qwen2_5_VLForConditionalGeneration, a Qwen2 byte-level tokenizer with the Qwen chat template and special
tokens, UniPCMultistepScheduler with Cosmos' flow sigmas) and is written with `save_pretrained`, so the
policy loads it through exactly the code path of the real model; only the path differs.

    dit4dit-tiny-base --output outputs/tiny_cosmos_base
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, CosmosTransformer3DModel, UniPCMultistepScheduler

# Wan 2.1 latent statistics (the values of the real VAE config).
WAN21_LATENTS_MEAN = [
    -0.7571,
    -0.7089,
    -0.9113,
    0.1075,
    -0.1745,
    0.9653,
    -0.1517,
    1.5508,
    0.4134,
    -0.0715,
    0.5517,
    -0.3632,
    -0.1922,
    -0.9497,
    0.2503,
    -0.2921,
]
WAN21_LATENTS_STD = [
    2.8184,
    1.4541,
    2.3275,
    2.6558,
    1.2196,
    1.7708,
    2.6052,
    2.0743,
    3.2687,
    2.1526,
    2.8652,
    1.5579,
    1.6382,
    1.1253,
    2.8251,
    1.916,
]
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def build_byte_level_qwen_tokenizer():
    """A Qwen2 tokenizer with one token per byte (ids 0..255) and Qwen's special tokens (256..269)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import Qwen2TokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(QWEN_SPECIAL_TOKENS)  # ids 256.. in Qwen's order
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=tok,
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        bos_token=None,
        additional_special_tokens=QWEN_SPECIAL_TOKENS[1:],
    )
    tokenizer.chat_template = (Path(__file__).parent / "qwen2_vl_chat_template.jinja").read_text()
    return tokenizer


@torch.no_grad()
def _latent_statistics(vae: AutoencoderKLWan, seed: int, n: int = 16, size: int = 64) -> tuple[list, list]:
    """Per-channel mean and std of the VAE's posterior mode over random smooth RGB images in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")[:, :, None]
    z = vae.encode(images).latent_dist.mode()
    dims = (0, 2, 3, 4)
    return z.mean(dims).tolist(), z.std(dims).clamp_min(1e-6).tolist()


@dataclass(frozen=True)
class TinyBaseSizes:
    """Sizes of the tiny base; `TINY_BASE` is the one set the tests, presets and examples use."""

    num_layers: int = 4  # video DiT blocks
    num_attention_heads: int = 2
    attention_head_dim: int = 32  # video DiT width = heads * head_dim = 64
    text_hidden_size: int = 32
    text_num_layers: int = 2  # prompt embedding width = text_num_layers * text_hidden_size
    vae_base_dim: int = 8
    vae_dim_mult: tuple[int, ...] = (1, 1, 1, 1)
    vae_num_res_blocks: int = 1
    adaln_lora_dim: int = 16
    # Width of the projected text context (`crossattn_proj`'s output, the blocks' text K/V input); None: the
    # DiT width. Cosmos-Predict2.5-2B projects to 1,024 under a 2,048-wide DiT.
    text_embed_dim: int | None = None


TINY_BASE = TinyBaseSizes()
# Wider bases with random weights, for benchmarks: the "medium" DiT (8 x 1024) and the real
# Cosmos-Predict2.5-2B DiT (28 x 2048) with the real Wan 2.1 VAE; the text encoder stays tiny in both.
# The real Wan 2.1 VAE's sizes, in `TinyBaseSizes` fields.
WAN21_VAE_SIZES = {"vae_base_dim": 96, "vae_dim_mult": (1, 2, 4, 4), "vae_num_res_blocks": 2}
MEDIUM_BASE = TinyBaseSizes(num_layers=8, num_attention_heads=8, attention_head_dim=128, adaln_lora_dim=256)
REAL_WIDTH_BASE = TinyBaseSizes(
    num_layers=28,
    num_attention_heads=16,
    attention_head_dim=128,
    adaln_lora_dim=256,
    text_embed_dim=1024,
    **WAN21_VAE_SIZES,
)
# The medium DiT with the real Wan 2.1 VAE: the VAE's share of a training step (what the latent cache saves).
MEDIUM_WAN_BASE = replace(MEDIUM_BASE, **WAN21_VAE_SIZES)
# The random bases of the benchmarks (`benchmarks.speed`, `benchmarks.official_side_by_side`) by `--width`.
BENCH_BASES = {
    "tiny": TINY_BASE,
    "medium": MEDIUM_BASE,
    "medium-wan": MEDIUM_WAN_BASE,
    "real": REAL_WIDTH_BASE,
}
BENCH_WIDTH_HELP = (
    "base built with random weights: tiny (4 x 64 DiT), medium (8 x 1024 DiT), medium-wan (the medium DiT "
    "with the real Wan VAE) or real (28 x 2048 DiT + real Wan VAE); the text encoder stays tiny"
)

# Policy settings matching `TINY_BASE` with a small action DiT. The tests and the benchmark use them; the
# real-size defaults live in `DiT4DiTConfig`.
TINY_POLICY_OVERRIDES = {
    "extract_layer": TINY_BASE.num_layers // 2,
    "max_prompt_tokens": 192,  # the chat template alone is 91 byte-level tokens
    "chunk_size": 8,
    "n_action_steps": 4,
    "max_state_dim": 8,
    "max_action_dim": 8,
    "action_num_layers": 2,
    "action_num_heads": 2,
    "action_head_dim": 16,
    "action_hidden_size": 64,
}


def transformer_config(sizes: TinyBaseSizes = TINY_BASE) -> dict:
    """`CosmosTransformer3DModel` arguments of the base at `sizes`: Cosmos-Predict2.5-2B's layout (patching,
    RoPE scale, adaLN-LoRA, text projection) at the given depth and widths. The text projection reads the
    tiny text encoder's prompt embedding (text_num_layers * text_hidden_size wide)."""
    hidden = sizes.num_attention_heads * sizes.attention_head_dim
    text_width = sizes.text_embed_dim or hidden
    return {
        "in_channels": 16 + 1,  # latents + condition mask channel
        "out_channels": 16,
        "num_attention_heads": sizes.num_attention_heads,
        "attention_head_dim": sizes.attention_head_dim,
        "num_layers": sizes.num_layers,
        "mlp_ratio": 4.0,
        "text_embed_dim": text_width,
        "adaln_lora_dim": sizes.adaln_lora_dim,
        "max_size": (128, 240, 240),
        "patch_size": (1, 2, 2),
        "rope_scale": (1.0, 3.0, 3.0),
        "concat_padding_mask": True,
        "extra_pos_embed_type": None,
        "use_crossattn_projection": True,
        "crossattn_proj_in_channels": sizes.text_num_layers * sizes.text_hidden_size,
        "encoder_hidden_states_channels": text_width,
    }


def build_tiny_cosmos_base(
    output_dir: str | Path,
    sizes: TinyBaseSizes = TINY_BASE,
    *,
    calibrate_latents: bool = True,
    seed: int = 0,
) -> Path:
    """Write a tiny `Cosmos2_5_PredictBasePipeline` directory and return its path.

    The text encoder's prompt embedding width is text_num_layers * text_hidden_size (every decoder layer is
    concatenated, as Cosmos-Predict2.5 does); the video DiT projects it to its cross-attention width.

    With `calibrate_latents`, the VAE's `latents_mean` / `latents_std` are measured on random smooth images
    instead of copying Wan 2.1's: an untrained VAE's latents are ~50x smaller than the trained one's, and with
    the Wan statistics the normalised latents of different images differ by < 1%, which hides the scene from
    both DiTs. (The real VAE ships its own statistics; this only concerns the random tiny one.)
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    output_dir = Path(output_dir)
    torch.manual_seed(seed)
    text_hidden_size, text_num_layers = sizes.text_hidden_size, sizes.text_num_layers

    tokenizer = build_byte_level_qwen_tokenizer()
    special = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    text_config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": text_hidden_size,
            "intermediate_size": 2 * text_hidden_size,
            "num_hidden_layers": text_num_layers,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "vocab_size": 512,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
            "pad_token_id": special["<|endoftext|>"],
            "bos_token_id": special["<|endoftext|>"],
            "eos_token_id": special["<|im_end|>"],
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": text_hidden_size,
            "fullatt_block_indexes": [0],
        },
        image_token_id=special["<|image_pad|>"],
        video_token_id=special["<|video_pad|>"],
        vision_start_token_id=special["<|vision_start|>"],
        vision_end_token_id=special["<|vision_end|>"],
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(text_config).eval()

    transformer = CosmosTransformer3DModel(**transformer_config(sizes))
    vae = AutoencoderKLWan(
        base_dim=sizes.vae_base_dim,
        z_dim=16,
        dim_mult=list(sizes.vae_dim_mult),
        num_res_blocks=sizes.vae_num_res_blocks,
        attn_scales=[],
        temperal_downsample=[False, True, True],
        latents_mean=WAN21_LATENTS_MEAN,
        latents_std=WAN21_LATENTS_STD,
    )
    if calibrate_latents:
        mean, std = _latent_statistics(vae, seed)
        vae.register_to_config(latents_mean=mean, latents_std=std)
    scheduler = UniPCMultistepScheduler(
        use_karras_sigmas=True,
        use_flow_sigmas=True,
        prediction_type="flow_prediction",
        sigma_max=200.0,
        sigma_min=0.01,
    )

    from diffusers import Cosmos2_5_PredictBasePipeline

    from ..base_model import NoSafetyChecker

    pipe = Cosmos2_5_PredictBasePipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=scheduler,
        safety_checker=NoSafetyChecker(),
    )
    pipe.safety_checker = None  # not saved: loaders pass their own no-op checker
    pipe.save_pretrained(output_dir)
    return output_dir
