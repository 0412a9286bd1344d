"""Texture synthesis (Gatys et al. 2015): freeze the trained network and optimise an image, from
noise, until its Gram matrices at the chosen layers match those of a target texture; then, for an
output made in one level, sharpen its objects with a guided correspondence term (--refine-steps)
and take back what that copied (--polish-steps).

    python gen.py data/kylberg/blanket1/blanket1-a-p001.png
    python gen.py a.png b.png --size 448 448 --tile          # twice the crop, periodically tileable
    python gen.py a.png --layers gatys                       # conv1_1,pool1..pool4 as in Gatys et al.
    python gen.py a.png --backbone random                    # untrained weights: no checkpoint needed
    python gen.py a.png --backbone imagenet --backbone-weights vgg19-dcbb9e9d.pth  # Gatys' ImageNet VGG-19
    python gen.py a.png --loss swd --spectrum-weight 1          # whole feature distribution + Fourier spectrum
    python gen.py a.png --refine-steps 0                     # Gram + spectrum alone, about 3x faster
    python gen.py a.png --loss gram+gcd --optimizer adam --gen-lr 0.1  # + guided correspondence of feature patches
    python gen.py a.png --size 1024 1024 --tile --steps 100    # coarse to fine (3 levels: 256, 512, 1024 px)
    python gen.py a.png --layers pool1,pool2:0.5 --optimizer adam --gen-lr 0.02 --time-budget 60
    python gen.py a.png --optimizer adam --gen-lr 1e-4 --init uniform --features standardize \\
        --pixels clamp --pool max --padding zeros           # the original TF recipe
    for f in data/kylberg/*/*-a-p001.png; do python gen.py "$f"; done
    torchrun --nproc-per-node 2 gen.py data/kylberg/*/*-a-p001.png

The classifier is the newest numbered checkpoint in asset/train/ckpt unless --ckpt says otherwise
(--ckpt best: best.pt); the line `checkpoint ...` says which. --image-size defaults to the size that
checkpoint was trained at. Its verdict on a target it was trained on is marked (target_in_training in
result.json, a note on stderr): recognising a training image says little. --gen-lr defaults to each
optimiser's own step size; --pixels clamp is for Adam only. Under torchrun every process finishes its
share even when some of its targets fail; failures are reported per target and the exit status is 1.

Each target gets --gen-dir/<label>/ with target.png, snapshot_NNNNN.png, final.png and
result.json (with quality measures against the target, see quality.py); every call writes
--gen-dir/report.json (the measures per target and their means) and prints them as a table;
several targets in one call also give --gen-dir/collection_<time>.png.
"""
import argparse
import dataclasses
import json
import math
import os
import sys
import time
import traceback

import torch
import torch.distributed as dist
from tqdm import tqdm

import backbones
import dataset
import model
import quality
from hyperparams import GEN_LR, Hyperparams, given, parse_args, save_args, save_json
from layer_spec import parse_layers
from pictures import collection, write_png
from quality import hist_distance
from levels import auto_levels, level_steps, levels_problem
from synthesis import Options, downsampling, smallest_side, synthesize, taps
from targets import load_target, plan, training_images

# ---- the classifier's verdict -------------------------------------------------------------

@torch.no_grad()
def verdict(net, img, classes, label):
    """Is the image recognised as its class by the network as trained (max pooling, zero padding)?"""
    p = net(img.to(next(net.parameters()).device)[None, None].float()).float().softmax(1)[0].cpu()
    k = int(p.argmax())
    known = label in classes
    return {"predicted": classes[k], "p_predicted": p[k].item(), "target_class": label if known else None,
            "p_target_class": p[classes.index(label)].item() if known else None,
            "recognised": classes[k] == label if known else None}


# ---- command line ---------------------------------------------------------------------------

