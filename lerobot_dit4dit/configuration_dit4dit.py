"""Configuration of the DiT4DiT policy (arXiv 2603.10448).

Defaults follow the paper's model (Cosmos-Predict2.5-2B base, block 18 features, GR00T action DiT, dual flow
matching). A benchmark's full recipe (state encoding, normalisation, action clipping, dtype, frames) is its
preset: `configs/libero.json` is the paper's LIBERO recipe, and `recipes.RECIPES` holds the facts each preset
is checked against. The offline tests point `base_model` at a tiny base (`dit4dit-tiny-base`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from lerobot.configs import NormalizationMode, PreTrainedConfig
from lerobot.optim import AdamWConfig, CosineDecayWithWarmupSchedulerConfig, OptimizerConfig
from lerobot.policies.rtc.configuration_rtc import RTCConfig
from lerobot.utils.constants import ACTION, OBS_STATE

logger = logging.getLogger(__name__)

TRAINING_MODES = ("joint", "video", "action")
STATE_ENCODINGS = ("none", "sincos_interleaved", "sincos_blocked")
VIDEO_TIME_DISTRIBUTIONS = ("uniform", "logit_normal")
# `dtype` names and the torch dtypes they stand for; the one table every module reads.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@OptimizerConfig.register_subclass("dit4dit_adamw")
@dataclass
class DiT4DiTAdamWConfig(AdamWConfig):
    """LeRobot's AdamW with torch's `fused` switch, which LeRobot's `AdamWConfig` does not expose.

    `AdamWConfig.build` hands every field but `grad_clip_norm` to `torch.optim.AdamW`, so this adds only the
    field. The optimizer state has the same layout either way: a checkpoint resumes with fused on or off.
    """

    # torch.optim.AdamW(fused=...): None is torch's default (foreach on CUDA, a loop over tensors on CPU).
    fused: bool | None = None


@PreTrainedConfig.register_subclass("dit4dit")
@dataclass
class DiT4DiTConfig(PreTrainedConfig):
    """DiT4DiT: a video DiT that learns future frames and an action DiT conditioned on its hidden states.

    Inputs: one or more `observation.images.*` cameras (tiled side by side in `camera_order`), an
    `observation.state` vector and the `task` instruction string. Output: an `action` chunk.
    """

    # ---------------------------------------------------------------- base model (video DiT, VAE, text)
    # Hub id or local directory of a diffusers `Cosmos2_5_PredictBasePipeline`. Its transformer initialises
    # the trainable video DiT; its Wan VAE and Qwen2.5-VL text encoder stay frozen and are never written to
    # our checkpoints, they are re-loaded from here.
    base_model: str = "nvidia/Cosmos-Predict2.5-2B"
    # Hub revision (branch, tag or commit) of `base_model`; ignored for local directories.
    base_model_revision: str | None = "diffusers/base/post-trained"
    # Storage dtype of the frozen VAE and text encoder, and the autocast dtype `lerobot-train` uses
    # (it reads `policy.dtype`). "bfloat16" for real-size runs on a GPU, "float32" on CPU.
    dtype: str = "float32"
    # Gradient checkpointing through the video DiT blocks (diffusers') and the action DiT blocks (ours:
    # LeRobot's GR00T DiT declares support but never checkpoints). Trades a second forward for memory.
    gradient_checkpointing: bool = False
    # torch.compile the video DiT blocks and the action DiT in place (state_dict keys unchanged), for training
    # and inference, with or without gradient checkpointing. `lerobot-rollout --use_torch_compile` sets it.
    # A compiled training step projects the instruction's text K/V in both DiT forwards (see `_losses`).
    compile_model: bool = False

    # ---------------------------------------------------------------- observations
    # Camera keys in the order they are tiled left to right into one video. Empty: every image feature of
    # the dataset, in its feature order.
    camera_order: list[str] = field(default_factory=list)
    # (height, width) each camera is resized to by the preprocessor. Both must be divisible by 16
    # (8x VAE downsampling followed by the DiT's 2x2 patches).
    image_resolution: tuple[int, int] = (224, 224)
    # Pixel frames fed to the video DiT during training: the current frame plus the future frames at
    # `video_frame_stride`. Must be 1 mod 4 (Wan VAE: 4x temporal compression after the first frame).
    num_video_frames: int = 5
    # Distance, in dataset frames, between consecutive video frames (official LIBERO: 0..8 at stride 2).
    video_frame_stride: int = 2
    # How the preprocessor encodes the state after normalisation: "none", or the official recipes' sin/cos
    # features, "sincos_interleaved" [sin x0, cos x0, sin x1, ...] (LIBERO) or "sincos_blocked"
    # [sin x..., cos x...] (RoboCasa-GR1). The sin/cos forms double the state width.
    state_encoding: str = "none"
    # Maximum number of instruction tokens given to the text encoder (padded to this length, as in Cosmos).
    max_prompt_tokens: int = 512
    # Action post-processing of the official LIBERO client, for checkpoints trained with `lerobot-train`:
    # clip the normalised chunk to [-1, 1] before un-normalising it, and threshold action dim
    # `binarize_gripper_dim` at 0.5 into the simulator's -1 (open, value >= 0.5) / +1 (close). The latter is
    # for datasets whose gripper action is 1 = open, 0 = close (the IPEC-COMMUNITY LIBERO sets); None: off.
    clip_normalized_actions: bool = False
    # Smallest range, in the dimension's own units, over which a state or action dimension is normalised:
    # min/max (and q01/q99) narrower than this are widened to it around their centre, and std is raised to
    # at least half of it. A dimension that barely moves in the data (a held joint) otherwise has its
    # measurement jitter stretched over the whole [-1, 1] range: noise that dominates the action loss and
    # that the policy can fit as if it were signal. 0 keeps the dataset's statistics as they are. Applied
    # where the processors are built from dataset statistics: a new policy, and the fine-tune of a video-
    # pretrained or re-initialised checkpoint (which gets fresh processors). When lerobot-train fine-tunes any
    # other `--policy.path`, it hands the dataset's raw statistics to the loaded normaliser, which skips it.
    min_normalization_range: float = 0.0
    # Relative actions, through LeRobot's own RelativeActionsProcessorStep (as pi0 and GR00T use it): the
    # model predicts action - current state for every action dim whose name contains none of
    # `relative_exclude_joints`, and the postprocessor adds the state back. The state must start with the
    # same joints as the action. Recompute the dataset's action statistics in that space first:
    # `lerobot-edit-dataset --operation.type=recompute_stats --operation.relative_action=true
    # --operation.chunk_size=<chunk_size>`. `lerobot-rollout` runs such a policy with --inference.type=rtc.
    use_relative_actions: bool = False
    relative_exclude_joints: list[str] = field(default_factory=list)
    # The dataset's action names, filled in by LeRobot's make_policy (used by relative_exclude_joints).
    action_feature_names: list[str] | None = None
    binarize_gripper_dim: int | None = None

    # ---------------------------------------------------------------- video DiT features
    # 0-based index of the video DiT block whose output conditions the action head. The forward stops there.
    extract_layer: int = 17
    # Timestep given to the conditioning (current-frame) latents.
    conditional_frame_timestep: float = 1e-4
    # Flow time of the pure-noise future latents in the feature forward. None: the scheduler's first sigma
    # (200/201 for Cosmos-Predict2.5), as in the official code.
    feature_sigma: float | None = None
    # Cast the feature sigma to the video DiT's dtype before the forward (the official code does this in
    # bf16).
    cast_feature_sigma_to_model_dtype: bool = False
    # Seed of the feature-forward noise at inference, so the same observation gives the same features.
    # None draws fresh noise from the global RNG every call (official behaviour). Training always draws fresh
    # noise from the global RNG.
    feature_noise_seed: int | None = 0
    # Also imagine the future frames at inference and keep their latents on `policy.last_predicted_latents`,
    # so that `lerobot-eval` writes the imagined video next to the episode video. Costs extra video-DiT
    # forwards per chunk; off by default, never decoded on the action path.
    save_predicted_video: bool = False
    # Euler steps of the imagined-frame sampler (from the feature forward's noise level to data).
    predicted_video_steps: int = 4
    # `from_pretrained` reads only the video-DiT blocks the action path runs (0..extract_layer) when
    # `save_predicted_video` is off. The later blocks are read from the same checkpoint file the first time
    # something needs them: training (`train()`, `get_optim_params`, `wrap_with_peft`), saving, or imagining.
    defer_unused_blocks: bool = True
    # The Wan VAE's decoder is read the first time something decodes (imagining, `lerobot-eval` videos):
    # acting and training only encode. False reads the whole VAE when the policy is built.
    defer_vae_decoder: bool = True
    # Dtype of the trained weights `save_pretrained` writes to model.safetensors: "float32" (the master
    # weights, which training resumes from) or "bfloat16"/"float16" for a checkpoint that is served: half the
    # file, and a policy served in that `dtype` maps it (`map_weights`). Fine-tuning such a checkpoint starts
    # from its rounded weights.
    checkpoint_dtype: str = "float32"
    # `from_pretrained` keeps the trained weights as safetensors returns them, views of its private
    # (copy-on-write) map of model.safetensors whose pages are read on first use, when the file stores them
    # in `dtype`: nothing is copied, and processes serving one file share its pages. dit4dit's own saves
    # replace the file atomically, so a mapped file is never rewritten under a policy. False copies them.
    map_weights: bool = True
    # Training reads the frozen VAE's latents from this file, by each sample's dataset `index`, instead of
    # decoding and encoding the clip: the dataset then loads only the current frame (build the file with
    # `dit4dit-latent-cache`). None encodes.
    latent_cache: str | None = None
    # Run the feature forward under no_grad during training, so the action loss never reaches the video DiT
    # (official behaviour). False lets the action loss back-propagate into the video DiT, as in the paper.
    detach_video_features: bool = True

    # ---------------------------------------------------------------- video flow matching
    # Distribution of the video flow time tau: "uniform" (official launch scripts) or "logit_normal".
    video_time_distribution: str = "uniform"
    # Mean and std of the normal behind the logit-normal distribution.
    video_logit_normal_mean: float = 0.0
    video_logit_normal_std: float = 1.0
    # Fraction of samples whose video time is instead drawn uniformly in [video_high_sigma_min, 1].
    video_high_sigma_ratio: float = 0.0
    video_high_sigma_min: float = 0.98

    # ----------------------------------------------------------- action DiT (GR00T-style cross-attention DiT)
    # Number of actions predicted per chunk (the action horizon).
    chunk_size: int = 8
    # Number of actions of each chunk executed before predicting a new chunk.
    n_action_steps: int = 8
    # State and action vectors are zero-padded to these sizes (official LIBERO: 16 and 8). Padded action
    # dims are noised and predicted but masked out of the loss.
    max_state_dim: int = 16
    max_action_dim: int = 8
    # Cross-attention DiT: blocks, heads and head width (inner width = heads * head_dim).
    action_num_layers: int = 16
    action_num_heads: int = 12
    action_head_dim: int = 64
    # Hidden width of the state MLP and the action decoder MLP.
    action_hidden_size: int = 2560
    # Output width of the DiT (input of the action decoder). None: equal to `action_hidden_size`.
    action_dit_output_dim: int | None = None
    # Dropout of the action DiT (attention output, feed-forward and final dropout).
    action_dropout: float = 0.2
    # Size of the learned position embedding table of the action tokens.
    action_max_seq_len: int = 1024
    # Rows of a learned absolute position embedding added to the video features before the action head
    # attends to them; 0: none (the official model). Cosmos-Predict2.5 encodes position with RoPE only
    # (`extra_pos_embed_type=None`), so its hidden states carry no absolute position and the head's
    # cross-attention, which has no position encoding either, sees the features as an unordered set: a base
    # trained from scratch cannot tell it where in the image something is (the G1 preset's button). Must be
    # at least the feature token count S = T_lat * (H / 16) * (W_total / 16) (with `action_feature_frames`
    # "current": (H / 16) * (W_total / 16)).
    feature_position_embedding_size: int = 0
    # Which of block `extract_layer`'s tokens the action head attends to: "all" latent frames (the paper and
    # the official code) or only the "current" (conditioning) frame's. The future frames' tokens come from
    # pure-noise latents drawn afresh at every training step; the current frame's carry the observation.
    action_feature_frames: str = "all"
    # Training only: the fraction of rows whose state token is zeroed (GR00T N1.7's `state_dropout_prob`,
    # default 0.2 there; 0 here, as the official model). When the joints alone predict most of the next
    # action, a head trained with the state always present learns little from the video features.
    state_dropout_prob: float = 0.0

    # ---------------------------------------------------------------- action flow matching
    # tau = Beta(alpha, beta) / s (the official GR00T/DiT4DiT form; tau may slightly exceed 1): with
    # alpha > beta it emphasises the noisy end of the path (t=1 noise, t=0 data).
    action_beta_alpha: float = 1.5
    action_beta_beta: float = 1.0
    action_noise_s: float = 0.999
    # tau is bucketed into this many integer steps before the timestep embeddings.
    num_timestep_buckets: int = 1000
    # Independent (noise, tau) draws per sample and step (official `repeated_diffusion_steps`).
    num_action_noise_draws: int = 4
    # Euler steps from noise to an action chunk at inference.
    num_inference_steps: int = 4
    # Real-time chunking (LeRobot's RTC guidance in the Euler loop); `lerobot-rollout --inference.type=rtc`
    # sets it. None: plain sampling.
    rtc_config: RTCConfig | None = None

    # ---------------------------------------------------------------- training
    # "joint": action + video loss; "video": video loss only; "action": action loss only (the ablation).
    training_mode: str = "joint"
    # Fine-tune a checkpoint on another embodiment (other state or action dims): keep both DiTs, re-initialise
    # the action head's state encoder, action encoder and action decoder (each key is logged), and build fresh
    # processors from the new dataset. Off: loading a checkpoint with other dims is an error.
    reinit_embodiment_layers: bool = False
    # Weight of the video flow-matching loss in the total loss.
    video_loss_weight: float = 1.0
    # Learning rates of the video DiT and of the action head (parameter groups of the AdamW preset).
    optimizer_lr_video: float = 1e-5
    optimizer_lr_action: float = 1e-4
    # AdamW (beta1, beta2), epsilon and decoupled weight decay, shared by both parameter groups.
    optimizer_betas: tuple[float, float] = (0.9, 0.95)
    optimizer_eps: float = 1e-8
    optimizer_weight_decay: float = 1e-8
    # Maximum global gradient norm; `lerobot-train` clips to it every step.
    optimizer_grad_clip_norm: float = 1.0
    # torch's fused AdamW kernel: one pass per tensor instead of about ten elementwise ops (faster than
    # torch's default loop on CPU, docs/speed.md); on CUDA it also skips the foreach step's extra fp32 copy
    # of the trained weights. false: torch's default.
    optimizer_fused: bool = True
    # Cosine decay with linear warmup (LeRobot scales both down when `--steps` is shorter than the decay).
    scheduler_warmup_steps: int = 5000
    scheduler_decay_steps: int = 80000
    # Final learning rate of the action head. LeRobot's schedule is one multiplier shared by every parameter
    # group, so the decay ends at the ratio scheduler_decay_lr / optimizer_lr_action of each group's own rate:
    # the video DiT ends at optimizer_lr_video * scheduler_decay_lr / optimizer_lr_action.
    scheduler_decay_lr: float = 5e-7

    # LeRobot normalisation per feature type: images pass through (the preprocessor maps [0, 1] to [-1, 1]),
    # state and actions are min/max-scaled to [-1, 1] with the dataset statistics.
    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.MIN_MAX,
            "ACTION": NormalizationMode.MIN_MAX,
        }
    )

    def __post_init__(self):
        super().__post_init__()
        self.image_resolution = tuple(self.image_resolution)
        self.optimizer_betas = tuple(self.optimizer_betas)
        self.camera_order = list(self.camera_order)
        try:
            self._validate()
        except ValueError as e:
            # draccus, the parser behind lerobot-train/-eval/-rollout, replaces this error by "Couldn't
            # instantiate class DiT4DiTConfig"; log it so that command-line users see the key and the fix.
            logger.error("DiT4DiT config: %s", e)
            raise

    def _validate(self) -> None:
        """Raise ValueError naming the first field whose value is meaningless."""
        if not (math.isfinite(self.min_normalization_range) and self.min_normalization_range >= 0):
            raise ValueError(
                f"min_normalization_range={self.min_normalization_range}; expected a finite value >= 0."
            )
        if self.training_mode not in TRAINING_MODES:
            raise ValueError(f"training_mode={self.training_mode!r}; expected one of {TRAINING_MODES}.")
        if self.chunk_size + 1 > self.action_max_seq_len:  # the state token and the chunk's tokens
            raise ValueError(
                f"chunk_size={self.chunk_size} exceeds action_max_seq_len={self.action_max_seq_len}."
            )
        if self.video_time_distribution not in VIDEO_TIME_DISTRIBUTIONS:
            raise ValueError(
                f"video_time_distribution={self.video_time_distribution!r}; "
                f"expected one of {VIDEO_TIME_DISTRIBUTIONS}."
            )
        if self.state_encoding not in STATE_ENCODINGS:
            raise ValueError(f"state_encoding={self.state_encoding!r}; expected one of {STATE_ENCODINGS}.")
        for name in ("dtype", "checkpoint_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected one of {tuple(DTYPES)}.")
        if self.num_video_frames < 1 or self.num_video_frames % 4 != 1:
            raise ValueError(
                f"num_video_frames={self.num_video_frames} must be 1 mod 4 (1, 5, 9, 13, 17...): the Wan VAE "
                "encodes the first frame alone and then 4 frames per latent frame."
            )
        if self.video_frame_stride < 1:
            raise ValueError(f"video_frame_stride={self.video_frame_stride} must be >= 1.")
        if len(self.image_resolution) != 2 or any(s <= 0 or s % 16 for s in self.image_resolution):
            raise ValueError(
                f"image_resolution={self.image_resolution} must be (H, W) with H and W divisible by 16."
            )
        if self.n_action_steps > self.chunk_size:
            raise ValueError(
                f"n_action_steps={self.n_action_steps} cannot exceed chunk_size={self.chunk_size}."
            )
        if self.extract_layer < 0:
            raise ValueError(f"extract_layer={self.extract_layer} must be >= 0.")
        if not 0.0 <= self.video_high_sigma_ratio <= 1.0:
            raise ValueError(f"video_high_sigma_ratio={self.video_high_sigma_ratio} must be in [0, 1].")
        if self.num_action_noise_draws < 1 or self.num_inference_steps < 1:
            raise ValueError(
                f"num_action_noise_draws={self.num_action_noise_draws} and num_inference_steps="
                f"{self.num_inference_steps} must both be >= 1."
            )
        duplicates = sorted({k for k in self.camera_order if self.camera_order.count(k) > 1})
        if duplicates:
            raise ValueError(f"camera_order names {duplicates} more than once: {self.camera_order}.")
        if self.video_loss_weight < 0:
            raise ValueError(f"video_loss_weight={self.video_loss_weight} must be >= 0.")
        if self.feature_sigma is not None and not 0.0 < self.feature_sigma <= 1.0:
            raise ValueError(
                f"feature_sigma={self.feature_sigma} must be in (0, 1] (or null: the scheduler's)."
            )
        if self.num_timestep_buckets < 1:
            raise ValueError(f"num_timestep_buckets={self.num_timestep_buckets} must be >= 1.")
        if self.max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens={self.max_prompt_tokens} must be >= 1.")
        if self.feature_position_embedding_size < 0:
            raise ValueError(
                f"feature_position_embedding_size={self.feature_position_embedding_size} must be >= 0 "
                "(0: no feature position embedding)."
            )
        if self.action_feature_frames not in ("all", "current"):
            raise ValueError(
                f"action_feature_frames={self.action_feature_frames!r} must be 'all' or 'current'."
            )
        if not 0.0 <= self.state_dropout_prob < 1.0:
            raise ValueError(f"state_dropout_prob={self.state_dropout_prob} must be in [0, 1).")
        if not 0.0 <= self.action_dropout < 1.0:
            raise ValueError(f"action_dropout={self.action_dropout} must be in [0, 1).")

    # ------------------------------------------------------------------ LeRobot hooks
    def get_optimizer_preset(self) -> DiT4DiTAdamWConfig:
        # The per-module learning rates live in the parameter groups of `get_optim_params`; `lr` is the
        # fallback for a group without its own.
        return DiT4DiTAdamWConfig(
            lr=self.optimizer_lr_action,
            betas=self.optimizer_betas,
            eps=self.optimizer_eps,
            weight_decay=self.optimizer_weight_decay,
            grad_clip_norm=self.optimizer_grad_clip_norm,
            fused=self.optimizer_fused or None,
        )

    def get_scheduler_preset(self) -> CosineDecayWithWarmupSchedulerConfig:
        return CosineDecayWithWarmupSchedulerConfig(
            peak_lr=self.optimizer_lr_action,
            decay_lr=self.scheduler_decay_lr,
            num_warmup_steps=self.scheduler_warmup_steps,
            num_decay_steps=self.scheduler_decay_steps,
        )

    def validate_features(self) -> None:
        if not self.image_features:
            raise ValueError("DiT4DiT needs at least one `observation.images.*` camera among input_features.")
        if self.camera_order:
            missing = [k for k in self.camera_order if k not in self.image_features]
            if missing:
                raise ValueError(
                    f"camera_order names {missing}, which are not image features. "
                    f"Available cameras: {list(self.image_features)}."
                )
        # Video-only training (`training_mode=video`) learns from cameras and instructions alone, so it also
        # takes action-free recordings; every other mode needs the state and the action.
        video_only = " (a camera-only dataset trains with --policy.training_mode=video)"
        if self.robot_state_feature is None and self.training_mode != "video":
            raise ValueError(f"DiT4DiT needs `{OBS_STATE}` among input_features{video_only}.")
        if self.action_feature is None and self.training_mode != "video":
            raise ValueError(f"DiT4DiT needs `{ACTION}` among output_features{video_only}.")
        if self.robot_state_feature is not None and self.encoded_state_dim > self.max_state_dim:
            raise ValueError(
                f"state dim {self.encoded_state_dim} (after state_encoding={self.state_encoding!r}) exceeds "
                f"max_state_dim={self.max_state_dim}."
            )
        if self.action_feature is None:
            return
        if self.action_dim > self.max_action_dim:
            raise ValueError(f"action dim {self.action_dim} exceeds max_action_dim={self.max_action_dim}.")
        dim = self.binarize_gripper_dim
        if dim is not None and not -self.action_dim <= dim < self.action_dim:
            raise ValueError(f"binarize_gripper_dim={dim} is out of range for action dim {self.action_dim}.")

    def set_dataset_feature_metadata(self, features: dict) -> None:
        """Called by LeRobot's `make_policy` with the training dataset's features. A checkpoint pretrained on
        action-free recordings (`training_mode=video`) has no state among its input features; fine-tuning it
        with actions takes the state from the new dataset (the action comes from it already).

        The dataset's feature names are kept (not saved) for `checkpointing.load_checkpoint`, which decides
        from them whether such a fine-tune can build its processors afresh."""
        self._dataset_feature_names = frozenset(features)
        if self.training_mode == "video" or self.robot_state_feature is not None:
            return
        from lerobot.utils.feature_utils import dataset_to_policy_features

        state = dataset_to_policy_features(features).get(OBS_STATE)
        if state is not None:
            logger.info("DiT4DiT: %s %s taken from the fine-tuning dataset", OBS_STATE, tuple(state.shape))
            self.input_features = {**self.input_features, OBS_STATE: state}

    @property
    def video_time_kwargs(self) -> dict:
        """How the video loss draws its flow time (`flow_matching.sample_video_time`'s keywords)."""
        return {
            "distribution": self.video_time_distribution,
            "logit_normal_mean": self.video_logit_normal_mean,
            "logit_normal_std": self.video_logit_normal_std,
            "high_sigma_ratio": self.video_high_sigma_ratio,
            "high_sigma_min": self.video_high_sigma_min,
        }

    @property
    def cameras(self) -> list[str]:
        """Camera keys in tiling order."""
        return list(self.camera_order) if self.camera_order else list(self.image_features)

    @property
    def state_dim(self) -> int:
        return self.robot_state_feature.shape[0]

    @property
    def encoded_state_dim(self) -> int:
        """Width of the state the model receives, after the preprocessor's `state_encoding`."""
        return self.state_dim * (1 if self.state_encoding == "none" else 2)

    @property
    def action_dim(self) -> int:
        return self.action_feature.shape[0]

    @property
    def video_frame_indices(self) -> list[int]:
        """Dataset frame offsets of the video clip: current frame, then the future frames."""
        return [i * self.video_frame_stride for i in range(self.num_video_frames)]

    @property
    def observation_delta_indices(self) -> list[int] | None:
        # Only the video loss needs future frames; an action-only model loads just the current frame, and so
        # does training on a latent cache, which holds each clip's latents and which of its frames are real.
        if self.training_mode == "action" or self.num_video_frames == 1 or self.latent_cache is not None:
            return None
        return self.video_frame_indices

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))

    @property
    def reward_delta_indices(self) -> None:
        return None
