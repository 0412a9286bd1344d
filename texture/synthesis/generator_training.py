"""texnet.py's training: a feed-forward generator per texture (feedforward.py, Ulyanov et al. 2016)
trained against the frozen network and gen.py's loss (optimize.objective), its flags and their checks,
its snapshots (its checkpoints: generator_checkpoint.py); and the one entry point of both commands,
run(argv), which texnet.py and fidelity.py call.

    python -c "from texture.synthesis import generator_training as T; print(T.UNUSED)"
"""
import argparse
import math
import os
import sys
import time
import zlib

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import hyperparams
from hyperparams import add_arguments
from texture.data.images import DataError
from texture.measures.colour import luminance
from texture.networks import backbones
from texture.networks import feedforward as G
from texture.networks.checkpoints import CheckpointError
from texture.run import outputs
from texture.run.device import autocast, distributed, pick_dtype
from texture.run.interrupt import Stop
from texture.synthesis import generator_checkpoint, sampling
from texture.synthesis.batch import without_effect
from texture.synthesis.generator_checkpoint import OWN
from texture.synthesis.optimize import objective
from texture.synthesis.options import Options
from texture.synthesis.taps import parse_layers, smallest_side
from texture.synthesis.targets import load_target, plan

TRAIN_GROUPS = ["device", "seed", "crop", "ckpt", "gen", "texnet"]
SAMPLE_GROUPS = ["device", "seed", "ckpt", "texsample"]
# flags of the gen group that training does not use: setting one is an error, not a no-op; the loss and the
# spectrum's weight are texnet.py's own (OWN), with their own defaults
UNUSED = ["gen_dir", "loss", "spectrum_weight", "optimizer", "lbfgs_history", "gen_lr", "steps", "snapshot_every",
          "levels", "init", "pixels", "padding", "refine_steps", "refine_lr", "refine_layers", "refine_channels",
          "polish_steps", "occurrence_hold", "fine_refine_steps", "fine_polish_steps", "short_from", "short_steps",
          "short_refine_steps", "short_refine_lr"]
ARCH = {"scales": "texnet_scales", "width": "texnet_width", "noise": "texnet_noise", "norm": "texnet_norm"}


def train_flags(parser):
    parser.add_argument("targets", nargs="+", help="target texture images (any format Pillow reads)")
    parser.add_argument("--full", action="store_true", help="use the whole target, not its centre --image-size crop")
    parser.add_argument("--resume", action="store_true", help="continue the generator in --texnet-dir")


def joint_waves(args, given):
    """The waves are one target's, so a joint generator gets none: args.texnet_waves becomes 0 (the
    recorded settings say so); the problem with an explicit non-zero --texnet-waves (in `given`), else None."""
    if args.texnet_mode != "joint":
        return None
    if "texnet_waves" in given and args.texnet_waves:
        return "--texnet-waves: the waves are one target's, so they need --texnet-mode each"
    args.texnet_waves = 0


def fill_without_temper(args, given):
    """The fill is part of the tempering, so without it there is none: with --sample-temper 0,
    args.sample_fill becomes 0 (the recorded settings say so); the problem with an explicit non-zero
    --sample-fill (in `given`), else None."""
    if args.sample_temper:
        return None
    if "sample_fill" in given and args.sample_fill:
        return "--sample-fill applies only with --sample-temper above 0 (the fill is part of the tempering)"
    args.sample_fill = 0.0


def polish_without_gcd(args, given):
    """The polish leaves out the correspondence term, so a loss without one has none: args.texnet_polish
    becomes 0 (the recorded settings say so); the problem with an explicit non-zero --texnet-polish (in
    `given`), else None."""
    if "+" in args.texnet_loss:
        return None
    if "texnet_polish" in given and args.texnet_polish:
        return "--texnet-polish applies to --texnet-loss gram+gcd or swd+gcd only (it leaves out the gcd)"
    args.texnet_polish = 0.0