def options(args, dtype, known=None):
    """synthesize's options from the command line (--gen-lr 0: the optimiser's own step size; levels:
    --levels, 0 is decided per output size); ValueError names a bad --gcd-layers or --refine-layers
    (`known`: the network's tap names)."""
    return Options(loss=args.loss, features=args.features, optimizer=args.optimizer,
                   lr=args.gen_lr or GEN_LR[args.optimizer], steps=args.steps, time_budget=args.time_budget,
                   init=args.init, pixels=args.pixels, pool=args.pool, padding=args.padding, tile=args.tile,
                   dtype=dtype, spectrum_weight=args.spectrum_weight, levels=args.levels,
                   gcd_layers=parse_layers(args.gcd_layers, known, "--gcd-layers"), gcd_weight=args.gcd_weight,
                   occurrence=args.occurrence, gcd_patches=args.gcd_patches, refine_steps=args.refine_steps,
                   refine_lr=args.refine_lr,
                   refine_layers=parse_layers(args.refine_layers, known, "--refine-layers"),
                   occurrence_hold=args.occurrence_hold, spectrum_scale=args.spectrum_scale,
                   polish_steps=args.polish_steps)


def default_options(dtype):
    """The default layers and options, as `python gen.py TARGET` uses them for an output as large as
    the target (automatic --levels is then 1): for bench.py and the tests."""
    defaults = argparse.Namespace(**dataclasses.asdict(Hyperparams()), tile=False)
    return parse_layers(defaults.layers), dataclasses.replace(options(defaults, dtype), levels=1)


def cannot_write(args, e):
    return f"--gen-dir {args.gen_dir}: cannot write there ({e.strerror or e})"


def run_group(net, jobs, size, layers, opts, args, info, judge, refine_given):
    """Synthesise a batch of same-size outputs with `opts` (Options) and write each target's folder;
    returns {failed path: why}. `judge`: the trained classifier that gives the verdict (None: no verdict);
    refine_given False: --refine-steps is the default's, which an output made coarse to fine skips."""
    failed, ready = {}, []
    for j in jobs:
        try:
            os.makedirs(j["dir"], exist_ok=True)
            write_png(j["target"], os.path.join(j["dir"], "target.png"))
            save_args(args, os.path.join(j["dir"], "args.json"))
            ready.append(j)
        except OSError as e:  # every file is replaced whole, so earlier outputs stay as they were
            failed[j["path"]] = cannot_write(args, e)
            tqdm.write(f"{j['path']}: {failed[j['path']]}", file=sys.stderr)
    if not ready:
        return failed
    jobs = ready
    levels = opts.levels or auto_levels(size, min(min(j["target"].shape) for j in jobs),
                                        downsampling(net, taps(layers, opts)), opts.tile)
    if levels > 1 and not refine_given:
        # measured at the target's scale only; at full size each of its iterations costs about six of
        # the levels' (docs/correspondence.md)
        opts = dataclasses.replace(opts, refine_steps=0)
    after = opts.refine_steps + opts.polish_steps if opts.refine_steps else 0
    bar = tqdm(total=sum(level_steps(opts.steps, levels)) + after,
               desc=f"{len(jobs)} target(s) {size[0]}x{size[1]}", disable=info["rank"] != 0)

    def progress(step, images, losses):
        bar.update()
        bar.set_postfix(loss=f"{losses[torch.isfinite(losses)].mean().item():.4g}")
        if args.snapshot_every and step % args.snapshot_every == 0:
            for j, img, v in zip(jobs, images, losses):
                if torch.isfinite(v):
                    write_png(img[0], os.path.join(j["dir"], f"snapshot_{step:05d}.png"))

    results = synthesize(net, [j["target"] for j in jobs], layers, size, dataclasses.replace(opts, levels=levels),
                         seeds=[j["seed"] for j in jobs], callback=progress)
    bar.close()
    silent = backbones.silent_channels(net, [j["target"] for j in jobs], layers, args.pool, args.padding)
    for j, r, quiet in zip(jobs, results, silent):
        record = {"target": j["path"], "label": j["label"], "seed": j["seed"], "size": list(size),
                  "layers": layers, "status": "stopped" if r["message"] else "ok", "message": r["message"],
                  **{k: r[k] for k in ("loss", "final_loss", "layer_losses", "steps", "seconds", "curve")},
                  "levels": r.get("levels"), "refine": r.get("refine"), "polish": r.get("polish"), "batch": len(jobs),
                  **info, "silent_channels": quiet,
                  "target_in_training": j["in_training"], "settings": vars(args)}
        worst = max(quiet, key=quiet.get)
        if quiet[worst] >= backbones.SILENT_WARNING:
            tqdm.write(f"{j['path']}: {quiet[worst]:.0%} of the {worst} channels of the {args.backbone} network are "
                       "silent on this target, so the loss barely constrains them; train with batch norm "
                       "(train.py --arch vgg19_bn) or try --backbone random", file=sys.stderr)
        if r["message"]:
            tqdm.write(f"{j['path']}: {r['message']}", file=sys.stderr)
            failed[j["path"]] = r["message"]
        if math.isfinite(r["loss"]):
            record["hist_distance_raw"] = hist_distance(r["raw"], j["target"])
            record["hist_distance"] = hist_distance(r["image"], j["target"])
            record["quality"] = quality.measures(r["image"], j["target"])
            record["quality_raw"] = quality.measures(r["raw"], j["target"])
            if judge is not None:
                record["verdict"] = verdict(judge, r["image"], info["classes"], j["label"])
                record["target_verdict"] = verdict(judge, j["target"], info["classes"], j["label"])
            write_png(r["image"], os.path.join(j["dir"], "final.png"))
        save_json(record, os.path.join(j["dir"], "result.json"))
    return failed


