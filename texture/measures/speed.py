"""bench.py's synthesis sections: time to quality against the original recipe (time_to_quality), one
synthesis iteration of each method against a bare forward and backward pass, a colour iteration
against a grey one, and a texnet.py sample against a gen.py iteration at the same size; every
comparison timed side by side (timing.interleave).
"""
import argparse
import dataclasses
import sys
import time

import torch

import model as M
from hyperparams import Hyperparams
from texture.data import folders
from texture.data.colour import colour_photograph
from texture.data.images import center_crop
from texture.measures.colour import luminance
from texture.measures.time_to_quality import ORIGINAL, photo_target, time_to_quality, timed_methods
from texture.networks import backbones
from texture.networks import feedforward as generator
from texture.networks.checkpoints import CheckpointError
from texture.run.device import autocast, pick_dtype
from texture.run.timing import interleave, sync
from texture.synthesis import chroma
from texture.synthesis.methods import method_options
from texture.synthesis.optimize import objective, resolve, synthesize
from texture.synthesis.options import Options
from texture.synthesis.recipe import refinement
from texture.synthesis.sampling import drawn, matched


def synthesis_net(args, device):
    """gen.py's network: its default (--backbone trained) from --ckpt, else --backbone random."""
    choice = argparse.Namespace(ckpt=args.ckpt, backbone="trained" if args.ckpt else "random",
                                seed=args.seed, backbone_weights="")
    try:
        return backbones.networks(choice)[0].to(device).eval().requires_grad_(False)
    except CheckpointError as e:
        raise SystemExit(f"--ckpt: {e}")


def iteration_times(net, target, options, steps, seed):
    """A callable running `steps` iterations of synthesize; returns the seconds between iterations."""
    def run():
        stamps = []
        synthesize(net, [target], None, dataclasses.replace(options, steps=steps, short_from=0), seeds=[seed],
                   callback=lambda *_: stamps.append(time.perf_counter()))
        return [b - a for a, b in zip(stamps, stamps[1:])]
    return run


def bare_times(net, options, size, steps, device, autocast_pads=False):
    """A callable timing `steps` bare forward+backward passes to the deepest tap of options.layers,
    input gradient only, of the network as synthesize runs it (model.frozen); autocast_pads: with
    torch's own convolutions instead, whose reflect padding autocast runs in fp32 (M.PadAsInputConv)."""
    dtype = pick_dtype(options.dtype, device)
    bare = M.frozen(net, options.pool, options.padding, dtype, keep=options.layers)
    for m in bare.modules() if autocast_pads else ():
        if isinstance(m, M.PadAsInputConv):
            m.__class__ = torch.nn.Conv2d
    deepest = max(options.layers, key=bare.names.index)
    x = torch.rand(1, 1, size, size, device=device, requires_grad=True)

    def run():
        out = []
        for _ in range(steps):
            t = time.perf_counter()
            with autocast(device, dtype):
                f = bare.taps(x, [deepest])[deepest]
            f.float().sum().backward()
            x.grad = None
            sync(device)
            out.append(time.perf_counter() - t)
        return out
    return run


def loss_times(net, target, options, steps, device):
    """A callable timing `steps` forward+loss+backward passes as synthesize runs them (Gram and
    spectrum terms included), without the optimiser and the bookkeeping of an iteration."""
    size = tuple(target.shape)
    evaluate = objective(net, [target], size, options)
    z = torch.zeros(1, 1, *size, device=device).uniform_(-2, 2).requires_grad_()

    def run():
        out = []
        for _ in range(steps):
            t = time.perf_counter()
            evaluate(torch.sigmoid(z))[0].sum().backward()
            z.grad = None
            sync(device)
            out.append(time.perf_counter() - t)
        return out
    return run


