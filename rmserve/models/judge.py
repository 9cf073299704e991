"""Generative judges on the transformers backend: batched judgment generation and the answer-token read.

    [JudgePrompt] --reasoning: one batched HF generate (left padding; greedy, or per-row seeded sampling),
                   each row cut where its text first ends with the answer prefix (or at EOS / its budget)
                --the answer position: prompt + judgment (+ nothing: the prefix is in the prompt without
                   reasoning), one batched forward through RewardModel.pooled_hidden_items (per-row positions,
                   padding-independent) and the LM head -> log p(choice) over the whole vocabulary
                --> [Judgment]                              (models/judge_format.py turns it into a reward)

Sampling is done by a logits processor with one ``torch.Generator`` per row, seeded by that row's own seed:
a row's text does not depend on which other rows share its batch, and the same seed gives the same text.
A sampled row also draws its answer from the choice distribution (temperature applied) with the same
seed, so majority voting has something to count when a judge answers without reasoning.
A batch nobody waits for any more stops between decode steps: ``abandoned`` (the engine's flag, a plain
callable) is a stopping criterion that ends every row at once, and the answer read is skipped; it fires only
when every request in the batch has gone, so a live row never sees it.
Worker thread only (the engine's judge batches); the model is not thread-safe. ``judge_cases`` and
``compare_pairs`` run the same steps in process, without a server (the trainer's ``rmserve-train eval``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from ..errors import RMServeError
from ..rewards import sigmoid
from .judge_format import (
    JudgeConfig,
    UnparseableJudgment,
    aggregate,
    choice_token_ids,
    judge_prompt,
    pair_probability,
    read_judgment,
    second_is_better,
    vote_seed,
)
from .types import EncodedItem, JudgeDecoding, JudgePrompt, Judgment, ScoreItem


def judge_decoding(model) -> JudgeDecoding | None:
    """A judge checkpoint's decoding (JudgeConfigError if its section cannot work with this tokenizer); None
    without a ``judge`` section or without an LM head. The caller holds the tokenizer's lock."""
    config = JudgeConfig.of(model.extra_config)
    if config is None or not model.can_generate():
        return None
    prefix = model.tokenizer(config.answer_prefix, add_special_tokens=False)["input_ids"]
    return JudgeDecoding(config.answer_prefix, tuple(prefix), choice_token_ids(config, model.tokenizer),
                         config.reasoning, config.max_new_tokens)


class _SeededSampler(LogitsProcessor):
    """Replace a sampled row's scores by a one-hot of a token drawn with that row's generator (greedy
    decoding then picks it); greedy rows (seed None) are left alone."""

    def __init__(self, prompts: list[JudgePrompt], device: torch.device):
        self.rows = [
            (row, torch.Generator(device=device).manual_seed(p.seed), p.temperature)
            for row, p in enumerate(prompts) if p.seed is not None
        ]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, generator, temperature in self.rows:
            probs = torch.softmax(scores[row].float() / temperature, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator)
            scores[row] = torch.finfo(scores.dtype).min
            scores[row, token] = 0.0
        return scores


class _AnswerPrefixStop(StoppingCriteria):
    """A row is done once its generated text ends with the answer prefix or it has used its own budget."""

    def __init__(self, decode, start: int, prefix: str, budgets: list[int]):
        self.decode, self.start, self.prefix, self.budgets = decode, start, prefix, budgets

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        generated = input_ids[:, self.start:]
        done = [generated.shape[1] >= budget or self.decode(generated[row].tolist()).endswith(self.prefix)
                for row, budget in enumerate(self.budgets)]
        return torch.tensor(done, device=input_ids.device)


class _Abandoned(StoppingCriteria):
    """Every row is done once nobody waits for the batch (the engine's flag, polled once per decode step)."""

    def __init__(self, abandoned: Callable[[], bool]):
        self.abandoned = abandoned

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.abandoned(), dtype=torch.bool, device=input_ids.device)


def _cut(decode, tokens: list[int], prefix: str, budget: int, stop_ids: set[int]) -> tuple[list[int], bool]:
    """A row's generated tokens up to where it stopped, and whether that is the answer position."""
    for n in range(1, min(len(tokens), budget) + 1):
        if tokens[n - 1] in stop_ids:
            return tokens[: n - 1], False
        if decode(tokens[:n]).endswith(prefix):
            return tokens[:n], True
    return tokens[:budget], False


