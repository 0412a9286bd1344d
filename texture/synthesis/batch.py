"""The targets of one gen.py command line synthesised as batches: the flags that name them, the network
and options set up from the flags, each target loaded and grouped by output size and colour, each group
synthesised as one batch with its folder written (target.png, snapshots, final.png, result.json), and
the records gathered from every torchrun process for the report. fidelity.py runs its methods through
here too.
"""
import math
import os
import sys
import time
import traceback

import torch
import torch.distributed as dist
from tqdm import tqdm

from texture.data.images import DataError
from texture.measures import quality, report
from texture.measures.colour import luminance
from texture.measures.quality import histogram_distance
from texture.networks import backbones
from texture.networks.checkpoints import CheckpointError
from texture.networks.evaluation import verdict
from texture.run import memory
from texture.run.device import pick_dtype
from texture.run.outputs import collection, first_free, save_args, save_json, write_png
from texture.synthesis.chroma import SNAPSHOT_POOL, colourise
from texture.synthesis.colour import by_luminance, is_colour, unplanes
from texture.synthesis.levels import levels_problem
from texture.synthesis.optimize import resolve, synthesize
from texture.synthesis.options import Options
from texture.synthesis.recipe import fine_refinement, planned_steps, refines_full_size
from texture.synthesis.taps import downsampling, smallest_side, taps
from texture.synthesis.targets import load_target, plan, training_images

GROUPS = ["device", "seed", "crop", "ckpt", "gen"]  # gen.py's groups of hyperparams.py
LEAST_SIDE = 32  # px: the least gen.py takes, as the classifier's verdict runs the whole network, which needs 32 px


def add_flags(p):
    """gen.py's own arguments beside its hyperparameters."""
    p.add_argument("targets", nargs="+", help="target texture images (any format Pillow reads)")
    p.add_argument("--full", action="store_true", help="use the whole target, not its centre --image-size crop")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="output size (default: the target's)")
    p.add_argument("--tile", action="store_true", help="periodic boundaries: the texture tiles seamlessly")


def without_effect(args, given, refines, hint="", loss_flag="--loss", weight_flag="--spectrum-weight"):
    """Why a flag of the network, loss or crop given would have no effect, for gen.py and texnet.py
    (None if each has one): weights for another backbone, the correspondence term's flags without
    that term (in the loss, named `loss_flag` in the message, or in the refinement when `refines`;
    `hint` says how to get one), the spectrum's scale without the spectrum term (its weight named
    `weight_flag`), a crop size with --full."""
    if "backbone_weights" in given and args.backbone != "imagenet":
        return "--backbone-weights applies to --backbone imagenet only"
    gcd = "gcd" in args.loss.split("+")
    if "gcd_layers" in given and not gcd:
        return f"--gcd-layers applies to {loss_flag} gcd, gram+gcd or swd+gcd only"
    if not gcd and not refines and (flags := sorted(given & {"gcd_weight", "occurrence", "gcd_patches"})):
        return f"--{flags[0].replace('_', '-')} applies to {loss_flag} gcd, gram+gcd or swd+gcd only{hint}"
    if "spectrum_scale" in given and not args.spectrum_weight:
        return f"--spectrum-scale applies only with {weight_flag} above 0"
    if "image_size" in given and args.full:
        return "--image-size has no effect with --full, which uses the whole target"
    return None


