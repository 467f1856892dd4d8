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
import json
import logging
import math
from collections import deque
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F  # noqa: N812
from diffusers import CosmosTransformer3DModel
from huggingface_hub import ModelCard
from huggingface_hub.constants import SAFETENSORS_SINGLE_FILE
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.policies.rtc.modeling_rtc import RTCProcessor
from lerobot.utils.constants import ACTION, OBS_STATE
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from .action_head import FlowMatchingActionHead
from .configuration_dit4dit import DTYPES, DiT4DiTConfig
from .flow_matching import beta_draw_to_time, masked_mse, sample_beta_time
from .model_card import build_model_card
from .text_conditioning import FILENAME as TEXT_CONDITIONING_FILE
from .text_conditioning import load_text_conditioning, save_text_conditioning
from .video_backbone import CosmosVideoBackbone, looks_local

logger = logging.getLogger(__name__)
T = TypeVar("T", bound="DiT4DiTPolicy")

# The only parameters written to our checkpoints. The frozen VAE and text encoder are re-loaded from
# `config.base_model` instead.
TRAINED_PREFIXES = ("video.transformer.", "action_head.")


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
            # Otherwise the decoder is read on the first decode: acting and training only encode.
            load_vae_decoder=config.save_predicted_video,
        )
        if config.extract_layer >= self.video.num_blocks:
            raise ValueError(
                f"extract_layer={config.extract_layer} but the video DiT of {config.base_model} has "
                f"{self.video.num_blocks} blocks (valid: 0..{self.video.num_blocks - 1})."
            )
        # The cross-attention width follows the loaded video DiT.
        self.action_head = FlowMatchingActionHead.from_config(
            config, cross_attention_dim=self.video.hidden_size
        )
        if config.gradient_checkpointing:
            self.video.transformer.enable_gradient_checkpointing()
            self.action_head.enable_gradient_checkpointing()
        if config.compile_model:
            # In place, module by module: state_dict keys stay the same, hooks keep working.
            for block in self.video.transformer.transformer_blocks:
                block.compile()
            self.action_head.model.compile()
        if config.chunk_size + 1 > config.action_max_seq_len:
            raise ValueError(
                f"chunk_size={config.chunk_size} exceeds action_max_seq_len={config.action_max_seq_len}."
            )
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
        self.init_rtc_processor()
        self.training_forwards = 0  # forward calls in train mode, named when a loss turns non-finite
        # Trained weights cast to `dtype` for inference (see _cast_for_inference); `_master_file` is the
        # checkpoint they were loaded from straight in that dtype, which holds their fp32 values.
        self._inference_cast = False
        self._master_file: str | None = None
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
        self.restore_deferred_blocks()  # lerobot-train builds the optimizer before calling train()
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
        if (
            self.config.cast_feature_sigma_to_model_dtype
        ):  # the official code rounds σ_f to its bf16 DiT dtype
            sigma = float(torch.tensor(sigma, dtype=DTYPES[self.config.dtype]))
        return sigma

    def _cast_for_inference(self) -> None:
        """With `dtype` bfloat16/float16, cast the trained weights to it once, at the first inference of a
        process that has not trained: autocast would otherwise re-cast every fp32 weight on every call. A
        process that trains keeps fp32 master weights under autocast (lerobot-train's evaluation included)."""
        dtype = DTYPES[self.config.dtype]
        if dtype == torch.float32 or self._inference_cast or self.training_forwards > 0:
            return
        self.video.transformer.to(dtype)
        self.action_head.to(dtype)
        self._inference_cast = True
        logger.info("DiT4DiT: trained weights cast to %s for inference", self.config.dtype)

    def state_dict(self, *args, **kwargs):
        # A state dict always holds every block and the whole frozen VAE, whatever was left unread at load,
        # so that policies loaded lean or full exchange state dicts. Saving and loading use the module's own
        # state dict of the trained parts (`torch.nn.Module.state_dict`) and read nothing extra.
        self.restore_deferred_blocks()
        self.video.load_vae_decoder()
        return super().state_dict(*args, **kwargs)

    def wrap_with_peft(self, *args, **kwargs):
        self.restore_deferred_blocks()  # the adapters must reach every block
        return super().wrap_with_peft(*args, **kwargs)

    @property
    def deferred_blocks(self) -> int:
        """Number of video-DiT blocks not loaded yet (see `config.defer_unused_blocks`)."""
        deferred = getattr(self, "_deferred", None)
        return 0 if deferred is None else deferred[1] - len(self.video.transformer.transformer_blocks)

    def restore_deferred_blocks(self) -> None:
        """Read the video-DiT blocks after `extract_layer` from the checkpoint they were deferred from, in the
        dtype and on the device of the loaded blocks. A no-op when nothing is deferred."""
        deferred = getattr(self, "_deferred", None)
        if deferred is None:
            return
        model_file, total = deferred
        transformer = self.video.transformer
        keep = len(transformer.transformer_blocks)
        if not Path(model_file).is_file():
            raise FileNotFoundError(
                f"DiT4DiT: video-DiT blocks {keep}..{total - 1} were deferred at load and their checkpoint "
                f"{model_file} is gone. Load with --policy.defer_unused_blocks=false to keep every block."
            )
        with torch.device("meta"):
            blocks = list(CosmosTransformer3DModel.from_config(transformer.config).transformer_blocks)[
                keep:total
            ]
        ref = next(transformer.transformer_blocks[0].parameters())
        with safe_open(model_file, framework="pt") as f:
            names = list(f.keys())  # noqa: SIM118 (a safe_open handle is no dict)
        for index, block in enumerate(blocks, start=keep):
            prefix = f"{BLOCKS_PREFIX}{index}."
            block_names = [k for k in names if k.startswith(prefix)]
            state = {k[len(prefix) :]: v for k, v in read_checkpoint(model_file, block_names)}
            bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
            if bad:
                raise ValueError(f"DiT4DiT checkpoint {model_file} holds NaN/Inf in {prefix}{bad[0]}")
            state = {k: v.to(ref.dtype) if v.is_floating_point() else v for k, v in state.items()}
            block.load_state_dict(state, strict=True, assign=True)
            block.to(ref.device)
            block.train(self.training)
            if self.config.compile_model:
                block.compile()
        transformer.transformer_blocks.extend(blocks)
        self._deferred = None
        logger.info("DiT4DiT: loaded the deferred video-DiT blocks %d..%d", keep, total - 1)

    def _master_weights(self) -> dict[str, Tensor] | None:
        """The fp32 trained weights of a policy loaded straight into a reduced `dtype` (`from_pretrained`),
        read again from its checkpoint; None when there is no such file (then the weights are the master)."""
        master = getattr(self, "_master_file", None)
        if master is None or not self._inference_cast:
            return None
        if not Path(master).is_file():
            raise FileNotFoundError(
                f"DiT4DiT: the policy was loaded in {self.config.dtype} from {master}, which is gone; its "
                "fp32 weights cannot be read back to train or save. Load with --policy.dtype=float32."
            )
        return {k: v.float() if v.is_floating_point() else v for k, v in read_checkpoint(master)}

    def train(self, mode: bool = True):
        if mode:
            self.restore_deferred_blocks()
        if mode and getattr(self, "_inference_cast", False) and getattr(self, "_master_file", None):
            # Loaded straight into bf16/fp16 for inference: the exact fp32 weights come back from the
            # checkpoint, in place (an optimizer built from get_optim_params() keeps its parameters).
            master = self._master_weights()
            self.video.transformer.float()
            self.action_head.float()
            with torch.no_grad():
                for name, tensor in torch.nn.Module.state_dict(self, keep_vars=True).items():
                    if name in master:
                        tensor.data.copy_(master[name])
            self._inference_cast = False
            self._master_file = None
            logger.info("DiT4DiT: fp32 weights read back from the checkpoint for training")
        elif mode and getattr(self, "_inference_cast", False):
            logger.warning(
                "DiT4DiT: training a policy whose weights were cast to %s for inference; they go back to "
                "float32 with the %s rounding (load it afresh to train from the exact weights).",
                self.config.dtype,
                self.config.dtype,
            )
            self.video.transformer.float()
            self.action_head.float()
            self._inference_cast = False
        return super().train(mode)

    def _autocast(self, device: torch.device):
        """Mixed precision in `config.dtype` (a no-op for float32); `lerobot-train` adds its own on top.

        Training with gradient checkpointing turns autocast's weight cache off. The cache would keep a bf16
        copy of every trained weight alive for the whole forward (2.7 GiB of a B=4 step at real width,
        `benchmarks.train_memory`), and saves little: each weight is cast at most twice per step (the feature
        forward and the video-loss forward), where the cache casts it once. Without checkpointing, the
        backward keeps those copies anyway.
        """
        dtype = DTYPES[self.config.dtype]
        cache = not (self.training and self.config.gradient_checkpointing)
        return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32, cache_enabled=cache)

    @property
    def num_latent_frames(self) -> int:
        return self.video.num_latent_frames(self.config.num_video_frames)

    # ------------------------------------------------------------------ inputs
    def tile_cameras(self, batch: dict[str, Tensor], train: bool = False) -> Tensor:
        """Tile the cameras side by side: (B, 3, T, H, n_cams * W) in [-1, 1]."""
        frames = []
        for key in self.config.cameras:
            if key not in batch:
                raise KeyError(f"DiT4DiT: camera {key!r} missing from the batch (has {sorted(batch)}).")
            img = batch[key]
            if img.shape[0] == 0:
                raise ValueError(f"DiT4DiT: {key} holds an empty batch (shape {tuple(img.shape)}).")
            if img.ndim == 4:
                img = img.unsqueeze(1)
            if img.ndim != 5:
                raise ValueError(
                    f"DiT4DiT: {key} has shape {tuple(img.shape)}; expected (B,C,H,W) or (B,T,C,H,W)."
                )
            frames.append(img)
        video = torch.cat(frames, dim=-1).transpose(1, 2)  # (B, T, C, H, W) -> (B, C, T, H, W)
        h, w = video.shape[-2:]
        if h % 16 or w % 16:
            raise ValueError(
                f"DiT4DiT: image size {h}x{w} (tiled over {len(frames)} camera(s)) must be divisible by 16; "
                f"resize with --policy.image_resolution."
            )
        n = video.shape[2]
        if train and self.config.training_mode != "action" and n != self.config.num_video_frames:
            raise ValueError(
                f"DiT4DiT: got {n} frames per camera but num_video_frames={self.config.num_video_frames} "
                f"(the dataset must load observation_delta_indices={self.config.video_frame_indices})."
            )
        if n % 4 != 1:
            raise ValueError(f"DiT4DiT: {n} video frames; the Wan VAE needs a frame count that is 1 mod 4.")
        return video

    def _state(self, batch: dict[str, Tensor]) -> Tensor:
        """Current state, zero-padded: (B, max_state_dim)."""
        state = batch[OBS_STATE]
        if state.ndim == 3:
            state = state[:, 0]
        if state.shape[-1] != self.config.encoded_state_dim:
            raise ValueError(
                f"DiT4DiT: {OBS_STATE} has dim {state.shape[-1]}, "
                f"config expects {self.config.encoded_state_dim} "
                f"(state_dim {self.config.state_dim}, state_encoding={self.config.state_encoding!r})."
            )
        return F.pad(state.float(), (0, self.config.max_state_dim - state.shape[-1]))

    def _tasks(self, batch: dict, batch_size: int) -> list[str]:
        tasks = batch.get("task")
        if tasks is None:
            raise KeyError(
                "DiT4DiT: the batch has no 'task' instruction (LeRobot datasets and envs provide it)."
            )
        if isinstance(tasks, str):
            tasks = [tasks] * batch_size
        if not isinstance(tasks, list | tuple):
            raise TypeError(
                f"DiT4DiT: 'task' must be a string or a list of strings, got {type(tasks).__name__}."
            )
        bad = [t for t in tasks if not isinstance(t, str)]
        if bad:
            raise TypeError(f"DiT4DiT: every 'task' must be a string instruction; got {bad[:3]!r}.")
        if len(tasks) != batch_size:
            raise ValueError(f"DiT4DiT: {len(tasks)} task strings for a batch of {batch_size}.")
        return list(tasks)

    def extract_features(
        self, cond_latent: Tensor, prompt_embeds: Tensor, noise: Tensor | None = None, projected: bool = False
    ) -> Tensor:
        """Block-`extract_layer` features (B, S, D) that condition the action head (one early-exit forward).

        Args:
            cond_latent: (B, 16, 1, h, w) normalised latent of the current frame (`video.encode_video`).
            prompt_embeds: (B, L, E) from `video.encode_prompts`, or with `projected` the (B, L, D) context
                from `video.text_context`.
            noise: (B, 16, T_lat, h, w) pure-noise latents of the feature forward; global RNG when None.
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
        )
        if self.config.action_feature_frames == "current":
            features = self.current_frame_tokens(features, cond_latent)
        return features

    def current_frame_tokens(self, features: Tensor, cond_latent: Tensor) -> Tensor:
        """(B, S, D) features -> (B, (h / 2) * (w / 2), D): the tokens of the current frame, whose latent is
        `cond_latent` (B, 16, 1, h, w). The DiT's tokens are frame-major, so they come first."""
        _, p_h, p_w = self.video.patch_size
        return features[:, : (cond_latent.shape[-2] // p_h) * (cond_latent.shape[-1] // p_w)]

    # ------------------------------------------------------------------ training
    def noise_shapes(self, batch_size: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the random draws of one training forward (the fields of `ForwardNoise`)."""
        cfg = self.config
        c, t_lat = self.video.latent_channels, self.num_latent_frames
        h = cfg.image_resolution[0] // self.video.spatial_compression
        w = (
            len(cfg.cameras) * cfg.image_resolution[1] // self.video.spatial_compression
        )  # cameras side by side
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
        shapes = self.noise_shapes(batch_size)
        g = generator if generator is not None else torch.Generator().manual_seed(torch.seed() % 2**63)
        # torch's Beta sampler takes no generator: seed a forked global RNG from `g` instead.
        beta_seed = int(torch.randint(0, 2**62, (1,), generator=g))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(beta_seed)
            beta = torch.distributions.Beta(cfg.action_beta_alpha, cfg.action_beta_beta).sample(
                shapes["action_beta"]
            )
        return ForwardNoise(
            feature=torch.randn(shapes["feature"], generator=g),
            video_time=torch.rand(shapes["video_time"], generator=g),
            video=torch.randn(shapes["video"], generator=g),
            action=torch.randn(shapes["action"], generator=g),
            action_beta=beta,
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
            self.training_forwards += 1
        if self.config.training_mode != "action":
            self.restore_deferred_blocks()  # the video loss runs every block, in eval mode too
        # On a latent cache the dataset loads only the current frame (`observation_delta_indices`): the cache
        # holds the clip's latents, so the frame count is not checked.
        video = self.tile_cameras(batch, train=self.config.latent_cache is None)
        noise = noise or ForwardNoise()
        noise.check(self.noise_shapes(video.shape[0]))
        with self._autocast(video.device):
            return self._losses(batch, video, noise)

    def _losses(self, batch: dict, video: Tensor, noise: ForwardNoise) -> tuple[Tensor, dict]:
        cfg = self.config
        mode = cfg.training_mode
        bsz = video.shape[0]
        # The projected instruction (B, L, D), computed once per distinct instruction of the batch, and so are
        # the DiT's text K/V on it (`video.training_context`).
        context = self.video.training_context(self._tasks(batch, bsz))

        # One VAE pass over the clip: the causal Wan VAE gives latent frame 0 from pixel frame 0 alone, so it
        # is both the condition and the first frame of the video-loss target.
        if cfg.latent_cache is not None:
            latents, future_mask = self._cached_latents(batch, video.device, mode)
        else:
            latents = self.video.encode_video(video if mode != "action" else video[:, :, :1])
            future_mask = self._future_latent_mask(batch, latents.shape[2])
        cond_latent = latents[:, :, :1]

        info = {}
        loss = torch.zeros((), device=video.device)
        # Joint training with detached features: both DiT forwards read the same projected instruction, so
        # the video-loss forward (with grad) runs first and the no-grad feature forward reuses its text K/V
        # in blocks 0..extract_layer instead of projecting the (B, L, D) context again. Not when compiled: the
        # swapped-in to_k/to_v wrappers split each compiled block into pieces (slower than projecting twice),
        # and a checkpointed block, recomputed after the swap is undone, would run another graph that saves
        # other tensors (torch.utils.checkpoint raises CheckpointError).
        share_text = (
            mode == "joint"
            and cfg.detach_video_features
            and torch.is_grad_enabled()
            and not cfg.compile_model
        )
        video_loss = None
        with self.video.text_kv_shared(cfg.extract_layer + 1) if share_text else contextlib.nullcontext():
            if share_text:
                video_loss = self._video_loss(latents, context, noise, future_mask)
            if mode != "video":
                # no_grad only when detaching: an enclosing no_grad (evaluation) must stay in force otherwise.
                with torch.no_grad() if cfg.detach_video_features else contextlib.nullcontext():
                    features = self.extract_features(
                        cond_latent, context, noise=noise.feature, projected=True
                    )
        if mode != "video":
            action_loss = self._action_loss(batch, features, noise)
            loss = loss + action_loss
            info["action_loss"] = action_loss.item()
            self._check_finite(batch, "action_loss", info["action_loss"])
        if mode != "action":
            if video_loss is None:
                video_loss = self._video_loss(latents, context, noise, future_mask)
            loss = loss + cfg.video_loss_weight * video_loss
            info["video_loss"] = video_loss.item()
            self._check_finite(batch, "video_loss", info["video_loss"])
        return loss, info

    def _video_loss(
        self, latents: Tensor, context: Tensor, noise: ForwardNoise, future_mask: Tensor | None
    ) -> Tensor:
        """Video flow-matching loss on the projected text `context` (B, L, D) of `video.training_context`."""
        cfg = self.config
        return self.video.video_loss(
            latents,
            context,
            conditional_frame_timestep=cfg.conditional_frame_timestep,
            time=noise.video_time,
            noise=noise.video,
            time_kwargs={
                "distribution": cfg.video_time_distribution,
                "logit_normal_mean": cfg.video_logit_normal_mean,
                "logit_normal_std": cfg.video_logit_normal_std,
                "high_sigma_ratio": cfg.video_high_sigma_ratio,
                "high_sigma_min": cfg.video_high_sigma_min,
            },
            future_mask=future_mask,
            projected=True,
        )

    def _cached_latents(self, batch: dict, device: torch.device, mode: str) -> tuple[Tensor, Tensor | None]:
        """The batch's latents (B, 16, T_lat, h, w) and future-frame mask (B, T_lat - 1) or None, from
        `config.latent_cache`, by dataset index (see `_future_latent_mask`)."""
        cache = getattr(self, "_latent_cache", None)
        if cache is None:
            from .latent_cache import LatentCache

            cache = self._latent_cache = LatentCache(
                self.config.latent_cache, self.config, dataset=self._dataset_identity
            )
        if "index" not in batch:
            raise KeyError("DiT4DiT: latent_cache needs each sample's dataset `index` in the batch.")
        latents, future_mask = cache.lookup(batch["index"])
        if mode == "action":
            return latents[:, :, :1].to(device), None
        return latents.to(device), None if future_mask is None else future_mask.to(device)

    def _future_latent_mask(self, batch: dict, num_latent_frames: int) -> Tensor | None:
        """(B, T_lat - 1) bool: True for future latent frames made only of real frames.

        LeRobot pads a clip that runs past the episode end by repeating the boundary frame and marks those
        frames in `<camera>_is_pad` (B, T). Latent frame k >= 1 encodes pixel frames 1 + 4(k-1) .. 4k; one
        with any padded pixel frame would teach the video DiT a frozen scene, so it leaves the video loss.
        None when the batch carries no padding flags (every frame counts).
        """
        pads = [batch[f"{k}_is_pad"] for k in self.config.cameras if f"{k}_is_pad" in batch]
        if not pads or num_latent_frames < 2:
            return None
        pad = torch.stack([p.bool() for p in pads]).any(0)  # (B, T)
        stride = self.video.temporal_compression
        groups = [pad[:, 1 + stride * (k - 1) : 1 + stride * k].any(-1) for k in range(1, num_latent_frames)]
        return ~torch.stack(groups, dim=1)

    def _check_finite(self, batch: dict, name: str, value: float) -> None:
        """Stop on a non-finite loss term. `value` is already on the host (it is logged): no extra sync."""
        if math.isfinite(value):
            return
        keys = ("episode_index", "frame_index", "index")
        where = {k: batch[k].flatten().tolist()[:8] for k in keys if k in batch}
        raise FloatingPointError(
            f"DiT4DiT: {name} is {value} at training forward {self.training_forwards} (counted since "
            f"this process built the policy); batch {where or '(no index keys)'}. Check the dataset for "
            "NaN/Inf actions or state at those frames, or lower the learning rate. Training stops here so "
            "that no NaN is saved."
        )

    def _action_loss(self, batch: dict[str, Tensor], features: Tensor, noise: ForwardNoise) -> Tensor:
        cfg = self.config
        actions = batch[ACTION]
        if actions.ndim != 3 or actions.shape[1:] != (cfg.chunk_size, cfg.action_dim):
            raise ValueError(
                f"DiT4DiT: {ACTION} has shape {tuple(actions.shape)}; "
                f"expected (B, {cfg.chunk_size}, {cfg.action_dim})."
            )
        b, h, a = actions.shape
        actions = F.pad(actions.float(), (0, cfg.max_action_dim - a))
        mask = torch.zeros_like(actions, dtype=torch.bool)
        mask[..., :a] = True
        if "action_is_pad" in batch:
            mask &= ~batch["action_is_pad"].bool()[..., None]
        state = self._state(batch)

        # R independent (noise, time) draws per sample; row i of the expanded batch is sample i % B. The
        # features stay (B, S_f, D_f): the head's cross-attention projects each sample's once.
        r = cfg.num_action_noise_draws
        actions, mask, state = actions.repeat(r, 1, 1), mask.repeat(r, 1, 1), state.repeat(r, 1)
        eps = noise.action
        if eps is None:
            eps = torch.randn_like(actions)
        if noise.action_beta is not None:
            t = beta_draw_to_time(noise.action_beta, cfg.action_noise_s)
        else:
            t = sample_beta_time(
                b * r, actions.device, cfg.action_beta_alpha, cfg.action_beta_beta, cfg.action_noise_s
            )
        pred, target = self.action_head.loss_inputs(actions, state, features.to(actions.dtype), eps, t)
        return masked_mse(pred.float(), target, mask)

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
        self._cast_for_inference()
        if self.config.training_mode == "video":
            raise RuntimeError(
                "DiT4DiT: this policy was trained with training_mode='video' (video loss only): its "
                "action head "
                "is untrained, so it cannot predict actions. Train with training_mode='joint' or 'action'."
            )
        video = self.tile_cameras(batch, train=False)[:, :, :1]  # the current frame only
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
        state = self._state(batch)
        # The projected text context: shipped instructions need no text encoder (see `text_conditioning`).
        context = self.video.text_context(self._tasks(batch, bsz))
        cond_latent = self.video.encode_video(video)
        if feature_noise is None:
            generator = None
            if self.config.feature_noise_seed is not None:
                generator = torch.Generator(device=video.device).manual_seed(self.config.feature_noise_seed)
            b, c, _, h, w = cond_latent.shape
            feature_noise = torch.randn(
                (b, c, self.num_latent_frames, h, w), generator=generator, device=video.device
            )
        features = self.extract_features(cond_latent, context, noise=feature_noise, projected=True)
        if self.config.save_predicted_video:
            self.restore_deferred_blocks()
            self.last_predicted_latents = self.video.imagine(
                cond_latent,
                feature_noise,
                context,
                sigma=self.feature_sigma,
                conditional_frame_timestep=self.config.conditional_frame_timestep,
                num_steps=self.config.predicted_video_steps,
                projected=True,
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
        device = self.video.latents_mean.device
        chunks = latents[:1].split(self.num_latent_frames, dim=2)
        video = torch.cat([self.video.decode_latents(c.to(device)) for c in chunks], dim=2)  # (1, 3, T, H, W)
        frames = ((video[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return frames.permute(1, 2, 3, 0).cpu()

    # ------------------------------------------------------------------ checkpoints
    def _save_pretrained(self, save_directory: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        """config.json + model.safetensors holding the video DiT and the action head only."""
        if self.deferred_blocks:
            self.restore_deferred_blocks()
            state_dict = None  # a state dict taken before the restore lacks the deferred blocks
        if state_dict is None:
            # Loaded straight into bf16/fp16 and never trained: save the checkpoint's own fp32 weights.
            state_dict = self._master_weights() or torch.nn.Module.state_dict(self)
        trained = {
            k: v.detach().contiguous() for k, v in state_dict.items() if k.startswith(TRAINED_PREFIXES)
        }
        bad = [k for k, v in trained.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ValueError(
                f"DiT4DiT: refusing to save {save_directory}: {len(bad)} parameter tensors hold NaN/Inf "
                f"(first: {bad[:3]}). The run diverged; nothing was written."
            )
        metadata = {
            "format": "pt",
            "dit4dit_action_dim": str(self.config.action_dim),
            "dit4dit_state_dim": str(self.config.state_dim),
            "dit4dit_cameras": json.dumps(self.config.cameras),
        }
        self.config._save_pretrained(save_directory)
        save_file(trained, str(Path(save_directory) / SAFETENSORS_SINGLE_FILE), metadata=metadata)
        # The projected text context of every instruction seen, so inference needs no text encoder.
        save_text_conditioning(self, save_directory)

    @classmethod
    def from_pretrained(cls: builtins.type[T], pretrained_name_or_path: str | Path, **kwargs) -> T:
        """Load a checkpoint: the frozen VAE / text encoder come from `config.base_model`, the rest from
        model.safetensors (local directory or hub repo). The base transformer's weights are not read: the
        checkpoint overwrites every one of them."""
        kwargs.setdefault("load_base_transformer_weights", False)
        _check_checkpoint_path(str(pretrained_name_or_path), has_config=kwargs.get("config") is not None)
        policy = super().from_pretrained(pretrained_name_or_path, **kwargs)
        shipped = _find_checkpoint_file(str(pretrained_name_or_path), TEXT_CONDITIONING_FILE, **kwargs)
        if shipped is not None:
            n = len(load_text_conditioning(policy, shipped))
            logger.info("DiT4DiT: %d instructions ship their text conditioning (%s)", n, shipped)
        return policy

    @classmethod
    def _load_as_safetensor(cls, model: T, model_file: str, map_location: str, strict: bool) -> T:
        """Strict, explicit loading: every checkpoint key must match a trained parameter by name and shape."""
        try:
            with safe_open(model_file, framework="pt") as f:
                metadata = f.metadata() or {}
        except Exception as e:  # safetensors raises its own error types for every kind of damage
            raise ValueError(
                f"DiT4DiT: cannot read {model_file}: {e}. The file is damaged or not safetensors."
            ) from e
        new_embodiment = []
        for what in ("action", "state"):
            saved = metadata.get(f"dit4dit_{what}_dim")
            expected = getattr(model.config, f"{what}_dim")
            if saved is not None and int(saved) != expected:
                new_embodiment.append(f"{what} dim {saved} -> {expected}")
        if new_embodiment and not model.config.reinit_embodiment_layers:
            raise ValueError(
                f"DiT4DiT checkpoint {model_file} was trained for another embodiment "
                f"({', '.join(new_embodiment)} from the dataset/env features). To fine-tune it on this "
                "one, keeping both DiTs and re-initialising the state encoder, action encoder and action "
                "decoder, pass --policy.reinit_embodiment_layers=true."
            )
        saved_cameras = metadata.get("dit4dit_cameras")
        if saved_cameras is not None and json.loads(saved_cameras) != model.config.cameras:
            raise ValueError(
                f"DiT4DiT checkpoint {model_file} was trained on cameras {json.loads(saved_cameras)} "
                f"(tiled in that order), but this config has {model.config.cameras}. Set "
                "--policy.camera_order to the trained cameras (rename env cameras with --rename_map)."
            )
        # Lean inference loading: leave the blocks after `extract_layer` unread (see `defer_unused_blocks`).
        # They are on the meta device (`load_base_transformer_weights=False`), so they hold no memory either.
        total = len(model.video.transformer.transformer_blocks)
        keep = model.config.extract_layer + 1
        defer = model.config.defer_unused_blocks and not model.config.save_predicted_video and keep < total
        if defer and any(
            not p.is_meta for p in model.video.transformer.transformer_blocks[keep].parameters()
        ):
            defer = False  # built with the base's weights: nothing to save by deferring
        with safe_open(model_file, framework="pt") as f:
            names = f.keys()  # a safe_open handle is not iterable
            if defer:
                names = [k for k in names if (_block_index(k) if _block_index(k) is not None else -1) < keep]
        if defer:
            blocks = model.video.transformer.transformer_blocks
            model.video.transformer.transformer_blocks = torch.nn.ModuleList(list(blocks)[:keep])
        dtype = DTYPES[model.config.dtype]
        if dtype != torch.float32 and not new_embodiment:
            # Straight into the inference dtype, one tensor at a time: the destinations are allocated first,
            # then each fp32 tensor is read, cast into its place and freed, so the peak is the reduced-dtype
            # model plus one tensor (reading every tensor first held fp32 and bf16 copies at once, and
            # interleaving long-lived casts with freed reads fragmented the heap). train() and saving read
            # the fp32 weights back from the file.
            _stream_trained_state_dict(model, model_file, names, dtype)
            model._inference_cast = True
            model._master_file = str(model_file)
        else:
            state_dict = dict(read_checkpoint(model_file, names))
            _refuse_non_finite(
                model_file,
                [k for k, v in state_dict.items() if v.is_floating_point() and not v.isfinite().all()],
            )
            if new_embodiment:
                state_dict = _reinit_embodiment_layers(model, state_dict, new_embodiment)
            load_trained_state_dict(model, state_dict, source=model_file)
            del state_dict
        if defer:  # set last: state_dict() restores deferred blocks, and loading itself reads it
            model._deferred = (str(model_file), total)
        return model

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
        shipped = set(self.video.shipped_instructions())
        seen = dict.fromkeys([*self.video.cached_prompts(), *shipped])
        return build_model_card(
            self.config,
            dataset_repo_id=dataset_repo_id,
            license=license,
            tags=tags,
            train_cfg=cfg,
            dataset_meta=dataset_meta,
            instructions=[(t, True) for t in seen],  # save_pretrained ships every instruction it has seen
        )


# Parts of the action head that read or write the embodiment's state and action vectors.
EMBODIMENT_PREFIXES = (
    "action_head.state_encoder.",
    "action_head.action_encoder.",
    "action_head.action_decoder.",
)


def _reinit_embodiment_layers(model: DiT4DiTPolicy, state_dict: dict, changes: list[str]) -> dict:
    """The checkpoint without its embodiment layers: `model` keeps their fresh initialisation, every other
    weight (both DiTs) comes from the checkpoint. Fresh processors follow: `pretrained_path` is cleared so
    that `lerobot-train` builds them from this config and the new dataset's statistics instead of loading the
    old embodiment's."""
    own = torch.nn.Module.state_dict(model)
    dropped = sorted(k for k in state_dict if k.startswith(EMBODIMENT_PREFIXES))
    for key in dropped:
        logger.warning("DiT4DiT: new embodiment (%s): re-initialising %s", ", ".join(changes), key)
    kept = {k: v for k, v in state_dict.items() if k not in dropped}
    kept.update({k: v for k, v in own.items() if k.startswith(EMBODIMENT_PREFIXES)})
    model.config.pretrained_path = None
    return kept


def _find_checkpoint_file(path: str, filename: str, **kwargs) -> str | None:
    """`filename` of a local checkpoint directory or hub repo, or None when the checkpoint has none."""
    if Path(path).is_dir():
        local = Path(path) / filename
        return str(local) if local.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return hf_hub_download(
            path,
            filename,
            revision=kwargs.get("revision"),
            cache_dir=kwargs.get("cache_dir"),
            force_download=kwargs.get("force_download", False),
            token=kwargs.get("token"),
            local_files_only=kwargs.get("local_files_only", False),
        )
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None


def _check_checkpoint_path(path: str, has_config: bool) -> None:
    """Fail early, naming the file, for local checkpoints that LeRobot would otherwise report obscurely: a
    directory that does not exist (LeRobot: "Repo id must be in the form..."), an unreadable config.json, or a
    checkpoint of another policy type."""
    local = Path(path).expanduser()
    if not local.exists():
        if looks_local(path):
            raise FileNotFoundError(f"DiT4DiT: checkpoint directory {path} does not exist.")
        return  # a hub repo id
    if not local.is_dir():
        raise NotADirectoryError(
            f"DiT4DiT: {path} is a file; pass the checkpoint directory (pretrained_model)."
        )
    config_file = local / "config.json"
    if has_config:
        return
    if not config_file.is_file():
        raise FileNotFoundError(f"DiT4DiT: {path} has no config.json; is it a `pretrained_model` directory?")
    try:
        policy_type = json.loads(config_file.read_text()).get("type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise ValueError(f"DiT4DiT: cannot parse {config_file}: {e}.") from e
    if policy_type != DiT4DiTPolicy.name:
        raise ValueError(
            f"DiT4DiT: {config_file} is a {policy_type!r} checkpoint, not dit4dit; load it with that policy "
            "class (or lerobot.policies.factory.make_policy)."
        )


@dataclass
class ForwardNoise:
    """The random draws of one training forward; a field left None is drawn fresh from the global RNG.

    Shapes, for a batch of B with R = `num_action_noise_draws` (see `DiT4DiTPolicy.noise_shapes`):
        feature:     (B, 16, T_lat, h, w)      pure-noise latents of the feature forward (frame 0 is replaced)
        video_time:  (B,)                      video flow time
        video:       (B, 16, T_lat - 1, h, w)  noise of the future latent frames
        action:      (R * B, H, max_action_dim) action noise; row i belongs to sample i % B
        action_beta: (R * B,)                  raw Beta(alpha, beta) draws, mapped to the flow time by / s
    """

    feature: Tensor | None = None
    video_time: Tensor | None = None
    video: Tensor | None = None
    action: Tensor | None = None
    action_beta: Tensor | None = None

    def check(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Raise ValueError naming every given draw whose shape differs from `shapes`."""
        bad = [
            f"{f.name} {tuple(value.shape)} (expected {shapes[f.name]})"
            for f in fields(self)
            if (value := getattr(self, f.name)) is not None and tuple(value.shape) != tuple(shapes[f.name])
        ]
        if bad:
            raise ValueError(f"DiT4DiT: explicit noise of the wrong shape: {', '.join(bad)}.")


BLOCKS_PREFIX = "video.transformer.transformer_blocks."


def _block_index(key: str) -> int | None:
    """Video-DiT block number of a checkpoint key, None for other keys."""
    if not key.startswith(BLOCKS_PREFIX):
        return None
    return int(key[len(BLOCKS_PREFIX) :].split(".", 1)[0])


def _check_trained_keys(own: dict[str, Tensor], shapes: dict[str, tuple], source: str) -> None:
    """Raise a ValueError naming the unexpected keys, the missing keys and the shape mismatches between the
    model's trained tensors `own` and a checkpoint's `shapes` (name -> shape)."""
    unexpected = sorted(set(shapes) - set(own))
    missing = sorted(set(own) - set(shapes))
    mismatched = [
        f"{k}: checkpoint {tuple(shapes[k])} vs model {tuple(own[k].shape)}"
        for k in sorted(set(shapes) & set(own))
        if tuple(shapes[k]) != tuple(own[k].shape)
    ]
    problems = []
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    if missing:
        problems.append(f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if mismatched:
        problems.append(f"shape mismatches {mismatched[:10]}")
    if problems:
        raise ValueError(f"DiT4DiT: cannot load {source}: " + "; ".join(problems))


def _trained_tensors(model: DiT4DiTPolicy) -> dict[str, Tensor]:
    return {k: v for k, v in torch.nn.Module.state_dict(model).items() if k.startswith(TRAINED_PREFIXES)}


def _stream_trained_state_dict(model: DiT4DiTPolicy, model_file: str, names: list[str], dtype) -> None:
    """Load the trained video DiT + action head from `model_file` in `dtype`, one tensor at a time.

    The video DiT is on the meta device: its parameters are allocated in `dtype` (uninitialised) first, and
    every one of them is then written from the file; the strict key and shape check runs before anything is
    read, and a NaN/Inf tensor raises after the pass (the half-loaded policy is never returned)."""
    model.video.transformer.to(dtype)
    model.action_head.to(dtype)
    with safe_open(model_file, framework="pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in names}
    _check_trained_keys(_trained_tensors(model), shapes, source=model_file)
    transformer = model.video.transformer
    if any(t.is_meta for t in (*transformer.parameters(), *transformer.buffers())):
        transformer.to_empty(device="cpu")  # every tensor it allocates is written below (keys checked)
    own = _trained_tensors(model)  # views of the parameters and buffers, now allocated
    bad = []
    with torch.no_grad():
        for k, tensor in read_checkpoint(model_file, names):
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                bad.append(k)
            own[k].copy_(tensor)
            del tensor
    _refuse_non_finite(model_file, bad)


def read_checkpoint(model_file: str, names: list[str] | None = None, reopen_bytes: int = 256 * 2**20):
    """Yield (name, tensor) for `names` (default: every tensor) of a safetensors file, in that order.

    The file is reopened after every `reopen_bytes` read: the pages a safetensors handle has read stay mapped,
    and count in the process's RSS, until it closes. With one handle, loading a real-width fp32 checkpoint
    into a 3.9 GiB bf16 policy peaked at 9.5 GiB; reopening every 256 MiB brought the peak to 4.3 GiB.
    """
    if names is None:
        with safe_open(model_file, framework="pt") as f:
            names = list(f.keys())  # noqa: SIM118 (a safe_open handle is no dict)
    pending = list(names)[::-1]  # popped from the end: in order
    while pending:
        with safe_open(model_file, framework="pt") as f:
            read = 0
            while pending and read < reopen_bytes:
                k = pending.pop()
                tensor = f.get_tensor(k)
                read += tensor.numel() * tensor.element_size()
                yield k, tensor
                del tensor


def _refuse_non_finite(model_file: str, bad: list[str]) -> None:
    """Raise naming the checkpoint tensors `bad` that hold NaN/Inf (none: nothing to do)."""
    if bad:
        raise ValueError(
            f"DiT4DiT checkpoint {model_file} holds NaN/Inf in {len(bad)} tensors (first: {bad[:3]}): "
            "the file is corrupted or the run diverged."
        )


def load_trained_state_dict(model: DiT4DiTPolicy, state_dict: dict[str, Tensor], source: str) -> None:
    """Load the trained video DiT + action head strictly: every key must match by name and shape.

    Raises:
        ValueError naming the unexpected keys, the missing keys and the shape mismatches.
    """
    own = _trained_tensors(model)
    _check_trained_keys(own, {k: tuple(v.shape) for k, v in state_dict.items()}, source)
    # assign: take the checkpoint's tensors as they are (a video DiT built on the meta device has none yet);
    # they are cast to each parameter's dtype first so that assigning never changes a module's precision.
    own_dtypes = {k: v.dtype for k, v in own.items()}
    state_dict = {k: v.to(own_dtypes[k]) if v.is_floating_point() else v for k, v in state_dict.items()}
    model.load_state_dict(state_dict, strict=False, assign=True)
    meta = [k for k, v in torch.nn.Module.state_dict(model).items() if v.is_meta]
    if meta:
        raise ValueError(f"DiT4DiT: {source} left {len(meta)} tensors unset (first: {meta[:3]}).")