def parse(argv=None, doc=__doc__):
    """texnet.py's command line (train or sample) parsed and checked; `doc`: the --help text."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a generator per target (or one for all)")
    train_flags(train)
    add_arguments(train, TRAIN_GROUPS, hidden=UNUSED)  # parsed, to be refused by name, but not offered
    samp = sub.add_parser("sample", help="write new textures from a trained generator")
    samp.add_argument("generator", help="a texnet.pt written by `texnet.py train`")
    samp.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="sample size (default: the training size)")
    samp.add_argument("--count", type=int, default=1, help="samples per texture (default: %(default)s)")
    samp.add_argument("--label", help="texture of a joint generator (default: every one it knows)")
    samp.add_argument("--tile", action="store_true", help="samples of a lattice (a generator with plane waves) "
                      "tile seamlessly, the waves rounded to whole cycles across the sample; without it they keep the "
                      "lattice's own period and do not tile (samples of other generators always tile)")
    add_arguments(samp, SAMPLE_GROUPS)
    args = parser.parse_args(argv)
    rest = (sys.argv[1:] if argv is None else list(argv))[1:]  # after the word train or sample
    if args.command == "sample" and (problem := fill_without_temper(args, hyperparams.given(rest, SAMPLE_GROUPS))):
        samp.error(problem)
    if args.command == "train":
        given = hyperparams.given(rest, TRAIN_GROUPS, train_flags)
        if unused := [k for k in UNUSED if k in given]:
            k = unused[0]
            own = f"; its {k.replace('_', ' ')} is --{OWN[k].replace('_', '-')}" if k in OWN else ""
            train.error(f"--{k.replace('_', '-')}: gen.py's flag, texnet.py train does not use it{own}")
        for k, v in OWN.items():  # the objective, shared with gen.py, reads gen.py's names
            setattr(args, k, getattr(args, v))
        if problem := without_effect(args, given, refines=False, loss_flag="--texnet-loss",
                                     weight_flag="--texnet-spectrum-weight"):
            train.error(problem)
        if problem := joint_waves(args, given):
            train.error(problem)
        if problem := polish_without_gcd(args, given):
            train.error(problem)
        if args.texnet_size % 2 ** (args.texnet_scales - 1):
            raise SystemExit(f"--texnet-size {args.texnet_size}: must be a multiple of {2 ** (args.texnet_scales - 1)}"
                             f" with --texnet-scales {args.texnet_scales}")
    return args


# ---- training -------------------------------------------------------------------------------

def generator_dir(texnet_dir, dirs):
    """The folder of the generator trained on the targets whose own folders (targets.plan) are `dirs`:
    that folder for one target, texnet_dir/joint for several."""
    return dirs[0] if len(dirs) == 1 else os.path.join(texnet_dir, "joint")


def jobs(args, least):
    """The generators to train: one per target, or one for all (--texnet-mode joint)."""
    found = []
    for p in plan(args.targets, args.texnet_dir, args.seed):
        try:
            found.append({**p, "target": load_target(p["path"], args, least)})
        except DataError as e:
            raise SystemExit(str(e))
    if args.texnet_mode == "joint" and len({p["target"].dim() for p in found}) > 1:
        raise SystemExit("--texnet-mode joint: the targets are grey and colour; train them with --texnet-mode each, "
                         "or all in grey with --colour grey")
    groups = [[p] for p in found] if args.texnet_mode == "each" else [found]
    return [{"labels": [os.path.basename(p["dir"]) for p in g], "paths": [p["path"] for p in g],
             "targets": [p["target"] for p in g],
             "dir": generator_dir(args.texnet_dir, [p["dir"] for p in g])} for g in groups]


def objectives(net, targets, size, args, tile=True, loss=None):
    """optimize.objective for each target, with gen.py's options and circular padding (samples are
    periodic; `tile=False` for the centre of a sample, which is not), and args.loss unless `loss` is
    given: evaluate(x) -> (loss per image, parts) against that target."""
    opts = Options.from_args(argparse.Namespace(**{**vars(args), "tile": tile, "loss": loss or args.loss}), net.names)
    return [objective(net, [t], size, opts) for t in targets]


def step_loss(g, objs, args, step, rank, world, device, dtype):
    """Mean loss of one batch: noise drawn from (seed, step, rank) alone, so a resumed run continues
    exactly; images cycle through the classes."""
    b, s, gen = args.texnet_batch, args.texnet_size, g.module if world > 1 else g
    labels = (torch.arange(b) + (step * world + rank) * b) % len(objs)
    # plane waves at the lattice's own period rather than whole cycles across s, which would teach the
    # generator to bend or break the lattice to fit s; their seam where the image wraps (and what
    # the generator draws near it) lies in a margin the loss does not see (docs/texnet.md)
    m = gen.margin
    noise = G.noise_pyramid(gen, s + 2 * m, s + 2 * m, zlib.crc32(f"{args.seed}:{step}:{rank}".encode()),
                            batch=b, device=device, whole=not m)
    with autocast(device, dtype):
        x = g(noise, labels.to(device))
    x = x[:, None] if x.dim() == 3 else x  # grey (B, H, W) as one channel
    x = x[..., m:m + s, m:m + s]
    total = 0
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten().to(device)
        total = total + objs[c](x[idx])[0].sum()
    return total / b


def start(job, args, device):
    """A fresh generator and optimiser, or the ones of --texnet-dir's checkpoint with --resume."""
    # as many plane waves as the target has periodic components, up to --texnet-waves (0 for a joint
    # generator, parse): a target with none gets the generator it would get without them
    t = job["targets"][0]
    peaks = G.spectral_peaks(luminance(t) if t.dim() == 3 else t, args.texnet_waves) if args.texnet_waves else ()
    # channels-last weights make the activations channels-last, which oneDNN's convolutions use without
    # reordering them (docs/texnet.md#training-speed); sampling builds its own, as before
    g = G.Generator(**{k: getattr(args, v) for k, v in ARCH.items()}, classes=len(job["labels"]),
                    channels=3 if t.dim() == 3 else 1, waves=len(peaks)).to(device, memory_format=torch.channels_last)
    if g.waves:
        g.wavevectors.copy_(peaks)
    opt = torch.optim.Adam(g.parameters(), lr=args.texnet_lr)
    if not os.path.exists(job["ckpt"]):
        return g, opt, 0, [], 0.0
    return g, opt, *generator_checkpoint.resume(job, args, g, opt)


