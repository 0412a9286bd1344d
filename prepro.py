"""Prepare the Kylberg Texture Dataset (or any folder-per-class image set) and serve it in batches.

    python prepro.py                              # download the 28 per-class zips, verify, extract, split
    python prepro.py --zips-dir ~/kylberg-zips    # no network: use zips you downloaded by hand
    python prepro.py --data-dir ~/my-textures     # any folder-per-class dataset: check, cache, split
    python prepro.py --demo                       # offline procedural demo set in data/demo (seconds)
    python prepro.py --demo --data-dir data/demo10 --demo-classes 10 --demo-patches 80 --demo-size 128

Images of any mode become 8-bit grayscale; if their sizes differ, all are centre-cropped to the
common minimum. They are decoded once into a uint8 cache in the data folder (rebuilt when a file
changes), and the train/test split is written beside it. Splits: `patch` holds out a share of the
patches of every class, `source` holds out every patch of the last sample letter (d in Kylberg), so
no test patch comes from a photograph seen in training; `all` evaluates on everything.
"""
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import hyperparams

KYLBERG = ("blanket1 blanket2 canvas1 ceiling1 ceiling2 cushion1 floor1 floor2 grass1 lentils1 linseeds1 "
           "oatmeal1 pearlsugar1 rice1 rice2 rug1 sand1 scarf1 scarf2 screen1 seat1 seat2 sesameseeds1 "
           "stone1 stone2 stone3 stoneslab1 wall1").split()
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".pgm", ".ppm", ".webp")
JUNK = {"__MACOSX", "Thumbs.db", ".DS_Store", "desktop.ini"}
NAME = re.compile(r"^(.+?)[-.]([A-Za-z])-p(\d+)\.\w+$")  # blanket1-a-p001.png, rice1.b-p001.png
CACHE = "prepro_cache.pt"


class DataError(Exception):
    """A dataset problem; the one-line message names the file or folder."""


def label_from_filename(name):
    m = NAME.match(os.path.basename(name))
    if not m:
        raise DataError(f"{name}: not a Kylberg file name like blanket1-a-p001.png")
    return m.group(1)


