"""DiT4DiT for LeRobot: a Cosmos-Predict2.5 video DiT and a GR00T-style action DiT (arXiv 2603.10448)."""

from .configuration_dit4dit import DiT4DiTConfig
from .modeling_dit4dit import DiT4DiTPolicy
from .processor_dit4dit import make_dit4dit_pre_post_processors

__all__ = ["DiT4DiTConfig", "DiT4DiTPolicy", "make_dit4dit_pre_post_processors"]