def learning_rate(args, step):
    """--texnet-lr at `step`, a function of the step alone, so that a resumed run continues exactly;
    raised linearly over the first --texnet-warmup steps."""
    warm = min(1.0, (step + 1) / args.texnet_warmup) if args.texnet_warmup else 1.0
    if args.texnet_schedule == "constant":
        return args.texnet_lr * warm
    return args.texnet_lr * warm * 0.5 * (1 + math.cos(math.pi * step / args.texnet_steps))


def train_one(job, net, args, device, dtype, rank, world):
    """Adam on batches of samples until --texnet-steps or --time-budget; checkpoint and snapshot
    every --texnet-snapshot-every steps and at the end (process 0)."""
    torch.manual_seed(args.seed)  # every process starts from the same weights
    g, opt, step, curve, seconds = start(job, args, device)
    if g.waves and args.texnet_polish:  # without the correspondence term a lattice's lines bend (docs/texnet.md)
        if rank == 0:
            tqdm.write(f"{job['dir']}: plane waves: trained without --texnet-polish, which bends a lattice's lines")
        args = argparse.Namespace(**{**vars(args), "texnet_polish": 0.0})  # this job's recorded settings say so
    if rank == 0:
        outputs.save_args(args, os.path.join(job["dir"], "args.json"))
    # with plane waves the loss sees a sample's centre (step_loss): gen.py's loss for an image that
    # does not wrap around, else the spectrum term takes the jumps between its edges for the target's
    # low frequencies and the samples came out without them (grid1's shading)
    objs = objectives(net, job["targets"], (args.texnet_size,) * 2, args, tile=not g.waves)
    ddp = DistributedDataParallel(g, broadcast_buffers=False) if world > 1 else g
    bar = tqdm(total=args.texnet_steps, initial=step, desc=os.path.basename(job["dir"]), disable=rank != 0)
    t0, stop = time.perf_counter(), Stop()  # Ctrl-C/SIGTERM: save, then leave
    # the polish is the last part of the steps, or of --time-budget when that stops training first
    polishing, late, budget_left = False, False, args.time_budget * (1 - args.texnet_polish)
    first_polished = args.texnet_steps - round(args.texnet_polish * args.texnet_steps)
    try:
        while step < args.texnet_steps:
            if not polishing and (step >= first_polished or late):
                # the polish: the statistic alone, whose drift takes away the stretches the correspondence
                # term copied; its objectives (a network copy and the target's features) replace the
                # training's, built only when a step needs them
                polishing = True
                objs = objectives(net, job["targets"], (args.texnet_size,) * 2, args, tile=not g.waves,
                                  loss=args.loss.split("+")[0])
            loss = step_loss(ddp, objs, args, step, rank, world, device, dtype)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            elapsed = time.perf_counter() - t0
            over = args.time_budget and elapsed > args.time_budget or stop.signum is not None
            late = args.texnet_polish and args.time_budget and elapsed > budget_left
            sync = torch.tensor([loss.item(), float(bool(over)), float(bool(late))])  # every process switches at once
            if world > 1:
                dist.all_reduce(sync)
            if not math.isfinite(sync[0]):
                raise SystemExit(f"{job['dir']}: loss is {sync[0].item()} at step {step}; try a lower --texnet-lr")
            for group in opt.param_groups:
                group["lr"] = learning_rate(args, step)
            opt.step()
            step += 1
            curve.append(sync[0].item() / world)
            bar.update()
            bar.set_postfix(loss=f"{curve[-1]:.4g}")
            done = step == args.texnet_steps or sync[1] > 0
            late = bool(sync[2] > 0)
            if rank == 0 and (done or args.texnet_snapshot_every and step % args.texnet_snapshot_every == 0):
                generator_checkpoint.save(g, opt, job, args, step, curve, seconds + time.perf_counter() - t0)
                # drawn as `texnet.py sample` draws, a lattice at its own period: the snapshot shows what a sample would
                s = args.texnet_size
                with torch.no_grad():
                    img = sampling.drawn(g, 0, (s, s), args.seed, False, s, device, dtype)
                outputs.write_png(img, os.path.join(job["dir"], f"snapshot_{step:05d}.png"))
            if done:
                break
    finally:  # also after a failure: Ctrl-C must work again in the caller
        bar.close()
        stop.restore()
    if stop.signum is not None:
        raise SystemExit(f"stopped at step {step}: saved {job['ckpt']}; continue with --resume")
    return {"label": job["dir"], "steps": step, "seconds": seconds + time.perf_counter() - t0,
            "loss_first": curve[0] if curve else None, "loss_last": curve[-1] if curve else None}


