"""Texture synthesis by feature statistics: the objective and the loops (the feature losses are
losses.py, the optimiser lbfgs.py, the Fourier spectrum term spectrum.py, the settings options.py, the
options of each part and where it runs recipe.py).

gen.py is the command line around this module; bench.py times it. `objective` combines the loss
terms built from the targets' features; `synthesize` optimises a batch of images from noise against
them, `coarse_to_fine` does so over several sizes for large outputs, `refine` adds the refinement
and its polish.
"""
import dataclasses
import math
import time

import torch

import model
from texture.measures.colour import luminance
from texture.run.device import autocast, pick_dtype
from texture.synthesis import chroma, colour, lbfgs, stopping
from texture.synthesis import spectrum as spectra
from texture.synthesis.histogram import match_histogram
from texture.synthesis.levels import auto_levels, downsample, level_steps, upsample
from texture.synthesis.losses import LOSSES
from texture.synthesis.options import Options
from texture.synthesis.recipe import fine_level, polish, refined_at_full_size, refinement
from texture.synthesis.taps import downsampling, taps


def objective(net, targets, size, options):
    """What one iteration evaluates, built in one place for synthesize, bench.py and any other caller:
    the frozen network (circular padding with tile), the loss terms built from the targets' taps
    (options.loss: a key of losses.LOSSES, or a statistic and gcd joined by +) and the spectrum term for
    an output of `size`; colour targets (3, H, W) as colour.View shows them to the network. Returns
    evaluate(x (B, C, H, W), renew=True) -> (total (B,), parts {name: (B,)}):
    per term the weighted mean of its per-layer losses (the gcd term times options.gcd_weight, its
    occurrence penalty's matches found again only if renew), plus the weighted spectrum term."""
    o, every = options, taps(options)
    device = next(net.parameters()).device
    dtype = pick_dtype(o.dtype, device)
    net = model.frozen(net, o.pool, o.padding, dtype, keep=every)
    view = colour.View(net, targets, every, o.chroma_layers, o.chroma_share)
    images = [colour.planes(t.to(device).float())[None] for t in targets]
    channels = [view.channels(t, [b]) for b, t in enumerate(images)]
    with torch.no_grad(), autocast(device, dtype):
        tfeats = [view.feats(t, c) for t, c in zip(images, channels)]
    # (weight, {tap: weight}, loss, prefix of its parts, whether it holds matches); losses in fp32, outside autocast
    terms = []
    for name in o.loss.split("+"):
        own = o.gcd_layers if name == "gcd" else o.layers
        kw = {"occurrence": o.occurrence, "patches": o.gcd_patches, "channels": o.gcd_channels} if name == "gcd" else {}
        fn = LOSSES[name]([{n: t[n] for n in own} for t in tfeats], o.features, **kw)
        prefix = "gcd:" if name == "gcd" and o.loss != "gcd" else ""
        terms.append((o.gcd_weight if name == "gcd" else 1.0, own, fn, prefix, name == "gcd"))
    model.set_padding(net, "circular" if o.tile else o.padding)
    spectrum = None if o.spectrum_weight <= 0 else \
        spectra.spectrum_loss(targets, size, device, o.spectrum_scale, o.tile) if view.space is None else \
        colour.spectrum_loss([c[0] for c in channels], size, device, o.spectrum_scale, o.tile)

    def evaluate(x, renew=True):
        y = view.channels(x)
        with autocast(x.device, dtype):
            feats = view.feats(x, y)
        total, per = 0.0, {}
        for weight, own, fn, prefix, holds in terms:
            part = fn({n: feats[n] for n in own}, renew) if holds else fn({n: feats[n] for n in own})
            total = total + weight * sum(w * part[n] for n, w in own.items()) / sum(own.values())
            per.update({prefix + n: v for n, v in part.items()})
        if spectrum is not None:
            per["spectrum"] = spectrum(y)
            total = total + o.spectrum_weight * per["spectrum"]
        return total, per
    return evaluate


