"""Every file a run writes, written atomically: JSON records, the settings a script ran with, PNGs
of images in [0, 1] as their saved 8-bit grey levels (RGB for (3, H, W) images), and the collection
of targets beside what was made from them; and the first free name for an output, so that a later
run writes beside an earlier one's outputs instead of over them.

    python -c "import torch; from texture.run import outputs; outputs.write_png(torch.rand(64, 64), 'noise.png')"
"""
import filecmp
import json
import os

import torch
from PIL import Image, ImageDraw
from torchvision.transforms.functional import pil_to_tensor
from torchvision.utils import make_grid


def write_atomic(path, write):
    """`write(tmp)` to a temp file beside `path`, then rename it over `path`: a crash or a full disk
    keeps the old file, and a failed write leaves no temp file behind. Every output goes through here."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def first_free(*paths, taken=()):
    """The paths as given when none of them exists yet (nor is in `taken`, names already handed out),
    else the same paths numbered -2, -3, ... alike, the first number for which none does: report.json
    -> report-2.json, gen_images/dots1/ -> gen_images/dots1-2/ (the number goes before a file's
    extension, at the end of a folder's name, which is given with a trailing slash). Returns a list."""
    def numbered(path, k):
        if k == 1:
            return path
        if path.endswith(("/", os.sep)):
            return f"{path.rstrip('/' + os.sep)}-{k}{os.sep}"
        stem, ext = os.path.splitext(path)
        return f"{stem}-{k}{ext}"
    taken = {os.path.normpath(t) for t in taken}
    k = 1
    while any(os.path.exists(p) or os.path.normpath(p) in taken for p in (numbered(q, k) for q in paths)):
        k += 1
    return [numbered(p, k) for p in paths]


class _Unchanged(Exception):
    pass


def write_unless_same(path, write):
    """write_atomic, except that a file already holding the same bytes is left as it is, date included:
    a record that a later run derives again with the same settings is not written over."""
    def replace_if_changed(tmp):
        write(tmp)
        if os.path.isfile(path) and filecmp.cmp(tmp, path, shallow=False):
            raise _Unchanged
    try:
        write_atomic(path, replace_if_changed)
    except _Unchanged:
        pass


def save_json(obj, path, **dump):
    """Write obj as JSON atomically; a file that holds that JSON already is left as it is."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=str, **dump)
    write_unless_same(path, write)


def save_args(args, path):
    """Write the settings a script ran with as JSON next to its outputs."""
    save_json(vars(args), path, sort_keys=True)


def grey_levels(img):
    """The image as saved: 8-bit grey levels, as float32 (H, W) (or (3, H, W) of each colour channel)."""
    return (img.detach().float().cpu().clamp(0, 1) * 255).round()


def to_uint8(img):
    """(H, W) in [0, 1] -> the 8-bit grey levels a PNG of it holds."""
    return grey_levels(img).to(torch.uint8)


def to_pil(img):
    """A (H, W) grey or (3, H, W) RGB image in [0, 1] as the 8-bit PIL image a PNG of it holds."""
    return Image.fromarray(to_uint8(img).permute(1, 2, 0).numpy() if img.dim() == 3 else to_uint8(img).numpy())


def write_png(img, path):
    """Save a (H, W) grey or (3, H, W) RGB image in [0, 1], or a PIL image, atomically."""
    pil = img if isinstance(img, Image.Image) else to_pil(img)
    write_atomic(path, lambda tmp: pil.save(tmp, format="PNG"))


def collection(entries, path):
    """Target (labelled with its name) and generated texture side by side, one pair per row; in colour
    if any of them is."""
    band, cells, names = 14, [], []
    imgs = [(Image.open(t), Image.open(g)) for _, t, g in entries]
    mode = "L" if all(i.mode == "L" for pair in imgs for i in pair) else "RGB"
    h = max(i.height for pair in imgs for i in pair) + band
    w = max(i.width for pair in imgs for i in pair)
    for (name, _, _), pair in zip(entries, imgs):
        for tag, im in zip((name, "generated"), pair):  # short tags: they must fit over a 64 px cell
            cell = torch.ones(len(mode), h, w)
            cell[:, band:band + im.height, :im.width] = pil_to_tensor(im.convert(mode)).float() / 255
            cells.append(cell)
            names.append(tag)
    pad = 4
    grid = make_grid(torch.stack(cells), nrow=2, padding=pad, pad_value=1)
    grid = Image.fromarray(to_uint8(grid).permute(1, 2, 0).numpy() if mode == "RGB" else to_uint8(grid[0]).numpy())
    draw = ImageDraw.Draw(grid)
    for i, text in enumerate(names):
        draw.text((pad + (i % 2) * (w + pad) + 2, pad + (i // 2) * (h + pad) + 1), text, fill=0)
    write_png(grid, path)
