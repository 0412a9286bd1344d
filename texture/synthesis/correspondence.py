"""Guided correspondence between feature patches (Zhou et al., CVPR 2023, "Neural Texture Synthesis
with Guided Correspondence"), the loss behind `gen.py --loss gcd`.

Every PATCH x PATCH patch of a feature map, taken at STRIDE, is matched to the target's patches by
cosine distance (both centred on the target's mean patch). An occurrence penalty adds to each target
patch's distance how often it is already the nearest one, relative to an even use, so that the
output does not build itself from a few target patches. Distances are normalised by each output
patch's nearest one (contextual normalisation) and the loss is, per output patch,
-log of its contextual similarity to its best match: low when each output patch has one clear match
in the target. losses.gcd_loss scales the features and registers it.

The dot products with every target patch are one convolution with the target's patches as kernels,
so the output's unfolded patches are never stored, and the distance matrix is evaluated in chunks of
output rows (CHUNK entries), each recomputed in the backward pass: memory stays bounded for large
outputs.
"""
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

PATCH, STRIDE = 7, 3  # patch side and step in feature pixels, as Zhou et al.
BANDWIDTH = 0.5  # h of the contextual similarity exp((1 - d / d_min) / h), as Zhou et al.
CHUNK = 1 << 21  # entries of the distance matrix evaluated at once (8 MB in fp32)


def reference(f, k, most):
    """The target's patches (f: (1, C, H, W)) as unit-norm kernels after removing their mean patch:
    (kernels (N, C, k, k), mean patch (1, C, k, k), each kernel's dot product with the mean (N,)).
    N is at most `most`: beyond, the same random sample of them on every call, so the loss stays one
    function and its cost grows with the output alone."""
    q = F.unfold(f, k, stride=STRIDE)[0].T  # (N, C k k)
    m = q.mean(0)
    if len(q) > most:
        q = q[torch.randperm(len(q), generator=torch.Generator().manual_seed(0))[:most].to(q.device)]
    q = q - m
    q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return q.view(len(q), f.shape[1], k, k), m.view(1, f.shape[1], k, k), q @ m


def distances(x, ref):
    """(1 - cos) / 2 from every patch of x (1, C, H, W) to every target patch: (N_ref, H', W')."""
    kernels, mean, mdot = ref
    k = kernels.shape[-1]
    dots = F.conv2d(x, kernels, stride=STRIDE) - mdot[None, :, None, None]
    sq = F.conv2d(x.square().sum(1, keepdim=True), x.new_ones(1, 1, k, k), stride=STRIDE)
    sq = sq - 2 * F.conv2d(x, mean, stride=STRIDE) + mean.square().sum()
    return ((1 - dots / sq.clamp_min(1e-12).sqrt()) / 2).clamp_min(0)[0]


def row_chunks(x, k, n_ref):
    """Slices of x (overlapping by k - STRIDE rows) whose patches fill at most CHUNK distances each."""
    h, w = ((s - k) // STRIDE + 1 for s in x.shape[2:])
    rows = max(1, CHUNK // (n_ref * w))
    return [x[:, :, r * STRIDE:(min(h, r + rows) - 1) * STRIDE + k] for r in range(0, h, rows)]


def nearest(x, ref):
    """Index of the nearest target patch of every output patch, row by row (N_out,)."""
    with torch.no_grad():
        return torch.cat([distances(c, ref).flatten(1).argmin(0)
                          for c in row_chunks(x.detach(), ref[0].shape[-1], len(ref[0]))])


def contextual(d, penalty):
    """-log of each output patch's contextual similarity to its best match, from distances (N_ref, ...)."""
    d = d.flatten(1) + penalty[:, None]
    near = d.min(0, keepdim=True).values
    # max_j softmax_j((1 - d_j / near) / h) is reached at the nearest patch, where the exponent is 0
    return torch.logsumexp((1 - d / (near + 1e-5)) / BANDWIDTH, 0)


def image_loss(x, ref, occurrence, best=None):
    """Mean over the output patches of x (1, C, H, W) of contextual(), with the occurrence penalty:
    each target patch's use as the nearest one (`best`, else x's nearest() now), relative to an even
    use, times `occurrence`."""
    best = nearest(x, ref) if best is None else best
    n_ref = len(ref[0])
    penalty = occurrence * torch.bincount(best, minlength=n_ref).float() * n_ref / len(best)
    parts = [checkpoint(lambda c: contextual(distances(c, ref), penalty), c, use_reentrant=False)
             for c in row_chunks(x, ref[0].shape[-1], n_ref)]
    return torch.cat(parts).mean()


def correspondence_loss(target_feats, occurrence, patches):
    """builder(target_feats) -> loss(feats, renew=True) -> {layer: (B,) fp32}, as synthesis' losses;
    features in fp32, one target per image (or one for all). Patches are PATCH wide, or as wide as the
    smaller of the two maps, compared with at most `patches` target patches per tap (reference). The
    occurrence penalty counts the matches found at the last call with renew=True: held in between, the
    loss is one smooth function of the features, as a line search needs."""
    refs, held = {}, {}

    def ref(n, b, k):
        if (n, b, k) not in refs:
            refs[n, b, k] = reference(target_feats[b][n].float(), k, patches)
        return refs[n, b, k]

    def loss(feats, renew=True):
        out = {}
        for n, f in feats.items():
            vals = []
            for b in range(len(f)):
                t = b if len(target_feats) > 1 else 0  # one target serves every image, as for the Gram loss
                k = min(PATCH, *f.shape[2:], *target_feats[t][n].shape[2:])
                x = f[b:b + 1].float()
                if renew or (n, b) not in held:
                    held[n, b] = nearest(x, ref(n, t, k))
                vals.append(image_loss(x, ref(n, t, k), occurrence, held[n, b]))
            out[n] = torch.stack(vals)
        return out
    return loss
