"""Texture synthesis by feature statistics: the objective and the loops (the feature losses are
losses.py, the optimiser lbfgs.py, the Fourier spectrum term spectrum.py).

gen.py is the command line around this module; bench.py times it. `objective` combines the loss
terms built from the targets' features; `synthesize` optimises a batch of images from noise against
them, `coarse_to_fine` does so over several sizes for large outputs.
"""
import dataclasses
import math
import time

import torch

import lbfgs
import model
import spectrum as spectra
from levels import level_steps, upsample
from losses import LOSSES
from quality import quantiles


def downsampling(net, layers):
    """How many times the deepest tap is pooled: sizes must be multiples of 2**this (for --tile)."""
    deepest = max(net.names.index(n) for n in layers)
    return 2 ** sum(n.startswith("pool") for n in net.names[: deepest + 1])


def smallest_side(net, layers):
    """The smallest input side the taps can be computed on: downsampling(), twice that if a
    convolution runs on the last pooled map (its reflect or circular padding needs 2 px)."""
    names = net.names[: max(net.names.index(n) for n in layers) + 1]
    last_pool = max((i for i, n in enumerate(names) if n.startswith("pool")), default=-1)
    return downsampling(net, layers) * (2 if any(n.startswith("conv") for n in names[last_pool + 1:]) else 1)


# ---- optimisation ---------------------------------------------------------------------------

def taps(layers, options):
    """Every tap the loss reads: `layers` for the Gram or SWD term, options.gcd_layers for the
    correspondence term, options.refine_layers if there is a refinement (see refine)."""
    terms = options.loss.split("+")
    return {**(layers if terms != ["gcd"] else {}), **(options.gcd_layers if "gcd" in terms else {}),
            **(options.refine_layers if options.refine_steps else {})}


def objective(net, targets, layers, size, options):
    """What one iteration evaluates, built in one place for synthesize, bench.py and any other caller:
    the frozen network (circular padding with tile), the loss terms built from the targets' taps
    (options.loss: a key of losses.LOSSES, or a statistic and gcd joined by +) and the spectrum term for
    an output of `size`. Returns evaluate(x (B, 1, H, W), renew=True) -> (total (B,), parts {name: (B,)}):
    per term the weighted mean of its per-layer losses (the gcd term times options.gcd_weight, its
    occurrence penalty's matches found again only if renew), plus the weighted spectrum term."""
    o, every = options, taps(layers, options)
    device = next(net.parameters()).device
    net = model.frozen(net, o.pool, o.padding, o.dtype, keep=every)
    with torch.no_grad(), model.autocast(device, o.dtype):
        tfeats = [net.taps(t.to(device).float()[None, None], every) for t in targets]
    # (weight, {tap: weight}, loss, prefix of its parts, whether it holds matches); losses in fp32, outside autocast
    terms = []
    for name in o.loss.split("+"):
        own = o.gcd_layers if name == "gcd" else layers
        kw = {"occurrence": o.occurrence, "patches": o.gcd_patches} if name == "gcd" else {}
        fn = LOSSES[name]([{n: t[n] for n in own} for t in tfeats], o.features, **kw)
        prefix = "gcd:" if name == "gcd" and o.loss != "gcd" else ""
        terms.append((o.gcd_weight if name == "gcd" else 1.0, own, fn, prefix, name == "gcd"))
    model.set_padding(net, "circular" if o.tile else o.padding)
    spectrum = spectra.spectrum_loss(targets, size, device, o.spectrum_scale) if o.spectrum_weight > 0 else None

    def evaluate(x, renew=True):
        with model.autocast(x.device, o.dtype):
            feats = net.taps(x, every)
        total, per = 0.0, {}
        for weight, own, fn, prefix, holds in terms:
            part = fn({n: feats[n] for n in own}, renew) if holds else fn({n: feats[n] for n in own})
            total = total + weight * sum(w * part[n] for n, w in own.items()) / sum(own.values())
            per.update({prefix + n: v for n, v in part.items()})
        if spectrum is not None:
            per["spectrum"] = spectrum(x)
            total = total + o.spectrum_weight * per["spectrum"]
        return total, per
    return evaluate


def init_image(target, size, kind, seed):
    """Start noise: i.i.d. draws of the target's grey levels, Gaussian with its mean/std, or U(0,1)."""
    g, t = torch.Generator().manual_seed(seed), target.flatten().float().cpu()
    if kind == "uniform":
        return torch.rand(size, generator=g)
    if kind == "shuffle":
        return t[torch.randint(len(t), size, generator=g)]
    return (t.mean() + t.std() * torch.randn(size, generator=g)).clamp(0, 1)


