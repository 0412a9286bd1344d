"""bench.py's section `fast`: gen.py's default against method `fast` of texture.synthesis.methods (its
parts shorter, the Gram + spectrum part coarse to fine; docs/speed.md) in whole runs, per target at
--image-size and as one batch of --bench-batch-targets targets at --bench-batch-side: the seconds of
each, the two recipes alternating round by round so that load hits both alike, and whether the fast
recipe reaches the default's final measures (LBP, patch_nn, patch_cover at or below, the spectrum
within 2%, copy share not above), the mean over the targets and target by target.
"""
import statistics
import time

import torch

from hyperparams import PHOTOS
from texture.data import procedural
from texture.measures import quality
from texture.measures.time_to_quality import photo_target
from texture.run.timing import alternating, sync
from texture.synthesis.methods import method_options
from texture.synthesis.optimize import synthesize

AT_MOST = ("lbp_distance", "patch_nn", "patch_cover", "copy_share")  # the fast recipe's may not be above the default's
SPECTRUM_SLACK = 1.02  # its spectrum distance may be 2% above
MEASURES = (*AT_MOST, "spectrum_distance")


def reaches(now, goal):
    """{criterion: bool}: each measure of `now` at or below the goal's (the spectrum within 2%), and all."""
    out = {k: now[k] <= goal[k] for k in AT_MOST}
    out["spectrum_distance"] = now["spectrum_distance"] <= SPECTRUM_SLACK * goal["spectrum_distance"]
    out["all"] = all(out.values())
    return out


def batch_targets(count, side, photo_names, device):
    """`count` targets of side px: the photographs' centre crops, then patches of the procedural
    families (procedural.FAMILIES) in turn, a new sample of each after every round; (names, tensors)."""
    names = list(photo_names[:count])
    images = [photo_target(p, side, device) for p in names]
    families, sample = list(procedural.FAMILIES), 0
    while len(names) < count:
        for family in families[:count - len(names)]:
            patch = procedural.demo_image(family, sample, 0, side)
            names.append(f"{family}-{'abcd'[sample]}" if sample < 4 else f"{family}-{sample}")
            images.append((torch.from_numpy(patch).float() / 255).to(device))
        sample += 1
    return names, images


def whole_runs(net, targets, recipes, rounds, seed, device):
    """Each recipe's synthesize run on the targets (one batch), `rounds` times, the order alternating
    (A B, B A, ...): ({name: [seconds of each round]}, {name: results of its first round})."""
    seconds, results = {k: [] for k in recipes}, {}
    for _, name in alternating(recipes, rounds):
        sync(device)
        t = time.perf_counter()
        out = synthesize(net, targets, None, recipes[name], seeds=[seed + i for i in range(len(targets))])
        sync(device)
        seconds[name].append(time.perf_counter() - t)
        results.setdefault(name, out)
    return seconds, results


def compare(net, names, targets, rounds, seed, dtype, device):
    """The default against the fast recipe on these targets as one batch: the seconds of each round,
    their median ratio, the mean measures of each and whether the fast recipe's reach the default's,
    how many targets reach them one by one, and the iterations each part ran."""
    recipes = {k: method_options(k, dtype, levels=None) for k in ("default", "fast")}
    seconds, results = whole_runs(net, targets, recipes, rounds, seed, device)
    measures = {k: [{m: v for m, v in quality.measures(r["image"], t.cpu()).items() if m in MEASURES}
                    for r, t in zip(runs, targets)] for k, runs in results.items()}
    mean = {k: {m: statistics.fmean(x[m] for x in ms) for m in MEASURES} for k, ms in measures.items()}
    one_by_one = [reaches(f, d)["all"] for f, d in zip(measures["fast"], measures["default"])]
    parts = {k: [{"all": r["steps"], **{p: (r.get(p) or {}).get("steps") for p in ("refine", "polish")}} for r in runs]
             for k, runs in results.items()}
    return {"targets": names, "side": int(targets[0].shape[-1]), "rounds": rounds, "seconds": seconds,
            "default_s": statistics.median(seconds["default"]), "fast_s": statistics.median(seconds["fast"]),
            "speedup": statistics.median(a / b for a, b in zip(seconds["default"], seconds["fast"])),
            "mean": mean, "reached": reaches(mean["fast"], mean["default"]), "reached_one_by_one": sum(one_by_one),
            "measures": measures, "iterations": parts}


def bench_fast(args, net, device):
    """Section fast: compare() on --bench-photo's centre --image-size crop alone, then on a batch of
    --bench-batch-targets targets (batch_targets: the development photographs, then procedural
    classes) at --bench-batch-side (0 targets: none)."""
    one = compare(net, [args.bench_photo], [photo_target(args.bench_photo, args.image_size, device)],
                  args.bench_repeats, args.seed, args.dtype, device)
    out = {"one": one}
    if args.bench_batch_targets:
        names, images = batch_targets(args.bench_batch_targets, args.bench_batch_side, PHOTOS, device)
        out["batch"] = compare(net, names, images, args.bench_repeats, args.seed, args.dtype, device)
    return out
