"""A procedural texture set in the Kylberg layout, made offline in seconds: periodic and random
families, each sample letter one realisation, its patches placements of it.

    make_demo("data/demo", classes=6, patches=40, size=96, seed=0)
"""
import json
import os
import shutil
import tempfile

import numpy as np
import torch
from PIL import Image

from texture.data import photographs as photos
from texture.data.images import DataError
from texture.run import memory


def _blur(img, sigma):
    """Periodic Gaussian blur through the FFT."""
    f = np.fft.fftfreq(img.shape[0])
    k = np.exp(-2 * (np.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    return np.fft.ifft2(np.fft.fft2(img) * k).real


def _cells(u, v, period, rng):
    """Voronoi cell walls (distance to the second-nearest minus the nearest seed), one seed per grid cell."""
    gu, gv = np.floor(u / period).astype(int), np.floor(v / period).astype(int)
    jitter = rng.uniform(0.1, 0.9, (2, 64, 64))
    d = []
    for du in (-1, 0, 1):
        for dv in (-1, 0, 1):
            cu, cv = gu + du, gv + dv
            su, sv = (cu + jitter[0][cu % 64, cv % 64]) * period, (cv + jitter[1][cu % 64, cv % 64]) * period
            d.append(np.hypot(u - su, v - sv))
    d = np.sort(np.stack(d), axis=0)
    return -np.exp(-((d[1] - d[0]) / 1.5) ** 2)


def _frac(t):
    return t - np.floor(t) - 0.5


def _sin(t):
    return np.sin(2 * np.pi * t)


def _line(t, p):
    """Bright within about a pixel of where t (in periods of p px) is a whole number."""
    return np.exp(-(p * _frac(t + 0.5)) ** 2 / 1.5)


# name -> (period range in px, texture of rotated coordinates u, v, period p, shape a in [0, 1), rng r)
FAMILIES = {
    "stripes1": ((6, 11), lambda u, v, p, a, r: _sin(u / p)),
    "checker1": ((10, 18), lambda u, v, p, a, r: np.tanh(4 * _sin(u / p) * _sin(v / p))),
    "dots1": ((8, 13), lambda u, v, p, a, r: np.exp(-(_frac(u / p) ** 2 + _frac(v / p) ** 2) / (0.02 + 0.02 * a))),
    "grid1": ((10, 16), lambda u, v, p, a, r: -np.maximum(_line(u / p, p), _line(v / p, p))),
    "waves1": ((7, 12), lambda u, v, p, a, r: _sin((u + (0.5 + a) * p * _sin(v / (3 * p))) / p)),
    "blobs1": ((3, 5), lambda u, v, p, a, r: np.tanh(3 * _norm(_blur(r.normal(size=u.shape), p)))),
    "bricks1": ((8, 12), lambda u, v, p, a, r: -np.maximum(  # odd rows shifted by half a brick
        _line(v / p, p), _line((u + p * (np.floor(v / p) % 2)) / (2 * p), 2 * p))),
    "zigzag1": ((6, 10), lambda u, v, p, a, r: _sin((u + (1 + a) * p * abs(_frac(v / (2 * p)))) / p)),
    "cells1": ((10, 16), lambda u, v, p, a, r: _cells(u, v, p, r)),
    "grain1": ((0.6, 1.0), lambda u, v, p, a, r: _blur(r.normal(size=u.shape), p)),
    "dashes1": ((6, 10), lambda u, v, p, a, r: np.tanh(3 * _sin(u / p)) * (_sin(v / (2.5 * p)) > -0.3)),
    "speckle1": ((5, 8), lambda u, v, p, a, r: _blur(r.random(u.shape) < 1.5 / p ** 2, 1.0 + 0.5 * a)),
}


def _norm(t):
    return (t - t.mean()) / (t.std() + 1e-8)


def demo_patch(family, params, rng, size):
    """One patch: the sample's parameters, a random placement, sensor-like noise; mean 127, std 40 like Kylberg."""
    angle, period, aux, noise = params
    y, x = np.mgrid[:size, :size].astype(np.float64)
    x, y = x + rng.uniform(0, 1000), y + rng.uniform(0, 1000)
    u, v = np.cos(angle) * x + np.sin(angle) * y, -np.sin(angle) * x + np.cos(angle) * y
    t = _norm(FAMILIES[family][1](u, v, period, aux, rng)) + rng.normal(0, noise, (size, size))
    return np.clip(np.rint(_norm(t) * 40 + 127), 0, 255).astype(np.uint8)


def demo_image(name, sample, k, size, seed=0):
    """Patch k of sample `sample` (0 to 3: a to d) of the family `name`, as make_demo writes it: the
    sample's parameters drawn from (seed, family, sample), the patch's placement from k as well."""
    ci, (lo, hi) = list(FAMILIES).index(name), FAMILIES[name][0]
    g = np.random.default_rng([seed, ci, sample])
    params = (g.uniform(-0.3, 0.3), g.uniform(lo, hi), g.random(), g.uniform(0.2, 0.6))
    return demo_patch(name, params, np.random.default_rng([seed, ci, sample, k]), size)


def make_demo(out_dir, classes=6, patches=40, size=96, seed=0, photographs=()):
    """Write a procedural demo set in the Kylberg layout <out>/<class>/<class>-<a..d>-p<NNN>.png.

    Each sample letter is one realisation with its own angle, period and noise; its patches are
    placements of it. `photographs`: names of photos.PHOTOS added as classes (photos.write_class).
    The folder appears whole, and only where none was (or an empty one): a folder that holds files,
    an earlier demo set included, is never replaced (find_demo tells whether it holds this one).
    Returns the class names.
    """
    if not 1 <= classes <= len(FAMILIES):
        raise DataError(f"--demo-classes {classes}: choose 1 to {len(FAMILIES)}")
    if patches < 4 or size < 16:
        raise DataError(f"--demo-patches {patches} / --demo-size {size}: need at least 4 patches of 16 px")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise DataError(f"{out_dir}: not empty, and its files are kept; choose another folder")
    if why := memory.shortfall(memory.demo((classes + len(photographs)) * patches, size), torch.device("cpu")):
        raise DataError(f"--demo-size {size}: {(classes + len(photographs)) * patches} patches of {size} px, {why}")
    names = list(FAMILIES)[:classes]
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".demo-")
    try:
        for ci, name in enumerate(names):
            os.makedirs(os.path.join(tmp, name))
            for si, letter in enumerate("abcd"):
                for k in range(patches // 4 + (si < patches % 4)):
                    img = demo_image(name, si, k, size, seed)
                    Image.fromarray(img, "L").save(os.path.join(tmp, name, f"{name}-{letter}-p{k + 1:03d}.png"))
        for name in photographs:
            try:
                photos.write_class(tmp, name, patches, size, seed)
            except ValueError as e:
                raise DataError(str(e))
        names += list(photographs)
        record = {"classes": names, "patches": patches, "size": size, "seed": seed, "photographs": list(photographs)}
        with open(os.path.join(tmp, "demo.json"), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)  # empty (checked above)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return names


def find_demo(out_dir, classes, patches, size, seed, photographs=()):
    """The class names of the demo set in out_dir if make_demo made it with these settings; None if
    out_dir is missing or empty. A folder that holds something else is a DataError naming it and, for
    a demo set of other settings, the first setting that differs (as its flag)."""
    if not os.path.isdir(out_dir) or not os.listdir(out_dir):
        return None
    try:
        with open(os.path.join(out_dir, "demo.json"), encoding="utf-8") as f:
            have = json.load(f)
        have = {"--demo-classes": len(have["classes"]) - len(have["photographs"]), "--demo-patches": have["patches"],
                "--demo-size": have["size"], "--seed": have["seed"], "--demo-photos": ",".join(have["photographs"]),
                "classes": have["classes"]}
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{out_dir}: holds files but no demo set made by this project, which are kept")
    want = {"--demo-classes": classes, "--demo-patches": patches, "--demo-size": size, "--seed": seed,
            "--demo-photos": ",".join(photographs)}
    for flag, value in want.items():
        if have[flag] != value:
            shown = [repr(v) if v == "" else str(v) for v in (have[flag], value)]
            raise DataError(f"{out_dir}: holds the demo set made with {flag} {shown[0]}, not {shown[1]}")
    return have["classes"]


def demo_photographs(spec):
    """--demo-photos as a tuple of names; a DataError naming the flag if one is unknown."""
    try:
        return photos.parse(spec)
    except ValueError as e:
        raise DataError(str(e))
