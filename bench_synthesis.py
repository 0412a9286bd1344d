"""bench.py's synthesis sections: time to quality against the original recipe (bench_quality), one
synthesis iteration of each method against a bare forward and backward pass, and a texnet.py sample
against a gen.py iteration at the same size; every comparison timed side by side (timing.interleave).
"""
import argparse
import dataclasses
import sys
import time

import torch

import backbones
import dataset
import fidelity
import gen
import generator
import layer_spec
import model as M
import synthesis
from bench_quality import ORIGINAL, photo_target, time_to_quality, timed_methods
from hyperparams import Hyperparams
from timing import interleave, sync


def synthesis_net(args, device):
    """gen.py's network: its default (--backbone trained) from --ckpt, else --backbone random."""
    choice = argparse.Namespace(ckpt=args.ckpt, backbone="trained" if args.ckpt else "random",
                                seed=args.seed, backbone_weights="")
    try:
        return backbones.networks(choice)[0].to(device).eval().requires_grad_(False)
    except M.CheckpointError as e:
        raise SystemExit(f"--ckpt: {e}")


def iteration_times(net, target, layers, options, steps, seed):
    """A callable running `steps` iterations of synthesis.synthesize; returns the seconds between iterations."""
    def run():
        stamps = []
        synthesis.synthesize(net, [target], layers, None, dataclasses.replace(options, steps=steps), seeds=[seed],
                             callback=lambda *_: stamps.append(time.perf_counter()))
        return [b - a for a, b in zip(stamps, stamps[1:])]
    return run


def bare_times(net, layers, options, size, steps, device):
    """A callable timing `steps` bare forward+backward passes to the deepest tap, input gradient only, of
    the network as synthesis.synthesize runs it (model.frozen)."""
    bare = M.frozen(net, options.pool, options.padding, options.dtype, keep=layers)
    deepest = max(layers, key=bare.names.index)
    x = torch.rand(1, 1, size, size, device=device, requires_grad=True)

    def run():
        out = []
        for _ in range(steps):
            t = time.perf_counter()
            with M.autocast(device, options.dtype):
                f = bare.taps(x, [deepest])[deepest]
            f.float().sum().backward()
            x.grad = None
            sync(device)
            out.append(time.perf_counter() - t)
        return out
    return run


def loss_times(net, target, layers, options, steps, device):
    """A callable timing `steps` forward+loss+backward passes as synthesis.synthesize runs them (Gram
    and spectrum terms included), without the optimiser and the bookkeeping of an iteration."""
    size = tuple(target.shape)
    evaluate = synthesis.objective(net, [target], layers, size, options)
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


def bench_synthesis(args, device, dtype):
    """Sections synthesis and iteration: iteration counts from time_to_quality, the time per iteration of
    each recipe from interleaved timed chunks, and of the default's loss alone and of the bare network.
    The default's iteration is that of its Gram + spectrum part (method gram-spectrum), which reaches
    the original's quality before the refinement starts; the refinement's iteration is timed apart."""
    net = synthesis_net(args, device)
    target, quality = time_to_quality(args, net, dtype, device)
    methods = timed_methods(dtype)
    layers, options = methods["gram-spectrum"]
    refine_layers, refine = fidelity.method_options("refine", dtype)
    c = args.bench_chunk
    t = interleave({
        "original": iteration_times(net, target, layer_spec.parse_layers("original"), ORIGINAL, c + 1, args.seed),
        **{name: iteration_times(net, target, lay, opt, c + 1, args.seed) for name, (lay, opt) in methods.items()},
        "refine": iteration_times(net, target, refine_layers, synthesis.refinement(refine), c + 1, args.seed),
        "loss": loss_times(net, target, layers, options, c, device),
        "bare": bare_times(net, layers, options, args.image_size, c, device)}, args.bench_repeats, device)
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
                 "refine_iteration_s": t["refine"], "refine_ratio": t.ratio("refine", "bare")}
    return synth, iteration


ALL_PATCHES_UP_TO = 192  # side up to which the refinement is also timed with every target patch (beyond: minutes)


def bench_refine_sizes(args, device, dtype):
    """Section refine: per side of --bench-refine-sizes (output = target, a centre crop of --bench-photo),
    the refinement's iteration (fidelity method refine) against the iteration before it (Gram +
    spectrum), interleaved; up to ALL_PATCHES_UP_TO px also with every target patch instead of at most
    --gcd-patches of them."""
    net = synthesis_net(args, device)
    layers, options = fidelity.method_options("refine", dtype)
    first, refine = dataclasses.replace(options, refine_steps=0), synthesis.refinement(options)
    c, out = args.bench_chunk, []
    for side in args.bench_refine_sizes:
        target = photo_target(args.bench_photo, side, device)
        fns = {name: iteration_times(net, target, layers, o, c + 1, args.seed)
               for name, o in (("first", first), ("refine", refine))}
        if side <= ALL_PATCHES_UP_TO:
            every = dataclasses.replace(refine, gcd_patches=sys.maxsize)
            fns["all"] = iteration_times(net, target, layers, every, c + 1, args.seed)
        t = interleave(fns, args.bench_repeats, device)
        out.append({"side": side, "first_iteration_s": t["first"], "refine_iteration_s": t["refine"],
                    "ratio": t.ratio("refine", "first"),
                    "all_patches_ratio": t.ratio("all", "first") if "all" in fns else None})
    return out


def bench_texnet(args, device, dtype, data_dir):
    """Section texnet: a sample of the default generator, tiled as texnet.py samples, vs one synthesis
    iteration of gen.py's default for an output of the same size (the time between two iterations; an
    output that large is made coarse to fine, without the refinement)."""
    h, s = Hyperparams(), args.bench_texnet_size
    g = generator.Generator(h.texnet_scales, h.texnet_width, h.texnet_noise).to(device)
    generator.calibrate(g, generator.noise_pyramid(g, g.factor * 4, g.factor * 4, args.seed, device=device))
    g.eval()
    data = dataset.load_data(data_dir, "all", image_size=args.image_size, seed=args.seed)
    target = (dataset.center_crop(data.train_images[0], args.image_size).float() / 255).to(device)
    net = synthesis_net(args, device)
    layers, options = gen.default_options(dtype)

    def sample():
        with M.autocast(device, dtype):
            generator.sample(g, generator.noise_pyramid(g, s, s, args.seed, device=device), 0, h.sample_tile)

    def iteration():
        stamps = []
        synthesis.synthesize(net, [target], layers, (s, s), dataclasses.replace(options, steps=2, refine_steps=0),
                             seeds=[args.seed], callback=lambda *_: stamps.append(time.perf_counter()))
        return [stamps[1] - stamps[0]]
    t = interleave({"sample": sample, "iteration": iteration}, args.bench_repeats, device)
    return {"size": s, "sample_s": t["sample"], "sample_s_per_megapixel": t["sample"] / (s * s / 1e6),
            "gen_iteration_s": t["iteration"], "ratio": t.ratio("iteration", "sample")}
