"""A folder-per-class image set as tensors: file names and labels, the uint8 cache, the train/test
splits.

    from texture.data.folders import load_data
    data = load_data("data/demo", "patch", test_fraction=0.25, image_size=64, seed=0)
    data.train_images  # uint8 (N, H, W); data.test_files: paths relative to the data folder

Images of any mode become 8-bit grayscale; if their sizes differ, all are centre-cropped to the
common minimum. They are decoded once into a uint8 cache in the data folder (rebuilt when a file
changes), and the split is written beside it (split_<name>.json).
"""
import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from tqdm import tqdm

from texture.data.images import NAME, DataError, center_crop, is_image, is_junk, label_from_filename, load_gray
from texture.run import outputs

CACHE = "prepro_cache.pt"


def scan(data_dir):
    """Sorted (relative path, class) of every image: classes are the folder names, or the Kylberg
    file-name prefix for images lying directly in data_dir."""
    if not os.path.isdir(data_dir):
        raise DataError(f"{data_dir}: data folder not found; run `python prepro.py` or `python prepro.py --demo`")
    found = []
    for entry in sorted(os.listdir(data_dir)):
        path = os.path.join(data_dir, entry)
        if os.path.isdir(path) and not is_junk(entry):
            files = [os.path.relpath(os.path.join(r, f), data_dir) for r, dirs, fs in os.walk(path)
                     for f in fs if is_image(os.path.relpath(os.path.join(r, f), data_dir))]
            if not files:
                raise DataError(f"{path}: class folder has no images")
            found += [(f, entry) for f in sorted(files)]
        elif is_image(entry):
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
    images = torch.stack([center_crop(loaded[i], h, w) for i in keep])
    return {"classes": classes, "files": [found[i][0] for i in keep], "images": images, "sizes": sizes,
            "labels": torch.tensor([classes.index(found[i][1]) for i in keep]), "skipped": skipped}


def _dump_json(obj, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)


def _write_atomic(path, write, writer=outputs.write_atomic):
    try:
        writer(path, write)
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
    # train.py and test.py derive it again on every run: the same split keeps its file as it is
    _write_atomic(path, lambda tmp: _dump_json(record, tmp), outputs.write_unless_same)
    train_images = data["images"][train]
    test_images = train_images if split == "all" else data["images"][test]
    return Split(data["classes"], train_images, data["labels"][train], record["train"],
                 test_images, data["labels"][test], record["test"])

