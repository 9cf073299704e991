"""Generative judges on vLLM: ``ServedModel.generate_judgments`` with vLLM as the generation engine.

    [JudgePrompt] --reasoning: one vLLM request per prompt (greedy, or sampled with the prompt's seed), stepped
                   until its text ends with the answer prefix at a token boundary, an end-of-sequence token,
                   or its budget (the transformers path's rule, models/judge.py)
                --the answer read: prompt + judgment, one more token with ``logprob_token_ids`` = the choices:
                   log p(choice) over the whole vocabulary at the answer position (raw logits, temperature 1,
                   as models/judge.py reads them)
                --> [Judgment]                              (models/judge_format.py turns it into a reward)

Prefix caching (``VllmSettings.enable_prefix_caching``, on by default) does the sharing: the k votes of an
item are k requests with identical prompt ids, so its prompt (and images) is computed once; the two orders
of a pair share the template's head; the answer read after a reasoning judgment reuses the KV of the prompt
and of the judgment just generated.

Budgets, stop tokens and the sampled answer of a vote without reasoning follow models/judge.py exactly, so
greedy judgments are the same on both backends (tests/vllm/test_vllm_judge.py). Sampled judgments are
deterministic per seed on each backend but differ between them (different random streams).
A batch nobody waits for any more (``abandoned``, the engine's flag: every request in it cancelled, failed or
past its deadline) is aborted between engine steps: its vLLM requests are aborted, the answer read is skipped.
Worker thread only (the engine's judge batches, engine/judging.py), like VllmRewardModel.generate_ids. Loaded
by models/vllm_backend.py's ``load_vllm_reward_model`` for a checkpoint with a judge section: the served
model's ``generate_judgments`` is this class's.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Any

import torch

from .reward_model import RewardModel
from .types import JudgeDecoding, JudgePrompt, Judgment


class VllmJudge:
    """Judgments from a vLLM generate-runner engine; ``encoder`` (a weightless RewardModel) gives the budgets,
    stop tokens and text decoding the transformers path uses."""

    def __init__(self, encoder: RewardModel, llm, *, sampling_params_cls=None):
        if sampling_params_cls is None:
            from vllm import SamplingParams

            sampling_params_cls = SamplingParams
        self.encoder = encoder
        self.llm = llm
        self._params = sampling_params_cls
        self._request_ids = itertools.count()
        tok = encoder.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        eos = encoder.backbone.generation_config.eos_token_id if encoder.backbone.generation_config else None
        # models/judge.py: a row ends at the backbone's EOS or at padding (HF pads a finished row).
        self.stop_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else []) | {self.pad_id}

    @staticmethod
    def _prompt(ids: list[int], prompt: JudgePrompt) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt_token_ids": list(ids)}
        if prompt.images:  # vLLM's processor makes the pixels for the placeholder tokens already in the ids
            out["multi_modal_data"] = {"image": list(prompt.images)}
        return out

    def generate_judgments(self, prompts: list[JudgePrompt], decoding: JudgeDecoding, *,
                           abandoned: Callable[[], bool] | None = None) -> list[Judgment]:
        if not prompts:
            return []
        generated = (self._judgment_tokens(prompts, decoding, abandoned) if decoding.reasoning
                     else [([], True)] * len(prompts))
        gone = abandoned is not None and abandoned()  # cut short, or nobody left to read the answers: skip the read
        rows = [] if gone else [i for i, (_, found) in enumerate(generated) if found]
        logprobs = dict(zip(rows, self._choice_logprobs([list(prompts[i].prompt_ids) + generated[i][0] for i in rows],
                                                        [prompts[i] for i in rows], decoding), strict=True))
        out = []
        for i, (prompt, (tokens, _)) in enumerate(zip(prompts, generated, strict=True)):
            choice_lp = logprobs.get(i)
            sampled = None
            if prompt.seed is not None and choice_lp is not None:  # the same draw as models/judge.py
                scaled = torch.softmax(torch.tensor(choice_lp) / prompt.temperature, dim=-1).tolist()
                sampled = random.Random(f"{prompt.seed}:answer").choices(range(len(scaled)), weights=scaled)[0]
            out.append(Judgment(text=self.encoder.decode_text(tokens).strip(), choice_logprobs=choice_lp,
                                completion_tokens=len(tokens), sampled_choice=sampled))
        return out

    def _choice_logprobs(self, sequences: list[list[int]], prompts: list[JudgePrompt],
                         decoding: JudgeDecoding) -> list[list[float]]:
        """log p(choice) at the position after each sequence: one greedy token, logprobs of the choice ids."""
        if not sequences:
            return []
        params = self._params(temperature=0.0, max_tokens=1, detokenize=False,
                              logprob_token_ids=list(decoding.choice_ids))
        outputs = self.llm.generate([self._prompt(ids, p) for ids, p in zip(sequences, prompts, strict=True)],
                                    params, use_tqdm=False)
        result = []
        for out in outputs:
            position = out.outputs[0].logprobs[0]  # {token id: Logprob} for the choices (+ the greedy token)
            result.append([float(position[c].logprob) for c in decoding.choice_ids])
        return result

    def _judgment_tokens(self, prompts: list[JudgePrompt], decoding: JudgeDecoding,
                         abandoned: Callable[[], bool] | None = None) -> list[tuple[list[int], bool]]:
        """Per prompt: the judgment's tokens and whether it reached the answer prefix (models/judge.py's ``_cut``
        rule, applied as tokens arrive so a row stops as soon as it reaches the prefix). Once ``abandoned``
        fires, the rows still generating are aborted and end where they are (not at the answer prefix)."""
        max_length = self.encoder.max_length
        budgets = [max(0, min(decoding.max_new_tokens, max_length - len(p.prompt_ids) - 1)) for p in prompts]
        result: list[tuple[list[int], bool] | None] = [None] * len(prompts)
        engine = self.llm.llm_engine
        live: dict[str, int] = {}
        for i, (prompt, budget) in enumerate(zip(prompts, budgets, strict=True)):
            if budget == 0:
                result[i] = ([], False)
                continue
            sampled = {"temperature": 0.0} if prompt.seed is None else {
                "temperature": prompt.temperature, "seed": prompt.seed}
            # ignore_eos: stop exactly where the transformers path does (its EOS and padding), not at vLLM's own.
            params = self._params(max_tokens=budget, detokenize=False, stop_token_ids=sorted(self.stop_ids),
                                  ignore_eos=True, **sampled)
            request_id = f"rmserve-judge-{next(self._request_ids)}"
            engine.add_request(request_id, self._prompt(list(prompt.prompt_ids), prompt), params)
            live[request_id] = i
        seen = {i: 0 for i in live.values()}
        try:
            while live:
                if abandoned is not None and abandoned():
                    engine.abort_request(list(live))
                    for i in live.values():
                        result[i] = ([], False)
                    live.clear()
                    break
                for output in engine.step():
                    i = live.get(output.request_id)
                    if i is None:
                        continue
                    tokens = list(output.outputs[0].token_ids)
                    done = self._scan(tokens, seen[i], budgets[i], decoding.answer_prefix)
                    seen[i] = len(tokens)
                    if done is None and output.finished:
                        done = (tokens[:budgets[i]], False)
                    if done is not None:
                        result[i] = done
                        del live[output.request_id]
                        if not output.finished:
                            engine.abort_request([output.request_id])
        except BaseException:
            engine.abort_request(list(live))
            raise
        return result  # type: ignore[return-value]

    def _scan(self, tokens: list[int], start: int, budget: int, prefix: str) -> tuple[list[int], bool] | None:
        """Where the row ends among tokens[start:]: at a stop token (excluded), where its text first ends with
        the answer prefix (found), or at its budget; None while it goes on."""
        for n in range(start + 1, min(len(tokens), budget) + 1):
            if tokens[n - 1] in self.stop_ids:
                return tokens[: n - 1], False
            if self.encoder.decode_text(tokens[:n]).endswith(prefix):
                return tokens[:n], True
        return (tokens[:budget], False) if len(tokens) >= budget else None


__all__ = ["VllmJudge"]