def check_flags(args, given):
    """Combinations that cannot work, or flags that would have no effect."""
    if args.pixels == "clamp" and args.optimizer == "lbfgs":
        return "--pixels clamp needs --optimizer adam: clamping between L-BFGS steps spoils its curvature pairs"
    if {"refine_lr", "refine_layers", "refine_channels", "polish_steps", "fine_refine_steps", "fine_polish_steps"} & \
            given and not args.refine_steps:
        return ("--refine-lr, --refine-layers, --refine-channels, --polish-steps, --fine-refine-steps and "
                "--fine-polish-steps apply only with --refine-steps above 0")
    if (flags := sorted(given & {"fine_refine_steps", "fine_polish_steps"})) and "refine_steps" in given:
        return (f"--{flags[0].replace('_', '-')} applies only without --refine-steps, which refines an output made "
                "coarse to fine at full size after all levels")
    if "lbfgs_history" in given and args.optimizer != "lbfgs":
        return "--lbfgs-history applies to --optimizer lbfgs only"
    if "occurrence_hold" in given and args.optimizer != "lbfgs":
        return "--occurrence-hold applies to --optimizer lbfgs only (Adam takes no line search)"
    if "occurrence_hold" in given and "gcd" not in args.loss.split("+"):
        return "--occurrence-hold applies to --loss gcd, gram+gcd or swd+gcd only (the refinement runs Adam)"
    if (flags := sorted(given & {"chroma_layers", "chroma_share"})) and args.colour == "grey":
        return f"--{flags[0].replace('_', '-')} applies to colour targets only, not with --colour grey"
    if (flags := sorted(given & {"short_from", "short_steps", "short_refine_steps", "short_refine_lr"})) and \
            (given & {"steps", "refine_steps", "refine_lr"}):
        return (f"--{flags[0].replace('_', '-')} has no effect with --steps, --refine-steps or --refine-lr given, "
                "which keep those for every size")
    if "chroma_share" in given and args.chroma_layers == "none":
        return "--chroma-share has no effect with --chroma-layers none"
    return without_effect(args, given, args.refine_steps > 0, ", or with --refine-steps above 0")


def cannot_write(args, e):
    return f"--gen-dir {args.gen_dir}: cannot write there ({e.strerror or e})"


def setup(args, explicit, device):
    """(synthesis network, judge, checkpoint record, options, factor, least side, least side of a coarse
    level) from the flags; --image-size, unless given, becomes the crop the checkpoint trained on when
    that checkpoint is the synthesis network (--backbone trained)."""
    try:
        net, judge, found = backbones.networks(args)
        net = net.to(device).eval().requires_grad_(False)
        judge = None if judge is None else judge.to(device).eval().requires_grad_(False)
        opts = Options.from_args(args, net.names, explicit)
    except (CheckpointError, ValueError) as e:
        raise SystemExit(str(e))
    if args.backbone == "trained" and "image_size" not in explicit and "image_size" in found["hparams"]:
        args.image_size = found["hparams"]["image_size"]  # the crop the classifier was trained on
    factor = downsampling(net, taps(opts))
    least = max(factor, LEAST_SIDE)
    if not args.full and args.image_size < least:
        raise SystemExit(f"--image-size {args.image_size}: must be at least {least} px for {args.layers}")
    if args.size and (min(args.size) < least or (args.tile and any(s % factor for s in args.size))):
        raise SystemExit(f"--size {args.size[0]} {args.size[1]}: must be at least {least}"
                         f"{f' and a multiple of {factor} with --tile' if args.tile else ''} for {args.layers}")
    return net, judge, found, opts, factor, least, smallest_side(net, taps(opts))


def prepare(jobs, args, net, opts, least, factor, coarsest, train_set):
    """Load this process's targets and group them by output size and by whether they go through
    the network `net` in colour (colour targets that colour.by_luminance does not send through it in
    luminance; those, and grey targets, run together); returns (groups {(size, in colour): jobs},
    {failed path: why})."""
    groups, failed = {}, {}
    for job in jobs:
        try:
            job["target"] = load_target(job["path"], args, least)
        except DataError as e:
            tqdm.write(str(e), file=sys.stderr)
            failed[job["path"]] = str(e).removeprefix(f"{job['path']}: ")
            continue
        size = tuple(args.size or job["target"].shape[-2:])
        why = f"--tile needs sides that are multiples of {factor}; pass --size" \
            if args.tile and any(s % factor for s in size) else None
        if not why and args.levels > 1 and (problem := levels_problem(size, job["target"].shape[-2:], args.levels,
                                                                      factor, args.tile, coarsest)):
            why = f"--levels {args.levels}: {problem}"
        if why:
            tqdm.write(f"{job['path']}: {why}", file=sys.stderr)
            failed[job["path"]] = why
            continue
        th, tw = job["target"].shape[-2:]
        if not args.tile and (size[0] > th or size[1] > tw):  # docs/speed.md, larger outputs without --tile
            tqdm.write(f"{job['path']}: a {size[0]}x{size[1]} output of a {th}x{tw} target without --tile takes the "
                       "target's edges and can spread a layout it has (one side darker) over its whole size; --tile "
                       "avoids that", file=sys.stderr)
        job["in_training"] = None if train_set is None else os.path.realpath(job["path"]) in train_set
        if job["in_training"]:
            tqdm.write(f"{job['path']}: the classifier was trained on this image, so its verdict on it (and on the "
                       "texture made from it) is not a held-out result", file=sys.stderr)
        # colour targets that go through the network in colour run apart from the others: each as if alone
        in_colour = is_colour(job["target"]) and not by_luminance(net, [job["target"]], opts)
        groups.setdefault((size, in_colour), []).append(job)
    return groups, failed


