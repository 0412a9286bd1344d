"""Evaluate a trained TextureNet on the images it held out, or classify single images.

Examples:
    python test.py                                   # newest checkpoint in asset/train/ckpt, its held-out images
    python test.py --ckpt best                       # best.pt: the best held-out accuracy of that run
    python test.py --ckpt runs/demo/ckpt --dtype fp32
    python test.py --ckpt best --split all           # every image, training ones included: the original's protocol
    python test.py --files gen_images/canvas1/final.png my_texture.png

The data settings (--data-dir, --split, --test-fraction, --seed, --image-size, --eval-crop) default to
those the checkpoint was trained with, so the held-out images are exactly the ones training held out;
flags given on the command line override them. An evaluation that would include images the checkpoint
trained on is refused, unless --split all is given: the result is then marked as including training
images. Prints which checkpoint it picked, the running `hits/n = acc`, the line `Final result is
hits/n = acc` and per-class accuracy; writes confusion.png and report.json to --test-dir (a later run:
confusion-2.png and report-2.json beside them). A checkpoint that cannot tell which images it trained on
(no recorded data settings, or its data folder gone) is refused likewise. With --files, prints
`path  class  probability` per image (centre crop of --image-size, or the whole image when smaller)
and notes on stderr each file the checkpoint trained on; the data flags have no use there.
"""
import os
import sys

import torch

import hyperparams
from texture.data import folders
from texture.data.batches import Batches
from texture.data.images import DataError, center_crop, load_gray
from texture.networks import checkpoints as C
from texture.networks.evaluation import cross_entropy_sum, predict
from texture.run import outputs
from texture.run.device import pick_device, pick_dtype

GROUPS = ["device", "seed", "data", "crop", "eval", "ckpt", "test"]
# What decides which images are evaluated and how: taken from the checkpoint unless given.
DATA_SETTINGS = ("data_dir", "split", "test_fraction", "seed", "image_size", "eval_crop")
# What --files does without: it classifies the files given, one by one, and writes nothing.
NOT_WITH_FILES = ("data_dir", "split", "test_fraction", "seed", "eval_crop", "eval_batch_size", "test_dir")


def add_files(parser):
    parser.add_argument("--files", nargs="+", metavar="PNG", help="classify these images instead of a split")


def check_flags(args, given):
    if args.files and (unused := [k for k in NOT_WITH_FILES if k in given]):
        return (f"--{unused[0].replace('_', '-')} has no effect with --files, which classifies the files given "
                "(with --ckpt, --image-size, --device and --dtype) and writes nothing")
    return None


def settings(argv):
    """(args, checkpoint path, checkpoint, names of the flags given): the data settings come from the
    checkpoint unless given on the command line."""
    args = hyperparams.parse_args(__doc__, GROUPS, argv, extra=add_files, check=check_flags)
    explicit = hyperparams.given(argv, GROUPS, add_files)
    path, how = C.find_checkpoint(args.ckpt)
    ckpt = C.load_checkpoint(path)
    print(f"checkpoint {path}: {how}")
    recorded = ckpt.get("hparams") or {}
    for k in DATA_SETTINGS:
        if k not in explicit and k in recorded:
            setattr(args, k, recorded[k])
    return args, path, ckpt, explicit


def trained_on(recorded):
    """(real paths of the images the checkpoint trained on, None), or (None, why its recorded settings
    cannot tell)."""
    if not {"data_dir", "split", "test_fraction", "seed"} <= set(recorded):
        return None, "it records no data settings"
    try:
        return folders.training_files(recorded["data_dir"], recorded["split"], recorded["test_fraction"],
                                      recorded["seed"]), None
    except DataError as e:
        return None, f"its training data cannot be read ({e})"


def crop(image, size):
    """Centre crop of `size` when the image is larger, the whole image when it is smaller."""
    if min(image.shape) < 32:
        raise DataError(f"{image.shape[1]}x{image.shape[0]} px is below the network's 32 px minimum")
    return center_crop(image, size)


def classify_files(args, net, ckpt, device, dtype):
    """`path  class  probability` per file; a note on stderr for a file the checkpoint trained on."""
    failed, classes, trained = 0, ckpt["classes"], trained_on(ckpt.get("hparams") or {})[0] or set()
    for path in args.files:
        try:
            x = crop(load_gray(path), args.image_size)[None, None].float() / 255
        except DataError as e:
            message = str(e) if path in str(e) else f"{path}: {e}"
            print(message, flush=True)
            failed += 1
            continue
        probs, _ = next(predict(net, [(x, torch.zeros(1))], device, dtype))
        p, k = probs[0].max(0)
        print(f"{path}  {classes[k]}  {p:.4f}", flush=True)
        if os.path.realpath(path) in trained:
            print(f"{path}: the checkpoint was trained on this image, so this is not a held-out result",
                  file=sys.stderr, flush=True)
    if failed:
        raise SystemExit(f"{failed} of {len(args.files)} file(s) could not be classified")


