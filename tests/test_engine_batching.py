"""Batch selection policy (pure function): size cap, padded-token budget, length sorting, no starvation."""

from rmserve.engine import padded_tokens, select_batch


def test_empty_queue_selects_nothing():
    assert select_batch([], max_batch_size=4, max_batch_tokens=100) == ([], False)


def test_takes_everything_when_it_fits_and_is_not_full():
    idx, full = select_batch([5, 3, 9], max_batch_size=8, max_batch_tokens=1000)
    assert sorted(idx) == [0, 1, 2] and not full
    assert [[5, 3, 9][i] for i in idx] == [3, 5, 9]  # shortest first


def test_size_cap_closes_a_full_batch_with_the_oldest_inside():
    lengths = [50] + [10] * 20
    idx, full = select_batch(lengths, max_batch_size=4, max_batch_tokens=10_000)
    assert full and len(idx) == 4 and 0 in idx


def test_token_budget_counts_padding():
    # 3 items of 100 tokens padded = 300 slots; a 4th would make 400 > 350.
    idx, full = select_batch([100, 100, 100, 100], max_batch_size=16, max_batch_tokens=350)
    assert len(idx) == 3 and full
    assert padded_tokens([100, 100, 100]) == 300


def test_length_sorting_groups_similar_lengths():
    # Oldest is 100 tokens; the queue mixes ~100-token and ~10-token items.
    lengths = [100, 10, 98, 11, 101, 12, 99, 9]
    idx, full = select_batch(lengths, max_batch_size=4, max_batch_tokens=10_000)
    assert full
    assert sorted(lengths[i] for i in idx) == [98, 99, 100, 101]


def test_a_long_item_waiting_longest_is_never_starved():
    lengths = [400] + [5] * 50
    idx, _ = select_batch(lengths, max_batch_size=8, max_batch_tokens=1000)
    assert 0 in idx
    assert padded_tokens([lengths[i] for i in idx]) <= 1000


def test_oversized_oldest_item_runs_alone():
    idx, full = select_batch([5000, 10, 10], max_batch_size=8, max_batch_tokens=1000)
    assert idx == [0] and full
