"""DiT4DiT policy (arXiv 2603.10448): dual flow matching over a video DiT and an action DiT.

    current frame + instruction ──► Cosmos video DiT ──(block `extract_layer`, one forward, σ_f)──► features
                                        │                                                          │
                           video FM loss on future latents                                         ▼
                                                                          action chunk ◄── GR00T action DiT
                                                                                             action FM loss

Training batch (after the preprocessor):
    observation.images.<cam>: (B, T, 3, H, W) in [-1, 1], T = num_video_frames (or (B, 3, H, W) when
                              training_mode="action")
    observation.state:        (B, T, S) or (B, S), normalised; only the current step is used
    action:                   (B, chunk_size, A), normalised;   action_is_pad: (B, chunk_size)
    task:                     list[str] of B instructions
Inference: images (B, 3, H, W), state (B, S), task list[str].
"""

from __future__ import annotations

import builtins
import contextlib
import logging
from collections import deque
from pathlib import Path
from typing import TypeVar

import torch
from huggingface_hub import ModelCard
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.policies.rtc.modeling_rtc import RTCProcessor
from lerobot.utils.constants import ACTION
from torch import Tensor

from . import distributed, fast_paths
from .action_head import FlowMatchingActionHead
from .checkpointing import (
    WeightState,
    cast_for_inference,
    check_checkpoint_path,
    check_processor_files,
    deferred_block_count,
    find_checkpoint_file,
    load_checkpoint,
    restore_deferred_blocks,
    save_trained,
    weights_for_training,
)
from .configuration_dit4dit import DTYPES, DiT4DiTConfig
from .flow_matching import ForwardNoise, check_finite_loss
from .inputs import future_latent_mask, padded_state, tile_cameras
from .model_card import build_model_card
from .text_conditioning import FILENAME as TEXT_CONDITIONING_FILE
from .text_conditioning import check_tasks, load_text_conditioning, save_text_conditioning
from .video_backbone import CosmosVideoBackbone

logger = logging.getLogger(__name__)
T = TypeVar("T", bound="DiT4DiTPolicy")


