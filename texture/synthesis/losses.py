"""Feature losses of texture synthesis: a builder takes the target's features (one dict of
{tap: (1, C, H, W)} per target) and returns a function of the current features (B, C, H, W) giving
one fp32 loss per image and layer, relative to the target so that no layer dominates by scale.

LOSSES names them for --loss: the Gram matrices (Gatys et al. 2015), the sliced Wasserstein distance
of the whole feature distribution, and the guided correspondence of feature patches
(correspondence.py). synthesis.objective combines them with the spectrum term.
"""
import torch

import model
from texture.synthesis import correspondence
from texture.synthesis.histogram import sorted_quantiles


def channel_scale(f):
    """Per image and channel, 1 / max(mean activation, median of the layer's non-zero means).

    In a network trained from scratch a few channels are orders of magnitude stronger than the
    rest and make up nearly all of a raw Gram loss; Gatys' normalised VGG divides each by its mean.
    Dividing weak or silent channels by their own tiny mean amplifies them into noise and stalls
    the optimiser (measured, docs/design.md), so the strong half is brought to a common level and the
    weak half keeps its relative size."""
    m = f.float().mean((2, 3))
    floor = torch.stack([r[r > 0].median() if (r > 0).any() else r.new_zeros(()) for r in m])
    return 1.0 / torch.maximum(m, floor[:, None]).clamp_min(1e-12)


def _scaled(f, features, scale):
    f = f.float()
    if features == "standardize":
        return (f - f.mean((2, 3), keepdim=True)) / (f.std((2, 3), keepdim=True) + 1e-5)
    return f * scale[:, :, None, None] if features == "normalize" else f


def _gram(f, features, scale):
    return model.gram(_scaled(f, features, scale))


class _GramDistance(torch.autograd.Function):
    """Per image ||W * F F^T - T||^2 / norm in fp32, F (B, C, H, W) possibly bf16, W = s s^T / (H W)
    with s the channel scale, T the target's scaled Gram matrix.

    Autograd would run a dozen C x C operations forward and back (at 512 channels each costs as much
    as the small matmuls) and two fp32 matmuls for the gradient. Fused: the gradient is
    4 (W * D) F / norm with D the difference, one matmul in F's dtype (it is rounded to that dtype
    on its way into the network anyway)."""

    @staticmethod
    def forward(ctx, f, weight, target, norm):
        x, rows = _positions(f)
        x = x.float()
        gram = x.transpose(1, 2) @ x if rows else x @ x.transpose(1, 2)
        d = gram.mul_(weight).sub_(target)
        loss = torch.linalg.vector_norm(d.flatten(1), dim=1).square() / norm
        ctx.save_for_backward(f, d.mul_(weight), norm)
        return loss

    @staticmethod
    def backward(ctx, grad):
        f, wd, norm = ctx.saved_tensors
        dtype = torch.float32 if f.dtype == torch.float16 else f.dtype  # fp16 could underflow
        w = (wd * (4 * grad / norm)[:, None, None]).to(dtype)  # symmetric
        x, rows = _positions(f)
        x = x.to(dtype)
        # from rows (B, H W, C) the gradient comes out channels-last, as the network's own
        g = (x @ w).transpose(1, 2) if rows else w @ x
        return g.view_as(f).to(f.dtype), None, None, None


def _positions(f):
    """The features (B, C, H, W) as a matrix without copying them, and whether it holds them as rows:
    (B, H W, C) when channels-last (model.frozen's network), else (B, C, H W). Read the other way, each
    product would first copy its operand, and the gradient added to the network's own would change
    layout (6 ms of a 224 px iteration's 100 at relu1_1)."""
    rows = f.dim() == 4 and not f.is_contiguous() and f.is_contiguous(memory_format=torch.channels_last)
    return (f.permute(0, 2, 3, 1).flatten(1, 2), True) if rows else (f.flatten(2), False)


