"""bench.py's time to quality: the original recipe run until its plateau, then every method of
texture.synthesis.methods until it reaches the quality the original finally reached, by the local
measures' distances (no network, no loss). Iteration counts here; bench.py times the iterations side
by side.
"""
import dataclasses

import torch

from texture.data import photographs
from texture.data.images import center_crop
from texture.measures.local import local_measures
from texture.synthesis.methods import COLOUR_ONLY, METHODS, method_options
from texture.synthesis.optimize import synthesize
from texture.synthesis.options import Options
from texture.synthesis.taps import parse_layers

QUALITY = ("lbp_distance", "patch_nn", "patch_cover")  # the local measures' distances, lower is better
# The original TensorFlow recipe, through gen.py's options; it ran in fp32.
ORIGINAL = Options(layers=parse_layers("original"), optimizer="adam", lr=1e-4, init="uniform", features="standardize",
                   pixels="clamp", pool="max", padding="zeros", dtype="fp32", spectrum_weight=0.0, levels=1,
                   refine_steps=0, polish_steps=0, short_from=0)


def timed_methods(dtype):
    """{name: options} of the methods timed to quality (on a grey photograph): all but those for colour
    targets only and those with a refinement (the default among them), whose first part is method
    gram-spectrum's run (bench.py times a refinement's iteration apart)."""
    methods = {name: method_options(name, dtype) for name in METHODS if name not in COLOUR_ONLY}
    return {name: o for name, o in methods.items() if not o.refine_steps}


class Reached(Exception):
    """Raised from the progress callback to end a run once every goal is reached."""


def measured_run(net, target, options, steps, every, seed, goal=None, time_budget=0.0):
    """synthesize from the seed's noise, with the local measures' QUALITY measures of the current
    image every `every` iterations and after the last: [(step, measures)]. With `goal` it stops once
    every measure is at or below the goal's."""
    curve, last = [], {}

    def measure(step, image):
        curve.append((step, {k: v for k, v in local_measures(image, target.cpu()).items() if k in QUALITY}))
        if goal and all(curve[-1][1][k] <= goal[k] for k in QUALITY):
            raise Reached(step)

    def check(step, images, losses):  # images: the iterate the step started from (step 1: the start noise)
        last.update(step=step, image=images[0, 0].float().cpu())
        if step == 1 or step % every == 0:
            measure(step, last["image"])
    try:
        synthesize(net, [target], None, dataclasses.replace(options, steps=steps, time_budget=time_budget, short_from=0),
                   seeds=[seed], callback=check, match=False)
        if last and (not curve or curve[-1][0] != last["step"]):
            measure(last["step"], last["image"])
    except Reached:
        pass
    return curve


def first_steps(curve, goal):
    """Per QUALITY measure, and for all of them at once, the first measured step at or below the goal
    (None: never)."""
    out = {k: next((s for s, m in curve if m[k] <= goal[k]), None) for k in QUALITY}
    out["all"] = next((s for s, m in curve if all(m[k] <= goal[k] for k in QUALITY)), None)
    return out


def last_quarter_gain(curve):
    """Per measure, the share of the run's whole improvement made in its last quarter of iterations:
    near 0 once it has plateaued."""
    end = curve[-1][0]
    mid = min(curve, key=lambda c: abs(c[0] - 0.75 * end))[1]
    first, final = curve[0][1], curve[-1][1]
    return {k: (mid[k] - final[k]) / (first[k] - final[k]) if first[k] != final[k] else 0.0 for k in QUALITY}


def photo_target(name, side, device):
    """The centre side x side crop of a photograph (photographs.PHOTOS), in [0, 1] on the device."""
    img = torch.from_numpy(photographs.photograph(name))
    return (center_crop(img, side).float() / 255).to(device)


def time_to_quality(args, net, dtype, device):
    """The original recipe until --bench-orig-steps or --bench-orig-seconds (its plateau), then every method of
    timed_methods until it reaches each of the original's final QUALITY measures: the iteration counts."""
    target, seed = photo_target(args.bench_photo, args.image_size, device), args.seed
    orig = measured_run(net, target, ORIGINAL, args.bench_orig_steps, args.bench_orig_every, seed,
                        time_budget=args.bench_orig_seconds)
    goal = orig[-1][1]
    out = {"target": args.bench_photo, "goal": goal, "original": {
        "steps": orig[-1][0], "last_quarter_gain": last_quarter_gain(orig), "curve": orig}, "methods": {}}
    for name, options in timed_methods(dtype).items():
        curve = measured_run(net, target, options, args.bench_gen_steps, args.bench_gen_every, seed, goal)
        out["methods"][name] = {"steps_to": first_steps(curve, goal), "final": curve[-1][1], "curve": curve}
    return target, out
