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
    """(B, L) mask -> (B, L) positions 0..n-1 over the real tokens; pads before them get 0, pads after them
    continue the count (n, n+1, ...).

    A padded position's id changes nothing a real token computes. Continuing rather than restarting at 0
    keeps a right-padded row one unbroken sequence: Hugging Face reads a position that drops back to 0 as the
    start of a packed sequence and then builds a full attention mask, which is what a forward without a
    padding mask (``causal_decoder``) is there to avoid."""
    mask = attention_mask.long()
    leading = (mask.cumsum(-1) == 0).sum(-1, keepdim=True)  # pads before the row's first real token
    return (torch.arange(mask.shape[-1], device=mask.device) - leading).clamp(min=0)


def causal_decoder(base_model) -> bool:
    """Whether the text stack of ``base_model`` attends causally in every attention layer.

    Then a right-padded row's real tokens attend only to earlier real tokens under the causal mask alone, and
    the padding mask changes nothing they compute (the pads' own outputs are never read). Encoders (BERT-style
    attention declares ``is_causal = False``; DeBERTa declares nothing) keep their masks."""
    text_stack = getattr(base_model, "language_model", None)
    text_stack = base_model if text_stack is None else text_stack
    flags = [m.is_causal for m in text_stack.modules() if isinstance(getattr(m, "is_causal", None), bool)]
    return bool(flags) and all(flags)
