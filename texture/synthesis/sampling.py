"""Sampling from a trained texnet.py generator (the command line is `texnet.py sample`): its
checkpoint read back and checked (load, which `texnet.py train --resume` uses too), the classifier
that gives the verdict, and the samples written with their records, the report and a collection.

    python texnet.py sample asset/texnet/blanket1/texnet.pt --size 1024 1024 --count 4 --seed 1
    python -c "from texture.synthesis import sampling; print(sampling.load('asset/texnet/blanket1/texnet.pt')[1]['labels'])"
"""
import argparse
import os
import sys
import time
import zlib

import torch
from tqdm import tqdm

from texture.measures import quality, report
from texture.measures.colour import colour_hist_distance, luminance
from texture.networks import backbones
from texture.networks import feedforward as G
from texture.networks.checkpoints import CheckpointError, load_checkpoint
from texture.networks.evaluation import verdict
from texture.run import outputs
from texture.run.device import autocast, pick_device, pick_dtype
from texture.synthesis.targets import label_of


def load(path):
    """A texnet checkpoint, checked; a missing, damaged or foreign file is a one-line CheckpointError."""
    ckpt = load_checkpoint(path)
    try:
        g = G.Generator(**ckpt["generator"])
        g.load_state_dict(ckpt["model"])
        labels, targets, _, _ = list(ckpt["labels"]), ckpt["target_images"], ckpt["settings"], ckpt["step"]
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        why = " ".join(f"{type(e).__name__}: {e}".split())[:120]
        raise CheckpointError(f"{path}: not a texnet.py generator checkpoint ({why})")
    if len(labels) != g.classes or len(targets) != g.classes:
        raise CheckpointError(f"{path}: {g.classes} classes but {len(labels)} labels")
    return g, ckpt


def judge_for(args, ckpt):
    """The classifier for the verdict and its classes: --ckpt, else the one the generator trained with
    (None if that one is gone: the samples are still written, without a verdict)."""
    path = args.ckpt or ckpt["settings"].get("ckpt") or ""
    try:
        _, judge, found = backbones.networks(argparse.Namespace(ckpt=path, backbone="trained", seed=0,
                                                          backbone_weights=""))
    except CheckpointError as e:
        if args.ckpt:
            raise SystemExit(str(e))
        tqdm.write(f"no verdict: {e}", file=sys.stderr)
        return None, None
    return judge, found["classes"]


def sample_one(g, c, size, seed, args, device, dtype):
    """One sample of class c, and the seconds it took (noise included)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    noise = G.noise_pyramid(g, *size, seed, device=device)
    with autocast(device, dtype):
        img = G.sample(g, noise, c, args.sample_tile).float().cpu()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return img, time.perf_counter() - t0


def sample(args):
    """Write --count samples of each chosen texture, their result records, the report and a collection."""
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    try:
        g, ckpt = load(args.generator)
    except CheckpointError as e:
        raise SystemExit(str(e))
    g = g.to(device).eval()
    labels = ckpt["labels"]
    if args.label is not None and args.label not in labels:
        raise SystemExit(f"--label {args.label}: {args.generator} knows {', '.join(labels)}")
    size = tuple(args.size or (ckpt["settings"]["texnet_size"],) * 2)
    if min(size) < g.factor or any(s % g.factor for s in size) or args.sample_tile % g.factor:
        raise SystemExit(f"--size {size[0]} {size[1]} / --sample-tile {args.sample_tile}: must be multiples of "
                         f"{g.factor} for this generator ({g.scales} scales)")
    if args.count < 1:
        raise SystemExit(f"--count {args.count}: must be at least 1")
    judge, classes = judge_for(args, ckpt)
    if judge is not None:
        judge = judge.to(device).eval().requires_grad_(False)
    records, entries = [], []
    for c, label in enumerate(labels):
        if args.label not in (None, label):
            continue
        folder, target = os.path.join(args.sample_dir, label), ckpt["target_images"][c].float() / 255
        outputs.write_png(target, os.path.join(folder, "target.png"))
        for i in range(args.count):
            seed = zlib.crc32(f"{args.seed}:{i}".encode())
            img, seconds = sample_one(g, c, size, seed, args, device, dtype)
            stem = os.path.join(folder, f"{size[0]}x{size[1]}_seed{args.seed}_{i}")
            record = {"generator": args.generator, "target": ckpt["targets"][c], "label": label, "seed": args.seed,
                      "index": i, "size": list(size), "seconds": seconds, "device": str(device),
                      "dtype": str(dtype).replace("torch.", ""),
                      "hist_distance": (colour_hist_distance if img.dim() == 3 else quality.hist_distance)(img, target),
                      "quality": quality.measures(img, target), "settings": vars(args)}
            if judge is not None and min(size) >= 32:  # on a target-sized centre crop: VGG over 16 Mpx is too much
                h, w = min(size[0], max(32, target.shape[-2])), min(size[1], max(32, target.shape[-1]))
                crop = img[..., (size[0] - h) // 2:(size[0] - h) // 2 + h, (size[1] - w) // 2:(size[1] - w) // 2 + w]
                kind = label_of(ckpt["targets"][c])
                grey = luminance if img.dim() == 3 else (lambda x: x)  # the classifier reads luminance
                record["verdict"] = verdict(judge, grey(crop), classes, kind)
                record["target_verdict"] = verdict(judge, grey(target), classes, kind)
                record["verdict_crop"] = [h, w]
            outputs.write_png(img, stem + ".png")
            outputs.save_json(record, stem + ".json")
            records.append({**record, "name": f"{label}/{i}"})
            entries.append((f"{label} {i}", os.path.join(folder, "target.png"), stem + ".png"))
    out = os.path.join(args.sample_dir, f"collection_{time.strftime('%Y%m%d-%H%M%S')}.png")
    outputs.collection(entries, out)
    print(report.write_report(records, os.path.join(args.sample_dir, "report.json")))
    print(f"collection: {out}")
    return records
