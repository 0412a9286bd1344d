"""Side-by-side timing for bench.py: callables run in interleaved rounds (ABBA order), so load from
other programs hits every compared path alike; Timings gives medians and per-round ratios.

    t = interleave({"a": run_a, "b": run_b}, repeats=5, device=torch.device("cpu"))
    t["a"], t.ratio("a", "b")
"""
import statistics
import time

import torch


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timings:
    """Seconds of each compared path, round by round; rates use the median over every round,
    ratios the median of the per-round ratios (the two paths ran side by side, under the same load)."""

    def __init__(self, rounds):
        self.rounds = rounds  # {name: [[seconds, ...] per round]}

    def __getitem__(self, name):
        return statistics.median(x for r in self.rounds[name] for x in r)

    def ratio(self, a, b):
        return statistics.median(statistics.median(x) / statistics.median(y)
                                 for x, y in zip(self.rounds[a], self.rounds[b]))


def alternating(names, rounds):
    """(round, name) of `rounds` rounds over `names`, every other round in reverse (A B, B A, ...): a
    drift in the machine's load then hits each name alike."""
    names = list(names)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            yield r, name


def interleave(fns, repeats, device):
    """Run each callable once to warm up, then `repeats` rounds alternating them (ABBA order
    against drift). A callable may return a list of per-iteration seconds; otherwise its total
    time is taken."""
    for fn in fns.values():  # allocator, oneDNN/cuDNN plans, compilation
        fn()
    rounds = {k: [] for k in fns}
    for _, k in alternating(fns, repeats):
        sync(device)
        t = time.perf_counter()
        inner = fns[k]()
        sync(device)
        rounds[k].append(inner if isinstance(inner, list) else [time.perf_counter() - t])
    return Timings(rounds)
