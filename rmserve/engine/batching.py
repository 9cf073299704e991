"""Batch selection: which waiting items go into the next forward pass.

Pure functions over token lengths, so the policy is testable without threads or a model.

The transformers backend pads every row to the longest one, so a batch costs
``max_len * n`` token slots (the "padded tokens" the ``max_batch_tokens`` budget limits).
Selection therefore works on items sorted by length: starting from the **oldest** waiting
item (always included, so nothing starves), it grows a window of neighbouring lengths,
each step taking whichever neighbour wastes fewer padding slots, until the batch hits
``max_batch_size`` items or the token budget, or nothing is left.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def padded_tokens(lengths: Sequence[int]) -> int:
    """Token slots a right/left-padded batch of these lengths occupies."""
    return max(lengths, default=0) * len(lengths)


def select_batch(
    lengths: Sequence[int], *, max_batch_size: int, max_batch_tokens: int
) -> tuple[list[int], bool]:
    """Pick a batch from waiting items given in arrival order (``lengths[0]`` is the oldest).

    Returns ``(indices, full)``: indices into ``lengths``, shortest first, and whether the
    batch stopped growing because of a limit (a full batch should run now, without waiting
    for more arrivals) rather than because every waiting item was taken.
    The oldest item is taken even if it alone exceeds the budget (the engine refuses such
    items at submission, so this only guards against misuse).
    """
    n = len(lengths)
    if n == 0:
        return [], False
    order = sorted(range(n), key=lambda i: (lengths[i], i))  # by length, ties by age
    pos = order.index(0)
    lo, hi = pos, pos + 1  # window order[lo:hi] is the batch
    max_len, count = lengths[0], 1
    while True:
        if count >= max_batch_size:
            return order[lo:hi], True
        options = []  # (padding waste, tie-break age, side)
        if lo > 0:
            left = order[lo - 1]
            if max_len * (count + 1) <= max_batch_tokens:
                options.append((max_len - lengths[left], left, -1))
        if hi < n:
            right = order[hi]
            if lengths[right] * (count + 1) <= max_batch_tokens:
                options.append(((lengths[right] - max_len) * count, right, +1))
        if not options:
            # Either everything is taken (not full) or no neighbour fits the budget (full).
            return order[lo:hi], (lo > 0 or hi < n)
        _, _, side = min(options)
        if side < 0:
            lo -= 1
        else:
            max_len = lengths[order[hi]]
            hi += 1
        count += 1


def select_grouped_batch(
    lengths: Sequence[int],
    prefix_lens: Sequence[int],
    groups: Sequence[Hashable | None],
    *,
    max_batch_size: int,
    max_batch_tokens: int,
) -> tuple[list[int], bool]:
    """Like ``select_batch``, for a model that runs a shared prefix once (GRPO groups).

    Items with the same ``groups`` key (same prompt ids and images) form a unit, ordered by its
    oldest member; units go in whole, oldest first, while the batch has room. A unit of n costs
    ``prefix + n * longest response`` token slots (prefix pass + suffix pass), a lone item its
    padded length, so a group of 8 is budgeted as what it really costs. When nothing in the queue
    shares a prefix, this is exactly ``select_batch`` (length-sorted, least padding).
    """
    units: dict[Hashable, list[int]] = {}
    for i, key in enumerate(groups):
        units.setdefault(("single", i) if key is None else ("group", key), []).append(i)
    if all(len(members) < 2 for members in units.values()):
        return select_batch(lengths, max_batch_size=max_batch_size, max_batch_tokens=max_batch_tokens)

    chosen: list[int] = []
    shared_cost = 0
    single_max, singles = 0, 0
    for members in units.values():  # dicts keep insertion order: oldest member first
        room = max_batch_size - len(chosen)
        if room <= 0:
            return chosen, True
        take = members[:room]
        if len(take) >= 2:
            suffix = max(lengths[i] - prefix_lens[i] for i in take)
            cost = shared_cost + prefix_lens[take[0]] + len(take) * suffix + single_max * singles
            new_single_max, new_singles = single_max, singles
        else:
            new_single_max, new_singles = max(single_max, lengths[take[0]]), singles + 1
            cost = shared_cost + new_single_max * new_singles
        if chosen and cost > max_batch_tokens:
            return chosen, True
        chosen.extend(take)
        if len(take) >= 2:
            shared_cost += prefix_lens[take[0]] + len(take) * suffix
        single_max, singles = new_single_max, new_singles
        if len(take) < len(members):
            return chosen, True
    return chosen, len(chosen) >= max_batch_size
