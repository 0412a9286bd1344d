"""When an image of a batch is done, and what a batch costs once some of its images are: the stopping
rule of synthesis.synthesize (--stop-tolerance, --stop-window) and the objective of the images still
optimised.

An image stops when its best loss has improved by less than `tolerance` (relative) over the last
`window` iterations; --steps stays the upper bound. The loss is the proxy, since the loss-free
measures (texture.measures) cost as much as an iteration or more at 224 px. Checked against those
measures on the 96 px fidelity set (docs/speed.md): 0.01 saves a seventh of the iterations, but two
measures came out slightly worse on each of three seeds, so it is off by default (--stop-tolerance 0).

    python -c "from texture.synthesis.stopping import Plateau; p = Plateau(1, 2, 0.1); print([p.done([v], [True]) for v in (4, 3, 2.9, 2.8)])"
"""
import torch


class Plateau:
    """The stopping rule, image by image: done(best_losses, active) after each iteration gives the
    rows that stop now."""

    def __init__(self, batch, window, tolerance):
        self.window, self.tolerance = window, tolerance
        self.seen = [[] for _ in range(batch)]

    def done(self, best_losses, active):
        out = []
        for b, (value, on) in enumerate(zip(best_losses, active)):
            if not on:
                continue
            seen = self.seen[b]
            seen.append(float(value))
            if len(seen) > self.window and seen[-1] >= (1 - self.tolerance) * seen[-1 - self.window]:
                out.append(b)
        return out


class LiveBatch:
    """evaluate(x (B, ...), active (B,) bool, renew) -> (total (B,), parts {name: (B,)}, renewed): the
    objective on the active rows only, so that a stopped image costs nothing; the other rows get 0.
    `full` is the objective of every target, `build(rows)` makes the objective of some of them (the
    targets' features computed again, once per change of the active rows). `renewed` is True when
    the objective was rebuilt (a held occurrence penalty found its matches again)."""

    def __init__(self, full, build):
        self.full, self.build, self.rows, self.fn = full, build, None, full

    def __call__(self, x, active, renew=True):
        rows = torch.nonzero(active.to(x.device)).flatten()
        rebuilt = self.rows is not None and not torch.equal(rows, self.rows)
        if self.rows is None or rebuilt:
            self.fn = self.full if len(rows) == len(x) else self.build(rows.tolist())
        self.rows = rows
        if len(rows) == len(x):
            return (*self.fn(x, renew or rebuilt), rebuilt)
        total, parts = self.fn(x[rows], renew or rebuilt)

        def grow(v):
            return v.new_zeros(len(x)).index_put((rows,), v)
        return grow(total), {n: grow(v) for n, v in parts.items()}, rebuilt
