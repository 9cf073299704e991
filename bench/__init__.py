"""Benchmark harness: rmserve vs a naive server vs the in-process ceiling (``make bench``; see bench/run.py)."""
