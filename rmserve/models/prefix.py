"""Shared-prefix scoring: run a GRPO group's prompt (+ images) once, then its responses on top.

In GRPO every prompt comes with G sampled responses, so most scored tokens are the same
prefix again and again. Here the prefixes of several groups run once, left-padded, into a
KV cache (vision encoder included); the cache rows are then repeated per response and the
responses run as one right-padded batch with a mask over prefix + suffix and explicit
positions (each row continues exactly where its own unpadded prefix ended; for Qwen-VL the
3D M-RoPE ids of the full sequence are sliced). Each response's reward equals scoring its
full sequence alone (checked in tests/test_models_prefix.py).
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections import defaultdict

import torch
from transformers import DynamicCache

from .chunking import ChunkPolicy, plan_chunks
from .pooling import text_position_ids
from .types import EncodedItem


def group_key(item: EncodedItem) -> tuple | None:
    """Items with equal keys have identical prompt tokens and images; None = cannot share."""
    return item.prefix_key


def find_groups(items: list[EncodedItem], min_group: int = 2) -> tuple[list[list[int]], list[int]]:
    """Split indices into shareable groups (>= min_group members) and the rest."""
    by_key: dict[tuple, list[int]] = defaultdict(list)
    rest = []
    for i, it in enumerate(items):
        key = group_key(it)
        if key is None:
            rest.append(i)
        else:
            by_key[key].append(i)
    groups = []
    for members in by_key.values():
        if len(members) >= min_group:
            groups.append(members)
        else:
            rest.extend(members)
    return groups, sorted(rest)


def _prefix_item(item: EncodedItem) -> EncodedItem:
    vision = dict(item.vision)
    if "position_ids" in vision:
        vision["position_ids"] = vision["position_ids"][:, : item.prefix_len]
    return EncodedItem(input_ids=item.input_ids[: item.prefix_len], vision=vision, image_keys=item.image_keys,
                       video_keys=item.video_keys, prefix_len=item.prefix_len)


@functools.cache
def cache_argument(forward_owner: type) -> str:
    """The backbone forward's name for the KV cache: ``cache`` (transformers 5.2x; ``past_key_values`` is a
    deprecated alias there) or ``past_key_values`` (4.x up to 5.19, where ``cache=`` would land in ``**kwargs``
    and be silently ignored: every response would then run without its prefix)."""
    parameters = inspect.signature(forward_owner.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def pooled_hidden_shared(model, items: list[EncodedItem], groups: list[list[int]],
                         policy: ChunkPolicy | None = None) -> torch.Tensor:
    """(N, H) pooled hidden states for ``items`` in ``groups`` (row order = concatenated groups).

    With a ``policy`` (rmserve.models.chunking) the prefixes run in length-sorted calls and each
    call's responses are split again by length, so a group's short responses are not padded to
    its longest (uniform 32-256-token responses waste ~40% of a single padded suffix pass).
    """
    rows = [i for g in groups for i in g]
    position = {i: r for r, i in enumerate(rows)}
    out = torch.empty((len(rows), model.hidden_size), device=model.device)
    prefix_lens = [items[g[0]].prefix_len for g in groups]
    prefix_calls = plan_chunks(prefix_lens, policy) if policy else [list(range(len(groups)))]
    for call in prefix_calls:
        call_groups = [groups[gi] for gi in call]
        cache, prefix_mask = _run_prefixes(model, items, call_groups)
        call_rows = [(gi, i) for gi, g in enumerate(call_groups) for i in g]
        suffix_lens = [items[i].num_tokens - items[i].prefix_len for _, i in call_rows]
        suffix_calls = plan_chunks(suffix_lens, policy) if policy else [list(range(len(call_rows)))]
        for k, chunk in enumerate(suffix_calls):
            # The suffix pass appends to the cache it is given; all but the last call get a copy.
            chunk_cache = copy.deepcopy(cache) if k < len(suffix_calls) - 1 else cache
            chunk_rows = [call_rows[c] for c in chunk]
            pooled = _run_suffixes(model, items, chunk_rows, chunk_cache, prefix_mask)
            out[[position[i] for _, i in chunk_rows]] = pooled.to(out.dtype)
    return out


def _run_prefixes(model, items: list[EncodedItem], groups: list[list[int]]) -> tuple[DynamicCache, torch.Tensor]:
    """One left-padded pass over the groups' prompts (+ images): the KV cache and the prefix mask."""
    prefixes = [_prefix_item(items[g[0]]) for g in groups]
    # Each prefix's images serve its group's len(g) responses (what the vision cache counts as uses).
    prefix_batch = model.collate(prefixes, padding_side="left", rows_per_item=[len(g) for g in groups]).to(model.device)
    cache = DynamicCache(config=model.backbone.config)
    with_cache = {cache_argument(type(model.base_model())): cache, "use_cache": True}
    model.base_model()(input_ids=prefix_batch.input_ids, attention_mask=prefix_batch.attention_mask,
                       **with_cache, **model.backbone_inputs(prefix_batch))
    return cache, prefix_batch.attention_mask.cpu()


def _run_suffixes(model, items: list[EncodedItem], rows: list[tuple[int, int]], cache: DynamicCache,
                  prefix_mask: torch.Tensor) -> torch.Tensor:
    """Responses ``rows`` = (group index in the cache, item index) as one right-padded pass on the cache."""
    device = model.device
    group_of_row = torch.tensor([gi for gi, _ in rows])
    cache.batch_select_indices(group_of_row.to(device))  # (n, heads, P, d): one prefix copy per response
    suffixes = [items[i].input_ids[items[i].prefix_len:] for _, i in rows]
    s_len = max(len(s) for s in suffixes)
    n = len(rows)
    pad_id = model.tokenizer.pad_token_id or 0
    suffix_ids = torch.full((n, s_len), pad_id, dtype=torch.long)
    suffix_mask = torch.zeros((n, s_len), dtype=torch.long)
    for r, s in enumerate(suffixes):
        suffix_ids[r, : len(s)] = torch.tensor(s)
        suffix_mask[r, : len(s)] = 1
    row_prefix_mask = prefix_mask[group_of_row]
    full_mask = torch.cat([row_prefix_mask, suffix_mask], dim=1)

    if "position_ids" in items[rows[0][1]].vision:  # Qwen-VL: slice each sequence's own 3D ids
        position_ids = torch.zeros((3, n, s_len), dtype=torch.long)
        for r, (_, i) in enumerate(rows):
            pos = items[i].vision["position_ids"][:, items[i].prefix_len:]
            position_ids[:, r, : pos.shape[1]] = pos
    else:  # 1D: continue from the unpadded prefix length
        prefix_lens = row_prefix_mask.sum(dim=1, keepdim=True)
        position_ids = prefix_lens + text_position_ids(suffix_mask)
    with_cache = {cache_argument(type(model.base_model())): cache, "use_cache": True}
    out = model.base_model()(input_ids=suffix_ids.to(device), attention_mask=full_mask.to(device),
                             position_ids=position_ids.to(device), **with_cache)
    hidden = out.last_hidden_state  # (n, S, H)
    last = suffix_mask.sum(dim=1) - 1
    return hidden[torch.arange(n, device=device), last.to(device)]


__all__ = ["find_groups", "group_key", "pooled_hidden_shared"]
