"""The video DiT backbone: Cosmos-Predict2.5 (diffusers) as a feature extractor and a video flow-matching
model.

Components come from a diffusers `Cosmos2_5_PredictBasePipeline` (`base_model`): `CosmosTransformer3DModel`
(trained), `AutoencoderKLWan` and the Qwen2.5-VL text encoder (both frozen), the Qwen tokenizer and the
scheduler config. The text path lives in `text_conditioning.TextContext`, the speed layer in `fast_paths`.

Latent layout everywhere: (B, C=16, T_lat, h, w) with T_lat = 1 + (T - 1) // 4, h = H / 8, w = W / 8, and
latent frame 0 is the conditioning (current) frame.
"""

from __future__ import annotations

import logging

import torch
from diffusers import AutoencoderKLWan, CosmosTransformer3DModel, UniPCMultistepScheduler
from diffusers.pipelines.cosmos.pipeline_cosmos2_5_predict import retrieve_latents
from torch import Tensor, nn

from . import fast_paths
from .base_model import check_base_model, load_pipeline, load_vae_without_decoder, resolve_base_model
from .flow_matching import interpolate, masked_mse, sample_video_time, velocity_target
from .text_conditioning import TextContext

logger = logging.getLogger(__name__)


class _StopForward(Exception):  # noqa: N818
    """Raised by the capture hook to end the transformer forward right after the extracted block."""

    def __init__(self, hidden_states: Tensor):
        super().__init__()
        self.hidden_states = hidden_states