def write_report(args, path, classes, confusion, mistakes, extra):
    """report.json, confusion.png and hparams.json in --test-dir, numbered -2, -3, ... beside those of
    earlier runs (outputs.first_free); returns the report's path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(args.test_dir, exist_ok=True)
    json_path, png_path, args_path = outputs.first_free(
        *(os.path.join(args.test_dir, name) for name in ("report.json", "confusion.png", "hparams.json")))
    hits, n = confusion.diag().sum().item(), confusion.sum().item()
    per_class = {c: {"hits": confusion[i, i].item(), "n": confusion[i].sum().item(),
                     "accuracy": confusion[i, i].item() / max(1, confusion[i].sum().item())}
                 for i, c in enumerate(classes)}
    report = {"checkpoint": path, "data_dir": args.data_dir, "split": args.split, "image_size": args.image_size,
              "eval_crop": args.eval_crop, "hits": hits, "n": n, "accuracy": hits / max(1, n), **extra,
              "per_class": per_class, "classes": classes, "confusion": confusion.tolist(), "mistakes": mistakes}
    outputs.save_json(report, json_path)

    size = max(5.0, 0.35 * len(classes))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    shown = ax.imshow((confusion / confusion.sum(1, keepdim=True).clamp(min=1)).numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{hits}/{n} = {hits / max(1, n):.4f}" + (" (includes training images)" if extra["training_images"]
                                                           else ""))
    fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.tight_layout()
    outputs.write_atomic(png_path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    outputs.save_args(args, args_path)
    return json_path, png_path


def held_out(args, path, ckpt, explicit, data):
    """report.json's record of whether the images were held out. Images the checkpoint trained on, or
    images it cannot tell about, are refused unless --split all is given on purpose."""
    trained, why = trained_on(ckpt.get("hparams") or {})
    on_purpose = "split" in explicit and args.split == "all"
    if trained is None and not on_purpose:
        raise SystemExit(f"cannot tell whether these images were held out from {path}: {why}; pass --split all "
                         "to evaluate them anyway, not as a held-out accuracy")
    if trained is None:
        return {"training_images": None, "held_out": False}
    seen = sum(os.path.realpath(os.path.join(args.data_dir, f)) in trained for f in data.test_files)
    if seen and not on_purpose:
        raise SystemExit(f"{seen} of the {len(data.test_files)} images to evaluate were used to train {path}: "
                         "leave --data-dir/--split/--test-fraction/--seed to the checkpoint's, or pass "
                         "--split all to include training images on purpose")
    return {"training_images": seen, "held_out": seen == 0}


def evaluate_split(args, path, ckpt, explicit, device, dtype):
    data = folders.load_data(args.data_dir, args.split, args.test_fraction, args.image_size, args.seed)
    net, classes = C.model_from_checkpoint(ckpt, path, len(data.classes)), ckpt["classes"]
    if classes != data.classes:
        raise C.CheckpointError(f"{path}: trained on classes {','.join(classes)}, "
                                f"the data has {','.join(data.classes)}")
    extra = held_out(args, path, ckpt, explicit, data)
    net.to(device, memory_format=torch.channels_last)
    batches = Batches(data.test_images, data.test_labels, args.eval_batch_size, args.image_size, False,
                      crop=args.eval_crop)
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.int64)
    mistakes, seen, nll = [], 0, 0.0
    print(f"{path} on {len(data.test_labels)} {args.split} images of {args.data_dir}")
    for probs, y in predict(net, batches, device, dtype):
        p, k = probs.max(1)
        confusion.index_put_((y, k), torch.ones_like(y), accumulate=True)
        mistakes += [{"file": data.test_files[seen + i], "true": classes[y[i]], "predicted": classes[k[i]],
                      "probability": round(p[i].item(), 4)} for i in (k != y).nonzero()[:, 0].tolist()]
        seen += len(y)
        nll += cross_entropy_sum(probs, y).item()
        hits = confusion.diag().sum().item()
        print(f"{hits}/{seen} = {hits / seen:.4f}", flush=True)
    hits = confusion.diag().sum().item()
    print(f"Final result is {hits}/{seen} = {hits / max(1, seen):.4f}")
    if extra["training_images"]:
        print(f"NOTE: {extra['training_images']} of these {seen} images were used to train {path}: this figure "
              "includes training images, it is not a held-out accuracy")
    elif extra["training_images"] is None:
        print(f"NOTE: {path} cannot tell which of these {seen} images it was trained on: this figure is not a "
              "held-out accuracy")
    for i, c in enumerate(classes):
        row = confusion[i].sum().item()
        print(f"  {c:<16} {confusion[i, i].item()}/{row} = {confusion[i, i].item() / max(1, row):.4f}")
    try:
        written = write_report(args, path, classes, confusion, mistakes, {**extra, "loss": nll / max(1, seen)})
    except OSError as e:  # each report file is written whole under a new name: earlier ones stay as they were
        raise SystemExit(f"--test-dir {args.test_dir}: cannot write there ({e.strerror or e})")
    print(f"wrote {written[0]} and {os.path.basename(written[1])}")


def main(argv=None):
    try:
        args, path, ckpt, explicit = settings(argv)
        if args.image_size < 32:
            raise SystemExit(f"--image-size {args.image_size}: the network needs at least 32 px")
        device = pick_device(args.device)
        dtype = pick_dtype(args.dtype, device)
        if args.files:
            net = C.model_from_checkpoint(ckpt, path).to(device, memory_format=torch.channels_last)
            classify_files(args, net, ckpt, device, dtype)
        else:
            evaluate_split(args, path, ckpt, explicit, device, dtype)
    except (DataError, C.CheckpointError) as e:
        raise SystemExit(str(e))


if __name__ == "__main__":
    main()
