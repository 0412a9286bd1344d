"""Measures of local structure, micro-texture and objects, that Gram matrices and spectra miss.

Pure functions of two (H, W) images in [0, 1] (sizes may differ), compared as saved (8-bit); none
uses the network or a loss. The patch measures take (3, H, W) colour images too (colour.py). quality.measures reports them:
    lbp_distance   chi-square distance of uniform LBP histograms (scikit-image), mean over radii 1-3
                   (0: same micro-texture statistics)
    patch_nn       each 7x7 patch of the image to its nearest target patch, mean RMS in grey levels:
                   are the image's structures real (0: every patch occurs in the target)?
    patch_cover    each 7x7 target patch to its nearest patch of the image, the same: is every
                   structure of the target present (0: all of them)?
    copy_share     share of the image's textured 16x16 patches that are near-exact copies of a
                   target patch, nearer to it than the target's own repeats of it are (a method that
                   copies the target scores 1; new texture about 0)
"""
import numpy as np
import torch
import torch.nn.functional as F
from skimage.feature import local_binary_pattern

from texture.run.outputs import grey_levels

LBP_RADII = (1, 2, 3)  # P = 8 r sampling points on each circle
NN_PATCH, NN_STRIDE = 7, 4  # patches searched for at this stride, among every patch of the other image
COPY_PATCH, COPY_STRIDE = 16, 8
COPY_STD = 8.0  # grey levels: flatter output patches are not counted (any method copies a flat patch)
COPY_RMS = 4.0  # grey levels: a patch this close to a target patch is a copy (rounding and blur aside)
BLOCK = 2048  # pool patches per block of the distance matrix, against BLOCK / 8 query patches


def lbp_histogram(img, radius):
    """Normalised histogram of uniform LBP codes (P + 2 bins: P + 1 uniform codes and the rest)."""
    p = 8 * radius
    codes = local_binary_pattern(grey_levels(img).numpy().astype(np.uint8), p, radius, method="uniform")
    # the outer `radius` pixels sample circles partly outside the image: left out
    codes = codes[radius:-radius, radius:-radius]
    hist = np.bincount(codes.astype(np.int64).ravel(), minlength=p + 2).astype(np.float64)
    return hist / max(hist.sum(), 1.0)


def lbp_distance(img, target, radii=LBP_RADII):
    """Chi-square distance 0.5 * sum (h - g)^2 / (h + g) of the uniform LBP histograms, mean over radii; in [0, 1]."""
    out = []
    for r in radii:
        h, g = lbp_histogram(img, r), lbp_histogram(target, r)
        s = h + g
        out.append(0.5 * float(np.sum(np.divide((h - g) ** 2, s, out=np.zeros_like(s), where=s > 0))))
    return sum(out) / len(out)


def patches(img, size, stride):
    """(N, C * size * size) patches of an (H, W) or (C, H, W) image, row by row at the stride."""
    return F.unfold(img[None] if img.dim() == 3 else img[None, None], size, stride=stride)[0].T.contiguous()


def nearest(queries, pool):
    """(distance, index): RMS distance (per pixel) from each query patch to its nearest patch of the
    pool, and that patch's row in the pool.

    The argmin comes from matmul distances in blocks of queries and pool patches (the distance
    matrix of a 256 px image would not fit in the cache, and writing it costs more than computing
    it); the distance itself is recomputed exactly for the chosen pair, so identical patches give 0."""
    best_d = torch.full((len(queries),), float("inf"))
    best = torch.zeros(len(queries), dtype=torch.long)
    for j in range(0, len(pool), BLOCK):
        block = pool[j:j + BLOCK]
        block_t, block_sq = block.T.contiguous(), block.square().sum(1)
        for i in range(0, len(queries), BLOCK // 8):
            rows = slice(i, i + BLOCK // 8)
            d, k = torch.addmm(block_sq, queries[rows], block_t, alpha=-2).min(1)  # + |q|^2: same for all
            closer = d < best_d[rows]
            best_d[rows] = torch.where(closer, d, best_d[rows])
            best[rows] = torch.where(closer, k + j, best[rows])
    return (queries - pool[best]).square().mean(1).sqrt(), best


def patch_distances(img, target, size=NN_PATCH, stride=NN_STRIDE):
    """(patch_nn, patch_cover): mean nearest-patch RMS distance in grey levels, image to target and back.
    Every patch (stride 1) of the other image is a candidate, so a shifted copy scores 0."""
    a, b = grey_levels(img), grey_levels(target)
    there = nearest(patches(a, size, stride), patches(b, size, 1))[0].mean().item()
    back = nearest(patches(b, size, stride), patches(a, size, 1))[0].mean().item()
    return there, back


def own_repeat(pool, rows, width, size):
    """RMS distance from each of the pool's patches `rows` (stride 1, `width` per image row) to its
    nearest patch of the pool that does not overlap it: how closely the image repeats that patch."""
    y, x = torch.arange(len(pool)) // width, torch.arange(len(pool)) % width
    out = []
    for r in rows.split(16):
        d = torch.cdist(pool[r], pool, compute_mode="donot_use_mm_for_euclid_dist") / pool.shape[1] ** 0.5
        overlap = ((y[r, None] - y).abs() < size) & ((x[r, None] - x).abs() < size)
        out.append(d.masked_fill(overlap, float("inf")).min(1).values)
    return torch.cat(out) if out else torch.zeros(0)


def copy_share(img, target, size=COPY_PATCH, stride=COPY_STRIDE, min_std=COPY_STD, max_rms=COPY_RMS):
    """Share of the image's textured patches (std > min_std grey levels) that copy a target patch:
    within max_rms grey levels RMS of it, and nearer to it than the target's nearest other
    (non-overlapping) patch is. A structure the target itself repeats that closely, such as a
    brick's straight mortar segments, is drawn, not copied. 0 when the image has no textured patch."""
    q = patches(grey_levels(img), size, stride)
    q = q[q.unflatten(1, (-1, size * size)).std(2).mean(1) > min_std]  # per channel: a flat colour is flat
    if not len(q):
        return 0.0
    t = grey_levels(target)
    pool = patches(t, size, 1)
    d, best = nearest(q, pool)
    close = torch.nonzero(d < max_rms).flatten()
    copied = d[close] < own_repeat(pool, best[close], t.shape[-1] - size + 1, size)
    return copied.sum().item() / len(q)


def local_measures(img, target):
    """Every measure of this module, of one image against its target."""
    nn, cover = patch_distances(img, target)
    return {"lbp_distance": lbp_distance(img, target), "patch_nn": nn, "patch_cover": cover,
            "copy_share": copy_share(img, target)}