def bench_synthesis(args, device):
    """Sections synthesis and iteration: iteration counts from time_to_quality, the time per iteration of
    each recipe from interleaved timed chunks, and of the default's loss alone and of the bare network.
    The default's iteration is that of its Gram + spectrum part (method gram-spectrum), which reaches
    the original's quality before the refinement starts; the refinement's iteration is timed apart."""
    net = synthesis_net(args, device)
    target, quality = time_to_quality(args, net, args.dtype, device)
    methods = timed_methods(args.dtype)
    options = methods["gram-spectrum"]
    c = args.bench_chunk
    t = interleave({
        "original": iteration_times(net, target, ORIGINAL, c + 1, args.seed),
        **{name: iteration_times(net, target, opt, c + 1, args.seed) for name, opt in methods.items()},
        "refine": iteration_times(net, target, refinement(method_options("refine", args.dtype)), c + 1, args.seed),
        "loss": loss_times(net, target, options, c, device),
        "bare": bare_times(net, options, args.image_size, c, device),
        "bare_autocast_pads": bare_times(net, options, args.image_size, c, device, autocast_pads=True)},
        args.bench_repeats, device)
    orig = quality["original"]
    orig.update(iteration_s=t["original"], seconds=orig["steps"] * t["original"])
    for name, m in quality["methods"].items():
        m["iteration_s"] = t[name]
        m["seconds_to"] = {k: None if s is None else s * t[name] for k, s in m["steps_to"].items()}
        # a ratio of iteration times measured side by side, times the ratio of iteration counts
        m["speedup"] = None if m["steps_to"]["all"] is None else \
            orig["steps"] / m["steps_to"]["all"] * t.ratio("original", name)
    synth = {"original_steps": orig["steps"], "original_seconds": orig["seconds"], "original_iteration_s": t["original"],
             "default_iteration_s": t["gram-spectrum"], "image_size": args.image_size,
             "network": args.ckpt or f"random {net.arch}", **quality}
    iteration = {"default_iteration_s": t["gram-spectrum"], "loss_s": t["loss"], "bare_forward_backward_s": t["bare"],
                 "ratio": t.ratio("gram-spectrum", "bare"), "loss_ratio": t.ratio("loss", "bare"),
                 "gcd_iteration_s": t["gcd"], "gcd_ratio": t.ratio("gcd", "bare"),
                 "refine_iteration_s": t["refine"], "refine_ratio": t.ratio("refine", "bare"),
                 "bare_autocast_pads_s": t["bare_autocast_pads"], "pads_ratio": t.ratio("bare", "bare_autocast_pads")}
    return synth, iteration


COLOUR_PHOTO = "immunohistochemistry"  # data.colour.PHOTOS: the colour target of section colour (512 px)

def bench_colour(args, device):
    """Section colour: gen.py's default on COLOUR_PHOTO's centre --image-size crop, which synthesises
    its luminance as a grey target and then colours it (chroma.colourise, timed on its own), against
    the grey synthesis of that luminance; and an iteration with the three channels through the network
    together at --chroma-layers (--chroma-share 1, as a target of colours of one luminance gets them)
    against a grey one, for the Gram + spectrum part and the refinement, interleaved; each default's
    seconds per target from them (the iterations of each part, as many as gen.py's default gives that size,
    times its iteration's time)."""
    net = synthesis_net(args, device)
    rgb = torch.from_numpy(colour_photograph(COLOUR_PHOTO, args.image_size)).permute(2, 0, 1).float() / 255
    grey, rgb = luminance(rgb).to(device), rgb.to(device)
    # the counts gen.py's default gives an output of this size (from --short-from on, the short ones)
    options = resolve(net, [grey], tuple(grey.shape[-2:]), method_options("default", args.dtype))
    parts = {"first": dataclasses.replace(options, refine_steps=0), "refine": refinement(options)}
    runs = {}
    for kind, target, share in (("grey", grey, options.chroma_share), ("joint", rgb, 1.0)):
        for part, o in parts.items():
            runs[f"{kind}_{part}"] = iteration_times(net, target, dataclasses.replace(o, chroma_share=share),
                                                     args.bench_chunk + 1, args.seed)
    runs["colourise"] = lambda: chroma.colourise(grey, rgb, seed=args.seed)
    t = interleave(runs, args.bench_repeats, device)
    per_target = {k: (options.steps + options.polish_steps) * t[f"{k}_first"] + options.refine_steps * t[f"{k}_refine"]
                  for k in ("grey", "joint")}
    per_target["colour"] = per_target["grey"] + t["colourise"]
    return {"photo": COLOUR_PHOTO, "size": args.image_size, "grey_iteration_s": t["grey_first"],
            "colourise_s": t["colourise"], "colourise_iterations": t["colourise"] / t["grey_first"],
            "joint_ratio": t.ratio("joint_first", "grey_first"),
            "joint_refine_ratio": t.ratio("joint_refine", "grey_refine"), "grey_target_s": per_target["grey"],
            "colour_target_s": per_target["colour"], "target_ratio": per_target["colour"] / per_target["grey"],
            "counts": {k: getattr(options, k) for k in ("steps", "refine_steps", "polish_steps")},
            "joint_target_s": per_target["joint"], "joint_target_ratio": per_target["joint"] / per_target["grey"]}