def load_gray(path):
    """Any image mode -> uint8 (H, W); 16-bit data is rescaled (x/257), not clipped."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                a = np.asarray(im, dtype=np.float64) / 257.0
                return torch.from_numpy(np.clip(np.rint(a), 0, 255).astype(np.uint8))
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA").convert("RGB")  # alpha is dropped, not composited
            return torch.from_numpy(np.array(im.convert("L"), dtype=np.uint8))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable image ({str(e).splitlines()[0] if str(e) else type(e).__name__})")


def _is_junk(relpath):
    parts = re.split(r"[/\\]", relpath)
    return any(p in JUNK for p in parts) or parts[-1].startswith(".")


def _is_image(relpath):
    return relpath.lower().endswith(IMAGE_EXTS) and not _is_junk(relpath)


# ---- download, verify, extract ---------------------------------------------------------------

def download(url, path, desc=None):
    """Fetch url to path through path.part, resuming a partial file with an HTTP Range request."""
    part = path + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch: the part file is whole
            os.replace(part, path)
            return
        raise DataError(f"download failed: {url} (HTTP {e.code} {e.reason})")
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"download failed: {url} ({getattr(e, 'reason', e)})")
    with resp:
        if resp.status != 206:  # the server ignored Range: start again
            have = 0
        total = resp.headers.get("Content-Range", "").rpartition("/")[2]
        total = int(total) if total.isdigit() else (have + resp.length if resp.length is not None else None)
        try:
            with open(part, "ab" if have else "wb") as f, \
                    tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                         desc=desc or os.path.basename(path), leave=False) as bar:
                while chunk := resp.read(1 << 16):
                    f.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:
            raise DataError(f"download interrupted: {url} ({e}); run again to resume")
    if total is not None and os.path.getsize(part) != total:
        got = os.path.getsize(part)
        raise DataError(f"download incomplete: {url} ({got} of {total} bytes); run again to resume")
    os.replace(part, path)


def verify_zip(path):
    """Refuse entries that would land outside the target folder, and truncated or corrupt zips."""
    try:
        with zipfile.ZipFile(path) as z:
            for n in z.namelist():
                if n.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", n) or ".." in re.split(r"[/\\]", n):
                    raise DataError(f"{path}: refused, entry {n!r} would be written outside the data folder")
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise DataError(f"{path}: truncated or corrupt zip ({e}); delete it and run again")
    if bad is not None:
        raise DataError(f"{path}: corrupt zip (bad CRC in {bad}); delete it and run again")


def extract_class(zip_path, dest):
    """Extract the images of one class zip into the folder dest, all or nothing (temp dir + rename)."""
    from torchvision.datasets.utils import extract_archive  # imported here: it costs seconds at start-up

    verify_zip(zip_path)
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".extract-")
    try:
        extract_archive(zip_path, os.path.join(tmp, "raw"))
        out = os.path.join(tmp, "out")
        os.makedirs(out)
        for root, _, files in os.walk(os.path.join(tmp, "raw")):
            for f in files:
                rel = os.path.relpath(os.path.join(root, f), tmp)
                if _is_image(rel):  # class zips may or may not hold a folder: keep the files only
                    os.replace(os.path.join(root, f), os.path.join(out, f))
        if not os.listdir(out):
            raise DataError(f"{zip_path}: no images inside")
        os.replace(out, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_kylberg(url, zips_dir, data_dir, classes=KYLBERG):
    """Download the missing per-class zips, then extract all of them; data_dir appears only when complete."""
    os.makedirs(zips_dir, exist_ok=True)
    zips = {c: os.path.join(zips_dir, f"{c}-without-rotations.zip") for c in classes}
    missing = [c for c in classes if not os.path.isfile(zips[c])]
    if missing:
        print(f"downloading {len(missing)} zips from {url} to {zips_dir}")
    for k, c in enumerate(missing):
        try:
            download(url.rstrip("/") + "/" + os.path.basename(zips[c]), zips[c], f"{c} ({k + 1}/{len(missing)})")
        except DataError as e:
            raise DataError(f"{e}; without network, put the {len(classes)} <class>-without-rotations.zip files "
                            f"in a folder and pass --zips-dir DIR, or pass an extracted dataset with "
                            f"--data-dir DIR ({data_dir} does not hold one)") from None
    staging = data_dir.rstrip("/\\") + ".partial"  # classes extracted by an interrupted run are kept
    for c in classes:
        if not os.path.isdir(os.path.join(staging, c)):
            extract_class(zips[c], os.path.join(staging, c))
    if os.path.isdir(data_dir):
        os.rmdir(data_dir)  # empty (checked by the caller)
    os.replace(staging, data_dir)


def needs_fetch(data_dir):
    return not os.path.isdir(data_dir) or not os.listdir(data_dir)


# ---- procedural demo dataset -----------------------------------------------------------------

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


def make_demo(out_dir, classes=6, patches=40, size=96, seed=0):
    """Write a procedural demo set in the Kylberg layout <out>/<class>/<class>-<a..d>-p<NNN>.png.

    Each sample letter is one realisation with its own angle, period and noise; its patches are
    placements of it. The folder is replaced as a whole. Returns the class names.
    """
    if not 1 <= classes <= len(FAMILIES):
        raise DataError(f"--demo-classes {classes}: choose 1 to {len(FAMILIES)}")
    if patches < 4 or size < 16:
        raise DataError(f"--demo-patches {patches} / --demo-size {size}: need at least 4 patches of 16 px")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not os.path.isfile(os.path.join(out_dir, "demo.json")):
        raise DataError(f"{out_dir}: exists and is not a demo set; choose another --data-dir")
    names = list(FAMILIES)[:classes]
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".demo-")
    try:
        for ci, name in enumerate(names):
            os.makedirs(os.path.join(tmp, name))
            lo, hi = FAMILIES[name][0]
            for si, letter in enumerate("abcd"):
                g = np.random.default_rng([seed, ci, si])
                params = (g.uniform(-0.3, 0.3), g.uniform(lo, hi), g.random(), g.uniform(0.2, 0.6))
                for k in range(patches // 4 + (si < patches % 4)):
                    img = demo_patch(name, params, np.random.default_rng([seed, ci, si, k]), size)
                    Image.fromarray(img, "L").save(os.path.join(tmp, name, f"{name}-{letter}-p{k + 1:03d}.png"))
        record = {"classes": names, "patches": patches, "size": size, "seed": seed}
        _dump_json(record, os.path.join(tmp, "demo.json"))
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return names


# ---- dataset: scan, cache, split -------------------------------------------------------------

def scan(data_dir):
    """Sorted (relative path, class) of every image: classes are the folder names, or the Kylberg
    file-name prefix for images lying directly in data_dir."""
    if not os.path.isdir(data_dir):
        raise DataError(f"{data_dir}: data folder not found; run `python prepro.py` or `python prepro.py --demo`")
    found = []
    for entry in sorted(os.listdir(data_dir)):
        path = os.path.join(data_dir, entry)
        if os.path.isdir(path) and not _is_junk(entry):
            files = [os.path.relpath(os.path.join(r, f), data_dir) for r, dirs, fs in os.walk(path)
                     for f in fs if _is_image(os.path.relpath(os.path.join(r, f), data_dir))]
            if not files:
                raise DataError(f"{path}: class folder has no images")
            found += [(f, entry) for f in sorted(files)]
        elif _is_image(entry):
            found.append((entry, label_from_filename(entry)))
    if not found:
        raise DataError(f"{data_dir}: no images (expected one folder per class, or Kylberg-named files)")
    return sorted(found, key=lambda fc: (fc[1], fc[0]))


def _fingerprint(data_dir, files):
    h = hashlib.sha1()
    for f in files:
        st = os.stat(os.path.join(data_dir, f))
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _decode(data_dir, found):
    """Decode every image (threads: PIL releases the GIL), leave out the unreadable ones with a warning."""
    paths = [os.path.join(data_dir, f) for f, _ in found]

    def load(p):
        try:
            return load_gray(p)
        except DataError as e:
            return str(e)

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        loaded = list(tqdm(pool.map(load, paths), total=len(paths), desc="decode", unit="img",
                           disable=len(paths) < 500))
    keep = [i for i, im in enumerate(loaded) if torch.is_tensor(im)]
    skipped = [im for im in loaded if not torch.is_tensor(im)]
    for msg in skipped:
        print(f"warning: {msg}; left out", file=sys.stderr)
    classes = sorted({c for _, c in found})
    if empty := sorted(set(classes) - {found[i][1] for i in keep}):
        raise DataError(f"{os.path.join(data_dir, empty[0])}: class {empty[0]} has no readable image")
    sizes = torch.tensor([loaded[i].shape for i in keep])
    h, w = sizes.min(0).values.tolist()  # differing sizes: centre-crop all to the common minimum
    images = torch.stack([im[(im.shape[0] - h) // 2:][:h, (im.shape[1] - w) // 2:][:, :w]
                          for im in (loaded[i] for i in keep)])
    return {"classes": classes, "files": [found[i][0] for i in keep], "images": images, "sizes": sizes,
            "labels": torch.tensor([classes.index(found[i][1]) for i in keep]), "skipped": skipped}


def _dump_json(obj, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)


def _write_atomic(path, write):
    try:
        hyperparams.write_atomic(path, write)
    except OSError as e:  # a read-only data folder still works, only slower next time
        print(f"warning: could not write {path} ({e})", file=sys.stderr)


def load_cache(data_dir):
    """The decoded dataset, from the uint8 cache when its file list, sizes and mtimes still match."""
    found = scan(data_dir)
    key = _fingerprint(data_dir, [f for f, _ in found])
    path = os.path.join(data_dir, CACHE)
    data = None
    if os.path.isfile(path):
        try:
            data = torch.load(path, weights_only=True, mmap=True)
        except Exception:  # unreadable cache: it is only a cache, rebuild it
            data = None
    if data is not None and data.get("key") == key:
        for msg in data["skipped"]:
            print(f"warning: {msg}; left out", file=sys.stderr)
        return data
    data = _decode(data_dir, found)
    data["key"] = key
    _write_atomic(path, lambda tmp: torch.save(data, tmp))
    return data


def _sample_letters(files, data_dir):
    """The Kylberg sample letter (a..d) of each file: which photograph its patch was cut from."""
    letters = []
    for f in files:
        m = NAME.match(os.path.basename(f))
        if not m:
            raise DataError(f"{os.path.join(data_dir, f)}: --split source needs names <class>-<sample>-pNNN")
        letters.append(m.group(2).lower())
    return letters


def split_indices(data, split, test_fraction, seed, data_dir="."):
    """(train, test) index tensors: deterministic for a given file list, split, fraction and seed."""
    labels, n = data["labels"], len(data["files"])
    if split == "all":
        return torch.arange(n), torch.arange(n)
    test = torch.zeros(n, dtype=torch.bool)
    g = torch.Generator().manual_seed(seed)
    for c, name in enumerate(data["classes"]):
        members = (labels == c).nonzero().flatten()
        if split == "patch":
            k = min(max(1, round(test_fraction * len(members))), len(members) - 1)
            test[members[torch.randperm(len(members), generator=g)[:k]]] = True
        elif split == "source":
            samples = _sample_letters([data["files"][i] for i in members.tolist()], data_dir)
            if len(set(samples)) < 2:
                raise DataError(f"{os.path.join(data_dir, name)}: --split source needs two or more samples "
                                f"(a..d), found only {samples[0]}")
            test[members[torch.tensor([s == max(samples) for s in samples])]] = True
        else:
            raise ValueError(f"unknown split {split!r}")
    return (~test).nonzero().flatten(), test.nonzero().flatten()


def training_files(data_dir, split, test_fraction, seed):
    """Real paths of the images that a run with these split settings trained on."""
    data = load_cache(data_dir)
    train, _ = split_indices(data, split, test_fraction, seed, data_dir)
    return {os.path.realpath(os.path.join(data_dir, data["files"][i])) for i in train.tolist()}


@dataclass
class Split:
    classes: list
    train_images: torch.Tensor
    train_labels: torch.Tensor
    train_files: list
    test_images: torch.Tensor
    test_labels: torch.Tensor
    test_files: list


def load_data(data_dir, split="patch", test_fraction=0.25, image_size=224, seed=0):
    """Load (through the cache) and split a folder-per-class dataset; the split is written to split_<name>.json."""
    data = load_cache(data_dir)
    small = [f for f, s in zip(data["files"], data["sizes"].tolist()) if min(s) < image_size]
    if small:
        more = f" and {len(small) - 3} more" if len(small) > 3 else ""
        raise DataError(f"{', '.join(os.path.join(data_dir, f) for f in small[:3])}{more}: "
                        f"smaller than the {image_size} px crop; pass a smaller --image-size")
    train, test = split_indices(data, split, test_fraction, seed, data_dir)
    files = data["files"]
    record = {"split": split, "test_fraction": test_fraction, "seed": seed, "classes": data["classes"],
              "train": [files[i] for i in train.tolist()], "test": [files[i] for i in test.tolist()]}
    path = os.path.join(data_dir, f"split_{split}.json")
    _write_atomic(path, lambda tmp: _dump_json(record, tmp))
    train_images = data["images"][train]
    test_images = train_images if split == "all" else data["images"][test]
    return Split(data["classes"], train_images, data["labels"][train], record["train"],
                 test_images, data["labels"][test], record["test"])


# ---- batches ---------------------------------------------------------------------------------

class Batches:
    """Batches of (x float32 (B, 1, S, S) in [0, 1], y int64 (B,)) made from a uint8 (N, H, W) tensor.

    train: shuffled by seed + epoch (pass the same seed on every rank), random crops with flips and
    90-degree rotations drawn per rank, drop_last, equal-length disjoint shards per rank.
    eval: in order, centre crop (crop="center") or the whole image (crop="full"), sharded rank::world_size.
    All randomness of an epoch is drawn up front, so `workers` prefetch threads give the same batches.
    """

    def __init__(self, images, labels, batch_size, image_size, train, seed=0, rank=0, world_size=1,
                 crop="center", workers=0):
        n, h, w = images.shape
        if image_size > min(h, w):
            raise DataError(f"--image-size {image_size} is larger than the {h}x{w} images")
        if train and n // world_size < batch_size:
            raise DataError(f"--batch-size {batch_size} is more than the {n // world_size} training images "
                            "per process")
        self.images, self.labels = images, labels
        self.batch_size, self.image_size, self.train = batch_size, image_size, train
        self.seed, self.rank, self.world_size, self.crop, self.workers = seed, rank, world_size, crop, workers
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        if self.train:
            return len(self.images) // self.world_size // self.batch_size
        return -(-len(range(self.rank, len(self.images), self.world_size)) // self.batch_size)

    def indices(self):
        """This rank's image indices for the current epoch, in the order they are served."""
        n = len(self.images)
        if not self.train:
            return torch.arange(self.rank, n, self.world_size)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        return perm[self.rank::self.world_size][:len(self) * self.batch_size]

    def _plans(self):
        idx = self.indices().split(self.batch_size)
        if not self.train:
            return [(i,) for i in idx]
        g = torch.Generator().manual_seed((self.seed + self.epoch) * 1_000_003 + self.rank)
        _, h, w = self.images.shape
        s, shape = self.image_size, (len(self), self.batch_size)
        oy, ox = torch.randint(h - s + 1, shape, generator=g), torch.randint(w - s + 1, shape, generator=g)
        flips = torch.rand((3,) + shape, generator=g) < 0.5  # flip y, flip x, transpose: the 8 symmetries
        return [(i, oy[k], ox[k], flips[:, k]) for k, i in enumerate(idx)]

    def _train_batch(self, idx, oy, ox, flips):
        """Crop, flip and rotate the whole batch in one gather: the symmetries are index arithmetic."""
        s = self.image_size
        r = torch.arange(s)
        ry = torch.where(flips[0][:, None], s - 1 - r, r) + oy[:, None]
        rx = torch.where(flips[1][:, None], s - 1 - r, r) + ox[:, None]
        t = flips[2][:, None, None]
        rows = torch.where(t, ry[:, None, :], ry[:, :, None])
        cols = torch.where(t, rx[:, :, None], rx[:, None, :])
        return self.images[idx[:, None, None], rows, cols]

    def _batch(self, idx, *aug):
        if self.train:
            x = self._train_batch(idx, *aug)
        elif self.crop == "full":
            x = self.images[idx]
        else:
            _, h, w = self.images.shape
            top, left = (h - self.image_size) // 2, (w - self.image_size) // 2
            x = self.images[idx, top:top + self.image_size, left:left + self.image_size]
        return x.unsqueeze(1).float().div_(255), self.labels[idx]

    def __iter__(self):
        plans = self._plans()
        if self.workers == 0:
            for p in plans:
                yield self._batch(*p)
            return
        with ThreadPoolExecutor(self.workers) as pool:
            todo, pending = iter(plans), deque()
            for p in todo:
                pending.append(pool.submit(self._batch, *p))
                if len(pending) >= 2 * self.workers:
                    break
            while pending:
                batch = pending.popleft().result()
                if (p := next(todo, None)) is not None:
                    pending.append(pool.submit(self._batch, *p))
                yield batch


