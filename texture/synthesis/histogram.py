"""Grey-level histograms: quantiles of an image's values, and exact histogram matching by rank, the
last step of every synthesis (the output takes the target's grey levels).
"""
import torch


def sorted_quantiles(v, n):
    """Rows of sorted values v (..., N) resampled to n quantiles (k + 0.5) / n, by linear interpolation."""
    pos = ((torch.arange(n, dtype=torch.float64, device=v.device) + 0.5) * v.shape[-1] / n - 0.5)
    pos = pos.clamp(0, v.shape[-1] - 1)
    lo = pos.floor().long()
    hi, frac = (lo + 1).clamp(max=v.shape[-1] - 1), (pos - lo).float()
    return v[..., lo] * (1 - frac) + v[..., hi] * frac


def quantiles(x, n):
    """The value below which a share (k + 0.5) / n of the entries of x lie, k = 0..n-1."""
    return sorted_quantiles(x.flatten().float().sort().values, n)


def match_histogram(img, target):
    """Exact histogram matching by rank: img keeps its pixel order but takes the target's grey levels."""
    out = torch.empty(img.numel(), device=img.device)
    out[img.flatten().argsort()] = quantiles(target.to(img.device), img.numel())
    return out.view_as(img)
