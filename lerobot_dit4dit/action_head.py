"""The action DiT: a GR00T-style cross-attention flow-matching head.

The transformer is LeRobot's GR00T `DiT` (`lerobot.policies.groot.action_head.cross_attention_dit`) and the
flow-time embedding LeRobot's GR00T N1.7 `SinusoidalPositionalEncoding`; the encoders around them are ours.

Parameter names match the official DiT4DiT `action_model.*` checkpoints (without that prefix): `model.*`
is LeRobot's GR00T `DiT`, plus `state_encoder`, `action_encoder`, `action_decoder`, `position_embedding`,
and, when configured, `feature_position_embedding` (ours, not in official checkpoints).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
import torch.utils.checkpoint
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from lerobot.policies.common.flow_matching import euler_integrate
from lerobot.policies.groot.action_head.cross_attention_dit import DiT
from lerobot.policies.groot.groot_n1_7 import SinusoidalPositionalEncoding
from torch import Tensor, nn

from . import fast_paths
from .configuration_dit4dit import DiT4DiTConfig
from .flow_matching import (
    beta_draw_to_time,
    interpolate,
    masked_mse,
    sample_beta_time,
    sampling_time_to_bucket,
    time_to_bucket,
    velocity_target,
)


class MLP(nn.Module):
    """Linear -> ReLU -> Linear (the official state encoder and action decoder)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.layer1 = nn.Linear(in_dim, hidden_dim)
        self.layer2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer2(F.relu(self.layer1(x)))


class ActionEncoder(nn.Module):
    """Noisy action chunk + flow-time bucket -> action tokens.

    W1: Linear(A -> D); concat with the sinusoidal bucket embedding (D); W2: Linear(2D -> D); swish; W3.
    """

    def __init__(self, action_dim: int, width: int):
        super().__init__()
        self.layer1 = nn.Linear(action_dim, width)
        self.layer2 = nn.Linear(2 * width, width)
        self.layer3 = nn.Linear(width, width)
        self.time_encoding = SinusoidalPositionalEncoding(width)

    def forward(self, actions: Tensor, buckets: Tensor) -> Tensor:
        """actions (B, H, A), buckets (B,) int -> (B, H, D)."""
        b, h, _ = actions.shape
        time_emb = self.time_encoding(buckets.unsqueeze(1).expand(b, h)).to(actions.dtype)
        x = torch.cat([self.layer1(actions), time_emb], dim=-1)
        x = F.silu(self.layer2(x))
        return self.layer3(x)