def init_image(target, size, kind, seed):
    """Start noise: i.i.d. draws of the target's grey levels, Gaussian with its mean/std, or U(0,1);
    of a colour target, draws of its colours (whole pixels), or each channel's as a grey target's."""
    if colour.is_colour(target):
        return colour.init_pixels(target, size, seed) if kind == "shuffle" else \
            torch.stack([init_image(c, size, kind, seed + k) for k, c in enumerate(target)])
    g, t = torch.Generator().manual_seed(seed), target.flatten().float().cpu()
    if kind == "uniform":
        return torch.rand(size, generator=g)
    if kind == "shuffle":
        return t[torch.randint(len(t), size, generator=g)]
    return (t.mean() + t.std() * torch.randn(size, generator=g)).clamp(0, 1)


def resolve(net, targets, size, options):
    """The options for this output size: levels decided when 0 (levels.auto_levels), and the shorter
    iteration counts (short_steps, short_refine_steps, short_refine_lr) for an output made at one level
    without tile whose sides are both at least short_from; short_from is 0 after, so a second call
    changes nothing."""
    o = options
    levels = o.levels or auto_levels(size, min(min(t.shape[-2:]) for t in targets), downsampling(net, taps(o)),
                                     o.tile)
    o = dataclasses.replace(o, levels=levels)
    if levels == 1 and not o.tile and o.short_from and min(size) >= o.short_from:
        # from 224 px on they reach the longer counts' measures within the seeds' spread; at 96 and 160 px,
        # and tileable (the gravel's LBP and patch_cover), they fall short (docs/speed.md)
        o = dataclasses.replace(o, steps=o.short_steps, refine_steps=o.short_refine_steps,
                                refine_lr=o.short_refine_lr)
    return dataclasses.replace(o, short_from=0)


def synthesize(net, targets, size=None, options=Options(), *, seeds=None, match=True, callback=None, start=None):
    """Optimise one image of `size` (H, W) per target (list of (H, W) grey or (3, H, W) colour tensors
    in [0, 1]; grey and colour together only if colour.by_luminance sends the colour ones through the
    network in luminance) as one batch.

    `options` (Options) says how; levels 0 is decided here (resolve). Returns one dict per target:
    image (H, W) or (3, H, W) on the CPU (the best iterate, `raw`, given the target's grey-level or
    colour histogram if `match`) and its loss `final_loss`, the best loss during optimisation and its
    per-layer parts, the loss curve, steps run, and a message if it stopped early (non-finite loss).
    `callback(step, images (B, C, H, W), losses)` is called after every step; `seeds` (one per target)
    seed the start noise; `start` (B, H, W) or (B, 3, H, W) in [0, 1] replaces it."""
    size = tuple(size or targets[0].shape[-2:])
    if colour.by_luminance(net, targets, options):
        return in_luminance(net, targets, size, options, seeds=seeds, match=match, callback=callback, start=start)
    o = resolve(net, targets, size, options)
    if refined_at_full_size(o):
        return refine(net, targets, size, o, seeds=seeds, match=match, callback=callback, start=start)
    if o.levels > 1:
        return coarse_to_fine(net, targets, size, o, seeds=seeds, match=match, callback=callback)
    device = next(net.parameters()).device
    seeds, B = seeds or [0] * len(targets), len(targets)
    evaluate = objective(net, targets, size, o)
    live = stopping.LiveBatch(evaluate, lambda rows: objective(net, [targets[i] for i in rows], size, o))
    stop = stopping.Plateau(B, o.stop_window, o.stop_tolerance) if o.stop_tolerance else None
    x0 = torch.stack([colour.planes(x) for x in (start if start is not None else
                      [init_image(t, size, o.init, s) for t, s in zip(targets, seeds)])]).float().to(device)
    z = (torch.logit(x0.clamp(0.01, 0.99)) if o.pixels == "sigmoid" else x0.clone()).requires_grad_()
    opt = (lbfgs.BatchLBFGS(z, o.step_size, o.lbfgs_history) if o.optimizer == "lbfgs" else
           torch.optim.Adam([z], o.step_size))
    best, best_loss, parts = x0.clone(), torch.full((B,), math.inf), [None] * B
    active, curves, messages = torch.ones(B, dtype=torch.bool), [[] for _ in range(B)], [None] * B
    start, done, ran = time.perf_counter(), 0, [0] * B
    # a penalty that moves with the matches changes the objective within a line search, which then
    # fails (measured, docs/correspondence.md): hold it, and let L-BFGS take each renewal as a new start
    hold = o.occurrence_hold if o.optimizer == "lbfgs" and "gcd" in o.loss.split("+") and o.occurrence else 0
    for step in range(o.steps):
        if o.time_budget and time.perf_counter() - start > o.time_budget:
            break
        x = torch.sigmoid(z) if o.pixels == "sigmoid" else z
        total, per, rebuilt = live(x, active, not hold or step % hold == 0)
        renew = not hold or step % hold == 0 or rebuilt
        z.grad = None
        total[active].sum().backward()
        values, gfinite = total.detach().cpu(), torch.isfinite(z.grad.flatten(1)).all(1).cpu()
        for b in torch.nonzero(active & ~(torch.isfinite(values) & gfinite)).flatten().tolist():
            active[b], messages[b] = False, f"loss is {values[b].item()} at step {step}; stopped this target"
        for b in torch.nonzero(active).flatten().tolist():
            curves[b].append(values[b].item())
            ran[b] += 1
            if values[b] < best_loss[b]:
                best[b], best_loss[b] = x[b].detach(), values[b]
                parts[b] = {n: v[b].item() for n, v in per.items()}
        for b in stop.done(best_loss, active) if stop else ():
            active[b] = False  # done: its best iterate is kept, and it costs nothing from now on
        if not active.any():
            break
        z.grad[~active.to(z.device)] = 0
        if hold and renew:
            opt.rebase()
        opt.step(values, active) if o.optimizer == "lbfgs" else opt.step()
        if o.pixels == "clamp":
            z.data.clamp_(0, 1)
        done = step + 1
        if callback:
            callback(done, x.detach(), values)
    seconds = time.perf_counter() - start
    final = torch.stack([i if not match else colour.match_colours(i, t) if colour.is_colour(t) else
                         match_histogram(i[0], t)[None] for i, t in zip(best, targets)])
    with torch.no_grad():
        final_loss = evaluate(final)[0].cpu()
    return [{"image": colour.unplanes(final[b]).float().cpu(), "raw": colour.unplanes(best[b]).float().cpu(),
             "loss": best_loss[b].item(),
             "final_loss": final_loss[b].item(), "layer_losses": parts[b], "curve": curves[b], "steps": ran[b],
             "seconds": seconds, "message": messages[b]} for b in range(B)]


