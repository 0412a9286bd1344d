"""Evaluate a trained TextureNet on the held-out split, or classify single images.

Examples:
    python test.py                                   # latest checkpoint in asset/train/ckpt, held-out patches
    python test.py --data-dir data/demo --image-size 64
    python test.py --ckpt asset/train/ckpt/best.pt --split all    # every image, the original's protocol
    python test.py --files gen_images/canvas1/final.png my_texture.png

The data flags (--data-dir, --split, --image-size, ...) default to hyperparams.py, not to what the
checkpoint was trained with: pass the same ones as to train.py. Prints the running `hits/n = acc`, the
line `Final result is hits/n = acc` and per-class accuracy; writes confusion.png and report.json to
--test-dir. With --files, prints `path  class  probability` per image (centre crop of --image-size,
or the whole image when smaller).
"""
import os

import torch

import hyperparams
import model as M
import prepro
from train import predict


def add_files(parser):
    parser.add_argument("--files", nargs="+", metavar="PNG", help="classify these images instead of a split")


def load_model(args, num_classes=None):
    """The checkpoint named by --ckpt (a folder means its latest numbered checkpoint) and its network."""
    path = M.latest_checkpoint(args.ckpt) if os.path.isdir(args.ckpt) else args.ckpt
    ckpt = M.load_checkpoint(path)
    net = M.model_from_checkpoint(ckpt, path, num_classes)
    return path, ckpt["classes"], net


def crop(image, size):
    """Centre crop of `size` when the image is larger, the whole image when it is smaller."""
    if min(image.shape) < 32:
        raise prepro.DataError(f"{image.shape[1]}x{image.shape[0]} px is below the network's 32 px minimum")
    h, w = image.shape
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[top:top + size, left:left + size]


def classify_files(args, net, classes, device, dtype):
    failed = 0
    for path in args.files:
        try:
            x = crop(prepro.load_gray(path), args.image_size)[None, None].float() / 255
        except prepro.DataError as e:
            message = str(e) if path in str(e) else f"{path}: {e}"
            print(message, flush=True)
            failed += 1
            continue
        probs, _ = next(predict(net, [(x, torch.zeros(1))], device, dtype))
        p, k = probs[0].max(0)
        print(f"{path}  {classes[k]}  {p:.4f}", flush=True)
    if failed:
        raise SystemExit(f"{failed} of {len(args.files)} file(s) could not be classified")


def write_report(args, path, classes, confusion, mistakes):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(args.test_dir, exist_ok=True)
    hits, n = confusion.diag().sum().item(), confusion.sum().item()
    per_class = {c: {"hits": confusion[i, i].item(), "n": confusion[i].sum().item(),
                     "accuracy": confusion[i, i].item() / max(1, confusion[i].sum().item())}
                 for i, c in enumerate(classes)}
    report = {"checkpoint": path, "data_dir": args.data_dir, "split": args.split, "image_size": args.image_size,
              "eval_crop": args.eval_crop, "hits": hits, "n": n, "accuracy": hits / max(1, n),
              "per_class": per_class, "classes": classes, "confusion": confusion.tolist(), "mistakes": mistakes}
    hyperparams.save_json(report, os.path.join(args.test_dir, "report.json"))

    size = max(5.0, 0.35 * len(classes))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    shown = ax.imshow((confusion / confusion.sum(1, keepdim=True).clamp(min=1)).numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{hits}/{n} = {hits / max(1, n):.4f}")
    fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.tight_layout()
    hyperparams.write_atomic(os.path.join(args.test_dir, "confusion.png"),
                             lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    hyperparams.save_args(args, os.path.join(args.test_dir, "hparams.json"))


def evaluate_split(args, device, dtype):
    data = prepro.load_data(args.data_dir, args.split, args.test_fraction, args.image_size, args.seed)
    path, classes, net = load_model(args, len(data.classes))
    if classes != data.classes:
        raise M.CheckpointError(f"{path}: trained on classes {','.join(classes)}, "
                                f"the data has {','.join(data.classes)}")
    net.to(device, memory_format=torch.channels_last)
    batches = prepro.Batches(data.test_images, data.test_labels, args.eval_batch_size, args.image_size, False,
                             crop=args.eval_crop)
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.int64)
    mistakes, seen = [], 0
    print(f"{path} on {len(data.test_labels)} {args.split} images of {args.data_dir}")
    for probs, y in predict(net, batches, device, dtype):
        p, k = probs.max(1)
        confusion.index_put_((y, k), torch.ones_like(y), accumulate=True)
        mistakes += [{"file": data.test_files[seen + i], "true": classes[y[i]], "predicted": classes[k[i]],
                      "probability": round(p[i].item(), 4)} for i in (k != y).nonzero()[:, 0].tolist()]
        seen += len(y)
        hits = confusion.diag().sum().item()
        print(f"{hits}/{seen} = {hits / seen:.4f}", flush=True)
    hits = confusion.diag().sum().item()
    print(f"Final result is {hits}/{seen} = {hits / max(1, seen):.4f}")
    for i, c in enumerate(classes):
        row = confusion[i].sum().item()
        print(f"  {c:<16} {confusion[i, i].item()}/{row} = {confusion[i, i].item() / max(1, row):.4f}")
    try:
        write_report(args, path, classes, confusion, mistakes)
    except OSError as e:  # each report file is replaced whole, so the previous ones stay readable
        raise SystemExit(f"--test-dir {args.test_dir}: cannot write there ({e.strerror or e})")
    print(f"wrote {os.path.join(args.test_dir, 'report.json')} and confusion.png")


def main(argv=None):
    args = hyperparams.parse_args(__doc__, ["run", "data", "test"], argv, extra=add_files)
    if args.image_size < 32:
        raise SystemExit(f"--image-size {args.image_size}: the network needs at least 32 px")
    device = M.pick_device(args.device)
    dtype = M.pick_dtype(args.dtype, device)
    try:
        if args.files:
            _, classes, net = load_model(args)
            classify_files(args, net.to(device, memory_format=torch.channels_last), classes, device, dtype)
        else:
            evaluate_split(args, device, dtype)
    except (prepro.DataError, M.CheckpointError) as e:
        raise SystemExit(str(e))


if __name__ == "__main__":
    main()