class SharedContextAttnProcessor(AttnProcessor2_0):
    """diffusers' SDPA attention, plus cross-attention where N query rows share B = N / r context rows.

    The action loss draws r (noise, time) pairs per sample (`num_action_noise_draws`), so its N = r * B rows
    attend to B feature maps: row i to map i % B. diffusers' processor would project r identical copies of
    each (S_f, D_f) map to keys and values, the largest matmuls of the head. This one projects each map once
    and lets the r * T queries of a sample attend to it as one sequence, saving (r - 1) / r of that work in
    the forward and in the backward of `to_k` / `to_v`, and copying no key. With as many context rows as
    query rows, or the `shared_context_attention` fast path off (`fast_paths`), it is diffusers' processor.
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args,
        **kwargs,
    ) -> Tensor:
        """hidden_states (N, T, D), encoder_hidden_states (B, S_f, D_f), N a multiple of B -> (N, T, D)."""
        if encoder_hidden_states is None or encoder_hidden_states.shape[0] == hidden_states.shape[0]:
            return super().__call__(
                attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs
            )
        n, b = hidden_states.shape[0], encoder_hidden_states.shape[0]
        if not fast_paths.enabled("shared_context_attention") and n % b == 0:
            # The "before": every query row gets its own copy of its sample's context (`Tensor.repeat`).
            return super().__call__(
                attn,
                hidden_states,
                encoder_hidden_states.repeat(n // b, 1, 1),
                attention_mask,
                temb,
                *args,
                **kwargs,
            )
        if n % b or hidden_states.ndim != 3 or attention_mask is not None:
            raise ValueError(
                f"shared-context cross-attention: {n} query rows of shape {tuple(hidden_states.shape[1:])} "
                f"cannot share {b} context rows (needs 3-D queries, a multiple of {b} rows and no mask)"
            )
        r, t, heads = n // b, hidden_states.shape[1], attn.heads
        query = attn.to_q(hidden_states)  # (r * B, T, H * d)
        key = attn.to_k(encoder_hidden_states)  # (B, S_f, H * d): once per sample, not once per draw
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // heads
        # Query row j * B + i belongs to sample i (`Tensor.repeat`'s layout). Attention is per query, so the
        # r * T queries of sample i attend together, as one sequence, to its keys: no key is copied.
        query = query.view(r, b, t, heads, head_dim).permute(1, 3, 0, 2, 4).reshape(b, heads, r * t, head_dim)
        key, value = (x.view(b, -1, heads, head_dim).transpose(1, 2) for x in (key, value))
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.view(b, heads, r, t, head_dim).permute(2, 0, 3, 1, 4).reshape(n, t, heads * head_dim)
        out = out.to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))

    @staticmethod
    def install(attn: Attention) -> None:
        """Set on `attn`; refuses the diffusers options the shared path above does not apply."""
        unsupported = {
            "spatial_norm": attn.spatial_norm is not None,
            "group_norm": attn.group_norm is not None,
            "norm_cross": bool(attn.norm_cross),
            "norm_q": attn.norm_q is not None,
            "norm_k": attn.norm_k is not None,
            "residual_connection": attn.residual_connection,
            "rescale_output_factor": attn.rescale_output_factor != 1.0,
        }
        if any(unsupported.values()):
            raise ValueError(
                "SharedContextAttnProcessor: the action DiT's cross-attention uses "
                f"{[k for k, v in unsupported.items() if v]}, which it does not implement"
            )
        attn.set_processor(SharedContextAttnProcessor())


class FlowMatchingActionHead(nn.Module):
    """Predicts the velocity of a noisy action chunk, cross-attending to video DiT features.

    Token sequence: [state token, H action tokens]. Even DiT blocks cross-attend to the features, odd blocks
    self-attend. The velocity is decoded from the last H tokens.
    """

    def __init__(
        self,
        *,
        action_dim: int,
        state_dim: int,
        cross_attention_dim: int,
        hidden_size: int = 2560,
        dit_output_dim: int | None = None,
        num_layers: int = 16,
        num_heads: int = 12,
        head_dim: int = 64,
        dropout: float = 0.2,
        max_seq_len: int = 1024,
        num_timestep_buckets: int = 1000,
        feature_position_embedding_size: int = 0,
        state_dropout_prob: float = 0.0,
    ):
        super().__init__()
        width = num_heads * head_dim
        dit_output_dim = dit_output_dim or hidden_size
        self.num_timestep_buckets = num_timestep_buckets
        self.state_dropout_prob = state_dropout_prob
        self.model = DiT(
            num_attention_heads=num_heads,
            attention_head_dim=head_dim,
            output_dim=dit_output_dim,
            num_layers=num_layers,
            dropout=dropout,
            final_dropout=True,
            interleave_self_attention=True,
            norm_type="ada_norm",
            positional_embeddings=None,
            cross_attention_dim=cross_attention_dim,
        )
        self.state_encoder = MLP(state_dim, hidden_size, width)
        self.action_encoder = ActionEncoder(action_dim, width)
        self.action_decoder = MLP(dit_output_dim, hidden_size, action_dim)
        self.position_embedding = nn.Embedding(max_seq_len, width)
        # The video DiT's hidden states carry no absolute position (RoPE only) and GR00T's cross-attention
        # adds none, so without this table the head cannot tell which image region a feature came from.
        self.feature_position_embedding = (
            nn.Embedding(feature_position_embedding_size, cross_attention_dim)
            if feature_position_embedding_size
            else None
        )
        for block in self.cross_attention_blocks():
            SharedContextAttnProcessor.install(block.attn1)
        self.feature_kv_key = fast_paths.CacheKey("action_kv_cache")  # a chunk's Euler steps (`sample`)

    @classmethod
    def from_config(cls, config: DiT4DiTConfig, cross_attention_dim: int) -> FlowMatchingActionHead:
        """The head a `DiT4DiTConfig` describes, attending to features of width `cross_attention_dim`."""
        return cls(
            action_dim=config.max_action_dim,
            state_dim=config.max_state_dim,
            cross_attention_dim=cross_attention_dim,
            hidden_size=config.action_hidden_size,
            dit_output_dim=config.action_dit_output_dim,
            num_layers=config.action_num_layers,
            num_heads=config.action_num_heads,
            head_dim=config.action_head_dim,
            dropout=config.action_dropout,
            max_seq_len=config.action_max_seq_len,
            num_timestep_buckets=config.num_timestep_buckets,
            feature_position_embedding_size=config.feature_position_embedding_size,
            state_dropout_prob=config.state_dropout_prob,
        )

    def with_feature_positions(self, features: Tensor) -> Tensor:
        """features (B, S, D) plus the learned position of each token (unchanged without the table)."""
        table = self.feature_position_embedding
        if table is None:
            return features
        s = features.shape[1]
        if s > table.num_embeddings:
            raise ValueError(
                f"the video features have {s} tokens but feature_position_embedding_size is "
                f"{table.num_embeddings}; set it to at least {s}."
            )
        return features + table.weight[:s].to(features.dtype).unsqueeze(0)

    def velocity(
        self, noisy_actions: Tensor, buckets: Tensor, state_tokens: Tensor, features: Tensor
    ) -> Tensor:
        """Predicted velocity (B, H, A).

        Args:
            noisy_actions: (B, H, A) the chunk at flow time t.
            buckets: (B,) integer flow-time buckets floor(t * num_timestep_buckets).
            state_tokens: (B, 1, D) output of `state_encoder`.
            features: (B, S, cross_attention_dim) video DiT hidden states.
        """
        horizon = noisy_actions.shape[1]
        action_tokens = self.action_encoder(noisy_actions, buckets)
        positions = torch.arange(horizon, device=noisy_actions.device)
        action_tokens = action_tokens + self.position_embedding(positions).unsqueeze(0)
        tokens = torch.cat([state_tokens, action_tokens], dim=1)
        out = self.model(hidden_states=tokens, encoder_hidden_states=features, timestep=buckets)
        return self.action_decoder(out)[:, -horizon:]

    def loss_inputs(
        self, actions: Tensor, state: Tensor, features: Tensor, noise: Tensor, t: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Predicted and target velocities for the flow-matching loss.

        Args:
            actions: (N, H, A) clean (normalised, padded) actions.
            state: (N, S) padded state.
            features: (B, S_f, D_f) video features, with N a multiple of B: row i of the other inputs is
                conditioned on features[i % B] (`SharedContextAttnProcessor`).
            noise: (N, H, A) Gaussian noise.
            t: (N,) flow time (t=0 data, t=1 noise).
        Returns:
            (pred, target), each (N, H, A).
        """
        noisy = interpolate(actions, noise, t)
        buckets = time_to_bucket(t, self.num_timestep_buckets)
        features = self.with_feature_positions(features)
        state_tokens = self.state_encoder(state).unsqueeze(1)
        if self.training and self.state_dropout_prob > 0:
            # As GR00T N1.7: zero the state token of a random fraction of the rows, so that the head cannot
            # predict from the joints alone and must also read the video features.
            keep = torch.rand(state_tokens.shape[0], device=state_tokens.device) >= self.state_dropout_prob
            state_tokens = state_tokens * keep[:, None, None].to(state_tokens.dtype)
        pred = self.velocity(noisy, buckets, state_tokens, features)
        return pred, velocity_target(actions, noise)

    def flow_matching_loss(
        self,
        actions: Tensor,
        action_is_pad: Tensor | None,
        state: Tensor,
        features: Tensor,
        noise: Tensor | None,
        beta_draws: Tensor | None,
        cfg: DiT4DiTConfig,
    ) -> Tensor:
        """The masked action flow-matching loss, `num_action_noise_draws` (noise, time) draws per sample.

        Args:
            actions: (B, H, action_dim) normalised; action_is_pad: (B, H) bool or None.
            state: (B, max_state_dim) padded; features: (B, S_f, D_f).
            noise: (R * B, H, max_action_dim) or None (drawn); beta_draws: (R * B,) raw Beta draws or None.
        Returns:
            the MSE over the real action dims of the unpadded steps.
        """
        b, _, a = actions.shape
        actions = F.pad(actions.float(), (0, cfg.max_action_dim - a))
        mask = torch.zeros_like(actions, dtype=torch.bool)
        mask[..., :a] = True
        if action_is_pad is not None:
            mask &= ~action_is_pad.bool()[..., None]
        # R independent (noise, time) draws per sample; row i of the expanded batch is sample i % B. The
        # features stay (B, S_f, D_f): the cross-attention projects each sample's once.
        r = cfg.num_action_noise_draws
        actions, mask, state = actions.repeat(r, 1, 1), mask.repeat(r, 1, 1), state.repeat(r, 1)
        noise = torch.randn_like(actions) if noise is None else noise
        if beta_draws is not None:
            t = beta_draw_to_time(beta_draws, cfg.action_noise_s)
        else:
            t = sample_beta_time(
                b * r, actions.device, cfg.action_beta_alpha, cfg.action_beta_beta, cfg.action_noise_s
            )
        pred, target = self.loss_inputs(actions, state, features.to(actions.dtype), noise, t)
        return masked_mse(pred.float(), target, mask)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each DiT block in the backward pass instead of storing its activations
        (`fast_paths.CheckpointedBlock`: LeRobot's GR00T `DiT` never checkpoints by itself)."""
        fast_paths.install_block_checkpointing(self.model.transformer_blocks)

    def cross_attention_blocks(self) -> list[nn.Module]:
        """The DiT blocks that attend to the video features (even blocks when self-attention interleaves)."""
        blocks = self.model.transformer_blocks
        interleaved = self.model.config.interleave_self_attention
        return [b for i, b in enumerate(blocks) if not (interleaved and i % 2 == 1)]

    @torch.no_grad()
    def sample(
        self, state: Tensor, features: Tensor, noise: Tensor, num_steps: int, rtc_processor=None, **rtc_kwargs
    ) -> Tensor:
        """Integrate from noise (t=1) to an action chunk (t=0) with LeRobot's `euler_integrate`.

        Args:
            state: (B, S) padded state.
            features: (B, S_f, D_f) video features.
            noise: (B, H, A) the chunk at t = 1.
            rtc_processor: a LeRobot `RTCProcessor`; with it, `rtc_kwargs` (inference_delay,
                prev_chunk_left_over, execution_horizon) steer the chunk's prefix towards the previous chunk.
        Returns:
            (B, H, A) normalised actions.
        """
        state_tokens = self.state_encoder(state).unsqueeze(1)  # computed once for all steps
        features = self.with_feature_positions(features)  # added once for all steps

        def velocity(x_t: Tensor, t: Tensor) -> Tensor:
            buckets = sampling_time_to_bucket(t, self.num_timestep_buckets, num_steps)
            return self.velocity(x_t, buckets, state_tokens, features).to(x_t.dtype)

        # The features are the same for every Euler step of this chunk: their K/V are projected once, under a
        # key no other chunk uses (`fast_paths.KeyedOutput`).
        fast_paths.install_keyed_kv((b.attn1 for b in self.cross_attention_blocks()), self.feature_kv_key)
        with self.feature_kv_key.use(fast_paths.next_step_key("chunk")):
            return euler_integrate(
                velocity,
                noise,
                num_steps,
                rtc_processor=rtc_processor,
                rtc_enabled=rtc_processor is not None,
                **rtc_kwargs,
            )