def report(jobs, gen_dir, since):
    """Summarise the result.json files this call wrote (after `since`) into gen_dir/report.json and
    print the table."""
    records = []
    for j in jobs:
        path = os.path.join(j["dir"], "result.json")
        if os.path.isfile(path) and os.path.getmtime(path) >= since:
            with open(path, encoding="utf-8") as f:
                records.append({**json.load(f), "name": os.path.basename(j["dir"])})
    if records:
        print(quality.write_report(records, os.path.join(gen_dir, "report.json")))


def _extra(p):
    p.add_argument("targets", nargs="+", help="target texture images (any format Pillow reads)")
    p.add_argument("--full", action="store_true", help="use the whole target, not its centre --image-size crop")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="output size (default: the target's)")
    p.add_argument("--tile", action="store_true", help="periodic boundaries: the texture tiles seamlessly")


def check_flags(args, given):
    """Combinations that cannot work, or flags that would have no effect."""
    if args.pixels == "clamp" and args.optimizer == "lbfgs":
        return "--pixels clamp needs --optimizer adam: clamping between L-BFGS steps spoils its curvature pairs"
    if "backbone_weights" in given and args.backbone != "imagenet":
        return "--backbone-weights applies to --backbone imagenet only"
    if {"refine_lr", "refine_layers", "polish_steps"} & given and not args.refine_steps:
        return "--refine-lr, --refine-layers and --polish-steps apply only with --refine-steps above 0"
    if "occurrence_hold" in given and args.optimizer != "lbfgs":
        return "--occurrence-hold applies to --optimizer lbfgs only (Adam takes no line search)"
    return None


def prepare(jobs, args, least, factor, coarsest, train_set):
    """Load this process's targets and group them by output size; returns (groups, {failed path: why})."""
    groups, failed = {}, {}
    for job in jobs:
        try:
            job["target"] = load_target(job["path"], args, least)
        except dataset.DataError as e:
            tqdm.write(str(e), file=sys.stderr)
            failed[job["path"]] = str(e).removeprefix(f"{job['path']}: ")
            continue
        size = tuple(args.size or job["target"].shape)
        why = f"--tile needs sides that are multiples of {factor}; pass --size" \
            if args.tile and any(s % factor for s in size) else None
        if not why and args.levels > 1 and (problem := levels_problem(size, job["target"].shape, args.levels,
                                                                      factor, args.tile, coarsest)):
            why = f"--levels {args.levels}: {problem}"
        if why:
            tqdm.write(f"{job['path']}: {why}", file=sys.stderr)
            failed[job["path"]] = why
            continue
        job["in_training"] = None if train_set is None else os.path.realpath(job["path"]) in train_set
        if job["in_training"]:
            tqdm.write(f"{job['path']}: the classifier was trained on this image, so its verdict on it (and on the "
                       "texture made from it) is not a held-out result", file=sys.stderr)
        groups.setdefault(size, []).append(job)
    return groups, failed