def too_large(groups, net, opts, args, device):
    """Leave out of `groups` those whose memory `device` does not have, before any of it is taken
    (memory.synthesis, with the refinement where it runs at full size); returns ({failed path: why},
    the bytes the largest group left takes)."""
    failed, most = {}, 0
    for key, group in list(groups.items()):
        size, targets = key[0], [j["target"] for j in group]
        o = resolve(net, targets, size, opts)
        refined, colour = refines_full_size(o), any(map(is_colour, targets))
        need = memory.synthesis(len(group), size, refined, colour)
        if not (why := memory.shortfall(need, device)):
            most = max(most, need)
        else:
            flag = f"--size {size[0]} {size[1]}" if args.size else "--full" if args.full else \
                f"--image-size {args.image_size}"
            why = f"{flag}: {len(group)} output(s) of {size[0]}x{size[1]} at once, {why}"
            if fine_refinement(o):  # the finer levels' refinement is what does not fit
                plain = memory.synthesis(len(group), size, False, colour)
                why += f" (about {plain / memory.GB:.1f} GB with --fine-refine-steps 0)"
            for job in groups.pop(key):
                tqdm.write(f"{job['path']}: {why}", file=sys.stderr)
                failed[job["path"]] = why
    return failed, most


def run_group(net, jobs, size, opts, args, info, judge):
    """Synthesise a batch of same-size outputs with `opts` (Options) and write each target's folder;
    returns ({failed path: why}, [record of each target that ran]). `judge`: the trained classifier that
    gives the verdict (None: no verdict)."""
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
        return failed, []
    jobs = ready
    opts = resolve(net, [j["target"] for j in jobs], size, opts)
    bar = tqdm(total=planned_steps(opts),
               desc=f"{len(jobs)} target(s) {size[0]}x{size[1]}", disable=info["rank"] != 0)

    def progress(step, images, losses):
        bar.update()
        if memory.bound_kept():
            tqdm.write(f"memory freed is returned to the system from iteration {step} on: this run holds more than "
                       "--heap keep allows", file=sys.stderr)
        bar.set_postfix(loss=f"{losses[torch.isfinite(losses)].mean().item():.4g}")
        if args.snapshot_every and step % args.snapshot_every == 0:
            for j, img, v in zip(jobs, images, losses):
                if torch.isfinite(v):  # a colour target's luminance while it runs, coloured as the output will be
                    img = colourise(img[0], j["target"], opts.tile, False, j["seed"], SNAPSHOT_POOL) \
                        if is_colour(j["target"]) and len(img) == 1 else unplanes(img)
                    write_png(img, os.path.join(j["dir"], f"snapshot_{step:05d}.png"))

    results = synthesize(net, [j["target"] for j in jobs], size, opts, seeds=[j["seed"] for j in jobs],
                         callback=progress)
    bar.close()
    # the classifier (and the silent-channel probe) reads the luminance of a colour target
    greys = [luminance(j["target"]) if is_colour(j["target"]) else j["target"] for j in jobs]
    silent = backbones.silent_channels(net, greys, opts.layers, args.pool, args.padding)
    records = []
    for j, r, quiet, grey in zip(jobs, results, silent, greys):
        record = {"target": j["path"], "label": j["label"], "seed": j["seed"], "size": list(size),
                  "colour": is_colour(j["target"]),
                  "layers": opts.layers, "status": "stopped" if r["message"] else "ok", "message": r["message"],
                  **{k: r[k] for k in ("loss", "final_loss", "layer_losses", "steps", "seconds", "curve")},
                  "levels": r.get("levels"), "refine": r.get("refine"), "polish": r.get("polish"), "batch": len(jobs),
                  # the iteration counts this output's size gave (optimize.resolve), beside the flags in settings
                  "recipe": {k: getattr(opts, k) for k in ("levels", "steps", "refine_steps", "refine_lr",
                                                           "polish_steps")},
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
            record["hist_distance_raw"] = histogram_distance(r["raw"], j["target"])
            record["hist_distance"] = histogram_distance(r["image"], j["target"])
            record["quality"] = quality.measures(r["image"], j["target"])
            record["quality_raw"] = quality.measures(r["raw"], j["target"])
            if judge is not None:
                image = luminance(r["image"]) if is_colour(r["image"]) else r["image"]
                record["verdict"] = verdict(judge, image, info["classes"], j["label"])
                record["target_verdict"] = verdict(judge, grey, info["classes"], j["label"])
            write_png(r["image"], os.path.join(j["dir"], "final.png"))
        save_json(record, os.path.join(j["dir"], "result.json"))
        records.append({**record, "name": os.path.basename(j["dir"])})
    return failed, records


def synthesise_share(groups, net, opts, args, info, judge):
    """Every group of this process; a group that raises fails its own targets, the others go on.
    Returns ({failed path: why}, records)."""
    failed, records = {}, []
    for (size, *_), group in groups.items():
        try:
            bad, done = run_group(net, group, size, opts, args, info, judge)
            failed.update(bad)
            records += done
        except OSError as e:
            failed.update({j["path"]: cannot_write(args, e) for j in group})
        except Exception as e:  # a bug or a device error: shown in full, the other targets still run
            traceback.print_exc()
            failed.update({j["path"]: " ".join(f"{type(e).__name__}: {e}".split()) for j in group})
    return failed, records


def synthesise(args, explicit, rank, world, device):
    """Every target of args.targets, this process taking its share (rank::world); returns (planned jobs,
    records of the targets that ran, {failed path: why}), gathered from every process. `explicit`:
    the flags given on the command line."""
    net, judge, found, opts, factor, least, coarsest = setup(args, explicit, device)
    if found and rank == 0:
        print(f"checkpoint {found['path']}: {found['how']}")
    args.gen_lr = opts.step_size  # recorded as used
    info = {"rank": rank, "backbone": args.backbone, "checkpoint": found and found["path"],
            "classes": found and found["classes"], "device": str(device),
            "dtype": str(pick_dtype(args.dtype, device)).replace("torch.", "")}
    if judge is None:
        info.update(verdict=None, verdict_skipped="no trained checkpoint: synthesis ran without one, "
                    "nothing to classify with")
    jobs = [plan(args.targets, args.gen_dir, args.seed, beside=True)]
    if world > 1:  # process 0's plan: the folders are free when it looks, before any process writes one
        dist.broadcast_object_list(jobs, src=0)
    jobs = jobs[0]
    train_set = training_images(found["hparams"]) if found else None
    groups, failed = prepare(jobs[rank::world], args, net, opts, least, factor, coarsest, train_set)
    bad, need = too_large(groups, net, opts, args, device)
    failed.update(bad)
    if args.heap == "keep" and not memory.keep_freed(need, device):
        args.heap = "release"  # recorded as used: not the CPU, not glibc, or its peak would not fit
    bad, records = synthesise_share(groups, net, opts, args, info, judge)
    failed.update(bad)
    if world > 1:  # every process gets here, whatever failed on it
        everyone = [None] * world
        dist.all_gather_object(everyone, (failed, records))
        failed = {k: v for part, _ in everyone for k, v in part.items()}
        records = [r for _, part in everyone for r in part]
    order = {j["path"]: i for i, j in enumerate(jobs)}
    return jobs, sorted(records, key=lambda r: order[r["target"]]), failed


def finish(jobs, records, failed, gen_dir):
    """The collection picture of several targets and the run's report (process 0)."""
    done = [(os.path.basename(j["dir"]), os.path.join(j["dir"], "target.png"), os.path.join(j["dir"], "final.png"))
            for j in jobs if j["path"] not in failed]
    try:
        if len(jobs) > 1 and done:
            [out] = first_free(os.path.join(gen_dir, f"collection_{time.strftime('%Y%m%d-%H%M%S')}.png"))
            collection(done, out)
            print(f"collection: {out}")
        if records:
            [out] = first_free(os.path.join(gen_dir, "report.json"))  # an earlier run's report stays
            print(report.write_report(records, out))
            print(f"report: {out}")
    except OSError as e:
        raise SystemExit(f"--gen-dir {gen_dir}: cannot write there ({e.strerror or e})")
