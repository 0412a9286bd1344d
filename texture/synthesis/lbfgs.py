"""A per-image batched L-BFGS: every image of a batch has its own history and step, so it follows
the path it would follow alone. synthesis.synthesize uses it for --optimizer lbfgs. Example:

    python -c "import torch; from texture.synthesis import lbfgs; p = torch.ones(2, 3, requires_grad=True); o = lbfgs.BatchLBFGS(p); l = (p ** 2).sum(1); l.sum().backward(); o.step(l.detach(), torch.ones(2, dtype=torch.bool)); print(p)"
"""
import torch


class BatchLBFGS:
    """L-BFGS with its own history and backtracking (Armijo) step for each image of the batch.

    torch.optim.LBFGS treats a batch as one vector, so one target's curvature would steer the
    others; here every image follows the path it would follow alone, and can stop on its own."""

    def __init__(self, param, lr=1.0, history=10):
        self.p, self.lr, self.m = param, lr, history
        self.hist = [[] for _ in range(len(param))]
        self.last = [None] * len(param)  # accepted point: [x, g, loss, direction, step]

    def _direction(self, b, g):
        q, alphas = g.clone(), []
        for s, y, rho in reversed(self.hist[b]):
            alphas.append(rho * s.dot(q))
            q -= alphas[-1] * y
        if self.hist[b]:
            s, y, _ = self.hist[b][-1]
            q *= s.dot(y) / y.dot(y)
        for (s, y, rho), a in zip(self.hist[b], reversed(alphas)):
            q += s * (a - rho * y.dot(q))
        return -q

    def rebase(self):
        """The objective has changed (a held term was renewed): the next step takes its point as the
        new start, without the decrease test against the old objective's value; the curvature
        history stays, the two objectives being close."""
        self.last = [None] * len(self.last)

    @torch.no_grad()
    def step(self, losses, active):
        for b in torch.nonzero(active).flatten().tolist():
            x, g, f = self.p[b].flatten().clone(), self.p.grad[b].flatten().float(), float(losses[b])
            last = self.last[b]
            if last is not None and not f <= last[2] + 1e-4 * last[4] * float(last[1].dot(last[3])):
                x0, _, _, d, t = last  # not enough decrease: retry from the accepted point, half the step
                last[4] = t = t / 2
                self.p[b] = (x0 + t * d).view_as(self.p[b])
                if t > 1e-6 * self.lr:
                    continue
                self.hist[b], x, g, f = [], x0, last[1], last[2]  # stuck: restart as steepest descent
            elif last is not None:
                s, y = x - last[0], g - last[1]
                if s.dot(y) > 1e-10:
                    self.hist[b] = (self.hist[b] + [(s, y, 1 / s.dot(y))])[-self.m:]
            d = self._direction(b, g)
            if not self.hist[b] or d.dot(g) >= 0:
                self.hist[b], d = [], -g
            # without curvature yet, move the logits by 0.1 RMS: a smaller first step can drown in
            # the rounding noise of a bf16 loss and never pass the decrease test
            t = self.lr if self.hist[b] else self.lr * 0.1 / float(g.square().mean().sqrt() + 1e-20)
            self.last[b] = [x, g, f, d, t]
            self.p[b] = (x + t * d).view_as(self.p[b])
