"""Colour for a texture synthesised in luminance: each patch of the output takes the chrominance of
the target patch whose luminance is nearest, overlapping patches vote (the averaging step of
Wexler et al. 2007's patch-based synthesis), and the result takes the target's chrominance
histogram. The luminance is left as the grey synthesis made it, so its measures are the grey
output's; where one luminance structure carries one colour (dots on a ground, stripes, nearly every
photograph measured, docs/colour.md) the colours follow it. Colours of one luminance (four-colour
tiles) cannot be told apart this way: those targets go through the network in colour instead
(colour.joint).

    python -c "import torch; from texture.synthesis import chroma; t = torch.rand(3, 32, 32); print(chroma.colourise(t.mean(0), t).shape)"
"""
import torch
import torch.nn.functional as F

from texture.measures import local
from texture.measures.colour import LUMA, luminance
from texture.synthesis import colour

PATCH = 9  # side of the luminance patches compared (measured 3, 5, 7, 9, 11: docs/colour.md)
STRIDE = 2  # between the output patches that vote: each pixel still gets (PATCH / STRIDE)^2 votes
POOL = 65536  # at most this many target patches are candidates (a random choice of them beyond)
SNAPSHOT_POOL = 4096  # for snapshots: a 224 px one in 0.26 s instead of 1.9 s, so that colouring the
# default's nine snapshots adds under 1% to a target's time instead of 5% (2-core Xeon)


def chroma_basis():
    """(2, 3): an orthonormal basis of the RGB offsets that leave the luminance as it is (LUMA . v = 0)."""
    w = torch.tensor(LUMA)
    a = torch.tensor([[1.0, -1.0, 0.0], [1.0, 1.0, -2.0]])
    a = a - (a @ w)[:, None] * w[None] / (w @ w)
    return torch.linalg.qr(a.T)[0].T


def _vote(chroma_patches, size, tile):
    """Mean per pixel of the (2 * PATCH^2, N) patches of chroma placed at the output's patch positions
    (STRIDE apart, over its border padded by PATCH // 2, which wraps round with `tile`)."""
    r, (H, W) = PATCH // 2, size
    padded = (H + 2 * r, W + 2 * r)
    sums = F.fold(chroma_patches[None], padded, PATCH, stride=STRIDE)[0]
    counts = F.fold(torch.ones_like(chroma_patches[:PATCH * PATCH])[None], padded, PATCH, stride=STRIDE)[0]
    if tile:  # what fell on the padding belongs to the other side
        sums, counts = (_wrap(z, r) for z in (sums, counts))
    else:
        sums, counts = (z[:, r:H + r, r:W + r] for z in (sums, counts))
    return sums / counts


def _wrap(z, r):
    """(C, H + 2r, W + 2r) -> (C, H, W): the padding added back onto the side it wrapped from."""
    z = z.clone()
    z[:, r:2 * r] += z[:, -r:]
    z[:, -2 * r:-r] += z[:, :r]
    z[:, :, r:2 * r] += z[:, :, -r:]
    z[:, :, -2 * r:-r] += z[:, :, :r]
    return z[:, r:-r, r:-r]


def colourise(y, target, tile=False, match=True, seed=0, pool_size=None):
    """A colour image (3, H, W) with luminance y (H, W) (before clipping to [0, 1]) and the
    chrominance of the target (3, Ht, Wt) patches nearest to its own in luminance, of at most
    `pool_size` of them (default POOL); given the target's chrominance histogram if `match`
    (colour.transport in the plane of chrominance)."""
    device, y = y.device, y.float().cpu()
    target = target.float().cpu()
    basis, r = chroma_basis(), PATCH // 2
    ty = luminance(target)
    tc = torch.einsum("ij,jhw->ihw", basis, target - ty[None])  # (2, Ht, Wt)
    pool = local.patches(ty * 255, PATCH, 1)
    tc_patches = F.unfold(tc[None], PATCH)[0]  # (2 * PATCH^2, N), the same positions as pool
    if len(pool) > (limit := pool_size or POOL):
        keep = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:limit]
        pool, tc_patches = pool[keep], tc_patches[:, keep]
    padded = F.pad(y[None, None] * 255, (r, r, r, r), mode="circular" if tile else "reflect")[0, 0]
    best = local.nearest(local.patches(padded, PATCH, STRIDE), pool)[1]
    c = _vote(tc_patches[:, best], y.shape, tile).flatten(1)
    if match:
        c = colour.transport(c, tc.flatten(1), seed=seed)
    return (y[None] + (basis.T @ c).view(3, *y.shape)).clamp(0, 1).to(device)
