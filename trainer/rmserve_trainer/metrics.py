"""Small metrics the trainers log (pairwise accuracy lives in eval.py, which scores benchmarks)."""

from __future__ import annotations


def auroc(scores: list[float], labels: list[float]) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties 1/2.

    Mann-Whitney U statistic over average ranks; NaN when one class is missing.
    """
    if len(scores) != len(labels):
        raise ValueError("scores and labels differ in length")
    n_pos = sum(1 for y in labels if y > 0.5)
    n_neg = len(labels) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # tied scores share their average rank (1-based)
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y > 0.5)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