class DiT4DiTPolicy(PreTrainedPolicy):
    """The DiT4DiT policy: a Cosmos-Predict2.5 video DiT whose intermediate features drive an action DiT."""

    config_class = DiT4DiTConfig
    name = "dit4dit"

    def __init__(
        self,
        config: DiT4DiTConfig,
        dataset_stats=None,
        dataset_meta=None,
        *,
        load_base_transformer_weights: bool = True,
        **kwargs,
    ):
        """
        Args:
            config: the policy configuration; `validate_features` runs here.
            load_base_transformer_weights: False builds the video DiT from the base model's config only
                (random weights), for callers that overwrite every trained weight right after
                (`from_pretrained`, the converter).
        """
        super().__init__(config)
        config.validate_features()
        self.config = config
        self.video = CosmosVideoBackbone(
            config.base_model,
            revision=config.base_model_revision,
            frozen_dtype=DTYPES[config.dtype],
            load_transformer_weights=load_base_transformer_weights,
            max_prompt_tokens=config.max_prompt_tokens,
            load_vae_decoder=config.save_predicted_video or not config.defer_vae_decoder,
        )
        if config.extract_layer >= self.video.num_blocks:
            raise ValueError(
                f"extract_layer={config.extract_layer} but the video DiT of {config.base_model} has "
                f"{self.video.num_blocks} blocks (valid: 0..{self.video.num_blocks - 1})."
            )
        # The cross-attention width follows the loaded video DiT. When a checkpoint overwrites the head
        # (`from_pretrained`, the converter) it is built on the meta device like the video DiT: no random
        # initialisation to throw away; `load_checkpoint` initialises it where a fine-tune needs a new head.
        on_meta = torch.device("meta") if not load_base_transformer_weights else contextlib.nullcontext()
        with on_meta:
            self.action_head = FlowMatchingActionHead.from_config(
                config, cross_attention_dim=self.video.hidden_size
            )
        # FSDP's wrap units (Accelerate's TRANSFORMER_BASED_WRAP reads `_no_split_modules`): the block classes
        # of both DiTs as built, so a new block class cannot go unsharded by missing from a config's list.
        blocks = [*self.video.transformer.transformer_blocks, *self.action_head.model.transformer_blocks]
        self._no_split_modules = sorted({type(b).__name__ for b in blocks})
        if config.gradient_checkpointing:
            self.video.transformer.enable_gradient_checkpointing()
            self.action_head.enable_gradient_checkpointing()
        if config.compile_model:
            # In place, module by module: state_dict keys stay the same, hooks keep working.
            for block in self.video.transformer.transformer_blocks:
                block.compile()
            self.action_head.model.compile()
        # A model trained without the video loss, with detached features, never updates the video DiT.
        if config.training_mode == "action" and config.detach_video_features:
            self.video.transformer.requires_grad_(False)
        if config.training_mode == "video":
            self.action_head.requires_grad_(False)
        # The dataset LeRobot's make_policy builds this policy for. A latent cache is read by index, so one
        # built for another dataset (a checkpoint's config keeps its path) would be read silently: refuse it.
        self._dataset_identity = None
        if dataset_meta is not None and config.latent_cache:
            from .latent_cache import dataset_identity

            self._dataset_identity = dataset_identity(dataset_meta)
        distributed.hold_process_group()  # a rank of multi-process training must not deadlock in its exit
        self.init_rtc_processor()
        self.weights = WeightState()  # where the trained weights stand (`checkpointing`)
        self.reset()

    # ------------------------------------------------------------------ LeRobot API
    def reset(self):
        self._action_queue: deque[Tensor] = deque(maxlen=self.config.n_action_steps)
        # (B, 16, T_lat, h, w) imagined latents of the last chunk when `save_predicted_video` is on; LeRobot's
        # evaluator collects them after every `select_action` and decodes once per episode.
        self.last_predicted_latents: Tensor | None = None

    def supports_rtc(self) -> bool:
        return True

    def init_rtc_processor(self) -> None:
        """(Re)build the RTC processor from `config.rtc_config` (`lerobot-rollout` calls this after setting
        it)."""
        rtc = self.config.rtc_config
        self.rtc_processor = RTCProcessor(rtc) if rtc is not None and rtc.enabled else None
        if self.rtc_processor is not None and rtc.execution_horizon > self.config.n_action_steps:
            # LeRobot 0.6.1's engine passes the largest delay seen so far, and RTC pulls the first
            # `execution_horizon` actions towards the previous chunk: beyond the executed steps this pins
            # what runs to stale plans (docs/unitree_g1_sim.md, run 10: 18.0 -> 41.7 presses/min).
            logger.warning(
                "RTC execution_horizon=%d is above n_action_steps=%d: the executed actions of each chunk "
                "will follow the previous chunk's plan; pass --inference.rtc.execution_horizon=%d",
                rtc.execution_horizon,
                self.config.n_action_steps,
                self.config.n_action_steps,
            )

    def _get_default_peft_targets(self) -> dict:
        """LoRA targets for `lerobot-train --peft.method_type=lora`: the attention projections of both DiTs
        (video DiT self- and cross-attention, action DiT attention) and the action DiT's feed-forward; the
        small embodiment layers (state encoder, action encoder and decoder) train in full."""
        video = r"video\.transformer\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
        block = r"action_head\.model\.transformer_blocks\.\d+"
        action = rf"{block}\.(attn1\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2))"
        return {
            "target_modules": rf"({video}|{action})",
            "modules_to_save": ["state_encoder", "action_encoder", "action_decoder"],
        }

    def get_optim_params(self) -> list[dict]:
        """Two AdamW parameter groups: the video DiT at `optimizer_lr_video`, the action head at
        `optimizer_lr_action`. Frozen parameters are left out."""
        restore_deferred_blocks(self)  # lerobot-train builds the optimizer before calling train()
        groups = [
            {
                "params": [p for p in self.video.transformer.parameters() if p.requires_grad],
                "lr": self.config.optimizer_lr_video,
            },
            {
                "params": [p for p in self.action_head.parameters() if p.requires_grad],
                "lr": self.config.optimizer_lr_action,
            },
        ]
        return [g for g in groups if g["params"]]

    @property
    def feature_sigma(self) -> float:
        sigma = self.config.feature_sigma
        if sigma is None:
            sigma = self.video.scheduler_first_sigma
        if self.config.cast_feature_sigma_to_model_dtype:  # the official code rounds σ_f to its DiT dtype
            sigma = float(torch.tensor(sigma, dtype=DTYPES[self.config.dtype]))
        return sigma

    def state_dict(self, *args, **kwargs):
        # A state dict always holds every block and the whole frozen VAE, whatever was left unread at load,
        # so that policies loaded lean or full exchange state dicts. Saving and loading use the module's own
        # state dict of the trained parts (`torch.nn.Module.state_dict`) and read nothing extra.
        restore_deferred_blocks(self)
        self.video.load_vae_decoder()
        return super().state_dict(*args, **kwargs)

    def wrap_with_peft(self, *args, **kwargs):
        restore_deferred_blocks(self)  # the adapters must reach every block
        return super().wrap_with_peft(*args, **kwargs)

    @property
    def deferred_blocks(self) -> int:
        """Number of video-DiT blocks not loaded yet (see `config.defer_unused_blocks`)."""
        return deferred_block_count(self)

    def restore_deferred_blocks(self) -> None:
        """Read the video-DiT blocks deferred at load (`checkpointing.restore_deferred_blocks`)."""
        restore_deferred_blocks(self)

    def train(self, mode: bool = True):
        if mode:
            weights_for_training(self)
        return super().train(mode)

    def _autocast(self, device: torch.device):
        """Mixed precision in `config.dtype` (a no-op for float32); `lerobot-train` adds its own on top.

        Training with gradient checkpointing turns autocast's weight cache off: it would keep a bf16 copy of
        every trained weight alive for the whole forward (`benchmarks.train_memory` measures it) to save one
        of at most two casts per weight and step. Without checkpointing, the backward keeps those copies
        anyway.
        """
        dtype = DTYPES[self.config.dtype]
        cache = not (self.training and self.config.gradient_checkpointing)
        return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32, cache_enabled=cache)

    @property
    def num_latent_frames(self) -> int:
        return self.video.num_latent_frames(self.config.num_video_frames)

    # ------------------------------------------------------------------ inputs
    def extract_features(
        self,
        cond_latent: Tensor,
        prompt_embeds: Tensor,
        noise: Tensor | None = None,
        projected: bool = False,
        text_index: Tensor | None = None,
        text_key: tuple | None = None,
    ) -> Tensor:
        """Block-`extract_layer` features (B, S, D) that condition the action head (one early-exit forward).

        Args:
            cond_latent: (B, 16, 1, h, w) normalised latent of the current frame (`video.encode_video`).
            prompt_embeds: (B, L, E) from `video.encode_prompts`, or with `projected` the (B, L, D) context
                from `video.text_context`.
            noise: (B, 16, T_lat, h, w) pure-noise latents of the feature forward; global RNG when None.
            text_index, text_key: the row gather of a training context and the cache key of an inference
                context (`CosmosVideoBackbone.extract_features`).
        Returns:
            (B, S, D) with S = T_lat * (h / 2) * (w / 2), or (h / 2) * (w / 2) with `action_feature_frames`
            "current" (the DiT's tokens are frame-major, so the current frame's come first).
        """
        features = self.video.extract_features(
            cond_latent,
            self.num_latent_frames,
            prompt_embeds,
            sigma=self.feature_sigma,
            conditional_frame_timestep=self.config.conditional_frame_timestep,
            extract_layer=self.config.extract_layer,
            noise=noise,
            projected=projected,
            text_index=text_index,
            text_key=text_key,
        )
        if self.config.action_feature_frames == "current":
            features = self.video.current_frame_tokens(features, cond_latent)
        return features

    # ------------------------------------------------------------------ training
    def noise_shapes(self, batch_size: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the random draws of one training forward (the fields of `ForwardNoise`)."""
        cfg = self.config
        c, t_lat = self.video.latent_channels, self.num_latent_frames
        h, w = (n // self.video.spatial_compression for n in cfg.image_resolution)
        w *= len(cfg.cameras)  # cameras side by side
        rows = cfg.num_action_noise_draws * batch_size
        return {
            "feature": (batch_size, c, t_lat, h, w),
            "video_time": (batch_size,),
            "video": (batch_size, c, t_lat - 1, h, w),
            "action": (rows, cfg.chunk_size, cfg.max_action_dim),
            "action_beta": (rows,),
        }

    def draw_noise(self, batch_size: int, generator: torch.Generator | None = None) -> ForwardNoise:
        """Every random draw of one training forward, explicitly, with shapes from the config.

        Replaying the same `ForwardNoise` makes `forward` deterministic (tests, parity with recorded draws).
        """
        cfg = self.config
        return ForwardNoise.draw(
            self.noise_shapes(batch_size), cfg.action_beta_alpha, cfg.action_beta_beta, generator
        )

    def forward(self, batch: dict[str, Tensor], noise: ForwardNoise | None = None) -> tuple[Tensor, dict]:
        """Dual flow-matching loss.

        Args:
            batch: see the module docstring.
            noise: optional explicit random draws (see `ForwardNoise`, `draw_noise`); a field left None is
                drawn fresh from the global RNG.
        Returns:
            (loss, {"action_loss": float, "video_loss": float})
        """
        if self.training:
            self.weights.training_forwards += 1
        if self.config.training_mode != "action":
            restore_deferred_blocks(self)  # the video loss runs every block, in eval mode too
        # On a latent cache the dataset loads only the current frame (`observation_delta_indices`): the cache
        # holds the clip's latents, so the frame count is not checked.
        video = tile_cameras(batch, self.config, train=self.config.latent_cache is None)
        noise = noise or ForwardNoise()
        noise.check(self.noise_shapes(video.shape[0]))
        with self._autocast(video.device):
            return self._losses(batch, video, noise)

    def _losses(self, batch: dict, video: Tensor, noise: ForwardNoise) -> tuple[Tensor, dict]:
        cfg = self.config
        mode = cfg.training_mode
        bsz = video.shape[0]
        # The projected instruction, computed once per distinct instruction of the batch: (U, L, D) rows and
        # the (B,) row of each sample, which the DiT's text K/V gather (`video.training_context`).
        context, text_index = self.video.training_context(check_tasks(batch.get("task"), bsz))

        # One VAE pass over the clip: the causal Wan VAE gives latent frame 0 from pixel frame 0 alone, so it
        # is both the condition and the first frame of the video-loss target.
        if cfg.latent_cache is not None:
            latents, future_mask = self._cached_latents(batch, video.device, mode)
        else:
            latents = self.video.encode_video(video if mode != "action" else video[:, :, :1])
            future_mask = self.future_latent_mask(batch, latents.shape[2])
        cond_latent = latents[:, :, :1]

        info = {}
        loss = torch.zeros((), device=video.device)
        # Joint training with detached features: both DiT forwards read the same projected instruction, so
        # the video-loss forward (with grad) runs first and the no-grad feature forward reuses its text K/V
        # (`fast_paths.KeyedOutput` under this step's key). Not when compiled: a cache hit inside a compiled
        # block is a Python branch on stored tensors, which splits the block's graph (slower than projecting).
        share_text = (
            mode == "joint"
            and cfg.detach_video_features
            and torch.is_grad_enabled()
            and not cfg.compile_model
        )
        step_key = fast_paths.next_step_key("train") if share_text else None
        video_loss = None
        with self.video.shared_kv_key.use(step_key):
            if share_text:
                video_loss = self._video_loss(latents, context, noise, future_mask, text_index)
            if mode != "video":
                # no_grad only when detaching: an enclosing no_grad (evaluation) must stay in force otherwise.
                with torch.no_grad() if cfg.detach_video_features else contextlib.nullcontext():
                    features = self.extract_features(
                        cond_latent, context, noise=noise.feature, projected=True, text_index=text_index
                    )
        if mode != "video":
            action_loss = self._action_loss(batch, features, noise)
            loss = loss + action_loss
            info["action_loss"] = action_loss.item()
            check_finite_loss("action_loss", info["action_loss"], batch, self.weights.training_forwards)
        if mode != "action":
            if video_loss is None:
                video_loss = self._video_loss(latents, context, noise, future_mask, text_index)
            loss = loss + cfg.video_loss_weight * video_loss
            info["video_loss"] = video_loss.item()
            check_finite_loss("video_loss", info["video_loss"], batch, self.weights.training_forwards)
        return loss, info

    def _video_loss(
        self,
        latents: Tensor,
        context: Tensor,
        noise: ForwardNoise,
        future_mask: Tensor | None,
        text_index: Tensor | None,
    ) -> Tensor:
        """Video flow-matching loss on the projected text `context` of `video.training_context`."""
        cfg = self.config
        return self.video.video_loss(
            latents,
            context,
            conditional_frame_timestep=cfg.conditional_frame_timestep,
            time=noise.video_time,
            noise=noise.video,
            time_kwargs=cfg.video_time_kwargs,
            future_mask=future_mask,
            projected=True,
            text_index=text_index,
        )

    def _cached_latents(self, batch: dict, device: torch.device, mode: str) -> tuple[Tensor, Tensor | None]:
        """The batch's latents (B, 16, T_lat, h, w) and future-frame mask (B, T_lat - 1) or None, from
        `config.latent_cache`, by dataset index (see `_future_latent_mask`)."""
        if getattr(self, "_latent_cache", None) is None:
            from .latent_cache import LatentCache

            self._latent_cache = LatentCache(
                self.config.latent_cache, self.config, dataset=self._dataset_identity
            )
        return self._latent_cache.batch_latents(batch, device, current_only=mode == "action")

    def future_latent_mask(self, batch: dict, num_latent_frames: int) -> Tensor | None:
        """(B, T_lat - 1) bool: future latent frames of real frames only (`inputs.future_latent_mask`)."""
        return future_latent_mask(
            batch, self.config.cameras, num_latent_frames, self.video.temporal_compression
        )

    def _action_loss(self, batch: dict[str, Tensor], features: Tensor, noise: ForwardNoise) -> Tensor:
        cfg = self.config
        actions = batch[ACTION]
        if actions.ndim != 3 or actions.shape[1:] != (cfg.chunk_size, cfg.action_dim):
            raise ValueError(
                f"DiT4DiT: {ACTION} has shape {tuple(actions.shape)}; "
                f"expected (B, {cfg.chunk_size}, {cfg.action_dim})."
            )
        return self.action_head.flow_matching_loss(
            actions,
            batch.get("action_is_pad"),
            padded_state(batch, cfg),
            features,
            noise.action,
            noise.action_beta,
            cfg,
        )

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_action_chunk(
        self,
        batch: dict[str, Tensor],
        noise: Tensor | None = None,
        feature_noise: Tensor | None = None,
        inference_delay: int | None = None,
        prev_chunk_left_over: Tensor | None = None,
        execution_horizon: int | None = None,
        **kwargs,
    ) -> Tensor:
        """Action chunk (B, chunk_size, action_dim), normalised.

        Args:
            inference_delay, prev_chunk_left_over ((B, T, action_dim) normalised), execution_horizon:
                real-time chunking inputs, used when `config.rtc_config` is enabled (LeRobot's RTC
                semantics).
            noise: (B, chunk_size, max_action_dim) initial chunk at t = 1; standard normal when None.
            feature_noise: (B, 16, T_lat, h, w) noise of the feature forward; drawn from a generator seeded
                with `feature_noise_seed` when None (global RNG if that is None).
        """
        self.eval()
        cast_for_inference(self)
        if self.config.training_mode == "video":
            raise RuntimeError(
                "DiT4DiT: this policy was trained with training_mode='video' (video loss only), so its "
                "action head is untrained. Fine-tune it on an action dataset first: lerobot-train "
                "--policy.path=<this checkpoint> --policy.training_mode=joint --dataset.repo_id=<actions>."
            )
        video = tile_cameras(batch, self.config, train=False)[:, :, :1]  # the current frame only
        rtc = {}
        if self.rtc_processor is not None:
            rtc = {
                "inference_delay": inference_delay,
                "prev_chunk_left_over": prev_chunk_left_over,
                "execution_horizon": execution_horizon,
            }
        with self._autocast(video.device):
            return self._predict(batch, video, noise, feature_noise, rtc)

    def _predict(
        self, batch: dict, video: Tensor, noise: Tensor | None, feature_noise: Tensor | None, rtc: dict
    ) -> Tensor:
        bsz = video.shape[0]
        state = padded_state(batch, self.config)
        # The projected text context: shipped instructions need no text encoder (see `text_conditioning`).
        tasks = check_tasks(batch.get("task"), bsz)
        context, text_key = self.video.text_context(tasks), self.video.text_context_key(tasks)
        cond_latent = self.video.encode_video(video)
        if feature_noise is None:
            seed, (b, c, _, h, w) = self.config.feature_noise_seed, cond_latent.shape
            generator = None if seed is None else torch.Generator(video.device).manual_seed(seed)
            shape = (b, c, self.num_latent_frames, h, w)
            feature_noise = torch.randn(shape, generator=generator, device=video.device)
        features = self.extract_features(
            cond_latent, context, noise=feature_noise, projected=True, text_key=text_key
        )
        if self.config.save_predicted_video:
            restore_deferred_blocks(self)
            self.last_predicted_latents = self.video.imagine(
                cond_latent,
                feature_noise,
                context,
                sigma=self.feature_sigma,
                conditional_frame_timestep=self.config.conditional_frame_timestep,
                num_steps=self.config.predicted_video_steps,
                projected=True,
                text_key=text_key,
            ).cpu()
        shape = (bsz, self.config.chunk_size, self.config.max_action_dim)
        if noise is None:
            noise = torch.randn(shape, device=video.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(
                f"DiT4DiT: noise has shape {tuple(noise.shape)}; expected (B, chunk_size, "
                f"max_action_dim) = {shape}."
            )
        actions = self.action_head.sample(
            state,
            features.float(),
            noise.float(),
            self.config.num_inference_steps,
            rtc_processor=self.rtc_processor,
            **rtc,
        )
        return actions[:, :, : self.config.action_dim].float()

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], noise: Tensor | None = None, **kwargs) -> Tensor:
        """One action (B, action_dim); a new chunk is predicted every `n_action_steps` calls."""
        self.eval()
        camera = self.config.cameras[0]
        if camera not in batch:
            raise KeyError(f"DiT4DiT: camera {camera!r} missing from the batch (has {sorted(batch)}).")
        batch_size = batch[camera].shape[0]  # read, not tiled: select_action runs every control step
        if self._action_queue and self._action_queue[0].shape[0] != batch_size:
            # The queued chunk belongs to a batch of another size (e.g. a new set of envs): never hand its
            # actions to these observations; start a fresh chunk instead.
            logger.warning(
                "DiT4DiT: batch size changed from %d to %d in the middle of a chunk; dropping the "
                "queued actions.",
                self._action_queue[0].shape[0],
                batch_size,
            )
            self._action_queue.clear()
        if len(self._action_queue) == 0:
            chunk = self.predict_action_chunk(batch, noise=noise)[:, : self.config.n_action_steps]
            self._action_queue.extend(chunk.transpose(0, 1))  # (n_action_steps, B, A)
        return self._action_queue.popleft()

    @torch.no_grad()
    def decode_predicted_latents(self, latents: Tensor) -> Tensor:
        """Imagined latents (B, 16, n_chunks * T_lat, h, w), chunks concatenated on dim 2 by `lerobot-eval` ->
        (T, H, W, 3) uint8 frames of the first batch element (the tiled camera views side by side). Each chunk
        is decoded on its own (the Wan VAE is causal: a chunk's first latent is a single condition frame),
        giving the current frame and its imagined future frames, 1 + 4 * (T_lat - 1) per chunk. Called by
        `lerobot-eval` only."""
        chunks = latents[:1].split(self.num_latent_frames, dim=2)
        video = torch.cat(
            [self.video.decode_latents(c.to(self.video.latents_mean.device)) for c in chunks], 2
        )
        return ((video[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).cpu()

    def _save_pretrained(self, save_directory: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        """config.json + model.safetensors (the video DiT and the action head only) + the projected text
        context of every instruction seen, so inference needs no text encoder."""
        save_trained(self, save_directory, state_dict)
        self.config._save_pretrained(save_directory)
        save_text_conditioning(self, save_directory, state_dict=state_dict)

    @classmethod
    def from_pretrained(cls: builtins.type[T], pretrained_name_or_path: str | Path, **kwargs) -> T:
        """Load a checkpoint: the frozen VAE / text encoder come from `config.base_model`, the rest from
        model.safetensors (local directory or hub repo). The base transformer's weights are not read: the
        checkpoint overwrites every one of them."""
        kwargs.setdefault("load_base_transformer_weights", False)
        check_checkpoint_path(
            str(pretrained_name_or_path), has_config=kwargs.get("config") is not None, expected_type=cls.name
        )
        policy = super().from_pretrained(pretrained_name_or_path, **kwargs)
        check_processor_files(str(pretrained_name_or_path), **kwargs)
        shipped = find_checkpoint_file(str(pretrained_name_or_path), TEXT_CONDITIONING_FILE, **kwargs)
        if shipped is not None:
            n = len(load_text_conditioning(policy, shipped))
            logger.info("DiT4DiT: %d instructions ship their text conditioning (%s)", n, shipped)
        return policy

    @classmethod
    def _load_as_safetensor(cls, model: T, model_file: str, map_location: str, strict: bool) -> T:
        """Strict, explicit loading: every checkpoint key must match a trained parameter by name and shape."""
        return load_checkpoint(model, model_file)

    def generate_model_card(
        self,
        dataset_repo_id: str,
        model_type: str,
        license: str | None,
        tags: list[str] | None,
        cfg=None,
        dataset_meta=None,
    ) -> ModelCard:
        """The dit4dit card (`model_card.build_model_card`): the base's licence, features, instructions (and
        which ship their conditioning), training settings, commands and hardware. Built offline: unlike
        LeRobot's default it is not validated online."""
        seen = dict.fromkeys([*self.video.cached_prompts(), *self.video.shipped_instructions()])
        # save_pretrained ships every instruction it has seen
        kwargs = {"license": license, "tags": tags, "train_cfg": cfg, "dataset_meta": dataset_meta}
        return build_model_card(
            self.config, dataset_repo_id=dataset_repo_id, instructions=[(t, True) for t in seen], **kwargs
        )
