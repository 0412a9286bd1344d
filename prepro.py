"""Prepare the Kylberg Texture Dataset (or any folder-per-class image set): fetch, check, cache, split.

    python prepro.py                              # download the 28 per-class zips, verify, extract, split
    python prepro.py --zips-dir ~/kylberg-zips    # no network: use zips you downloaded by hand
    python prepro.py --data-dir ~/my-textures     # any folder-per-class dataset: check, cache, split
    python prepro.py --demo                       # offline demo set in data/demo: procedural classes and 4 photographs (seconds)
    python prepro.py --demo --demo-photos ""      # procedural classes only
    python prepro.py --demo --data-dir data/demo10 --demo-classes 10 --demo-patches 80 --demo-size 128

Images of any mode become 8-bit grayscale; if their sizes differ, all are centre-cropped to the
common minimum. They are decoded once into a uint8 cache in the data folder (rebuilt when a file
changes), and the train/test split is written beside it. Splits: `patch` holds out a share of the
patches of every class, `source` holds out every patch of the last sample letter (d in Kylberg), so
no test patch comes from a photograph seen in training; `all` evaluates on everything.
The work is done by texture/data/: kylberg.py (download, verify, extract), procedural.py and
photographs.py (the demo set), images.py and folders.py (decoding, cache, splits); batches.py serves
the images to train.py.
"""
import json
import os
import urllib.parse

import hyperparams
from hyperparams import Hyperparams
from texture.data.folders import load_data
from texture.data.images import DataError
from texture.data.kylberg import fetch_kylberg, needs_fetch
from texture.data.procedural import demo_photographs, find_demo, make_demo
from texture.run.outputs import save_args


def check_flags(args, given):
    """Flags that would have no effect: the demo's without --demo, the split's without it (train.py
    splits the data it trains on by its own flags), the download's with it; a --url that is no URL."""
    if not args.demo and (demo := sorted(given & {"demo_classes", "demo_patches", "demo_size", "demo_photos"})):
        return f"--{demo[0].replace('_', '-')} applies to --demo only"
    if not args.demo and (split := sorted(given & {"split", "test_fraction", "seed"})):
        flag = "--" + split[0].replace("_", "-")
        return f"{flag} has no effect without --demo: train.py splits the data itself (train.py {flag})"
    if args.demo and (fetch := sorted(given & {"url", "zips_dir"})):
        return f"--{fetch[0].replace('_', '-')} has no effect with --demo, which downloads nothing"
    if "url" in given and urllib.parse.urlsplit(args.url).scheme not in ("http", "https", "ftp", "file"):
        return f"--url {args.url}: not a URL (http://, https://, ftp:// or file://)"
    return None


def prepare_demo(args, data_dir):
    """Write the demo set to data_dir, or reuse the one there when it was made with these settings
    (then nothing is written); another set there is an error naming --data-dir."""
    if args.image_size > args.demo_size:  # the 224 default crop is for Kylberg
        print(f"--image-size {args.image_size} capped to the demo's {args.demo_size} px patches")
        args.image_size = args.demo_size
    settings = (data_dir, args.demo_classes, args.demo_patches, args.demo_size, args.seed,
                demo_photographs(args.demo_photos))
    try:
        found = find_demo(*settings)
        recorded = {}
        if found and os.path.isfile(os.path.join(data_dir, "prepro_args.json")):
            with open(os.path.join(data_dir, "prepro_args.json"), encoding="utf-8") as f:
                recorded = json.load(f)
        for k in ("split", "test_fraction", "image_size"):  # the split prepared beside it
            if k in recorded and recorded[k] != getattr(args, k):
                raise DataError(f"{data_dir}: holds the demo set prepared with --{k.replace('_', '-')} {recorded[k]}, "
                                f"not {getattr(args, k)}")
    except (DataError, OSError, ValueError) as e:
        raise SystemExit(f"prepro.py: error: --data-dir {e}: pick another --data-dir for these settings")
    if found:
        print(f"{data_dir}: the demo set made with these settings is already there, reused as it is")
    else:
        make_demo(*settings)


def main(argv=None):
    def extra(parser):
        parser.add_argument("--demo", action="store_true",
                            help=f"write the demo set (procedural classes and --demo-photos) to --data-dir (default with --demo: {hyperparams.DEMO_DIR})")

    groups = ["seed", "fetch", "data", "crop", "demo"]
    args = hyperparams.parse_args(__doc__, groups, argv, extra=extra, check=check_flags)
    given = hyperparams.given(argv, groups, extra)
    data_dir = args.data_dir
    try:
        if args.demo:
            if "data_dir" not in given:
                data_dir = args.data_dir = hyperparams.DEMO_DIR
            prepare_demo(args, data_dir)
        elif needs_fetch(data_dir):
            if not os.path.isdir(data_dir) and os.path.abspath(data_dir) != os.path.abspath(Hyperparams.data_dir):
                raise DataError(f"--data-dir {data_dir}: no such folder; the download fills only "
                                f"{Hyperparams.data_dir} or an empty folder: create it first to download there")
            fetch_kylberg(args.url, args.zips_dir, data_dir)
        s = load_data(data_dir, args.split, args.test_fraction, args.image_size, args.seed)
        save_args(args, os.path.join(data_dir, "prepro_args.json"))
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
