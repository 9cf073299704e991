"""Reward, attribute and safety heads that read one pooled hidden state per sequence.

Heads run in float32 whatever the backbone dtype: a bf16 MLP on a bf16 hidden state loses
about two decimal digits of the reward, which breaks training/serving parity at 1e-4.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

ACTIVATIONS = {"silu": nn.SiLU, "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}
HEAD_KINDS = ("linear", "mlp")
HEAD_ROLES = ("reward", "attributes", "safety")


@dataclass
class HeadSpec:
    """How to build one head.

    kind: ``linear`` (H -> out) or ``mlp`` (H -> width -> ... -> out, ``layers`` Linear layers in all;
    BaseReward found 2 layers with SiLU best; MM-RLHF uses width=H with tanh).
    labels: output names for ``attributes`` / ``safety`` heads (one output per label); a reward head has none.
    """

    kind: str = "mlp"
    width: int | None = None  # None -> the backbone's hidden size
    activation: str = "silu"
    layers: int = 2
    bias: bool = True
    labels: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"head kind {self.kind!r} is not one of {HEAD_KINDS}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"head activation {self.activation!r} is not one of {sorted(ACTIVATIONS)}")
        if self.kind == "mlp" and self.layers < 2:
            raise ValueError("an mlp head needs layers >= 2 (use kind='linear' for one layer)")

    @property
    def out_features(self) -> int:
        return len(self.labels) if self.labels else 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> HeadSpec:
        return cls(**d)


class Head(nn.Module):
    """One head: ``(B, H) -> (B, out)``. Layer names are stable (they are checkpoint keys)."""

    def __init__(self, spec: HeadSpec, hidden_size: int):
        super().__init__()
        self.spec = spec
        if spec.kind == "linear":
            self.layers = nn.ModuleList([nn.Linear(hidden_size, spec.out_features, bias=spec.bias)])
        else:
            width = spec.width or hidden_size
            dims = [hidden_size] + [width] * (spec.layers - 1) + [spec.out_features]
            self.layers = nn.ModuleList(
                nn.Linear(d_in, d_out, bias=spec.bias) for d_in, d_out in zip(dims[:-1], dims[1:], strict=True)
            )
        self.act = ACTIVATIONS[spec.activation]()

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = pooled.float()
        for i, layer in enumerate(self.layers):
            if i:
                x = self.act(x)
            x = layer(x)
        return x  # (B, out)


def build_heads(specs: dict[str, HeadSpec], hidden_size: int, *, reward_required: bool = True) -> nn.ModuleDict:
    """``reward_required=False``: a generative judge, whose reward is read from its judgments (no heads needed)."""
    for name in specs:
        if name not in HEAD_ROLES:
            raise ValueError(f"head name {name!r} is not one of {HEAD_ROLES}")
    if reward_required and "reward" not in specs:
        raise ValueError("a reward model needs a 'reward' head (or a 'judge' section: a generative judge)")
    for name in ("attributes", "safety"):
        if name in specs and not specs[name].labels:
            raise ValueError(f"the {name!r} head needs labels (one name per output)")
    return nn.ModuleDict({name: Head(spec, hidden_size) for name, spec in specs.items()}).float()
