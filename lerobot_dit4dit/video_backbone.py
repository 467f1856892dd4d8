"""The video DiT backbone: Cosmos-Predict2.5 (diffusers) as a feature extractor and a video flow-matching
model.

Components come from a diffusers `Cosmos2_5_PredictBasePipeline` (hub id or local directory):
`CosmosTransformer3DModel` (trained), `AutoencoderKLWan` and the Qwen2.5-VL text encoder (both frozen), the
Qwen tokenizer and the scheduler config. The text encoder is loaded lazily, only when an instruction is not
in the prompt-embedding cache.

Latent layout everywhere: (B, C=16, T_lat, h, w) with T_lat = 1 + (T - 1) // 4, h = H / 8, w = W / 8, and
latent frame 0 is the conditioning (current) frame.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLWan,
    Cosmos2_5_PredictBasePipeline,
    CosmosTransformer3DModel,
    UniPCMultistepScheduler,
)
from diffusers.pipelines.cosmos.pipeline_cosmos2_5_predict import retrieve_latents
from torch import Tensor, nn
from transformers import Qwen2_5_VLForConditionalGeneration

from .caching import expand_rows, project_distinct_rows, reusing_outputs, tensor_version
from .flow_matching import interpolate, masked_mse, sample_video_time, velocity_target

logger = logging.getLogger(__name__)
TEXT_ENCODER_BATCH = 8  # instructions per text-encoder call


class NoSafetyChecker:
    """Stand-in for Cosmos' guardrail, which the pipeline would otherwise instantiate (and download).

    Only `Cosmos2_5_PredictBasePipeline.__call__` consults it; the policy never calls the pipeline.
    """

    def to(self, *args, **kwargs):
        return self


class _StopForward(Exception):  # noqa: N818
    """Raised by the capture hook to end the transformer forward right after the extracted block."""

    def __init__(self, hidden_states: Tensor):
        super().__init__()
        self.hidden_states = hidden_states


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


def use_single_frame_convs(module: nn.Module) -> int:
    """Give every Wan causal 3D convolution under `module` a fast path for a single frame without cache.

    A causal conv pads its input with zero frames in front, so on one frame only the kernel's last temporal
    slice meets data: the 3D conv equals a 2D conv with that slice. diffusers computes the full 3D conv over
    the zero padding; the fast path skips that work (same values up to float rounding). Returns the number
    of convolutions given the fast path (set as an instance attribute: state_dict keys do not change).
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    count = 0
    for conv in module.modules():
        if not isinstance(conv, WanCausalConv3d) or getattr(conv, "_dit4dit_single_frame", False):
            continue
        full = conv.forward
        causal = conv._padding[4] == conv.kernel_size[0] - 1 and conv.stride[0] == 1 and conv.dilation[0] == 1

        def forward(x, cache_x=None, _conv=conv, _full=full, _causal=causal):
            if not _causal or cache_x is not None or x.shape[2] != 1:
                return _full(x, cache_x)
            frame = torch.nn.functional.pad(x[:, :, 0], list(_conv._padding[:4])).contiguous()
            out = torch.nn.functional.conv2d(
                frame,
                _conv.weight[:, :, -1],
                _conv.bias,
                _conv.stride[1:],
                0,
                _conv.dilation[1:],
                _conv.groups,
            )
            return out.unsqueeze(2)

        conv.forward = forward
        conv._dit4dit_single_frame = True
        count += 1
    return count


