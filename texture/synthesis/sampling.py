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

from texture.data.images import center_crop
from texture.measures import quality, report
from texture.measures.colour import luminance
from texture.networks import backbones
from texture.networks import feedforward as G
from texture.networks.checkpoints import CheckpointError, load_checkpoint
from texture.networks.evaluation import verdict
from texture.run import memory, outputs
from texture.run.device import autocast, pick_device, pick_dtype
from texture.synthesis import colour
from texture.synthesis.histogram import match_histogram
from texture.synthesis.spectrum import temper
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


def matched(raw, target, width, fill=0.0, seed=0, fill_width=None):
    """A raw sample (C, H, W) given the target's grey levels by rank (histogram.match_histogram) or a colour
    target's colours (colour.match_colours); with `width`, each channel's power spectrum then tempered
    against the target's (spectrum.temper, with `fill` and `fill_width`: one gaussian field drawn from
    `seed`, shared by the channels) and the levels or colours matched again."""
    match = colour.match_colours if colour.is_colour(target) else match_histogram
    img = match(raw, target)
    if width <= 0:
        return img
    noise = torch.randn(img.shape[-2:], generator=torch.Generator().manual_seed(zlib.crc32(f"fill:{seed}".encode()))) \
        if fill > 0 else None
    planes = target.view(-1, *target.shape[-2:])
    return match(torch.stack([temper(x, t, width, fill, noise, fill_width)
                              for x, t in zip(img.view(-1, *img.shape[-2:]), planes)])
                 .view_as(img), target)


def margin(g, tile):
    """Pixels drawn around a sample on every side (drawn): a lattice's g.margin, none with `tile`."""
    return 0 if tile else g.margin


def drawn(g, c, size, seed, tile, sample_tile, device, dtype):
    """The generator's raw sample of class c: a lattice's waves at its own period, drawn with g.margin
    px around the sample for their seam and cropped (as in training); with `tile`, in whole cycles
    across the sample, which then wraps around. Made in tiles of `sample_tile` px plus the margin
    (G.sample), so that a sample no larger than a tile stays one pass."""
    m = margin(g, tile)
    noise = G.noise_pyramid(g, size[0] + 2 * m, size[1] + 2 * m, seed, device=device, whole=not m)
    with autocast(device, dtype):
        return G.sample(g, noise, c, sample_tile + 2 * m).float()[..., m:m + size[0], m:m + size[1]]


def sample_one(g, c, size, seed, target, args, device, dtype):
    """One sample of class c, its levels or colours matched to the target's and tempered (matched) on the
    assembled image, so a tiled sample stays equal to one pass; its histogram distance before that, and
    the seconds it took (noise and matching included)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    raw = drawn(g, c, size, seed, args.tile, args.sample_tile, device, dtype)
    img = matched(raw, target, args.sample_temper, args.sample_fill, seed, args.sample_fill_width).cpu()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return img, quality.histogram_distance(raw.cpu(), target), time.perf_counter() - t0


def measured(img, target, tile):
    """A sample's quality measures against its target, on its centre crop of at most `tile` px a side:
    the patch measures of a whole 4096 px sample would need several GB."""
    out = {}
    if max(img.shape[-2:]) > tile:
        img = center_crop(img, tile)
        out["quality_crop"] = list(img.shape[-2:])
    return {**out, "hist_distance": quality.histogram_distance(img, target), "quality": quality.measures(img, target)}


def judged(img, target, judge, classes, kind):
    """The classifier's verdict on a target-sized centre crop of the sample (VGG over 16 Mpx is too
    slow) and on the target, read in luminance as the classifier is grey; nothing without a classifier
    or below the network's 32 px."""
    if judge is None or min(img.shape[-2:]) < 32:
        return {}
    crop = center_crop(img, max(32, target.shape[-2]), max(32, target.shape[-1]))
    grey = luminance if img.dim() == 3 else (lambda x: x)
    return {"verdict": verdict(judge, grey(crop), classes, kind),
            "target_verdict": verdict(judge, grey(target), classes, kind), "verdict_crop": list(crop.shape[-2:])}


def sample(args):
    """Write --count samples of each chosen texture, their result records, the report and a collection;
    return the records, each with its name in the report and the path of its PNG."""
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
        raise SystemExit(f"--size {size[0]} {size[1]} / --sample-tile {args.sample_tile}: must be positive "
                         f"multiples of {g.factor} for this generator ({g.scales} scales)")
    if args.count < 1:
        raise SystemExit(f"--count {args.count}: must be at least 1")
    m = margin(g, args.tile)
    if why := memory.shortfall(memory.sample(tuple(s + 2 * m for s in size), args.sample_tile + 2 * m, g.halo,
                                             args.sample_fill > 0), device):
        raise SystemExit(f"--size {size[0]} {size[1]}: one sample, {why}")
    judge, classes = judge_for(args, ckpt)
    if judge is not None:
        judge = judge.to(device).eval().requires_grad_(False)
    records, entries, folders = [], [], []
    for c, label in enumerate(labels):
        if args.label not in (None, label):
            continue
        # an earlier run's folder of this texture is kept: this run writes beside it, label-2, ...
        folder = os.path.normpath(outputs.first_free(os.path.join(args.sample_dir, label, ""), taken=folders)[0])
        folders.append(folder)
        target = ckpt["target_images"][c].float() / 255
        outputs.write_png(target, os.path.join(folder, "target.png"))
        for i in range(args.count):
            seed = zlib.crc32(f"{args.seed}:{i}".encode())
            img, raw_hist, seconds = sample_one(g, c, size, seed, target, args, device, dtype)
            stem = os.path.join(folder, f"{size[0]}x{size[1]}_seed{args.seed}_{i}")
            record = {"generator": args.generator, "target": ckpt["targets"][c], "label": label, "seed": args.seed,
                      "index": i, "size": list(size), "seconds": seconds, "device": str(device),
                      "dtype": str(dtype).replace("torch.", ""), "hist_distance_raw": raw_hist,
                      **measured(img, target, args.sample_tile), "settings": vars(args),
                      **judged(img, target, judge, classes, label_of(ckpt["targets"][c]))}
            outputs.write_png(img, stem + ".png")
            outputs.save_json(record, stem + ".json")
            records.append({**record, "name": f"{os.path.basename(folder)}/{i}", "png": stem + ".png"})
            entries.append((f"{label} {i}", os.path.join(folder, "target.png"), stem + ".png"))
    [out] = outputs.first_free(os.path.join(args.sample_dir, f"collection_{time.strftime('%Y%m%d-%H%M%S')}.png"))
    outputs.collection(entries, out)
    [table] = outputs.first_free(os.path.join(args.sample_dir, "report.json"))  # an earlier run's report stays
    print(report.write_report(records, table))
    print(f"collection: {out}\nreport: {table}")
    return records