def train(args):
    rank, world, device = distributed(args.device)
    dtype = pick_dtype(args.dtype, device)
    try:
        layers = parse_layers(args.layers)
        net = backbones.networks(args)[0].to(device).eval().requires_grad_(False)
        layers = parse_layers(args.layers, net.names)
    except (CheckpointError, ValueError) as e:
        raise SystemExit(str(e))
    least = smallest_side(net, layers)  # a convolution after the last pooling needs 2 px there
    if not args.full and args.image_size < least:
        raise SystemExit(f"--image-size {args.image_size}: must be at least {least} px for --layers {args.layers}")
    if args.texnet_size < least:
        raise SystemExit(f"--texnet-size {args.texnet_size}: must be at least {least} for --layers {args.layers}")
    try:
        for job in jobs(args, least):
            job["ckpt"] = os.path.join(job["dir"], "texnet.pt")
            r = train_one(job, net, args, device, dtype, rank, world)
            if rank == 0:
                tqdm.write(f"{job['ckpt']}: {r['steps']} steps in {r['seconds']:.0f} s, loss {r['loss_first']:.4g}"
                           f" -> {r['loss_last']:.4g}")
    except OSError as e:
        raise SystemExit(f"--texnet-dir {args.texnet_dir}: cannot write there ({e.strerror or e})")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run(argv=None, doc=__doc__):
    """texnet.py train or sample with these arguments."""
    args = parse(argv, doc)
    try:
        return train(args) if args.command == "train" else sampling.sample(args)
    except OSError as e:  # every file is replaced whole, so earlier outputs stay as they were
        raise SystemExit(f"cannot write output ({e.strerror or e}: {e.filename})")
