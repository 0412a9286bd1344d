"""One image file as the scripts read it: decoded to 8-bit grey (or RGB where it has colour), or
rejected in one line that names the file; which files of a folder are images; Kylberg's file names; the one centre crop, and shrinking.

    python -c "from texture.data import images; print(images.load_gray('data/demo/dots1/dots1-a-p001.png').shape)"
"""
import os
import re

import numpy as np
import pillow_heif
import torch
from PIL import Image, ImageOps

pillow_heif.register_heif_opener()  # a phone's HEIC photographs (the iPhone's default), which Pillow alone cannot open
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".pgm", ".ppm", ".webp", ".heic", ".heif")
JUNK = {"__MACOSX", "Thumbs.db", ".DS_Store", "desktop.ini"}
NAME = re.compile(r"^(.+?)[-.]([A-Za-z])-p(\d+)\.\w+$")  # blanket1-a-p001.png, rice1.b-p001.png


class DataError(Exception):
    """A dataset problem; the one-line message names the file or folder."""


def label_from_filename(name):
    m = NAME.match(os.path.basename(name))
    if not m:
        raise DataError(f"{name}: not a Kylberg file name like blanket1-a-p001.png")
    return m.group(1)


def load_gray(path):
    """Any image file -> uint8 (H, W), upright (its EXIF orientation applied, as a viewer shows it).
    16-bit data is rescaled (x/257), not clipped: I;16, and mode I as PNG and PGM decode 16 bits;
    other mode I (32-bit integers) and float data (mode F) map their own range to 0..255. Colour
    becomes grey, alpha is dropped (not composited)."""
    return _gray(*_upright(path), path)


def load_image(path, colour="auto"):
    """uint8 (H, W) grey as load_gray, or (3, H, W) RGB when `colour` is auto and the image has colour:
    an RGB (or palette) image with a pixel whose channels differ. Upright and without alpha as load_gray
    makes it, so that an RGB image without colour gives load_gray's grey levels exactly. The file is
    decoded once (a phone's photograph takes a few tenths of a second)."""
    im, sixteen = _upright(path)
    grey = _gray(im, sixteen, path)
    if colour == "grey" or im.mode in ("L", "LA", "1", "F", "I", "I;16", "I;16L", "I;16B", "I;16N"):
        return grey
    rgb = torch.from_numpy(np.array(_without_alpha(im).convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)
    return rgb.contiguous() if (rgb != rgb[:1]).any() else grey


def _upright(path):
    """(the decoded image turned upright by its EXIF orientation, whether its samples are 16-bit); an
    unreadable file is a DataError naming it. The 16-bit test needs the file's format, which the
    turned copy no longer has."""
    try:
        with Image.open(path) as im:
            sixteen = im.mode.startswith("I;16") or im.mode == "I" and im.format in ("PNG", "PPM")
            return ImageOps.exif_transpose(im), sixteen  # a decoded copy, turned or not
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable image ({str(e).splitlines()[0] if str(e) else type(e).__name__})")


def _gray(im, sixteen, path):
    """The decoded image `im` as load_gray returns it."""
    if sixteen:
        a = np.asarray(im, dtype=np.float64) / 257.0
    elif im.mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        finite = a[np.isfinite(a)]
        if not finite.size:
            raise DataError(f"{path}: unreadable image (no finite pixel value)")
        lo, hi = finite.min(), finite.max()
        a = (np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo) - lo) * (255.0 / max(hi - lo, 1e-30))
    else:
        return torch.from_numpy(np.array(_without_alpha(im).convert("L"), dtype=np.uint8))
    return torch.from_numpy(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def _without_alpha(im):
    """`im` with its alpha channel or transparent palette entry dropped (not composited), as RGB."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        return im.convert("RGBA").convert("RGB")
    return im


def is_junk(relpath):
    parts = re.split(r"[/\\]", relpath)
    return any(p in JUNK for p in parts) or parts[-1].startswith(".")


def is_image(relpath):
    return relpath.lower().endswith(IMAGE_EXTS) and not is_junk(relpath)


def center_crop(img, h, w=None):
    """The centre h x w (w: h) of the last two dimensions of `img`, a view; a side already no longer
    than asked is kept whole. torchvision's center_crop would pad such a side instead, and it rounds
    half of an odd margin half-to-even (a margin of 3 puts 2 rows above), where this rounds down."""
    w = h if w is None else w
    top, left = max(0, (img.shape[-2] - h) // 2), max(0, (img.shape[-1] - w) // 2)
    return img[..., top:top + h, left:left + w]


def shrink(img, side):
    """uint8 (H, W) or (C, H, W) resized, keeping its aspect, so that its shorter side is `side` px, with
    Pillow's bicubic filter widened to the scale (antialiased, as image editors shrink photographs)."""
    h, w = img.shape[-2:]
    size = (round(w * side / h), side) if h <= w else (side, round(h * side / w))  # Pillow's (width, height)
    a = img.numpy() if img.dim() == 2 else img.permute(1, 2, 0).numpy()
    out = torch.from_numpy(np.array(Image.fromarray(np.ascontiguousarray(a)).resize(size, Image.Resampling.BICUBIC)))
    return out if img.dim() == 2 else out.permute(2, 0, 1).contiguous()
