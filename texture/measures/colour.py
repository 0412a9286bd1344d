"""How close a colour texture is to its colour target, measured without the network or the loss.

Pure functions of two (3, H, W) RGB images in [0, 1] (sizes may differ), compared as saved (8-bit):
    colourfulness          Hasler and Suesstrunk's (2003) colourfulness of the image over its target's
                           (1: as colourful; 0: grey)
    colour_hist_distance   sliced Wasserstein-1 distance of the two clouds of RGB pixels over fixed
                           directions, in grey levels (0: the same colours in the same shares)
    colour_patch_nn        each 7x7 RGB patch of the image to its nearest target patch, RMS per value in
                           grey levels (0: every coloured structure occurs in the target)
    colour_patch_cover     the same from the target to the image (0: every one of them is present)
    colour_copy_share      local.copy_share on RGB patches
quality.measures gives these for a colour image, with its grey measures taken on the luminance
(luminance()).
"""
import itertools

import torch

from texture.measures import local
from texture.run.outputs import grey_levels
from texture.synthesis.histogram import sorted_quantiles

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as Pillow's convert("L") computes grey from RGB


def _directions():
    """The 13 directions of the RGB cube's symmetry: its 3 axes, 6 face and 4 body diagonals, unit length."""
    d = [v for v in itertools.product((-1, 0, 1), repeat=3) if v > (0, 0, 0)]  # one of each pair +-v
    d = torch.tensor(d, dtype=torch.float32)
    return d / d.norm(dim=1, keepdim=True)


DIRECTIONS = _directions()


def luminance(img):
    """(3, H, W) RGB -> (H, W) luma in [0, 1], as a grey PNG of it would hold before rounding."""
    return torch.tensordot(torch.tensor(LUMA, dtype=torch.float32), img.float().cpu(), 1)


def colourfulness_of(img):
    """Hasler and Suesstrunk's colourfulness of an RGB image, in 8-bit levels:
    std(rg, yb) + 0.3 mean(rg, yb) with rg = R - G and yb = (R + G) / 2 - B, each as the root of the
    sum of squares of the two opponent channels' values. 0 for a grey image."""
    r, g, b = grey_levels(img)
    rg, yb = r - g, (r + g) / 2 - b
    spread = (rg.var(unbiased=False) + yb.var(unbiased=False)).sqrt()
    return (spread + 0.3 * (rg.mean().square() + yb.mean().square()).sqrt()).item()


def colourfulness(img, target):
    """The image's colourfulness relative to its target's (1 for a target without colour and an image
    without colour either; a grey target's colourfulness is 0)."""
    own, want = colourfulness_of(img), colourfulness_of(target)
    return own / want if want > 0 else float(own == 0)


def colour_hist_distance(img, target):
    """Sliced Wasserstein-1 distance of the RGB pixel distributions (8-bit, as saved): the mean over
    DIRECTIONS of the distance between the two images' projections, in grey levels."""
    a, b = (grey_levels(x).flatten(1).T @ DIRECTIONS.T for x in (img, target))  # (N, D)
    n = max(len(a), len(b))
    qa, qb = (sorted_quantiles(p.T.sort(1).values, n) for p in (a, b))
    return (qa - qb).abs().mean().item()


def colour_measures(img, target):
    """Every colour measure of one RGB image against its RGB target."""
    nn, cover = local.patch_distances(img, target)
    return {"colourfulness": colourfulness(img, target),
            "colour_hist_distance": colour_hist_distance(img, target), "colour_patch_nn": nn,
            "colour_patch_cover": cover, "colour_copy_share": local.copy_share(img, target)}
