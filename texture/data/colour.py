"""Colour textures to develop and judge colour synthesis on, made offline: procedural classes whose
colours belong together (a method that mixes colours shows it at once: a purple rim round a red dot
on a blue ground, a brown tile between red and green ones) and colour photographs that installed
packages ship. The classifier's demo set (procedural.py) stays grey.

    python -c "from texture.data import colour; print(colour.colour_texture('dots', 64, 0).shape)"
"""
import os

import numpy as np
import torch
from PIL import Image
from skimage import data as samples

# The colours of each family, 8-bit RGB: dots (dot, ground), stripes (two), tiles (grout, then the tiles').
# The tiles' colours have nearly the same luminance (about 120), so that only colour tells them apart.
PALETTES = {"dots": ((225, 30, 35), (35, 60, 190)), "stripes": ((245, 205, 40), (95, 35, 140)),
            "tiles": ((30, 30, 30), (215, 60, 60), (40, 150, 40), (90, 110, 235), (150, 125, 20))}


def _disc_field(y, x, period, radius, rng):
    """1 inside discs of `radius` px on a jittered grid of `period` px, 0 outside, anti-aliased."""
    gy, gx = np.floor(y / period), np.floor(x / period)
    jitter = rng.uniform(0.25, 0.75, (2, 64, 64))
    cy = (gy + jitter[0][gy.astype(int) % 64, gx.astype(int) % 64]) * period
    cx = (gx + jitter[1][gy.astype(int) % 64, gx.astype(int) % 64]) * period
    return np.clip(radius + 0.5 - np.hypot(y - cy, x - cx), 0, 1)


def _tiles(y, x, period, palette, rng):
    """Index of each pixel's colour: 0 on the grout (1 px lines), else its tile's colour 1..n."""
    gy, gx = np.floor(y / period).astype(int), np.floor(x / period).astype(int)
    colours = rng.integers(1, len(palette), (64, 64))
    grout = (np.mod(y, period) < 1.5) | (np.mod(x, period) < 1.5)
    return np.where(grout, 0, colours[gy % 64, gx % 64])


def colour_texture(family, size, seed):
    """One realisation of a procedural colour family (PALETTES), uint8 (size, size, 3): its own period,
    angle (stripes) and placement, with sensor-like noise of 3 levels."""
    rng = np.random.default_rng([seed, list(PALETTES).index(family)])
    y, x = np.mgrid[:size, :size].astype(np.float64) + rng.uniform(0, 1000, 2)[:, None, None]
    pal = np.array(PALETTES[family], dtype=np.float64)
    if family == "dots":
        a = _disc_field(y, x, rng.uniform(11, 15), rng.uniform(3, 4.5), rng)[..., None]
        img = a * pal[0] + (1 - a) * pal[1]
    elif family == "stripes":
        angle, period = rng.uniform(-0.5, 0.5), rng.uniform(9, 14)
        u = np.cos(angle) * x + np.sin(angle) * y
        a = np.clip(4 * np.sin(2 * np.pi * u / period), -1, 1)[..., None] / 2 + 0.5
        img = a * pal[0] + (1 - a) * pal[1]
    elif family == "tiles":
        img = pal[_tiles(y, x, rng.uniform(10, 14), pal, rng)]
    else:
        raise ValueError(f"unknown colour family {family!r}; choose from {','.join(PALETTES)}")
    return np.clip(np.rint(img + rng.normal(0, 3, img.shape)), 0, 255).astype(np.uint8)


def _plenoptic(name):
    """A photograph that plenoptic ships (`pip install plenoptic`; optional)."""
    import plenoptic
    with Image.open(os.path.join(os.path.dirname(plenoptic.__file__), "data", name)) as im:
        return np.asarray(im.convert("RGB"))


# name -> (loader of the whole photograph, reduction factor, (top, left) of the textured square as
# fractions of the space around it); the held-out ones at their centre, chosen without looking
PHOTOS = {"immunohistochemistry": (samples.immunohistochemistry, 1, (0.5, 0.5)),
          "hubble_deep_field": (samples.hubble_deep_field, 1, (0.5, 0.5)),
          "retina": (samples.retina, 3, (0.2, 0.55)),  # vessels on the fundus
          "coffee": (samples.coffee, 1, (0.5, 1.0)),  # the wooden table right of the cup
          "chelsea": (samples.chelsea, 1, (0.5, 0.5)),
          "rocket": (samples.rocket, 1, (0.5, 0.5)),
          "parrot": (lambda: _plenoptic("parrot.png"), 1, (0.5, 0.5)),
          "macaque": (lambda: _plenoptic("macaca_nigra_self-portrait.jpg"), 1, (0.5, 0.5))}
DEVELOP = ("immunohistochemistry", "hubble_deep_field", "retina", "coffee")  # looked at while choosing
HELD_OUT = ("chelsea", "rocket", "parrot", "macaque")  # looked at only to judge the choice


def colour_photograph(name, side):
    """A `side` px square of a colour photograph of PHOTOS, uint8 (side, side, 3), at its place in
    the photograph reduced by its factor (box filter)."""
    load, factor, (fy, fx) = PHOTOS[name]
    img = np.asarray(Image.fromarray(np.asarray(load())[..., :3]).reduce(factor))
    h, w = img.shape[:2]
    if min(h, w) < side:
        raise ValueError(f"{name}: {w}x{h} is smaller than {side} px")
    top, left = int(round(fy * (h - side))), int(round(fx * (w - side)))
    return np.ascontiguousarray(img[top:top + side, left:left + side])


def windows(name, side, seed=0):
    """(target, reference): the top left and bottom right `side` px squares, (3, side, side) in [0, 1],
    of a photograph of PHOTOS (colour_photograph) or a procedural family of PALETTES (colour_texture
    with `seed`) twice that size: two windows of the same texture."""
    whole = colour_photograph(name, 2 * side) if name in PHOTOS else colour_texture(name, 2 * side, seed)
    whole = torch.from_numpy(whole).permute(2, 0, 1).float() / 255
    return whole[:, :side, :side], whole[:, side:, side:]


def set_of(name):
    """development, held-out (photographs) or procedural."""
    return "development" if name in DEVELOP else "held-out" if name in HELD_OUT else "procedural"
