"""Reward-model losses, one small function each. Shapes: B pairs, N = 2B responses, L tokens, V vocab."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def bradley_terry(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None) -> torch.Tensor:
    """``-log sigmoid(r_c - r_r - m)``, averaged over pairs.

    Bradley & Terry (1952), "Rank Analysis of Incomplete Block Designs"; as a reward-model loss in
    Ouyang et al. (2022), "Training language models to follow instructions with human feedback"
    (InstructGPT). The margin ``m`` is Llama 2's (Touvron et al., 2023): pairs rated further apart
    must be separated by more. chosen, rejected, margin: (B,).
    """
    diff = chosen.float() - rejected.float()
    if margin is not None:
        diff = diff - margin.float()
    return -F.logsigmoid(diff).mean()


def reward_centering(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """``mean((r_c + r_r)^2)``: pulls each pair's mean reward towards zero (BT is shift-invariant).

    Eisenstein et al. (2023), "Helping or Herding? Reward Model Ensembles Mitigate but do not
    Eliminate Reward Hacking" (the auxiliary centering loss); MM-RLHF (Zhang et al., 2025) uses
    it with weight 0.01. chosen, rejected: (B,).
    """
    return ((chosen.float() + rejected.float()) ** 2).mean()


def lm_cross_entropy(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token cross-entropy on the labelled tokens only (critique / response tokens).

    MM-RLHF (Zhang et al., 2025), "MM-RLHF: The Next Step Forward in Multimodal LLM Alignment":
    the critique-based reward model is trained with a language-modelling loss on reference
    critiques next to the BT loss; with the chosen response as target it is the SFT regulariser
    of Yang et al. (2024), "Regularizing Hidden States Enables Learning Generalizable Reward Model
    for LLMs" (GRM). Only labelled positions go through the LM head (vocab-sized logits for the
    prompt would be wasted). hidden: (N, L, H) final hidden states; labels: (N, L), -100 = ignore.
    weights: (N, L) per-target weights (e.g. a critique's verdict token counted several times), or None;
    the loss stays a sum over the labelled tokens divided by their number, so a weight of 1 everywhere
    is the plain mean and a weight above 1 adds emphasis without diluting the other tokens.
    """
    targets = labels[:, 1:]  # token t is predicted at position t - 1
    mask = targets != IGNORE_INDEX  # (N, L-1)
    if not mask.any():
        return hidden.sum() * 0.0  # keeps the graph (and DDP's gradient hooks) intact
    logits = lm_head(hidden[:, :-1][mask])  # (T, V) for the T labelled tokens
    if weights is None:
        return F.cross_entropy(logits.float(), targets[mask])
    per_token = F.cross_entropy(logits.float(), targets[mask], reduction="none")  # (T,)
    return (per_token * weights[:, 1:][mask].float()).sum() / mask.sum()


def safety_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Multi-label binary cross-entropy over hazard categories, on labelled responses only.

    The classifier form of Llama Guard's taxonomy (Inan et al., 2023, "Llama Guard: LLM-based
    Input-Output Safeguard for Human-AI Conversations"): one independent sigmoid per category, so
    a response can fall under several. logits, targets: (N, C); mask: (N,) 1 = labelled.
    """
    per_row = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none").mean(-1)
    return (per_row * mask).sum() / mask.sum().clamp(min=1.0)


def attribute_mse(pred: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the given attribute scores (multi-objective regression heads).

    Wang et al. (2024), "Interpretable Preferences via Multi-Objective Reward Modeling and
    Mixture-of-Experts" (ArmoRM), trained on HelpSteer attributes (Wang et al., 2023).
    pred, targets, mask: (N, K); mask 1 = a target is given.
    """
    err = (pred.float() - targets.float()) ** 2
    return (err * mask).sum() / mask.sum().clamp(min=1.0)