def _item(model, ids: list[int], prompt: JudgePrompt) -> EncodedItem:
    vision = dict(prompt.vision)
    vision.update(model.family.item_positions(ids, vision))
    return EncodedItem(input_ids=ids, vision=vision, image_keys=prompt.image_keys)


def _generate_inputs(model, items: list[EncodedItem]) -> dict:
    """A left-padded batch for HF generate (it derives positions from the mask, 3D ones for Qwen-VL)."""
    batch = model.collate(items, padding_side="left").to(model.device)
    kw = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    extra = {k: v for k, v in batch.model_inputs.items() if k != "position_ids"}
    if "image_grid_thw" in extra:  # Qwen-VL: without mm_token_type_ids the 3D positions are silently wrong
        extra["pixel_values"] = extra["pixel_values"].to(model.backbone.dtype)
        extra["mm_token_type_ids"] = (batch.input_ids == model.backbone.config.image_token_id).int()
    elif "image_sizes" in extra:  # LLaVA-OneVision
        extra["pixel_values"] = extra["pixel_values"].to(model.backbone.dtype)
    return {**kw, **extra}


def _judgment_tokens(model, prompts: list[JudgePrompt], decoding: JudgeDecoding,
                     abandoned: Callable[[], bool] | None) -> list[tuple[list[int], bool]]:
    """Per prompt: the generated judgment's tokens and whether it reached the answer prefix."""
    if not decoding.reasoning:
        return [([], True) for _ in prompts]
    tok = model.tokenizer
    budgets = [max(0, min(decoding.max_new_tokens, model.max_length - len(p.prompt_ids) - 1)) for p in prompts]
    if max(budgets) == 0:
        return [([], False) for _ in prompts]
    inputs = _generate_inputs(model, [_item(model, list(p.prompt_ids), p) for p in prompts])
    start = inputs["input_ids"].shape[1]
    stops = [_AnswerPrefixStop(model.decode_text, start, decoding.answer_prefix, budgets)]
    if abandoned is not None:
        stops.append(_Abandoned(abandoned))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = model.backbone.generate(
        **inputs, do_sample=False, max_new_tokens=max(budgets), pad_token_id=pad_id,
        logits_processor=LogitsProcessorList([_SeededSampler(prompts, model.device)]),
        stopping_criteria=StoppingCriteriaList(stops),
    )
    eos = model.backbone.generation_config.eos_token_id
    stop_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else []) | {pad_id}
    return [_cut(model.decode_text, out[row, start:].tolist(), decoding.answer_prefix, budgets[row], stop_ids)
            for row in range(len(prompts))]


@torch.inference_mode()
def generate_judgments(model, prompts: list[JudgePrompt], decoding: JudgeDecoding, *,
                       abandoned: Callable[[], bool] | None = None) -> list[Judgment]:
    """``ServedModel.generate_judgments`` for a ``RewardModel`` whose backbone can generate."""
    if not prompts:
        return []
    generated = _judgment_tokens(model, prompts, decoding, abandoned)
    gone = abandoned is not None and abandoned()  # cut short, or nobody left to read the answers: skip the read
    rows = [] if gone else [i for i, (_, found) in enumerate(generated) if found]
    logprobs: dict[int, list[float]] = {}
    if rows:
        items = [_item(model, list(prompts[i].prompt_ids) + generated[i][0], prompts[i]) for i in rows]
        hidden = model.pooled_hidden_items(items)  # (B, H) at each sequence's last token: the answer position
        head = model.backbone.get_output_embeddings()
        logits = head(hidden.to(head.weight.dtype)).float()
        chosen = torch.log_softmax(logits, dim=-1)[:, list(decoding.choice_ids)]
        logprobs = {i: chosen[k].tolist() for k, i in enumerate(rows)}
    judgments = []
    for i, (prompt, (tokens, _)) in enumerate(zip(prompts, generated, strict=True)):
        choice_lp = logprobs.get(i)
        sampled = None
        if prompt.seed is not None and choice_lp is not None:
            scaled = torch.softmax(torch.tensor(choice_lp) / prompt.temperature, dim=-1).tolist()
            sampled = random.Random(f"{prompt.seed}:answer").choices(range(len(scaled)), weights=scaled)[0]
        judgments.append(Judgment(text=model.decode_text(tokens).strip(), choice_logprobs=choice_lp,
                                  completion_tokens=len(tokens), sampled_choice=sampled))
    return judgments


