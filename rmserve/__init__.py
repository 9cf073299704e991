"""rmserve: a batched reward-model server for multimodal RLHF."""

__version__ = "0.1.0"