ALL_PATCHES_UP_TO = 192  # side up to which the refinement is also timed with every target patch (beyond: minutes)


def bench_refine_sizes(args, device):
    """Section refine: per side of --bench-refine-sizes (output = target, a centre crop of --bench-photo),
    the refinement's iteration (method refine) against the iteration before it (Gram +
    spectrum), interleaved; up to ALL_PATCHES_UP_TO px also with every target patch instead of at most
    --gcd-patches of them; and on every channel of its taps instead of --refine-channels' shares."""
    net = synthesis_net(args, device)
    options = method_options("refine", args.dtype)
    first, refine = dataclasses.replace(options, refine_steps=0), refinement(options)
    c, out = args.bench_chunk, []
    for side in args.bench_refine_sizes:
        target = photo_target(args.bench_photo, side, device)
        fns = {name: iteration_times(net, target, o, c + 1, args.seed)
               for name, o in (("first", first), ("refine", refine),
                               ("channels", dataclasses.replace(refine, gcd_channels={})))}
        if side <= ALL_PATCHES_UP_TO:
            every = dataclasses.replace(refine, gcd_patches=sys.maxsize)
            fns["all"] = iteration_times(net, target, every, c + 1, args.seed)
        t = interleave(fns, args.bench_repeats, device)
        out.append({"side": side, "first_iteration_s": t["first"], "refine_iteration_s": t["refine"],
                    "ratio": t.ratio("refine", "first"),
                    "all_patches_ratio": t.ratio("all", "first") if "all" in fns else None,
                    "channels_ratio": t.ratio("refine", "channels")})
    return out


def bench_texnet(args, device, dtype, data_dir):
    """Section texnet: a sample of the default generator (with its most plane waves, as a lattice's),
    tiled, drawn with its margin, given the target's grey levels and tempered as texnet.py samples
    (sampling.sample_one), vs one synthesis iteration of gen.py's default for an output of the same
    size (the time between two iterations; an output that large is made coarse to fine, without the
    refinement), and vs the same sample untempered (--sample-temper 0)."""
    h, s = Hyperparams(), args.bench_texnet_size
    g = generator.Generator(h.texnet_scales, h.texnet_width, h.texnet_noise, waves=h.texnet_waves).to(device)
    generator.calibrate(g, generator.noise_pyramid(g, g.factor * 4, g.factor * 4, args.seed, device=device))
    g.eval()
    data = folders.load_data(data_dir, "all", image_size=args.image_size, seed=args.seed)
    target = (center_crop(data.train_images[0], args.image_size).float() / 255).to(device)
    net = synthesis_net(args, device)
    options = Options(dtype=args.dtype, levels=1, steps=2, refine_steps=0, short_from=0)  # one level: the iteration at full size

    def sample(width, fill=0.0):
        def run():
            img = drawn(g, 0, (s, s), args.seed, False, h.sample_tile, device, dtype)
            matched(img, target, width, fill, args.seed, h.sample_fill_width)
        return run

    def iteration():
        stamps = []
        synthesize(net, [target], (s, s), options, seeds=[args.seed],
                   callback=lambda *_: stamps.append(time.perf_counter()))
        return [stamps[1] - stamps[0]]
    t = interleave({"sample": sample(h.sample_temper, h.sample_fill), "untempered": sample(0), "iteration": iteration},
                   args.bench_repeats, device)
    return {"size": s, "sample_s": t["sample"], "sample_s_per_megapixel": t["sample"] / (s * s / 1e6),
            "gen_iteration_s": t["iteration"], "ratio": t.ratio("iteration", "sample"),
            "untempered_sample_s": t["untempered"], "temper_ratio": t.ratio("sample", "untempered")}