class CosmosVideoBackbone(TextContext, nn.Module):
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
            # assigned (`checkpointing.load_trained_state_dict(..., assign=True)`).
            cfg = CosmosTransformer3DModel.load_config(local, subfolder="transformer")
            with torch.device("meta"):
                transformer = CosmosTransformer3DModel.from_config(cfg)
        vae = None if load_vae_decoder else load_vae_without_decoder(local)
        pipe = load_pipeline(local, None, transformer, vae)
        self._base_dir = local
        # The pipeline object is kept for its helpers (prompt encoding, latent statistics, condition mask).
        # It is not an nn.Module, so its components are registered below explicitly.
        self._pipe = pipe
        self.transformer: CosmosTransformer3DModel = pipe.transformer
        self.vae: AutoencoderKLWan = pipe.vae if frozen_dtype == torch.float32 else pipe.vae.to(frozen_dtype)
        self.vae.requires_grad_(False)
        self.vae.eval()
        # The speed layer (`fast_paths`): single-frame convs and fast RMS norms in the VAE, per-frame adaLN
        # in the DiT, the text K/V caches keyed by an instruction key or a training step, the row gather.
        fast_paths.install_vae_fast_paths(self.vae)
        self._latent_frames = fast_paths.LatentFrames()
        self._skip_projection = fast_paths.install_transformer_fast_paths(
            self.transformer, self._latent_frames
        )
        self.text_kv_key = fast_paths.CacheKey("text_kv_cache")  # inference: an instruction key
        self.shared_kv_key = fast_paths.CacheKey("shared_text_kv")  # training: one step's two forwards
        self.row_gather = fast_paths.RowGather()
        self._hooked_blocks = len(self.transformer.transformer_blocks)
        self._init_text_context()

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

    def current_frame_tokens(self, features: Tensor, cond_latent: Tensor) -> Tensor:
        """(B, S, D) features -> (B, (h / 2) * (w / 2), D): the tokens of the current frame, whose latent is
        `cond_latent` (B, 16, 1, h, w). The DiT's tokens are frame-major, so they come first."""
        _, p_h, p_w = self.patch_size
        return features[:, : (cond_latent.shape[-2] // p_h) * (cond_latent.shape[-1] // p_w)]

    def _text_hooks(self, num_blocks: int | None = None) -> None:
        """Hook the text `to_k`/`to_v` of the blocks as they are now (a PEFT wrapper installed since is hooked
        on the outside): the row gather innermost, then the two keyed caches (idempotent)."""
        attns = [b.attn2 for b in self.transformer.transformer_blocks[:num_blocks]]
        fast_paths.install_row_gather((p for a in attns for p in (a.to_k, a.to_v)), self.row_gather)
        fast_paths.install_keyed_kv(attns, self.shared_kv_key)
        fast_paths.install_keyed_kv(attns, self.text_kv_key)

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
        text_index: Tensor | None = None,
    ) -> Tensor:
        """One transformer forward on [condition frame, future frames].

        Args:
            cond_latent: (B, 16, 1, h, w) normalised latent of the current frame.
            future_latents: (B, 16, T_lat - 1, h, w) noisy future latents.
            future_time: (B,) flow time of the future frames.
            prompt_embeds: (B, L, E).
            stop_after_block: return the (B, S, D) output of this block and skip the rest of the forward.
            projected: `prompt_embeds` is already the (B, L, D) output of `crossattn_proj` (`text_context`).
            text_index: (B,) with a projected (U, L, D) `prompt_embeds` of U distinct instructions: the row
                of each sample (`training_context`); the blocks' text K/V run on the U rows and gather.
        Returns:
            (B, 16, T_lat, h, w) velocity, or (B, S, D) block features.
        """
        b, _, t_future, h, w = future_latents.shape
        if text_index is not None and (not projected or text_index.shape != (b,)):
            raise ValueError(
                f"DiT4DiT: text_index {tuple(text_index.shape)} needs a projected context and one row per "
                f"sample ({b},)."
            )
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
            # A projected context goes in as it is: only the blocks' text to_k/to_v read it (autocast casts it
            # there), and a cast of a bf16 context to fp32 master weights would be a copy per forward.
            "encoder_hidden_states": prompt_embeds if projected else prompt_embeds.to(dtype),
            "condition_mask": cond_mask.to(dtype),
            "padding_mask": padding_mask,
            "return_dict": False,
        }
        blocks = len(self.transformer.transformer_blocks)
        if blocks != self._hooked_blocks:  # blocks read since (deferred ones): hook them once
            fast_paths.install_transformer_fast_paths(self.transformer, self._latent_frames)
            self._hooked_blocks = blocks
        if projected:
            self._text_hooks()
        # Set for this forward and kept until the next one: a checkpointed block recomputes its forward in
        # the backward pass, after this call returned, and must gather the same way.
        self.row_gather.set(text_index, rows=prompt_embeds.shape[0] if text_index is not None else 0)
        with self._skip_projection.skipping(projected), self._latent_frames.set(n_lat):
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
        text_index: Tensor | None = None,
        text_key: tuple | None = None,
    ) -> Tensor:
        """Hidden states of block `extract_layer` in ONE forward where the future latents are pure noise.

        Args:
            cond_latent: (B, 16, 1, h, w) normalised latent of the current frame.
            num_latent_frames: T_lat of the clip the model was trained on.
            noise: (B, 16, T_lat, h, w) initial latents; frame 0 is replaced by the condition. Drawn from the
                global RNG when None.
            text_index: see `forward`.
            text_key: the `text_context_key` of a projected inference context: the blocks' text K/V are
                reused from the last call under the same key (`fast_paths.KeyedOutput`).
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
        with self.text_kv_key.use(text_key if projected else None):
            return self(
                cond_latent,
                noise[:, :, 1:],
                future_time,
                prompt_embeds,
                conditional_frame_timestep,
                stop_after_block=extract_layer,
                projected=projected,
                text_index=text_index,
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
        text_index: Tensor | None = None,
    ) -> Tensor:
        """Flow-matching loss on the future latent frames; latent frame 0 stays the clean condition.

        Args:
            latents: (B, 16, T_lat, h, w) normalised clip latents (frame 0 = current frame), T_lat >= 2.
            prompt_embeds: (B, L, E), or with `projected` the (B, L, D) output of `crossattn_proj`.
            time: (B,) flow time of the future frames; sampled with `time_kwargs` when None.
            noise: (B, 16, T_lat - 1, h, w); standard normal when None.
            future_mask: (B, T_lat - 1) bool, False for future latent frames that are not real data (the clip
                ran past the episode end); they leave the loss. None: every frame counts.
            text_index: see `forward`.
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
            latents[:, :, :1],
            xt,
            time,
            prompt_embeds,
            conditional_frame_timestep,
            projected=projected,
            text_index=text_index,
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
        text_key: tuple | None = None,
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
            with self.text_kv_key.use(text_key if projected else None):
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
        fast_paths.install_vae_fast_paths(self.vae)  # the decoder and post_quant_conv
        logger.info("DiT4DiT: loaded the VAE decoder (frames are being decoded)")

    def decode_latents(self, latents: Tensor) -> Tensor:
        """(B, 16, T_lat, h, w) normalised latents -> (B, 3, T, H, W) video in [-1, 1]."""
        self.load_vae_decoder()
        z = latents / self.latents_inv_std + self.latents_mean
        with torch.no_grad():
            return self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0].float()