def in_luminance(net, targets, size, options, *, seeds=None, match=True, callback=None, start=None):
    """synthesize for a batch with colour targets that colour.by_luminance sends through the network
    in luminance: each colour target's luminance is synthesised as a grey target would be (with the
    grey ones of the batch), then given the chrominance of its target's patches (chroma.colourise;
    its histogram too if `match`). `callback` sees the luminance (B, 1, H, W) while it runs."""
    greys = [luminance(t) if colour.is_colour(t) else t for t in targets]
    if start is not None:
        start = torch.stack([luminance(x) if colour.is_colour(x) else x for x in start])
    out = synthesize(net, greys, size, options, seeds=seeds, match=match, callback=callback, start=start)
    seeds, begin = seeds or [0] * len(targets), time.perf_counter()
    for r, t, s in zip(out, targets, seeds):
        if colour.is_colour(t):
            r["image"] = chroma.colourise(r["image"], t, options.tile, match, s)
            r["raw"] = chroma.colourise(r["raw"], t, options.tile, False, s)
    for r in out:  # seconds are the batch's, as synthesize gives them
        r["seconds"] += time.perf_counter() - begin
    return out


def refine(net, targets, size, options, *, seeds=None, match=True, callback=None, start=None):
    """Synthesise as options say without the refinement (coarse to fine if levels > 1), then refine the
    result at full size with refinement(options), then, if polish_steps, go on with the first part's
    loss (polish(options)). The correspondence term alone reproduces the target (its optimum for an
    output of the target's size is the target); started from the Gram result it sharpens the objects
    where that result put them, so the layout stays new; the polish takes back the stretches it
    copied (docs/correspondence.md). The time budget covers all parts: each gets its iterations' share
    of the time left, and no iteration once it is spent. Returns the last part's dicts with
    steps/seconds/curve over all parts, and `refine` (and `polish`): that part's steps, seconds and
    best loss."""
    parts = {"base": dataclasses.replace(options, refine_steps=0), "refine": refinement(options)}
    if options.polish_steps:
        parts["polish"] = polish(options)
    runs, offset, x = {}, 0, start
    steps_left, deadline = sum(p.steps for p in parts.values()), time.perf_counter() + options.time_budget
    for i, (name, o) in enumerate(parts.items()):
        if options.time_budget:
            left = deadline - time.perf_counter()
            o = dataclasses.replace(o, time_budget=left * o.steps / steps_left) if left > 0 else \
                dataclasses.replace(o, steps=0)
        steps_left -= parts[name].steps
        runs[name] = synthesize(net, targets, size, o, seeds=seeds, match=match and i == len(parts) - 1,
                                start=x, callback=callback and (lambda k, im, v, at=offset: callback(at + k, im, v)))
        offset += max(r["steps"] for r in runs[name])
        x = torch.stack([r["raw"] for r in runs[name]])
    out = runs[name]
    for b, r in enumerate(out):
        done = [runs[n][b] for n in parts]
        r.update({n: {"steps": d["steps"], "seconds": d["seconds"], "loss": d["loss"]} for n, d in zip(parts, done)
                  if n != "base"})
        r.update(levels=done[0].get("levels"), steps=sum(d["steps"] for d in done),
                 seconds=sum(d["seconds"] for d in done), curve=[c for d in done for c in d["curve"]],
                 message=next((d["message"] for d in done if d["message"]), None))
    return out


