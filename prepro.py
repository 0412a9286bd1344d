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
import os

import hyperparams
from texture.data.folders import load_data
from texture.data.images import DataError
from texture.data.kylberg import fetch_kylberg, needs_fetch
from texture.data.procedural import demo_photographs, make_demo
from texture.run.outputs import save_args


def check_flags(args, given):
    """Flags that would have no effect: the demo's without --demo, the download's with it."""
    if not args.demo and (demo := sorted(given & {"demo_classes", "demo_patches", "demo_size", "demo_photos"})):
        return f"--{demo[0].replace('_', '-')} applies to --demo only"
    if args.demo and (fetch := sorted(given & {"url", "zips_dir"})):
        return f"--{fetch[0].replace('_', '-')} has no effect with --demo, which downloads nothing"
    return None


def main(argv=None):
    def extra(parser):
        parser.add_argument("--demo", action="store_true",
                            help=f"write the demo set (procedural classes and --demo-photos) to --data-dir (default with --demo: {hyperparams.DEMO_DIR})")

    groups = ["seed", "fetch", "data", "crop", "demo"]
    args = hyperparams.parse_args(__doc__, groups, argv, extra=extra, check=check_flags)
    data_dir = args.data_dir
    try:
        if args.demo:
            if "data_dir" not in hyperparams.given(argv, groups, extra):
                data_dir = args.data_dir = hyperparams.DEMO_DIR
            make_demo(data_dir, args.demo_classes, args.demo_patches, args.demo_size, args.seed,
                      demo_photographs(args.demo_photos))
            if args.image_size > args.demo_size:  # the 224 default crop is for Kylberg
                print(f"--image-size {args.image_size} capped to the demo's {args.demo_size} px patches")
                args.image_size = args.demo_size
        elif needs_fetch(data_dir):
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