def use_fast_rms_norms(module: nn.Module, enable: bool = True) -> int:
    """Give every Wan RMS norm under `module` a normalisation by the summed squares over the channel dim
    (`enable=False` gives them diffusers' forward back, for before/after benchmarks).

    diffusers' `WanRMS_norm` calls `F.normalize` over the channels, and on CPU that reduction
    (`linalg_vector_norm` over a strided dim) is about 17x slower than `square().sum().sqrt()` (15.4 vs 0.9 ms
    on a (4, 8, 4, 64, 128) tensor, 1 thread): 46 ms of a 190 ms tiny training step. Same formula as
    `F.normalize` (x / max(||x||, 1e-12), fp32 for half-precision inputs), equal up to float rounding. Returns
    the number of norms changed (an instance attribute: state_dict keys do not change).
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

    count = 0
    for norm in module.modules():
        if not isinstance(norm, WanRMS_norm) or getattr(norm, "_dit4dit_fast", False) == enable:
            continue
        if not enable:
            del norm.forward  # the instance attribute: diffusers' class forward runs again
            norm._dit4dit_fast = False
            count += 1
            continue
        full = norm.forward

        def forward(x, _norm=norm, _full=full):
            if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
                return _full(x)
            dim = 1 if _norm.channel_first else -1
            xf = x.float()
            normalized = xf / xf.square().sum(dim, keepdim=True).sqrt().clamp_min(1e-12)
            del xf  # freed before the cast back, as in diffusers: one fp32 copy fewer at the peak
            return normalized.to(x.dtype) * _norm.scale * _norm.gamma + _norm.bias

        norm.forward = forward
        norm._dit4dit_fast = True
        count += 1
    return count


class LatentFrames:
    """Latent frame count of the video-DiT call in progress; None outside `CosmosVideoBackbone.forward`."""

    def __init__(self):
        self.frames: int | None = None

    @contextlib.contextmanager
    def set(self, frames: int):
        self.frames = frames
        try:
            yield
        finally:
            self.frames = None


def use_per_frame_adaln(transformer: CosmosTransformer3DModel, latent_frames: LatentFrames) -> int:
    """Compute the adaLN modulation of every Cosmos block once per latent frame instead of once per token.

    diffusers expands the per-frame timestep embedding to every token of its frame before the blocks
    ([B, T, C] -> [B, T*H*W, C]), so each `CosmosAdaLayerNormZero` runs its two linears on T*H*W equal rows
    per frame (392 per frame at 224 x 448). The fast path takes one row per frame, modulates with a broadcast,
    and returns the same (B, T*H*W, D) tensors as diffusers (equal up to float rounding). It is active only
    while `latent_frames` is set, i.e. inside this backbone's forward, which always passes diffusers a (B, 1,
    T, 1, 1) timestep, and not under gradient checkpointing. Installed on instances (state_dict keys
    unchanged); idempotent, so blocks loaded later (`restore_deferred_blocks`) get it on the next forward.
    Returns the number of modules newly given it.
    """
    from diffusers.models.transformers.transformer_cosmos import CosmosAdaLayerNormZero

    count = 0
    for norm in transformer.transformer_blocks.modules():
        if not isinstance(norm, CosmosAdaLayerNormZero) or getattr(norm, "_dit4dit_per_frame", False):
            continue

        def forward(hidden_states, embedded_timestep, temb=None, _norm=norm, _full=norm.forward):
            t = latent_frames.frames
            # Gradient checkpointing recomputes the block in backward, after the forward has unset the frame
            # count: both passes must take the same path, so it is diffusers' path under checkpointing.
            checkpointed = torch.is_grad_enabled() and transformer.gradient_checkpointing
            if t is None or checkpointed or embedded_timestep.ndim != 3 or hidden_states.shape[1] % t:
                return _full(hidden_states, embedded_timestep, temb)
            hw = hidden_states.shape[1] // t
            emb = embedded_timestep.unflatten(1, (t, hw))[:, :, 0]  # (B, T, C): rows are equal within a frame
            mod = _norm.linear_2(_norm.linear_1(_norm.activation(emb)))  # (B, T, 3D)
            if temb is not None:
                mod = mod + temb.unflatten(1, (t, hw))[:, :, 0]
            shift, scale, gate = (x.unsqueeze(2) for x in mod.chunk(3, dim=-1))  # (B, T, 1, D)
            out = _norm.norm(hidden_states).unflatten(1, (t, hw)) * (1 + scale) + shift
            return out.flatten(1, 2), gate.expand(-1, -1, hw, -1).flatten(1, 2)

        norm.forward = forward
        norm._dit4dit_per_frame = True
        count += 1
    return count


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


def _load_pipeline(
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


class CosmosVideoBackbone(nn.Module):
    """Cosmos-Predict2.5 video DiT with a frozen Wan VAE and a cached, lazily loaded text encoder.

    Args:
        base_model: hub id or directory of a diffusers Cosmos-Predict2.5 pipeline.
        revision: hub revision of `base_model`.
        frozen_dtype: storage dtype of the frozen VAE and text encoder.
        load_transformer_weights: False builds the video DiT from its config only (random weights), for when
            a checkpoint will overwrite them anyway.
        max_prompt_tokens: instruction length given to the text encoder.
        load_vae_decoder: False leaves the VAE decoder unread until frames are decoded (`decode_latents`,
            i.e. imagined video): training and acting only encode.
    """

    def __init__(
        self,
        base_model: str,
        revision: str | None = None,
        frozen_dtype: torch.dtype = torch.float32,
        load_transformer_weights: bool = True,
        max_prompt_tokens: int = 512,
        load_vae_decoder: bool = False,
    ):
        super().__init__()
        self.base_model = base_model
        self.revision = revision
        self.frozen_dtype = frozen_dtype
        self.max_prompt_tokens = max_prompt_tokens

        check_base_model(base_model)
        local = resolve_base_model(base_model, revision, transformer_weights=load_transformer_weights)
        transformer = None
        if not load_transformer_weights:
            # On the meta device: no random initialisation and no memory until the checkpoint's tensors are
            # assigned (`load_trained_state_dict(..., assign=True)`).
            cfg = CosmosTransformer3DModel.load_config(local, subfolder="transformer")
            with torch.device("meta"):
                transformer = CosmosTransformer3DModel.from_config(cfg)
        vae = None if load_vae_decoder else load_vae_without_decoder(local)
        pipe = _load_pipeline(local, None, transformer, vae)
        self._base_dir = local
        # The pipeline object is kept for its helpers (prompt encoding, latent statistics, condition mask).
        # It is not an nn.Module, so its components are registered below explicitly.
        self._pipe = pipe
        self.transformer: CosmosTransformer3DModel = pipe.transformer
        self.vae: AutoencoderKLWan = pipe.vae if frozen_dtype == torch.float32 else pipe.vae.to(frozen_dtype)
        self.vae.requires_grad_(False)
        self.vae.eval()
        use_single_frame_convs(self.vae.encoder)  # frame 0 (the condition) is encoded alone
        use_fast_rms_norms(self.vae)  # the decoder too, when it is read up front
        self._latent_frames = LatentFrames()
        self._per_frame_blocks = 0  # blocks given the per-frame adaLN path (not walked on every forward)
        self.per_frame_adaln = True  # see `use_per_frame_adaln`; False runs diffusers' per-token modulation
        # Not a registered submodule: it is frozen, loaded lazily, and must never enter state_dict().
        self._set_text_encoder(None)
        self._prompt_cache: dict[str, Tensor] = {}
        self._pending_prompts: list[str] = []
        self.text_encoder_calls = 0  # number of text-encoder forwards, for monitoring the cache
        # Projected text contexts shipped with a checkpoint (`text_conditioning.safetensors`): instruction ->
        # (L, D) output of the DiT's `crossattn_proj`, valid while those weights are the ones they came from.
        self._shipped_context: dict[str, Tensor] = {}
        self._shipped_context_version: int | None = None
        # Inference caches (see `caching`): the last batch's projected context, and the text K/V wrappers of
        # the DiT's cross-attention, which reuse their output while the same context tensor comes back.
        self._context_memo: tuple[tuple, Tensor] | None = None
        self._text_kv_wrappers: dict = {}
        # A training batch's text path runs once per distinct instruction (`training_context`); False runs it
        # on every sample's copy, as diffusers does (the "before" of benchmarks).
        self.gather_instructions = True

        # diffusers >= 0.39 stores 1/std in `latents_std` (normalise by multiplying).
        self.register_buffer("latents_mean", pipe.latents_mean.clone(), persistent=False)
        self.register_buffer("latents_inv_std", pipe.latents_std.clone(), persistent=False)
        scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
        scheduler.set_timesteps(1)
        self.scheduler_first_sigma = float(scheduler.sigmas[0])

        cfg = self.transformer.config
        self.hidden_size = cfg.num_attention_heads * cfg.attention_head_dim
        self.num_blocks = cfg.num_layers
        self.latent_channels = self.vae.config.z_dim
        self.spatial_compression = pipe.vae_scale_factor_spatial
        self.temporal_compression = pipe.vae_scale_factor_temporal
        self.patch_size = tuple(cfg.patch_size)

    # ------------------------------------------------------------------ bookkeeping
    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()  # frozen: never in train mode
        return self

    def num_latent_frames(self, num_frames: int) -> int:
        return 1 + (num_frames - 1) // self.temporal_compression

    def num_feature_tokens(self, num_frames: int, height: int, width: int) -> int:
        """Length S of the feature sequence for a (num_frames, height, width) pixel clip."""
        p_t, p_h, p_w = self.patch_size
        h = height // self.spatial_compression // p_h
        w = width // self.spatial_compression // p_w
        return self.num_latent_frames(num_frames) // p_t * h * w

    # ------------------------------------------------------------------ text
    @property
    def text_encoder_loaded(self) -> bool:
        return self._text_encoder is not None

    @property
    def text_encoder(self) -> Qwen2_5_VLForConditionalGeneration | None:
        """The text encoder when loaded, else None (it is not a submodule: frozen, lazy, never saved)."""
        return self._text_encoder

    def load_text_encoder(self) -> Qwen2_5_VLForConditionalGeneration:
        """The frozen text encoder of `base_model`, loaded on first use in `frozen_dtype`."""
        if self._text_encoder is None:
            logger.info("Loading the text encoder of %s", self.base_model)
            local = resolve_base_model(
                self.base_model, self.revision, transformer_weights=False, text_encoder=True
            )
            if not (Path(local) / "text_encoder").is_dir():
                raise FileNotFoundError(
                    f"DiT4DiT: the base model {self.base_model} has no text_encoder/, and the checkpoint "
                    f"ships no text conditioning for the instruction(s) {self._pending_prompts}. Add them "
                    "on a machine with the encoder: python -m lerobot_dit4dit.text_conditioning "
                    "--checkpoint <dir> --instructions ..."
                )
            te = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                local, subfolder="text_encoder", dtype=self.frozen_dtype
            )
            te.requires_grad_(False)
            te.eval()
            self._set_text_encoder(te.to(self.latents_mean.device))
        return self._text_encoder

    def _set_text_encoder(self, text_encoder: Qwen2_5_VLForConditionalGeneration | None) -> None:
        object.__setattr__(self, "_text_encoder", text_encoder)
        self._pipe.text_encoder = text_encoder

    def release_text_encoder(self) -> None:
        """Free the text encoder (it is re-loaded on the next uncached instruction)."""
        self._set_text_encoder(None)

    def _chat_token_ids(self, prompt: str) -> list[int]:
        """Token ids of `prompt` in Cosmos' chat template, untruncated and unpadded.

        The conversation mirrors `Cosmos2_5_PredictBasePipeline._get_prompt_embeds` (guarded in
        tests/test_upstream.py), which tokenises the same way and then truncates to `max_prompt_tokens`.
        """
        system = "You are a helpful assistant who will provide prompts to an image generator."
        conversation = [
            {"role": "system", "content": [{"type": "text", "text": system}]},
            {"role": "user", "content": [{"type": "text", "text": prompt}]},
        ]
        ids = self._pipe.tokenizer.apply_chat_template(
            conversation, tokenize=True, add_generation_prompt=False, add_vision_id=False
        )
        return list(ids["input_ids"] if not isinstance(ids, list) else ids)

    def instruction_token_counts(self, prompt: str) -> tuple[int, int, int]:
        """(template prefix, instruction, template suffix) token counts of `prompt` in the chat template."""
        full, empty = self._chat_token_ids(prompt), self._chat_token_ids("")
        prefix = next((i for i, (a, b) in enumerate(zip(full, empty, strict=False)) if a != b), len(empty))
        suffix = len(empty) - prefix
        return prefix, len(full) - prefix - suffix, suffix

    def check_instruction_fits(self, prompt: str) -> None:
        """Raise when `max_prompt_tokens` cuts the instruction off entirely; warn when it cuts part of it.

        Raises:
            ValueError naming the instruction, its token count and the length it needs.
        """
        if not isinstance(prompt, str):
            raise TypeError(
                f"DiT4DiT: task instructions must be strings, got {prompt!r} ({type(prompt).__name__})."
            )
        prefix, n, suffix = self.instruction_token_counts(prompt)
        kept = max(0, min(n, self.max_prompt_tokens - prefix))
        needed = prefix + n + suffix
        if n > 0 and kept == 0:
            raise ValueError(
                f"DiT4DiT: max_prompt_tokens={self.max_prompt_tokens} cuts the instruction "
                f"{prompt!r} off entirely "
                f"(the chat template takes {prefix} tokens before it, the instruction {n}); every "
                f"task would get "
                f"the same embedding. Set --policy.max_prompt_tokens={needed} or more."
            )
        if kept < n:
            logger.warning(
                "DiT4DiT: max_prompt_tokens=%d keeps %d of the %d tokens of the instruction %r; "
                "set --policy.max_prompt_tokens=%d to keep all of it.",
                self.max_prompt_tokens,
                kept,
                n,
                prompt,
                needed,
            )

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Tensor:
        """Prompt embeddings (B, L, E) for `prompts`, computed once per unique instruction and cached.

        E = num_text_layers * text_hidden: every decoder layer, standardised per token (Cosmos-Predict2.5).
        """
        device = self.latents_mean.device
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        for prompt in missing:
            self.check_instruction_fits(prompt)
        self._pending_prompts = missing
        if missing:
            te = self.load_text_encoder()
            te.to(device)
            # A few prompts per call: the encoder returns the hidden states of every layer (29 x 512 x 3584
            # for Cosmos-Reason1), which for a whole training batch would not fit next to the DiTs.
            for start in range(0, len(missing), TEXT_ENCODER_BATCH):
                group = missing[start : start + TEXT_ENCODER_BATCH]
                embeds = self._pipe._get_prompt_embeds(
                    group, max_sequence_length=self.max_prompt_tokens, device=device, dtype=te.dtype
                )
                self.text_encoder_calls += 1
                for prompt, emb in zip(group, embeds, strict=True):
                    self._prompt_cache[prompt] = emb
        out = torch.stack([self._prompt_cache[p] for p in prompts])
        return out.to(device=device, dtype=self.transformer.dtype)

    # ------------------------------------------------------------------ projected text context
    @property
    def crossattn_proj(self) -> nn.Module:
        return self.transformer.crossattn_proj

    def _proj_version(self) -> int:
        """In-place update counter of the projection weights: an optimizer step changes it."""
        return sum(tensor_version(p) for p in self.crossattn_proj.parameters())

    def cached_prompts(self) -> list[str]:
        """Instructions whose prompt embeddings this process computed (e.g. every training instruction)."""
        return list(self._prompt_cache)

    def ship_text_context(self, contexts: dict[str, Tensor]) -> None:
        """Install projected contexts (instruction -> (L, D)) computed with the current projection weights."""
        self._shipped_context = {k: v.detach() for k, v in contexts.items()}
        self._shipped_context_version = self._proj_version()

    def shipped_instructions(self) -> list[str]:
        """Instructions whose projected context is installed and still valid for the current weights."""
        if self._shipped_context_version != self._proj_version():
            return []
        return list(self._shipped_context)

    @torch.no_grad()
    def text_context(self, prompts: list[str]) -> Tensor:
        """Projected text context (B, L, D) for inference: the DiT's `crossattn_proj` applied to the prompt
        embeddings. Shipped contexts are used as they are, so a shipped instruction never needs the text
        encoder; any other instruction is encoded (loading the encoder) and projected."""
        device, dtype = self.latents_mean.device, self.transformer.dtype
        key = (
            tuple(prompts),
            self._proj_version(),
            id(self._shipped_context),
            self._shipped_context_version,
            device,
            dtype,
            torch.is_autocast_enabled(device.type),
        )
        if self._context_memo is not None and self._context_memo[0] == key:
            return self._context_memo[1]  # the same tensor: the DiT's text K/V cache can reuse its output
        shipped = set(self.shipped_instructions())
        out: dict[str, Tensor] = {p: self._shipped_context[p] for p in dict.fromkeys(prompts) if p in shipped}
        todo = [p for p in dict.fromkeys(prompts) if p not in out]
        if todo:
            projected = self.crossattn_proj(self.encode_prompts(todo))
            out.update(zip(todo, projected, strict=True))
        context = torch.stack([out[p].to(device=device, dtype=dtype) for p in prompts])
        self._context_memo = (key, context)
        return context

    def training_context(self, prompts: list[str]) -> Tensor:
        """Projected text context (B, L, D) of a training batch, computed once per distinct instruction.

        `crossattn_proj` runs on the (U, L, E) prompt embeddings of the U distinct instructions, and the rows
        are gathered per sample. Every block's `attn2.to_k`/`to_v` applied to the returned context also run on
        the U rows and gather (`caching.project_distinct_rows`), in the forward and in a checkpointed
        recomputation. Gradients reach the weights summed per instruction. With U = B nothing is gathered.
        """
        unique = list(dict.fromkeys(prompts)) if self.gather_instructions else prompts
        rows = self.crossattn_proj(self.encode_prompts(unique))  # (U, L, D)
        if len(unique) == len(prompts):  # all distinct (`unique` is `prompts` in its order), or no gather
            return rows
        project_distinct_rows(
            linear
            for block in self.transformer.transformer_blocks
            for linear in (block.attn2.to_k, block.attn2.to_v)
        )
        position = {p: i for i, p in enumerate(unique)}
        return expand_rows(rows, torch.tensor([position[p] for p in prompts], device=rows.device))

    def text_kv_cached(self, num_blocks: int | None = None):
        """While active, the first `num_blocks` DiT blocks (all when None) project the text context to K/V
        once per context tensor and reuse it across calls (`text_context` returns the same tensor for the same
        instructions)."""
        blocks = self.transformer.transformer_blocks[:num_blocks]
        return reusing_outputs((b.attn2 for b in blocks), self._text_kv_wrappers)

    def text_kv_shared(self, num_blocks: int):
        """While active, the first `num_blocks` DiT blocks project a context tensor to text K/V once: a
        no-grad forward reuses, detached, what a forward with grad computed (one training step; `caching`)."""
        return reusing_outputs(b.attn2 for b in self.transformer.transformer_blocks[:num_blocks])

    def project_prompts(self, prompts: list[str]) -> dict[str, Tensor]:
        """instruction -> (L, D) projected context for every instruction in `prompts`, for shipping."""
        return dict(zip(prompts, self.text_context(prompts), strict=True))

    # ------------------------------------------------------------------ VAE
    @torch.no_grad()
    def encode_video(self, video: Tensor) -> Tensor:
        """Normalised VAE latents (posterior mode) of a clip.

        Args:
            video: (B, 3, T, H, W) in [-1, 1], T = 1 mod 4.
        Returns:
            (B, 16, T_lat, H/8, W/8) float32, (z - mean) / std.
        """
        z = retrieve_latents(self.vae.encode(video.to(self.vae.dtype)), sample_mode="argmax").float()
        return (z - self.latents_mean) * self.latents_inv_std

    # ------------------------------------------------------------------ transformer
    def _condition(
        self, batch_size: int, num_latent_frames: int, h: int, w: int, device
    ) -> tuple[Tensor, Tensor]:
        """(cond_indicator (B,1,T_lat,1,1), cond_mask (B,1,T_lat,h,w)): 1 on latent frame 0."""
        shape = (batch_size, self.latent_channels, num_latent_frames, h, w)
        return self._pipe.create_condition_mask(shape, device, torch.float32, 1)

    def forward(
        self,
        cond_latent: Tensor,
        future_latents: Tensor,
        future_time: Tensor,
        prompt_embeds: Tensor,
        conditional_frame_timestep: float,
        stop_after_block: int | None = None,
        projected: bool = False,
    ) -> Tensor:
        """One transformer forward on [condition frame, future frames].

        Args:
            cond_latent: (B, 16, 1, h, w) normalised latent of the current frame.
            future_latents: (B, 16, T_lat - 1, h, w) noisy future latents.
            future_time: (B,) flow time of the future frames.
            prompt_embeds: (B, L, E).
            stop_after_block: return the (B, S, D) output of this block and skip the rest of the forward.
            projected: `prompt_embeds` is already the (B, L, D) output of `crossattn_proj` (`text_context`).
        Returns:
            (B, 16, T_lat, h, w) velocity, or (B, S, D) block features.
        """
        b, _, t_future, h, w = future_latents.shape
        n_lat = t_future + 1
        cond_indicator, cond_mask = self._condition(b, n_lat, h, w, cond_latent.device)
        latents = torch.cat([cond_latent.to(future_latents.dtype), future_latents], dim=2)
        timestep = cond_indicator * conditional_frame_timestep + (
            1 - cond_indicator
        ) * future_time.float().view(b, 1, 1, 1, 1)
        height, width = h * self.spatial_compression, w * self.spatial_compression
        dtype = self.transformer.dtype
        padding_mask = latents.new_zeros(1, 1, height, width, dtype=dtype)
        kwargs = {
            "hidden_states": latents.to(dtype),
            "timestep": timestep,
            # A projected context goes in as it is: only the blocks' text to_k/to_v read it (autocast casts
            # it there). The text K/V reuse (`caching`) knows it by identity and the gather by what it
            # carries; a cast (a bf16 context to fp32 master weights) would make a new tensor and lose both.
            "encoder_hidden_states": prompt_embeds if projected else prompt_embeds.to(dtype),
            "condition_mask": cond_mask.to(dtype),
            "padding_mask": padding_mask,
            "return_dict": False,
        }
        frames = contextlib.nullcontext()
        if self.per_frame_adaln:
            blocks = len(self.transformer.transformer_blocks)
            if blocks != self._per_frame_blocks:  # first call, or blocks restored since: install once
                use_per_frame_adaln(self.transformer, self._latent_frames)
                self._per_frame_blocks = blocks
            frames = self._latent_frames.set(n_lat)
        with self._projection_skipped(projected), frames:
            if stop_after_block is None:
                return self.transformer(**kwargs)[0]

            def capture(_module, _args, output):
                raise _StopForward(output)

            handle = self.transformer.transformer_blocks[stop_after_block].register_forward_hook(capture)
            try:
                self.transformer(**kwargs)
            except _StopForward as stop:
                return stop.hidden_states
            finally:
                handle.remove()
        raise RuntimeError(f"Block {stop_after_block} of the video DiT never ran.")  # pragma: no cover

    @contextlib.contextmanager
    def _projection_skipped(self, skip: bool):
        """While active, the DiT takes already-projected text (diffusers' forward has no switch for it)."""
        if not skip:
            yield
            return
        proj = self.transformer.crossattn_proj
        self.transformer.crossattn_proj = nn.Identity()
        try:
            yield
        finally:
            self.transformer.crossattn_proj = proj

    def extract_features(
        self,
        cond_latent: Tensor,
        num_latent_frames: int,
        prompt_embeds: Tensor,
        *,
        sigma: float,
        conditional_frame_timestep: float,
        extract_layer: int,
        noise: Tensor | None = None,
        projected: bool = False,
    ) -> Tensor:
        """Hidden states of block `extract_layer` in ONE forward where the future latents are pure noise.

        Args:
            cond_latent: (B, 16, 1, h, w) normalised latent of the current frame.
            num_latent_frames: T_lat of the clip the model was trained on.
            noise: (B, 16, T_lat, h, w) initial latents; frame 0 is replaced by the condition. Drawn from the
                global RNG when None.
        Returns:
            (B, S, D) features, S = T_lat * (h / 2) * (w / 2), D = video DiT width.
        """
        if not 0 <= extract_layer < self.num_blocks:
            raise ValueError(f"extract_layer={extract_layer} but the video DiT has {self.num_blocks} blocks.")
        b, c, _, h, w = cond_latent.shape
        if noise is None:
            noise = torch.randn((b, c, num_latent_frames, h, w), device=cond_latent.device)
        elif noise.shape != (b, c, num_latent_frames, h, w):
            raise ValueError(
                f"feature noise has shape {tuple(noise.shape)}, expected {(b, c, num_latent_frames, h, w)}."
            )
        future_time = torch.full((b,), sigma, device=cond_latent.device, dtype=torch.float32)
        # The inference cache outlives this call; a training step shares its text K/V its own way (`_losses`).
        cache = (
            self.text_kv_cached(extract_layer + 1)
            if projected and not self.training
            else contextlib.nullcontext()
        )
        with cache:
            return self(
                cond_latent,
                noise[:, :, 1:],
                future_time,
                prompt_embeds,
                conditional_frame_timestep,
                stop_after_block=extract_layer,
                projected=projected,
            )

    def video_loss(
        self,
        latents: Tensor,
        prompt_embeds: Tensor,
        *,
        conditional_frame_timestep: float,
        time: Tensor | None = None,
        noise: Tensor | None = None,
        time_kwargs: dict | None = None,
        future_mask: Tensor | None = None,
        projected: bool = False,
    ) -> Tensor:
        """Flow-matching loss on the future latent frames; latent frame 0 stays the clean condition.

        Args:
            latents: (B, 16, T_lat, h, w) normalised clip latents (frame 0 = current frame), T_lat >= 2.
            prompt_embeds: (B, L, E), or with `projected` the (B, L, D) output of `crossattn_proj`.
            time: (B,) flow time of the future frames; sampled with `time_kwargs` when None.
            noise: (B, 16, T_lat - 1, h, w); standard normal when None.
            future_mask: (B, T_lat - 1) bool, False for future latent frames that are not real data (the clip
                ran past the episode end); they leave the loss. None: every frame counts.
        Returns:
            scalar MSE between the predicted and target velocities of the (valid) future frames.
        """
        if latents.shape[2] < 2:
            raise ValueError("The video loss needs at least one future latent frame (num_video_frames >= 5).")
        x0 = latents[:, :, 1:]
        if time is None:
            time = sample_video_time(latents.shape[0], latents.device, **(time_kwargs or {}))
        if noise is None:
            noise = torch.randn_like(x0)
        xt = interpolate(x0, noise, time)
        v_pred = self(
            latents[:, :, :1], xt, time, prompt_embeds, conditional_frame_timestep, projected=projected
        )
        target = velocity_target(x0, noise)
        if future_mask is None:
            # Not F.mse_loss: on CPU its 0-dim result keeps the whole elementwise buffer as its storage.
            return (v_pred[:, :, 1:].float() - target).square().mean()
        return masked_mse(v_pred[:, :, 1:].float(), target, future_mask[:, None, :, None, None])

    @torch.no_grad()
    def imagine(
        self,
        cond_latent: Tensor,
        noise: Tensor,
        prompt_embeds: Tensor,
        *,
        sigma: float,
        conditional_frame_timestep: float,
        num_steps: int,
        projected: bool = False,
    ) -> Tensor:
        """Sample the future latents with Euler steps from `sigma` to 0, frame 0 pinned to the condition.

        Args:
            cond_latent: (B, 16, 1, h, w); noise: (B, 16, T_lat, h, w), frame 0 ignored (the feature noise).
        Returns:
            (B, 16, T_lat, h, w) normalised latents: the condition followed by the imagined frames.
        """
        x = noise[:, :, 1:].float()  # the same pure-noise start as the feature forward, at time `sigma`
        ts = torch.linspace(sigma, 0.0, num_steps + 1).tolist()
        b = x.shape[0]
        for t, t_next in zip(ts[:-1], ts[1:], strict=True):
            time = torch.full((b,), t, device=x.device)
            with self.text_kv_cached() if projected else contextlib.nullcontext():
                v = self(cond_latent, x, time, prompt_embeds, conditional_frame_timestep, projected=projected)
            v = v[:, :, 1:].float()
            x = x + (t_next - t) * v  # dx/dt = v = noise - x0, integrated from t down to t_next
        return torch.cat([cond_latent.float(), x], dim=2)

    @property
    def vae_decoder_loaded(self) -> bool:
        return self.vae.decoder is not None

    def load_vae_decoder(self) -> None:
        """Read the VAE decoder (and `post_quant_conv`) from the base, in the dtype and on the device of the
        encoder. A no-op when it is loaded."""
        if self.vae_decoder_loaded:
            return
        full = AutoencoderKLWan.from_pretrained(self._base_dir, subfolder="vae", torch_dtype=torch.float32)
        ref = next(self.vae.encoder.parameters())
        for name in ("decoder", "post_quant_conv"):
            part = getattr(full, name).to(device=ref.device, dtype=ref.dtype).requires_grad_(False).eval()
            setattr(self.vae, name, part)
        use_fast_rms_norms(self.vae.decoder)
        logger.info("DiT4DiT: loaded the VAE decoder (frames are being decoded)")

    def decode_latents(self, latents: Tensor) -> Tensor:
        """(B, 16, T_lat, h, w) normalised latents -> (B, 3, T, H, W) video in [-1, 1]."""
        self.load_vae_decoder()
        z = latents / self.latents_inv_std + self.latents_mean
        with torch.no_grad():
            return self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0].float()