def gram_loss(target_feats, features="normalize"):
    """Per layer and image ||G(x) - G(t)||^2 / ||G(t)||^2: relative, so no layer dominates by scale."""
    scales, grams = {}, {}
    for name in target_feats[0]:
        fs = [t[name] for t in target_feats]  # targets may differ in size: one at a time
        scales[name] = torch.cat([channel_scale(f) for f in fs])
        grams[name] = torch.cat([_gram(f, features, s[None]) for f, s in zip(fs, scales[name])])
    norms = {n: g.square().sum((1, 2)) for n, g in grams.items()}
    weights = {}  # per layer and number of positions

    def loss(feats):
        out = {}
        for n, f in feats.items():
            key = n, f.shape[2] * f.shape[3]
            if key not in weights:
                s = scales[n] if features == "normalize" else torch.ones_like(scales[n])
                weights[key] = s[:, :, None] * s[:, None, :] / key[1]
            if features == "standardize":
                f = _scaled(f, features, None)
            out[n] = _GramDistance.apply(f, weights[key], grams[n], norms[n])
        return out
    return loss


def swd_loss(target_feats, features="normalize", projections=None):
    """Sliced Wasserstein distance (Heitz et al. 2021) per layer and image: the features are projected
    on fixed random unit directions (as many as channels, unless `projections`) and each projection's
    sorted values are compared with the target's, resampled to the output's pixel count. This matches
    the whole distribution of the features, not only its second moments. The directions are fixed for
    the run, so L-BFGS sees a deterministic objective. Relative to the target's projected variance."""
    scales, dirs, sorts = {}, {}, {}
    for name in target_feats[0]:
        fs = [t[name] for t in target_feats]
        c = fs[0].shape[1]
        g = torch.Generator().manual_seed(c)
        d = torch.randn(c, projections or c, generator=g)
        dirs[name] = (d / d.norm(dim=0, keepdim=True)).to(fs[0].device)
        scales[name] = torch.cat([channel_scale(f) for f in fs])
        sorts[name] = [(dirs[name].T @ _scaled(f, features, s[None]).flatten(2)[0]).sort(-1).values
                       for f, s in zip(fs, scales[name])]
    var = {n: torch.stack([v.var(-1).mean() for v in vs]).clamp_min(1e-12) for n, vs in sorts.items()}
    cache = {}

    def loss(feats):
        out = {}
        for n, f in feats.items():
            p = (dirs[n].T @ _scaled(f, features, scales[n]).flatten(2)).sort(-1).values  # (B, P, N)
            if (n, p.shape[-1]) not in cache:
                cache[n, p.shape[-1]] = torch.stack([sorted_quantiles(v, p.shape[-1]) for v in sorts[n]])
            out[n] = (p - cache[n, p.shape[-1]]).square().mean((1, 2)) / var[n]
        return out
    return loss


def gcd_loss(target_feats, features="normalize", occurrence=0.05, patches=1024, channels=None):
    """Guided correspondence of feature patches (correspondence.py) with the occurrence penalty's
    weight, at most `patches` target patches per tap and the share `channels` ({tap: share}) of a tap's
    channels, on the features scaled as for the Gram loss:
    a few strong channels would otherwise decide every cosine distance. loss(feats, renew=False) keeps
    the penalty's matches of the last renewal (correspondence.correspondence_loss). Its gradient is
    multiplied out in bf16 when the network gives its features in bf16, else in fp32."""
    scales = {n: torch.cat([channel_scale(t[n]) for t in target_feats]) for n in target_feats[0]}
    bf16 = any(f.dtype == torch.bfloat16 for t in target_feats for f in t.values())
    fn = correspondence.correspondence_loss(
        [{n: _scaled(f, features, scales[n][b:b + 1]) for n, f in t.items()} for b, t in enumerate(target_feats)],
        occurrence, patches, torch.bfloat16 if bf16 else torch.float32, channels)

    def loss(feats, renew=True):
        return fn({n: _scaled(f, features, scales[n]) for n, f in feats.items()}, renew)
    return loss


LOSSES = {"gram": gram_loss, "swd": swd_loss, "gcd": gcd_loss}