@dataclasses.dataclass(frozen=True)
class Options:
    """How synthesize optimises: built once (gen.options from the command line) and handed along.

    loss: a key of losses.LOSSES; features: normalize|standardize|raw (see losses._scaled); optimizer:
    lbfgs|adam, with step size lr, for `steps` iterations or `time_budget` seconds (0: no limit); init:
    the start noise (init_image); pixels: sigmoid (optimise logits) or clamp; pool, padding: the
    network's during synthesis (tile: circular, the output tiles); dtype: autocast dtype;
    spectrum_weight > 0 adds the Fourier spectrum constraint, its errors absolute or relative
    (spectrum_scale, see spectrum.spectrum_loss); levels > 1 works coarse to fine (see
    coarse_to_fine); gcd_layers, gcd_weight and occurrence: the taps, weight and occurrence penalty of
    the correspondence term, which compares with at most gcd_patches target patches per tap;
    refine_steps > 0 adds a refinement (see refine) with Adam at refine_lr and the correspondence term
    on refine_layers; occurrence_hold > 0: with L-BFGS, the occurrence penalty's matches are found
    again only every occurrence_hold evaluations (see synthesize).
    Defaults as synthesize has always run (gen.py's come from hyperparams.py)."""
    loss: str = "gram"
    features: str = "normalize"
    optimizer: str = "lbfgs"
    lr: float = 1.0
    steps: int = 300
    time_budget: float = 0.0
    init: str = "shuffle"
    pixels: str = "sigmoid"
    pool: str = "avg"
    padding: str = "reflect"
    tile: bool = False
    dtype: torch.dtype = torch.float32
    spectrum_weight: float = 0.0
    levels: int = 1
    gcd_layers: dict = dataclasses.field(default_factory=lambda: {"relu2_1": 1.0, "relu3_1": 1.0, "relu4_1": 1.0})
    gcd_weight: float = 1.0
    occurrence: float = 0.05
    gcd_patches: int = 1024
    refine_steps: int = 0
    refine_lr: float = 0.05
    refine_layers: dict = dataclasses.field(
        default_factory=lambda: {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0, "relu4_1": 1.0})
    occurrence_hold: int = 0
    polish_steps: int = 0
    spectrum_scale: str = "absolute"


def synthesize(net, targets, layers, size=None, options=Options(), *, seeds=None, match=True, callback=None,
               start=None):
    """Optimise one image of `size` (H, W) per target (list of (H, W) tensors in [0, 1]) as one batch.

    `layers` maps tap names to weights; `options` (Options) says how. Returns one dict per target:
    image (H, W) on the CPU (the best iterate, `raw`, given the target's grey-level histogram if
    `match`) and its loss `final_loss`, the best loss during optimisation and its per-layer parts,
    the loss curve, steps run, and a message if it stopped early (non-finite loss).
    `callback(step, images, losses)` is called after every step; `seeds` (one per target) seed the
    start noise; `start` (B, H, W) in [0, 1] replaces it."""
    o = options
    if o.refine_steps:
        return refine(net, targets, layers, size, o, seeds=seeds, match=match, callback=callback, start=start)
    if o.levels > 1:
        return coarse_to_fine(net, targets, layers, size, o, seeds=seeds, match=match, callback=callback)
    device = next(net.parameters()).device
    size, seeds, B = tuple(size or targets[0].shape[-2:]), seeds or [0] * len(targets), len(targets)
    evaluate = objective(net, targets, layers, size, o)
    x0 = start[:, None].float().to(device) if start is not None else \
        torch.stack([init_image(t, size, o.init, s) for t, s in zip(targets, seeds)])[:, None].to(device)
    z = (torch.logit(x0.clamp(0.01, 0.99)) if o.pixels == "sigmoid" else x0.clone()).requires_grad_()
    opt = lbfgs.BatchLBFGS(z, o.lr) if o.optimizer == "lbfgs" else torch.optim.Adam([z], o.lr)
    best, best_loss, parts = x0.clone(), torch.full((B,), math.inf), [None] * B
    active, curves, messages = torch.ones(B, dtype=torch.bool), [[] for _ in range(B)], [None] * B
    start, done = time.perf_counter(), 0
    # a penalty that moves with the matches changes the objective within a line search, which then
    # fails (measured, docs/correspondence.md): hold it, and let L-BFGS take each renewal as a new start
    hold = o.occurrence_hold if o.optimizer == "lbfgs" and "gcd" in o.loss.split("+") and o.occurrence else 0
    for step in range(o.steps):
        if o.time_budget and time.perf_counter() - start > o.time_budget:
            break
        x = torch.sigmoid(z) if o.pixels == "sigmoid" else z
        renew = not hold or step % hold == 0
        total, per = evaluate(x, renew)
        z.grad = None
        total[active].sum().backward()
        values, gfinite = total.detach().cpu(), torch.isfinite(z.grad.flatten(1)).all(1).cpu()
        for b in torch.nonzero(active & ~(torch.isfinite(values) & gfinite)).flatten().tolist():
            active[b], messages[b] = False, f"loss is {values[b].item()} at step {step}; stopped this target"
        for b in torch.nonzero(active).flatten().tolist():
            curves[b].append(values[b].item())
            if values[b] < best_loss[b]:
                best[b], best_loss[b] = x[b].detach(), values[b]
                parts[b] = {n: v[b].item() for n, v in per.items()}
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
    final = torch.stack([match_histogram(i[0], t)[None] if match else i for i, t in zip(best, targets)])
    with torch.no_grad():
        final_loss = evaluate(final)[0].cpu()
    return [{"image": final[b, 0].float().cpu(), "raw": best[b, 0].float().cpu(), "loss": best_loss[b].item(),
             "final_loss": final_loss[b].item(), "layer_losses": parts[b], "curve": curves[b], "steps": done,
             "seconds": seconds, "message": messages[b]} for b in range(B)]


