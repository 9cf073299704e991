"""How the demo model is measured: as the server runs it, on the held-out set of ``demo_heldout``.

    scored pairs  (what /v1/score returns)       faithful > hallucinated, overall and per factor value
    critiques     (what /v1/critique returns)    greedy critique, then the reward read after it:
        accuracy   reward(faithful) > reward(hallucinated)
        grounded   the critique of the hallucinated answer names the pictured colour AND shape
                   ("The image shows a red circle, but ...")
        verdict    the critique of the faithful answer calls it right, of the hallucinated one wrong

plus the training generator's own held-out split (``data.demo_shapes``, split "heldout"): per-category
accuracy and the safety head's AUROC on the unsafe-request pairs.
"""

from __future__ import annotations

import argparse
import json
import re

import torch

from rmserve.models import load_reward_model
from rmserve.models.critique import can_generate, critique_and_score, is_critique_model

from .data import response_items
from .data.demo_shapes import generate_shape_pairs
from .demo_heldout import HeldoutCase, heldout_records
from .metrics import auroc

RIGHT = re.compile(r"\bthe response is right\b", re.IGNORECASE)
WRONG = re.compile(r"\bbut the response says\b", re.IGNORECASE)


def grounded(critique: str, colour: str, shape: str) -> bool:
    """The critique says what the image shows: the true colour and shape, as one phrase."""
    return re.search(rf"\bthe image shows an? {colour} {shape}\b", critique, re.IGNORECASE) is not None


def _rate(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 4) if flags else None


def _by_factor(cases: list[HeldoutCase], flags: list[bool]) -> dict[str, dict[str, float]]:
    groups: dict[str, dict[str, list[bool]]] = {}
    for case, flag in zip(cases, flags, strict=True):
        for factor, value in case.factors().items():
            groups.setdefault(factor, {}).setdefault(value, []).append(flag)
    return {f: {v: _rate(x) for v, x in sorted(values.items())} for f, values in groups.items()}


@torch.inference_mode()
def score_heldout(model, pairs: list) -> dict:
    """/v1/score's view: the reward head on the plain (image + prompt, response) sequences."""
    items = [item for _, rec in pairs for item in response_items(rec)]
    scored = model.score(items, batch_size=32)
    wins = [scored[2 * i].reward > scored[2 * i + 1].reward for i in range(len(pairs))]
    return {"pairs": len(pairs), "accuracy": _rate(wins), "by_factor": _by_factor([c for c, _ in pairs], wins)}


@torch.inference_mode()
def critique_heldout(model, pairs: list, examples: int = 4) -> dict:
    """/v1/critique's view: greedy critique of both answers, then the reward after each critique."""
    items = [item for _, rec in pairs for item in response_items(rec)]
    results = critique_and_score(model, items)
    wins, ground, verdicts, shown = [], [], [], []
    for i, (case, rec) in enumerate(pairs):
        good, bad = results[2 * i], results[2 * i + 1]
        wins.append(good.score.reward > bad.score.reward)
        ground.append(grounded(bad.critique, case.colour, case.shape))
        verdicts.append(bool(RIGHT.search(good.critique)) and bool(WRONG.search(bad.critique)))
        if len(shown) < examples:
            shown.append({"prompt": rec.prompt, "response": rec.rejected, "critique": bad.critique,
                          "reward": round(bad.score.reward, 3)})
    cases = [c for c, _ in pairs]
    return {"pairs": len(pairs), "accuracy": _rate(wins), "grounded": _rate(ground), "verdicts": _rate(verdicts),
            "grounded_by_factor": _by_factor(cases, ground), "accuracy_by_factor": _by_factor(cases, wins),
            "examples": shown}


@torch.inference_mode()
def score_training_generator(model, n: int, seed: int) -> dict:
    """Per-category accuracy on the training generator's held-out split, and the safety head's AUROC."""
    records = generate_shape_pairs(n, seed, split="heldout")
    items = [item for r in records for item in response_items(r)]
    scored = model.score(items, batch_size=32)
    by_category: dict[str, list[bool]] = {}
    probs, labels = [], []
    for i, r in enumerate(records):
        c, j = scored[2 * i], scored[2 * i + 1]
        by_category.setdefault(r.category, []).append(c.reward > j.reward)
        if r.category == "safety":
            for out, codes in ((c, r.chosen_safety), (j, r.rejected_safety)):
                probs.append(max(out.safety.values()))
                labels.append(1.0 if codes else 0.0)
    wins = [w for ws in by_category.values() for w in ws]
    return {"pairs": n, "accuracy": _rate(wins),
            "category_accuracy": {k: _rate(v) for k, v in sorted(by_category.items())},
            "safety_auroc": round(auroc(probs, labels), 4) if probs else None, "safety_responses": len(probs)}


