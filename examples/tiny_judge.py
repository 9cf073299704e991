"""Save a tiny generative judge checkpoint to try the judge endpoints with (README "Generative judges").

    python examples/tiny_judge.py /tmp/tiny-judge [--pairwise]

A ~1M-parameter Qwen2 causal LM with random weights and the pointwise ``judge`` section of
``rmserve.models.tiny.TINY_JUDGE`` (answers 1-5 at once; reward = the expectation over the answer tokens),
or with ``--pairwise`` a pairwise one (A/B). Its judgments are arbitrary: it shows the plumbing (rewards,
voting, judgments), not a good judge. Train a real one from preference data with the trainer.
"""

from __future__ import annotations

import argparse

from rmserve.models.checkpoint import save_reward_model
from rmserve.models.tiny import TINY_JUDGE, build_tiny_judge

PAIRWISE = {"mode": "pairwise", "template": "Question: {prompt}\n[A] {response_a}\n[B] {response_b}\nWhich is better?",
            "answer_prefix": "Better:", "choices": ["A", "B"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the checkpoint directory to write")
    parser.add_argument("--pairwise", action="store_true", help="a pairwise (A/B) judge instead of pointwise")
    args = parser.parse_args()
    save_reward_model(build_tiny_judge("qwen2", PAIRWISE if args.pairwise else TINY_JUDGE, seed=3), args.out)
    print(f"saved a tiny {'pairwise' if args.pairwise else 'pointwise'} judge to {args.out}")


if __name__ == "__main__":
    main()
