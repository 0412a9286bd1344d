"""Real texture photographs shipped with scikit-image (no download), as classes in the Kylberg layout.

The centre square of each photograph is cut into its four quadrants, samples a..d, and a class's
patches are crops within a quadrant: `--split source` (hold out sample d) then tests on a region
of the photograph never seen in training, as Kylberg's samples are separate photographs.

    from texture.data import photographs
    photographs.write_class("data/demo", "brick", patches=40, size=96, seed=0)
"""
import os

import numpy as np
from PIL import Image
from skimage import data as samples
from skimage.color import rgb2gray

from hyperparams import PHOTOS  # brick, grass, gravel: 512 px grey; hubble_deep_field: galaxies (RGB, 872x1000)
from texture.data.images import center_crop


def parse(spec):
    """'brick,grass' -> ('brick', 'grass'); empty -> (); ValueError names --demo-photos."""
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    unknown = [n for n in names if n not in PHOTOS]
    if unknown or len(set(names)) < len(names):
        raise ValueError(f"--demo-photos {spec!r}: choose each at most once from {','.join(PHOTOS)}")
    return names


def photograph(name):
    """The centre square of a scikit-image sample photograph, uint8 grey (H, H)."""
    img = getattr(samples, name)()
    if img.ndim == 3:
        img = np.rint(rgb2gray(img[..., :3]) * 255).astype(np.uint8)
    return center_crop(img, min(img.shape))


def quadrants(img):
    """Samples a..d: top left, top right, bottom left, bottom right."""
    q = img.shape[0] // 2
    return [img[:q, :q], img[:q, q:2 * q], img[q:2 * q, :q], img[q:2 * q, q:2 * q]]


def write_class(out_dir, name, patches, size, seed):
    """Write <out_dir>/<name>/<name>-<a..d>-p<NNN>.png: `patches` crops of `size` px in all, a quarter
    from each quadrant, at seeded random places. Returns the number of files written."""
    parts = quadrants(photograph(name))
    if size > parts[0].shape[0]:
        raise ValueError(f"--demo-size {size}: larger than a quadrant of {name} ({parts[0].shape[0]} px)")
    os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    written = 0
    for si, (letter, part) in enumerate(zip("abcd", parts)):
        rng = np.random.default_rng([seed, PHOTOS.index(name), si])
        for k in range(patches // 4 + (si < patches % 4)):
            y, x = rng.integers(0, part.shape[0] - size + 1, 2)
            Image.fromarray(part[y:y + size, x:x + size], "L").save(
                os.path.join(out_dir, name, f"{name}-{letter}-p{k + 1:03d}.png"))
            written += 1
    return written