def refinement(options):
    """The options of the refinement that follows options.steps: the correspondence term (on
    refine_layers) added to the loss, Adam at refine_lr, refine_steps iterations at the output's size."""
    o = options
    loss = o.loss if "gcd" in o.loss.split("+") else o.loss + "+gcd"
    return dataclasses.replace(o, loss=loss, gcd_layers=o.refine_layers, optimizer="adam", lr=o.refine_lr,
                               steps=o.refine_steps, refine_steps=0, levels=1)


def polish(options):
    """The options of the iterations after the refinement: the first part's loss and optimiser again,
    polish_steps of them at the output's size."""
    return dataclasses.replace(options, steps=options.polish_steps, refine_steps=0, levels=1)


def refine(net, targets, layers, size, options, *, seeds=None, match=True, callback=None, start=None):
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
        runs[name] = synthesize(net, targets, layers, size, o, seeds=seeds, match=match and i == len(parts) - 1,
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


def coarse_to_fine(net, targets, layers, size, options, *, seeds=None, match=True, callback=None):
    """Synthesise at half the size against the targets at half resolution (recursively, options.levels
    in all), upsample, and refine at full size with fewer iterations (level_steps): the cost of a large
    output is dominated by a few full-size iterations instead of hundreds. The time budget is
    shared equally between levels. Returns synthesize's dicts with steps/seconds/curve over all
    levels and `levels`: per level, size, steps, seconds and best loss."""
    o, levels = options, options.levels
    size = tuple(size or targets[0].shape[-2:])
    small = [torch.nn.functional.avg_pool2d(t.float()[None, None], 2)[0, 0] for t in targets]
    budget = o.time_budget / levels if o.time_budget else 0.0
    offset = [0]

    def shifted(step, images, losses):
        offset[0] = max(offset[0], step)
        if callback:
            callback(step, images, losses)
    coarse = synthesize(net, small, layers, (size[0] // 2, size[1] // 2),
                        dataclasses.replace(o, levels=levels - 1, time_budget=budget * (levels - 1)),
                        seeds=seeds, match=False, callback=shifted)
    # the upsampled coarse result lacks the finest octave; without it the fine level starts farther
    # from the target than noise does (measured): add the start noise's own finest octave
    seeds = seeds or [0] * len(targets)
    noise = [init_image(t, size, o.init, s) for t, s in zip(targets, seeds)]
    start = torch.stack([upsample(r["raw"], size, o.tile) + n
                         - upsample(torch.nn.functional.avg_pool2d(n[None, None], 2)[0, 0], size, o.tile)
                         for r, n in zip(coarse, noise)]).clamp(0, 1)
    fine = synthesize(net, targets, layers, size,
                      dataclasses.replace(o, levels=1, steps=level_steps(o.steps, levels)[-1], time_budget=budget),
                      seeds=seeds, match=match, start=start,
                      callback=callback and (lambda i, im, v: callback(offset[0] + i, im, v)))
    for c, f in zip(coarse, fine):
        f["levels"] = c.get("levels", [{"size": list(c["raw"].shape), "steps": c["steps"], "seconds": c["seconds"],
                                        "loss": c["loss"]}])
        f["levels"] = f["levels"] + [{"size": list(size), "steps": f["steps"], "seconds": f["seconds"], "loss": f["loss"]}]
        f["steps"], f["seconds"], f["curve"] = c["steps"] + f["steps"], c["seconds"] + f["seconds"], c["curve"] + f["curve"]
        f["message"] = f["message"] or c["message"]
    return fine


def match_histogram(img, target):
    """Exact histogram matching by rank: img keeps its pixel order but takes the target's grey levels."""
    out = torch.empty(img.numel(), device=img.device)
    out[img.flatten().argsort()] = quantiles(target.to(img.device), img.numel())
    return out.view_as(img)