def coarse_to_fine(net, targets, size, options, *, seeds=None, match=True, callback=None):
    """Synthesise at half the size against the targets at half resolution (recursively, options.levels
    in all), upsample, and go on at full size with fewer iterations (level_steps): the cost of a large
    output is dominated by a few full-size iterations instead of hundreds. The refinement and its
    polish (options.refine_steps, polish_steps) run at the coarsest level, where the layout is decided
    and an iteration costs a 4 ** (levels - 1)th of a full-size one; each finer level then gets a short
    one of its own (fine_level), which draws the objects at its scale: with random weights the Gram +
    spectrum part alone draws none at any size, and a 1024 px gravel refined only at its coarsest level
    had no stones (docs/speed.md). The time budget is shared equally between levels. Returns
    synthesize's dicts with steps/seconds/curve over all levels and `levels`: per level, size, steps,
    seconds and best loss (and its `refine` and `polish`), and `refine` and `polish` over all levels
    (steps and seconds summed, the finest's loss)."""
    o, levels = options, options.levels
    size = tuple(size or targets[0].shape[-2:])
    small = [downsample(t) for t in targets]
    budget = o.time_budget / levels if o.time_budget else 0.0
    offset = [0]

    def shifted(step, images, losses):
        offset[0] = max(offset[0], step)
        if callback:
            callback(step, images, losses)
    coarse = synthesize(net, small, (size[0] // 2, size[1] // 2),
                        dataclasses.replace(o, levels=levels - 1, time_budget=budget * (levels - 1)),
                        seeds=seeds, match=False, callback=shifted)
    # the upsampled coarse result lacks the finest octave; without it the fine level starts farther
    # from the target than noise does (measured): add the start noise's own finest octave
    seeds = seeds or [0] * len(targets)
    noise = [init_image(t, size, o.init, s) for t, s in zip(targets, seeds)]
    start = torch.stack([upsample(r["raw"], size, o.tile) + n - upsample(downsample(n), size, o.tile)
                         for r, n in zip(coarse, noise)]).clamp(0, 1)
    fine = synthesize(net, targets, size,
                      dataclasses.replace(fine_level(o, level_steps(o.steps, levels)[-1]), time_budget=budget),
                      seeds=seeds, match=match, start=start,
                      callback=callback and (lambda i, im, v: callback(offset[0] + i, im, v)))

    def level(r):  # one level's record, with its refinement and polish if it ran them
        return {"size": list(r["raw"].shape[-2:]), "steps": r["steps"], "seconds": r["seconds"], "loss": r["loss"],
                **{k: r[k] for k in ("refine", "polish") if r.get(k)}}
    for c, f in zip(coarse, fine):
        f["levels"] = (c.get("levels") or [level(c)]) + [level(f)]
        for k in ("refine", "polish"):
            if ran := [lv[k] for lv in f["levels"] if k in lv]:
                f[k] = {"steps": sum(r["steps"] for r in ran), "seconds": sum(r["seconds"] for r in ran),
                        "loss": ran[-1]["loss"]}
        f["steps"], f["seconds"] = c["steps"] + f["steps"], c["seconds"] + f["seconds"]
        f["curve"] = c["curve"] + f["curve"]
        f["message"] = f["message"] or c["message"]
    return fine
