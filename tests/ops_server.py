"""``rmserve serve`` with a slowed model, for the operations tests (a real server process, real CLI path).

    python -m tests.ops_server --forward-sleep-ms 40 serve --model DIR --port 8123 ...

Every forward pass (one batch) of the loaded model sleeps that long first, like a bigger model on
an accelerator: capacity is then set by batches per second, not by this 2-core machine's CPU.
"""

from __future__ import annotations

import sys
import time

from rmserve import cli
from rmserve.server import loading


def main(argv: list[str]) -> int:
    sleep_s = 0.0
    if argv[:1] == ["--forward-sleep-ms"]:
        sleep_s, argv = float(argv[1]) / 1000, argv[2:]
    load = loading.load_model_from_config

    def load_slowed(config):
        model = load(config)
        if sleep_s:
            score_batch = model.score_batch

            def slowed(batch):
                time.sleep(sleep_s)
                return score_batch(batch)

            model.score_batch = slowed
        return model

    loading.load_model_from_config = load_slowed
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