def synthesise_share(groups, net, layers, opts, args, info, judge, refine_given):
    """Every group of this process; a group that raises fails its own targets, the others go on."""
    failed = {}
    for size, group in groups.items():
        try:
            failed.update(run_group(net, group, size, layers, opts, args, info, judge, refine_given))
        except OSError as e:
            failed.update({j["path"]: cannot_write(args, e) for j in group})
        except Exception as e:  # a bug or a device error: shown in full, the other targets still run
            traceback.print_exc()
            failed.update({j["path"]: " ".join(f"{type(e).__name__}: {e}".split()) for j in group})
    return failed


def setup(args, device, dtype):
    """(synthesis network, judge, checkpoint record, layers, options, factor, least side, least side of a
    coarse level) from the flags."""
    try:
        net, judge, found = backbones.networks(args)
        net = net.to(device).eval().requires_grad_(False)
        judge = None if judge is None else judge.to(device).eval().requires_grad_(False)
        layers = parse_layers(args.layers, net.names)
        opts = options(args, dtype, net.names)
    except (model.CheckpointError, ValueError) as e:
        raise SystemExit(str(e))
    factor = downsampling(net, taps(layers, opts))
    least = max(factor, 32)  # the classifier's verdict runs the whole network, which needs 32 px
    if args.size and (min(args.size) < least or (args.tile and any(s % factor for s in args.size))):
        raise SystemExit(f"--size {args.size[0]} {args.size[1]}: must be at least {least}"
                         f"{f' and a multiple of {factor} with --tile' if args.tile else ''} for {args.layers}")
    return net, judge, found, layers, opts, factor, least, smallest_side(net, taps(layers, opts))


def run(args, explicit, rank, world, device):
    dtype = model.pick_dtype(args.dtype, device)
    net, judge, found, layers, opts, factor, least, coarsest = setup(args, device, dtype)
    if found and "image_size" not in explicit and "image_size" in found["hparams"]:
        args.image_size = found["hparams"]["image_size"]  # the crop the classifier was trained on
    if found and rank == 0:
        print(f"checkpoint {found['path']}: {found['how']}")
    args.gen_lr = opts.lr  # recorded as used
    info = {"rank": rank, "backbone": args.backbone, "checkpoint": found and found["path"],
            "classes": found and found["classes"], "device": str(device), "dtype": str(dtype).replace("torch.", "")}
    if judge is None:
        info.update(verdict=None, verdict_skipped="no trained checkpoint: synthesis ran without one, "
                    "nothing to classify with")
    start = time.time()
    jobs = plan(args.targets, args.gen_dir, args.seed)
    train_set = training_images(found["hparams"]) if found else None
    groups, failed = prepare(jobs[rank::world], args, least, factor, coarsest, train_set)
    failed.update(synthesise_share(groups, net, layers, opts, args, info, judge, "refine_steps" in explicit))
    if world > 1:  # every process gets here, whatever failed on it
        everyone = [None] * world
        dist.all_gather_object(everyone, failed)
        failed = {k: v for part in everyone for k, v in part.items()}
    if rank == 0:
        finish(jobs, failed, args.gen_dir, start)
    if failed:
        raise SystemExit(f"{len(failed)} of {len(jobs)} target(s) failed: "
                         + ", ".join(f"{p} ({why})" for p, why in failed.items()))


def finish(jobs, failed, gen_dir, start):
    """The collection picture of several targets and the run's report (process 0)."""
    done = [(os.path.basename(j["dir"]), os.path.join(j["dir"], "target.png"), os.path.join(j["dir"], "final.png"))
            for j in jobs if j["path"] not in failed]
    try:
        if len(jobs) > 1 and done:
            out = os.path.join(gen_dir, f"collection_{time.strftime('%Y%m%d-%H%M%S')}.png")
            collection(done, out)
            print(f"collection: {out}")
        report(jobs, gen_dir, start)
    except OSError as e:
        raise SystemExit(f"--gen-dir {gen_dir}: cannot write there ({e.strerror or e})")


def main(argv=None):
    groups = ["device", "seed", "crop", "ckpt", "gen"]
    args = parse_args(__doc__, groups, argv, extra=_extra, check=check_flags)
    rank, world, device = model.distributed(args.device)
    try:
        run(args, given(argv, groups, _extra), rank, world, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