def evaluate_demo(model, *, n_pairs: int, n_critiques: int, seed: int = 0, generator_pairs: int = 400) -> dict:
    pairs = heldout_records(n_pairs, seed)
    return {
        "heldout": {"what": "demo_heldout: PIL named colours, ellipse / regular_polygon, 6 canvases, 6 backgrounds, "
                            "4 size bands, aliased or LANCZOS anti-aliased; faithful vs hallucinated shape/colour",
                    "seed": seed, "score": score_heldout(model, pairs),
                    "critique": critique_heldout(model, pairs[:n_critiques]) if n_critiques else None},
        "training_generator_heldout": score_training_generator(model, generator_pairs, seed),
    }


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown_report(report: dict, title: str = "Demo model on the held-out drawings") -> str:
    """The evaluation as a page: overall numbers, then one table per factor (accuracy, and grounding when
    critiques were generated), then the training generator's own held-out split."""
    held = report["heldout"]
    score, critique = held["score"], held.get("critique")
    lines = [f"# {title}", "", f"Held-out set: {held['what']} (seed {held['seed']}).", "",
             "| measure | value |", "|---|---|",
             f"| faithful > hallucinated, `/v1/score` ({score['pairs']} pairs) | {_pct(score['accuracy'])} |"]
    if critique:
        lines += [f"| faithful > hallucinated, reward after the generated critique ({critique['pairs']} pairs) "
                  f"| {_pct(critique['accuracy'])} |",
                  f"| grounded: the critique of the wrong answer names the true colour and shape | "
                  f"{_pct(critique['grounded'])} |",
                  "| verdicts: right answer called right and wrong answer called wrong | "
                  f"{_pct(critique['verdicts'])} |"]
    for factor, values in score["by_factor"].items():
        grounded_by = (critique or {}).get("grounded_by_factor", {}).get(factor, {})
        header = f"| {factor} | `/v1/score` accuracy |" + (" critique grounded |" if critique else "")
        lines += ["", header, "|---|---|" + ("---|" if critique else "")]
        for value, accuracy in values.items():
            row = f"| {value} | {_pct(accuracy)} |"
            lines.append(row + (f" {_pct(grounded_by.get(value))} |" if critique else ""))
    gen = report.get("training_generator_heldout")
    if gen:
        lines += ["", f"Training generator's held-out split ({gen['pairs']} pairs): {_pct(gen['accuracy'])}; "
                  f"safety AUROC {gen['safety_auroc']} on {gen['safety_responses']} responses.", "",
                  "| category | accuracy |", "|---|---|"]
        lines += [f"| {k} | {_pct(v)} |" for k, v in gen["category_accuracy"].items()]
    if critique and critique.get("examples"):
        lines += ["", "Generated critiques of hallucinated answers:", ""]
        lines += [f"- {e['prompt']} / {e['response']} -> {e['critique']} (reward {e['reward']})"
                  for e in critique["examples"]]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="models/demo", help="checkpoint directory (default: models/demo)")
    parser.add_argument("--pairs", type=int, default=600, help="held-out pairs scored as /v1/score does")
    parser.add_argument("--critiques", type=int, default=120,
                        help="of those, pairs also critiqued as /v1/critique does (critique models only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the report here (JSON)")
    parser.add_argument("--markdown", default=None, help="also write it as a page here (e.g. models/demo/EVAL.md)")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    model = load_reward_model(args.model)
    critiques = args.critiques if is_critique_model(model) and can_generate(model) else 0
    report = evaluate_demo(model, n_pairs=args.pairs, n_critiques=critiques, seed=args.seed)
    text = json.dumps(report, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown_report(report))
    print(text)
    return 0


__all__ = ["add_arguments", "critique_heldout", "evaluate_demo", "grounded", "markdown_report", "run", "score_heldout",
           "score_training_generator"]
