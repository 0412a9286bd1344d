"""The target textures named on a command line (gen.py, texnet.py, fidelity.py): each one's label,
output folder and seed (plan), the image as synthesis reads it (load_target), and the images a
checkpoint was trained on, so that a verdict on one of them is marked as not held out.

    python -c "from texture.synthesis import targets; print(targets.plan(['a/blanket1-a-p001.png', 'b/blanket1-b-p002.png'], 'out', 0))"
"""
import os
import sys
import zlib

from tqdm import tqdm

from texture.data import folders
from texture.data.images import DataError, center_crop, label_from_filename, load_image, shrink
from texture.run.outputs import first_free

LARGE = 4  # an image whose shorter side is this many crops or more gets a note that --target-side exists


def label_of(path):
    """Kylberg class from the file name ('blanket1-a-p001.png' -> 'blanket1'), else the file stem."""
    name = os.path.basename(path)
    try:
        label = label_from_filename(name)
    except (ValueError, DataError):
        label = ""
    return label or os.path.splitext(name)[0]


def plan(paths, out_dir, seed, beside=False):
    """Folder and seed of every target: same-label targets get label, label-2, ...; each target's
    noise depends on --seed and its file name only, so batching and sharding do not change it.
    `beside`: an existing folder belongs to an earlier run, so a target whose folder exists gets the
    first free name instead (outputs.first_free), with the same noise."""
    jobs, used = [], {}
    for path in paths:
        label = label_of(path)
        used[label] = used.get(label, 0) + 1
        if beside:  # label, label-2, ...: the first that neither an earlier run nor this one holds
            folder = os.path.normpath(first_free(os.path.join(out_dir, label, ""), taken=[j["dir"] for j in jobs])[0])
        else:
            folder = os.path.join(out_dir, label if used[label] == 1 else f"{label}-{used[label]}")
        key = f"{seed}:{os.path.basename(path)}:{used[label]}"
        jobs.append({"path": path, "label": label, "dir": folder, "seed": zlib.crc32(key.encode())})
    return jobs


def load_target(path, args, min_side):
    """8-bit grey (H, W) in [0, 1], or RGB (3, H, W) where the image has colour and --colour is auto;
    shrunk first to --target-side when it is larger, then the centre --image-size crop unless --full or
    the image is smaller."""
    img = load_image(path, getattr(args, "colour", "grey"))
    h, w = img.shape[-2:]
    side, s = getattr(args, "target_side", 0), args.image_size
    if side and min(h, w) > side:
        img = shrink(img, side)
    elif not side and not args.full and min(h, w) >= LARGE * s:
        tqdm.write(f"{path}: {w}x{h}: its centre {s}x{s} crop is a small detail of it (--target-side N shrinks "
                   "the image first, to a shorter side of N px)", file=sys.stderr)
    img, (sh, sw) = img.float() / 255, img.shape[-2:]
    shrunk = f" (shrunk by --target-side {side})" if (sh, sw) != (h, w) else ""
    if not args.full and min(sh, sw) >= s:
        img = center_crop(img, s)
    elif not args.full:
        tqdm.write(f"{path}: {sw}x{sh}{shrunk}: its shorter side is under --image-size {s}; using the whole image",
                   file=sys.stderr)
    if min(img.shape[-2:]) < min_side:
        raise DataError(f"{path}: {sw}x{sh}{shrunk} is too small for these layers (needs >= {min_side} px)")
    # a uniform target has no feature statistics to match: its Gram matrices are 0 and the relative loss
    # divides by them (the run failed at its first step with an infinite loss, or in colour deep inside)
    if bool((img == img[..., :1, :1]).all()):
        where = "the image" if img.shape[-2:] == (sh, sw) else f"its centre {s}x{s} crop (--full takes the whole image)"
        kind = "colour" if img.dim() == 3 else "grey level"
        raise DataError(f"{path}: {where} is uniform, one {kind} throughout: there is no texture to synthesise")
    return img


def training_images(recorded):
    """Real paths of the images the checkpoint trained on, from its recorded split settings (None:
    they cannot tell)."""
    try:
        return folders.training_files(recorded["data_dir"], recorded["split"], recorded["test_fraction"],
                                      recorded["seed"])
    except (KeyError, DataError):
        return None
