"""Channel benchmark: query latency with and without the concept channel, and what nonsense queries return.

    python -m benchmarks.channels --store STORE [--queries FILE] [--runs 200]

Times `Engine.text` (hybrid, k=10, cutoffs on) over a fixed query list, each query answered once before timing
(as a warm server would), with every text channel the store has and with the concept channel left out; then
counts the results that random letter strings get in every mode.
"""
from __future__ import annotations

import argparse
import statistics
import time

QUERIES = ["a red circle moves left", "a blue square", "green triangle grows", "a car", "a cat on a sofa",
           "vehicle", "a dog running", "bicycles", "a clock", "something spinning"]
NONSENSE = ["zzzz qqqq", "xkcd vbnm", "qwpo zxlk", "blorf"]


def _p50(store, queries, runs: int, channels) -> float:
    from search import Engine, EngineConfig

    engine = Engine(store, config=EngineConfig(text_channels=tuple(channels)))
    for q in queries:
        engine.text(q, k=10)
    times = []
    for i in range(runs):
        q = queries[i % len(queries)]
        start = time.perf_counter()
        engine.text(q, k=10)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main(argv=None) -> int:
    from search import MODES, Engine
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True)
    p.add_argument("--runs", type=int, default=200)
    args = p.parse_args(argv)
    from indexer import Store

    store = Store.open(args.store, readonly=True)
    engine = Engine(store)
    print(f"channels: {', '.join(engine.channels)}")
    text = [c for c in ("dense", "keyword", "concept") if c in engine.channels]
    with_concept = _p50(store, QUERIES, args.runs, text)
    without = _p50(store, QUERIES, args.runs, [c for c in text if c != "concept"])
    print(f"hybrid p50: {with_concept:.2f} ms with the concept channel, {without:.2f} ms without "
          f"({with_concept / without:.2f}x)")
    for mode in MODES:
        if mode == "hybrid" or mode in engine.channels:
            counts = [len(engine.text(q, k=10, mode=mode)) for q in NONSENSE]
            print(f"nonsense results, {mode}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
