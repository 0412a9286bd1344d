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
hits/n = acc` and per-class accuracy; writes confusion.png and report.json to --test-dir. With --files,
prints `path  class  probability` per image (centre crop of --image-size, or the whole image when
smaller).
"""
import os

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


def add_files(parser):
    parser.add_argument("--files", nargs="+", metavar="PNG", help="classify these images instead of a split")


def settings(argv):
    """(args, checkpoint path, checkpoint, names of the flags given): the data settings come from the
    checkpoint unless given on the command line."""
    args = hyperparams.parse_args(__doc__, GROUPS, argv, extra=add_files)
    explicit = hyperparams.given(argv, GROUPS, add_files)
    path, how = C.find_checkpoint(args.ckpt)
    ckpt = C.load_checkpoint(path)
    print(f"checkpoint {path}: {how}")
    recorded = ckpt.get("hparams") or {}
    for k in DATA_SETTINGS:
        if k not in explicit and k in recorded:
            setattr(args, k, recorded[k])
    return args, path, ckpt, explicit


def overlap(recorded, data_dir, files):
    """How many of `files` (relative to data_dir) the checkpoint trained on; None when its recorded
    settings cannot tell (none recorded, or its data folder is gone)."""
    if not {"data_dir", "split", "test_fraction", "seed"} <= set(recorded):
        return None
    try:
        trained = folders.training_files(recorded["data_dir"], recorded["split"], recorded["test_fraction"],
                                         recorded["seed"])
    except DataError:
        return None
    return sum(os.path.realpath(os.path.join(data_dir, f)) in trained for f in files)


def crop(image, size):
    """Centre crop of `size` when the image is larger, the whole image when it is smaller."""
    if min(image.shape) < 32:
        raise DataError(f"{image.shape[1]}x{image.shape[0]} px is below the network's 32 px minimum")
    return center_crop(image, size)


def classify_files(args, net, classes, device, dtype):
    failed = 0
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
    if failed:
        raise SystemExit(f"{failed} of {len(args.files)} file(s) could not be classified")


def write_report(args, path, classes, confusion, mistakes, extra):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(args.test_dir, exist_ok=True)
    hits, n = confusion.diag().sum().item(), confusion.sum().item()
    per_class = {c: {"hits": confusion[i, i].item(), "n": confusion[i].sum().item(),
                     "accuracy": confusion[i, i].item() / max(1, confusion[i].sum().item())}
                 for i, c in enumerate(classes)}
    report = {"checkpoint": path, "data_dir": args.data_dir, "split": args.split, "image_size": args.image_size,
              "eval_crop": args.eval_crop, "hits": hits, "n": n, "accuracy": hits / max(1, n), **extra,
              "per_class": per_class, "classes": classes, "confusion": confusion.tolist(), "mistakes": mistakes}
    outputs.save_json(report, os.path.join(args.test_dir, "report.json"))

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
    outputs.write_atomic(os.path.join(args.test_dir, "confusion.png"),
                             lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    outputs.save_args(args, os.path.join(args.test_dir, "hparams.json"))


def held_out(args, path, ckpt, explicit, data):
    """report.json's record of whether the images were held out; refuses training images unless asked."""
    seen = overlap(ckpt.get("hparams") or {}, args.data_dir, data.test_files)
    if seen is None:
        print(f"warning: {path} records no usable data settings: cannot tell whether these images were "
              "held out", flush=True)
    elif seen and not ("split" in explicit and args.split == "all"):
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
    for i, c in enumerate(classes):
        row = confusion[i].sum().item()
        print(f"  {c:<16} {confusion[i, i].item()}/{row} = {confusion[i, i].item() / max(1, row):.4f}")
    try:
        write_report(args, path, classes, confusion, mistakes, {**extra, "loss": nll / max(1, seen)})
    except OSError as e:  # each report file is replaced whole, so the previous ones stay readable
        raise SystemExit(f"--test-dir {args.test_dir}: cannot write there ({e.strerror or e})")
    print(f"wrote {os.path.join(args.test_dir, 'report.json')} and confusion.png")


def main(argv=None):
    try:
        args, path, ckpt, explicit = settings(argv)
        if args.image_size < 32:
            raise SystemExit(f"--image-size {args.image_size}: the network needs at least 32 px")
        device = pick_device(args.device)
        dtype = pick_dtype(args.dtype, device)
        if args.files:
            net = C.model_from_checkpoint(ckpt, path).to(device, memory_format=torch.channels_last)
            classify_files(args, net, ckpt["classes"], device, dtype)
        else:
            evaluate_split(args, path, ckpt, explicit, device, dtype)
    except (DataError, C.CheckpointError) as e:
        raise SystemExit(str(e))


if __name__ == "__main__":
    main()