# ── in process (no server): what `rmserve-train eval` calls ─────────────────────────────────────────


@dataclass(frozen=True)
class PairResult:
    """A compared pair: ``prob_a_better``, and how it was reached. A pairwise judge gives ``p_ab`` (P(A), a shown
    first) and ``p_ba`` (P(B), b shown first), prob = their mean; a pointwise judge gives ``reward_a`` and
    ``reward_b``, prob = sigmoid(reward_a - reward_b), as /v1/compare does."""

    prob_a_better: float
    p_ab: float | None = None
    p_ba: float | None = None
    reward_a: float | None = None
    reward_b: float | None = None


def judge_cases(model, cases: Sequence[tuple[ScoreItem, Sequence[str]]], *, votes: int | None = None, seed: int = 0,
                temperature: float = 1.0, how: str = "mean", batch_size: int = 16) -> list[float | RMServeError]:
    """Each case's reward (pointwise score, or pairwise P(first shown better)) from ``model``'s judgments, the
    server's definitions (models/judge_format.py): ``cases`` are (the conversation, the responses shown).
    ``votes`` None: one greedy judgment; k: k sampled ones aggregated by ``how`` (the server's ``voting``). A case
    without a readable answer gives its error (``UnparseableJudgment``) in its place, never a number."""
    config = JudgeConfig.of(model.extra_config)
    decoding = model.judge_decoding()
    if config is None or decoding is None:
        raise ValueError(f"model {model.name!r} is not a generative judge (no judge section, or no LM head)")
    prompts = []
    for item, shown in cases:
        prompt = judge_prompt(model, config, decoding, item, shown)
        prompts += [prompt] if votes is None else [
            JudgePrompt(prompt.prompt_ids, prompt.vision, prompt.images, prompt.image_keys, vote_seed(seed, j),
                        temperature) for j in range(votes)]
    judgments = []
    for i in range(0, len(prompts), batch_size):
        judgments += model.generate_judgments(prompts[i:i + batch_size], decoding)
    k = len(prompts) // max(1, len(cases))
    out: list[float | RMServeError] = []
    for c in range(len(cases)):
        try:
            out.append(aggregate(config, [read_judgment(config, j) for j in judgments[c * k:(c + 1) * k]], how))
        except UnparseableJudgment as exc:
            out.append(exc)
    return out


def compare_pairs(model, pairs: Sequence[tuple[ScoreItem, str, str]], **options) -> list[PairResult | RMServeError]:
    """``(conversation, response_a, response_b)`` -> P(a better) as /v1/compare computes it for this judge."""
    config = JudgeConfig.of(model.extra_config)
    if config is None:
        raise ValueError(f"model {model.name!r} is not a generative judge")
    if config.mode == "pointwise":
        rewards = judge_cases(model, [(item, (r,)) for item, a, b in pairs for r in (a, b)], **options)
        results: list[PairResult | RMServeError] = []
        for ra, rb in zip(rewards[::2], rewards[1::2], strict=True):
            bad = next((r for r in (ra, rb) if isinstance(r, RMServeError)), None)
            results.append(bad or PairResult(sigmoid(ra - rb), reward_a=ra, reward_b=rb))
        return results
    firsts = judge_cases(model, [(item, o) for item, a, b in pairs for o in ((a, b), (b, a))], **options)
    results = []
    for ab, ba in zip(firsts[::2], firsts[1::2], strict=True):
        bad = next((r for r in (ab, ba) if isinstance(r, RMServeError)), None)
        results.append(bad or PairResult(pair_probability(ab, second_is_better(ba)), p_ab=ab,
                                         p_ba=second_is_better(ba)))
    return results


def warm_up_judge(model, images: list) -> None:
    """One judgment read at once (no reasoning): the answer-position forward's first-call costs."""
    decoding = model.judge_decoding()
    ids, vision, _ = model.encode_prompt(ScoreItem(prompt="warm up", response="", images=images))
    direct = JudgeDecoding(decoding.answer_prefix, decoding.prefix_ids, decoding.choice_ids, False, 1)
    model.generate_judgments([JudgePrompt(ids + list(decoding.prefix_ids), vision, images)], direct)


__all__ = ["PairResult", "compare_pairs", "generate_judgments", "judge_cases", "judge_decoding", "warm_up_judge"]