# ---- command line ----------------------------------------------------------------------------

def check_flags(args, given):
    """Flags that would have no effect: the demo's without --demo, the download's with it."""
    if not args.demo and (demo := sorted(given & {"demo_classes", "demo_patches", "demo_size"})):
        return f"--{demo[0].replace('_', '-')} applies to --demo only"
    if args.demo and (fetch := sorted(given & {"url", "zips_dir"})):
        return f"--{fetch[0].replace('_', '-')} has no effect with --demo, which downloads nothing"
    return None


def main(argv=None):
    def extra(parser):
        parser.add_argument("--demo", action="store_true",
                            help=f"write the procedural demo set to --data-dir (default with --demo: {hyperparams.DEMO_DIR})")

    groups = ["seed", "fetch", "data", "crop", "demo"]
    args = hyperparams.parse_args(__doc__, groups, argv, extra=extra, check=check_flags)
    data_dir = args.data_dir
    try:
        if args.demo:
            if "data_dir" not in hyperparams.given(argv, groups, extra):
                data_dir = args.data_dir = hyperparams.DEMO_DIR
            make_demo(data_dir, args.demo_classes, args.demo_patches, args.demo_size, args.seed)
            if args.image_size > args.demo_size:  # the 224 default crop is for Kylberg
                print(f"--image-size {args.image_size} capped to the demo's {args.demo_size} px patches")
                args.image_size = args.demo_size
        elif needs_fetch(data_dir):
            fetch_kylberg(args.url, args.zips_dir, data_dir)
        s = load_data(data_dir, args.split, args.test_fraction, args.image_size, args.seed)
        hyperparams.save_args(args, os.path.join(data_dir, "prepro_args.json"))
    except DataError as e:
        raise SystemExit(f"prepro.py: error: {e}")
    except OSError as e:  # a read-only or full data folder: the cache, split or settings cannot be written
        raise SystemExit(f"prepro.py: error: {e.filename or data_dir}: cannot write ({e.strerror or e})")
    h, w = s.train_images.shape[1:]
    n = len(s.train_files) if args.split == "all" else len(s.train_files) + len(s.test_files)
    print(f"{data_dir}: {len(s.classes)} classes, {n} images of {h}x{w}, split {args.split}: "
          f"{len(s.train_files)} train / {len(s.test_files)} test (crop {args.image_size})")


if __name__ == "__main__":
    main()
