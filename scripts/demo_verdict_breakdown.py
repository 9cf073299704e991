"""Where a critique model's verdicts go wrong (docs/demo-shape-readout.md section 5 has the results).

    python scripts/demo_verdict_breakdown.py --model models/demo --pairs 200

Critiques both answers of the first N ``demo_heldout`` pairs (seed 0) as ``/v1/critique`` does and
counts, separately for the right and the wrong answer, whether the description names the true colour
and shape ("read right") and which verdict follows ("called right" / "called wrong"), using the same
``grounded``, ``RIGHT`` and ``WRONG`` rules as ``rmserve-train demo-eval``.
"""

from __future__ import annotations

import argparse
import collections

import torch
from rmserve_trainer.data import response_items
from rmserve_trainer.demo_eval import RIGHT, WRONG, grounded
from rmserve_trainer.demo_heldout import heldout_records

from rmserve.models import load_reward_model
from rmserve.models.critique import critique_and_score


def label(critique: str, colour: str, shape: str) -> str:
    reading = "read right" if grounded(critique, colour, shape) else "misread"
    verdict = "called right" if RIGHT.search(critique) else "called wrong" if WRONG.search(critique) else "no verdict"
    return f"{reading}, {verdict}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/demo")
    parser.add_argument("--pairs", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_reward_model(args.model)
    pairs = heldout_records(600, seed=0)[: args.pairs]
    results = critique_and_score(model, [item for _, rec in pairs for item in response_items(rec)])
    counts = collections.Counter()
    for i, (case, _) in enumerate(pairs):
        counts["right answer: " + label(results[2 * i].critique, case.colour, case.shape)] += 1
        counts["wrong answer: " + label(results[2 * i + 1].critique, case.colour, case.shape)] += 1
    for key, n in sorted(counts.items()):
        print(f"{key}: {n}")


if __name__ == "__main__":
    main()
