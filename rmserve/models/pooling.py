"""Last-non-pad-token pooling and padding-independent position ids.

The index comes from the attention mask, never "the last position": with left padding the
last position is right, with right padding it is a pad token. Position ids are built per
row from the mask so that a padded row sees exactly the positions it would see alone.
"""

from __future__ import annotations

import torch


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) 0/1 mask -> (B,) index of each row's last real token (left or right padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=1)


def pool_last(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L, H) hidden states -> (B, H) at each row's last real token."""
    idx = last_token_index(attention_mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


def text_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) mask -> (B, L) positions 0..n-1 over the real tokens (pads get 0)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp(min=0) * attention_mask.long()
