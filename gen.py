"""Texture synthesis (Gatys et al. 2015): freeze the trained network and optimise an image, from
noise, until its Gram matrices at the chosen layers match those of a target texture.

    python gen.py data/kylberg/blanket1/blanket1-a-p001.png
    python gen.py a.png b.png --size 448 448 --tile          # twice the crop, periodically tileable
    python gen.py a.png --layers gatys                       # conv1_1,pool1..pool4 as in Gatys et al.
    python gen.py a.png --backbone random                    # untrained weights: no checkpoint needed
    python gen.py a.png --backbone imagenet --backbone-weights vgg19-dcbb9e9d.pth  # Gatys' ImageNet VGG-19
    python gen.py a.png --loss swd --spectrum-weight 1          # whole feature distribution + Fourier spectrum
    python gen.py a.png --size 1024 1024 --tile --steps 100    # coarse to fine (3 levels: 256, 512, 1024 px)
    python gen.py a.png --layers pool1,pool2:0.5 --optimizer adam --gen-lr 0.02 --time-budget 60
    python gen.py a.png --optimizer adam --gen-lr 1e-4 --init uniform --features standardize \\
        --pixels clamp --pool max --padding zeros           # the original TF recipe
    for f in data/kylberg/*/*-a-p001.png; do python gen.py "$f"; done
    torchrun --nproc-per-node 2 gen.py data/kylberg/*/*-a-p001.png

Each target gets --gen-dir/<label>/ with target.png, snapshot_NNNNN.png, final.png and
result.json (with quality measures against the target, see quality.py); every call writes
--gen-dir/report.json (the measures per target and their means) and prints them as a table;
several targets in one call also give --gen-dir/collection_<time>.png.
"""
import copy
import json
import math
import os
import sys
import time
import zlib

import torch
import torch.distributed as dist
import torchvision
from PIL import Image, ImageDraw
from torchvision.transforms.functional import pil_to_tensor
from torchvision.utils import make_grid
from tqdm import tqdm

import model
import prepro
import quality
from hyperparams import Hyperparams, parse_args, save_args
from quality import hist_distance, quantiles

# blocks: the first ReLU of each of the five blocks, the default: measured better than pool1..pool4 for the
# trained classifier, whose last layer in each block has the most silent channels (README: backbones)
LAYER_PRESETS = {"original": "pool1,pool2,pool3,pool4", "gatys": "conv1_1,pool1,pool2,pool3,pool4",
                 "blocks": "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1"}


def parse_layers(spec, known=None):
    """'pool1,pool2:0.5' (or a preset name) -> {'pool1': 1.0, 'pool2': 0.5}; ValueError names --layers."""
    text, out = LAYER_PRESETS.get(spec, spec), {}
    for item in text.split(","):
        name, _, weight = item.strip().partition(":")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"--layers: weight {weight!r} of {name!r} is not a number")
        if not name or name in out or not (w > 0 and math.isfinite(w)):
            raise ValueError(f"--layers: bad entry {item!r} in {spec!r} (want name[:weight>0], each name once)")
        if known is not None and name not in known:
            raise ValueError(f"--layers: unknown layer {name!r}; known: {','.join(known)}")
        out[name] = w
    return out


def auto_levels(size, target_side, factor, tile):
    """1 unless the output is at least twice the target's side; then halve both while the target
    stays >= max(2 * factor, 48) px (and, with tile, the output a multiple of factor), at most 4."""
    levels = 1
    if min(size) >= 2 * target_side:
        while (levels < 4 and target_side >> levels >= max(2 * factor, 48)
               and not levels_problem(size, (target_side,), levels + 1, factor, tile)):
            levels += 1
    return levels


def levels_problem(size, target_shape, levels, factor, tile):
    """Why `levels` cannot work for this output size and target (None if it can)."""
    k = 2 ** (levels - 1)
    if min(target_shape) // k < factor or min(size) // k < factor:
        return f"the coarsest level would be below {factor} px (output {min(size) // k}, target {min(target_shape) // k})"
    if tile and any(s % (factor * k) for s in size):
        return f"--tile needs sides that are multiples of {factor * k} with {levels} levels"
    return None


def downsampling(net, layers):
    """How many times the deepest tap is pooled: sizes must be multiples of 2**this (for --tile)."""
    deepest = max(net.names.index(n) for n in layers)
    return 2 ** sum(n.startswith("pool") for n in net.names[: deepest + 1])


# ---- losses: builder(target_feats, features) -> loss(feats) -> {layer: (B,) fp32} --------------

def channel_scale(f):
    """Per image and channel, 1 / max(mean activation, median of the layer's non-zero means).

    In a network trained from scratch a few channels are orders of magnitude stronger than the
    rest and make up nearly all of a raw Gram loss; Gatys' normalised VGG divides each by its mean.
    Dividing weak or silent channels by their own tiny mean amplifies them into noise and stalls
    the optimiser (measured, README), so the strong half is brought to a common level and the
    weak half keeps its relative size."""
    m = f.float().mean((2, 3))
    floor = torch.stack([r[r > 0].median() if (r > 0).any() else r.new_zeros(()) for r in m])
    return 1.0 / torch.maximum(m, floor[:, None]).clamp_min(1e-12)


def _scaled(f, features, scale):
    f = f.float()
    if features == "standardize":
        return (f - f.mean((2, 3), keepdim=True)) / (f.std((2, 3), keepdim=True) + 1e-5)
    return f * scale[:, :, None, None] if features == "normalize" else f


def _gram(f, features, scale):
    return model.gram(_scaled(f, features, scale))


def gram_loss(target_feats, features="normalize"):
    """Per layer and image ||G(x) - G(t)||^2 / ||G(t)||^2: relative, so no layer dominates by scale."""
    scales, grams = {}, {}
    for name in target_feats[0]:
        fs = [t[name] for t in target_feats]  # targets may differ in size: one at a time
        scales[name] = torch.cat([channel_scale(f) for f in fs])
        grams[name] = torch.cat([_gram(f, features, s[None]) for f, s in zip(fs, scales[name])])
    norms = {n: g.square().sum((1, 2)) for n, g in grams.items()}

    def loss(feats):
        return {n: (_gram(f, features, scales[n]) - grams[n]).square().sum((1, 2)) / norms[n]
                for n, f in feats.items()}
    return loss


def _sorted_quantiles(v, n):
    """Rows of sorted values v (..., N) resampled to n quantiles (k + 0.5) / n, by linear interpolation."""
    pos = ((torch.arange(n, dtype=torch.float64, device=v.device) + 0.5) * v.shape[-1] / n - 0.5)
    pos = pos.clamp(0, v.shape[-1] - 1)
    lo = pos.floor().long()
    hi, frac = (lo + 1).clamp(max=v.shape[-1] - 1), (pos - lo).float()
    return v[..., lo] * (1 - frac) + v[..., hi] * frac


def swd_loss(target_feats, features="normalize", projections=None):
    """Sliced Wasserstein distance (Heitz et al. 2021) per layer and image: the features are projected
    on fixed random unit directions (as many as channels, unless `projections`) and each projection's
    sorted values are compared with the target's, resampled to the output's pixel count. This matches
    the whole distribution of the features, not only its second moments. The directions are fixed for
    the run, so L-BFGS sees a deterministic objective. Relative to the target's projected variance."""
    scales, dirs, sorts = {}, {}, {}
    for name in target_feats[0]:
        fs = [t[name] for t in target_feats]
        c = fs[0].shape[1]
        g = torch.Generator().manual_seed(c)
        d = torch.randn(c, projections or c, generator=g)
        dirs[name] = (d / d.norm(dim=0, keepdim=True)).to(fs[0].device)
        scales[name] = torch.cat([channel_scale(f) for f in fs])
        sorts[name] = [(dirs[name].T @ _scaled(f, features, s[None]).flatten(2)[0]).sort(-1).values
                       for f, s in zip(fs, scales[name])]
    var = {n: torch.stack([v.var(-1).mean() for v in vs]).clamp_min(1e-12) for n, vs in sorts.items()}
    cache = {}

    def loss(feats):
        out = {}
        for n, f in feats.items():
            p = (dirs[n].T @ _scaled(f, features, scales[n]).flatten(2)).sort(-1).values  # (B, P, N)
            if (n, p.shape[-1]) not in cache:
                cache[n, p.shape[-1]] = torch.stack([_sorted_quantiles(v, p.shape[-1]) for v in sorts[n]])
            out[n] = (p - cache[n, p.shape[-1]]).square().mean((1, 2)) / var[n]
        return out
    return loss


LOSSES = {"gram": gram_loss, "swd": swd_loss}


def target_amplitude(t, size):
    """Amplitude spectrum of the mean-free target for an output of `size`: its own if the sizes agree,
    else its power spectrum resampled at the output's frequencies (bilinear) and rescaled so the
    output would have the target's variance (a peak widens by the size ratio)."""
    t = t.float() - t.float().mean()
    if tuple(t.shape) == tuple(size):
        return torch.fft.fft2(t).abs()
    p = torch.fft.fftshift(torch.fft.fft2(t).abs().square())
    fy, fx = torch.fft.fftfreq(size[0]), torch.fft.fftfreq(size[1])
    h, w = t.shape  # frequency f sits at shifted index f * n + n // 2
    gy = (fy * h + h // 2) / (h - 1) * 2 - 1
    gx = (fx * w + w // 2) / (w - 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1)[None]
    q = torch.nn.functional.grid_sample(p[None, None], grid, align_corners=True, padding_mode="border")[0, 0]
    q[0, 0] = 0
    return (q * (size[0] * size[1]) / (h * w)).sqrt()


def spectrum_loss(targets, size, device):
    """Fourier spectrum constraint (Liu et al. 2016): the image projected on the target's amplitude
    spectrum, keeping its own phase, is the nearest image with the target's spectrum; the loss is
    the squared distance to it (projection held fixed), relative to the target's variance."""
    amps = torch.stack([target_amplitude(t.cpu(), size) for t in targets]).to(device)
    var = torch.stack([t.float().var() for t in targets]).to(device).clamp_min(1e-12)

    def loss(x):
        x = x[:, 0].float()
        x = x - x.mean((1, 2), keepdim=True)
        f = torch.fft.fft2(x)
        proj = torch.fft.ifft2(amps * f / f.abs().clamp_min(1e-12)).real.detach()
        return (x - proj).square().mean((1, 2)) / var
    return loss


# ---- optimisation ---------------------------------------------------------------------------

class BatchLBFGS:
    """L-BFGS with its own history and backtracking (Armijo) step for each image of the batch.

    torch.optim.LBFGS treats a batch as one vector, so one target's curvature would steer the
    others; here every image follows the path it would follow alone, and can stop on its own."""

    def __init__(self, param, lr=1.0, history=10):
        self.p, self.lr, self.m = param, lr, history
        self.hist = [[] for _ in range(len(param))]
        self.last = [None] * len(param)  # accepted point: [x, g, loss, direction, step]

    def _direction(self, b, g):
        q, alphas = g.clone(), []
        for s, y, rho in reversed(self.hist[b]):
            alphas.append(rho * s.dot(q))
            q -= alphas[-1] * y
        if self.hist[b]:
            s, y, _ = self.hist[b][-1]
            q *= s.dot(y) / y.dot(y)
        for (s, y, rho), a in zip(self.hist[b], reversed(alphas)):
            q += s * (a - rho * y.dot(q))
        return -q

    @torch.no_grad()
    def step(self, losses, active):
        for b in torch.nonzero(active).flatten().tolist():
            x, g, f = self.p[b].flatten().clone(), self.p.grad[b].flatten().float(), float(losses[b])
            last = self.last[b]
            if last is not None and not f <= last[2] + 1e-4 * last[4] * float(last[1].dot(last[3])):
                x0, _, _, d, t = last  # not enough decrease: retry from the accepted point, half the step
                last[4] = t = t / 2
                self.p[b] = (x0 + t * d).view_as(self.p[b])
                if t > 1e-6 * self.lr:
                    continue
                self.hist[b], x, g, f = [], x0, last[1], last[2]  # stuck: restart as steepest descent
            elif last is not None:
                s, y = x - last[0], g - last[1]
                if s.dot(y) > 1e-10:
                    self.hist[b] = (self.hist[b] + [(s, y, 1 / s.dot(y))])[-self.m:]
            d = self._direction(b, g)
            if not self.hist[b] or d.dot(g) >= 0:
                self.hist[b], d = [], -g
            # without curvature yet, move the logits by 0.1 RMS: a smaller first step can drown in
            # the rounding noise of a bf16 loss and never pass the decrease test
            t = self.lr if self.hist[b] else self.lr * 0.1 / float(g.square().mean().sqrt() + 1e-20)
            self.last[b] = [x, g, f, d, t]
            self.p[b] = (x + t * d).view_as(self.p[b])


def _total(net, loss_fn, x, layers, dtype, spectrum=None, spectrum_weight=0.0):
    """Weighted mean of the per-layer losses of each image (plus the weighted spectrum term), and the parts."""
    with model.autocast(x.device, dtype):
        feats = net.taps(x, layers)
    per = loss_fn(feats)
    total = sum(w * per[n] for n, w in layers.items()) / sum(layers.values())
    if spectrum is not None:
        per["spectrum"] = spectrum(x)
        total = total + spectrum_weight * per["spectrum"]
    return total, per


def init_image(target, size, kind, seed):
    """Start noise: i.i.d. draws of the target's grey levels, Gaussian with its mean/std, or U(0,1)."""
    g, t = torch.Generator().manual_seed(seed), target.flatten().float().cpu()
    if kind == "uniform":
        return torch.rand(size, generator=g)
    if kind == "shuffle":
        return t[torch.randint(len(t), size, generator=g)]
    return (t.mean() + t.std() * torch.randn(size, generator=g)).clamp(0, 1)


def synthesize(net, targets, layers, size=None, *, loss="gram", features="normalize", optimizer="lbfgs",
               lr=1.0, steps=300, time_budget=0.0, init="shuffle", pixels="sigmoid", pool="avg",
               padding="reflect", tile=False, dtype=torch.float32, seeds=None, match=True, callback=None,
               spectrum_weight=0.0, levels=1, start=None):
    """Optimise one image of `size` (H, W) per target (list of (H, W) tensors in [0, 1]) as one batch.

    `layers` maps tap names to weights. Returns one dict per target: image (H, W) on the CPU (the
    best iterate, `raw`, given the target's grey-level histogram if `match`) and its loss
    `final_loss`, the best loss during optimisation and its per-layer parts, the loss curve,
    steps run, and a message if it stopped early (non-finite loss).
    `callback(step, images, losses)` is called after every step. `loss`: a key of LOSSES;
    `spectrum_weight` > 0 adds the Fourier spectrum constraint; `levels` > 1 works coarse to fine
    (see coarse_to_fine); `start` (B, H, W) in [0, 1] replaces the start noise."""
    if levels > 1:
        return coarse_to_fine(net, targets, layers, size, levels, steps=steps, time_budget=time_budget,
                              match=match, callback=callback, seeds=seeds, loss=loss, features=features,
                              optimizer=optimizer, lr=lr, init=init, pixels=pixels, pool=pool, padding=padding,
                              tile=tile, dtype=dtype, spectrum_weight=spectrum_weight)
    device = next(net.parameters()).device
    net = model.set_padding(model.set_pooling(copy.deepcopy(net).eval().requires_grad_(False), pool), padding)
    with torch.no_grad(), model.autocast(device, dtype):
        tfeats = [net.taps(t.to(device).float()[None, None], layers) for t in targets]
    loss_fn = LOSSES[loss](tfeats, features)  # Gram and loss in fp32, outside autocast
    model.set_padding(net, "circular" if tile else padding)
    size, seeds, B = tuple(size or targets[0].shape[-2:]), seeds or [0] * len(targets), len(targets)
    spec = spectrum_loss(targets, size, device) if spectrum_weight > 0 else None
    x0 = start[:, None].float().to(device) if start is not None else \
        torch.stack([init_image(t, size, init, s) for t, s in zip(targets, seeds)])[:, None].to(device)
    z = (torch.logit(x0.clamp(0.01, 0.99)) if pixels == "sigmoid" else x0.clone()).requires_grad_()
    opt = BatchLBFGS(z, lr) if optimizer == "lbfgs" else torch.optim.Adam([z], lr)
    best, best_loss, parts = x0.clone(), torch.full((B,), math.inf), [None] * B
    active, curves, messages = torch.ones(B, dtype=torch.bool), [[] for _ in range(B)], [None] * B
    start, done = time.perf_counter(), 0
    for step in range(steps):
        if time_budget and time.perf_counter() - start > time_budget:
            break
        x = torch.sigmoid(z) if pixels == "sigmoid" else z
        total, per = _total(net, loss_fn, x, layers, dtype, spec, spectrum_weight)
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
        opt.step(values, active) if optimizer == "lbfgs" else opt.step()
        if pixels == "clamp":
            z.data.clamp_(0, 1)
        done = step + 1
        if callback:
            callback(done, x.detach(), values)
    seconds = time.perf_counter() - start
    final = torch.stack([match_histogram(i[0], t)[None] if match else i for i, t in zip(best, targets)])
    with torch.no_grad():
        final_loss = _total(net, loss_fn, final, layers, dtype, spec, spectrum_weight)[0].cpu()
    return [{"image": final[b, 0].float().cpu(), "raw": best[b, 0].float().cpu(), "loss": best_loss[b].item(),
             "final_loss": final_loss[b].item(), "layer_losses": parts[b], "curve": curves[b], "steps": done,
             "seconds": seconds, "message": messages[b]} for b in range(B)]


def level_steps(steps, levels):
    """Iterations per level, coarsest first: each finer level (4x the pixels) gets half as many."""
    return [max(1, steps >> i) for i in range(levels)]


def upsample(img, size, tile):
    """(H, W) -> size (twice as large) by bilinear interpolation; periodic across the edges with tile."""
    x = img.float()[None, None]
    if not tile:
        return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)[0, 0]
    x = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="circular")
    x = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    return x[0, 0, 2:-2, 2:-2]


def coarse_to_fine(net, targets, layers, size, levels, *, steps, time_budget=0.0, match=True, callback=None,
                   **options):
    """Synthesise at half the size against the targets at half resolution (recursively, `levels` in
    all), upsample, and refine at full size with fewer iterations (level_steps): the cost of a large
    output is dominated by a few full-size iterations instead of hundreds. The time budget is
    shared equally between levels. Returns synthesize's dicts with steps/seconds/curve over all
    levels and `levels`: per level, size, steps, seconds and best loss."""
    size = tuple(size or targets[0].shape[-2:])
    small = [torch.nn.functional.avg_pool2d(t.float()[None, None], 2)[0, 0] for t in targets]
    budget = time_budget / levels if time_budget else 0.0
    offset = [0]

    def shifted(step, images, losses):
        offset[0] = max(offset[0], step)
        if callback:
            callback(step, images, losses)
    coarse = synthesize(net, small, layers, (size[0] // 2, size[1] // 2), levels=levels - 1, steps=steps,
                        time_budget=budget * (levels - 1), match=False, callback=shifted, **options)
    # the upsampled coarse result lacks the finest octave; without it the fine level starts farther
    # from the target than noise does (measured): add the start noise's own finest octave
    tile, seeds = options.get("tile"), options.get("seeds") or [0] * len(targets)
    noise = [init_image(t, size, options.get("init", "shuffle"), s) for t, s in zip(targets, seeds)]
    start = torch.stack([upsample(r["raw"], size, tile) + n
                         - upsample(torch.nn.functional.avg_pool2d(n[None, None], 2)[0, 0], size, tile)
                         for r, n in zip(coarse, noise)]).clamp(0, 1)
    fine = synthesize(net, targets, layers, size, steps=level_steps(steps, levels)[-1], time_budget=budget,
                      match=match, callback=callback and (lambda i, im, v: callback(offset[0] + i, im, v)),
                      start=start, **options)
    for c, f in zip(coarse, fine):
        f["levels"] = c.get("levels", [{"size": list(c["raw"].shape), "steps": c["steps"], "seconds": c["seconds"],
                                        "loss": c["loss"]}])
        f["levels"] = f["levels"] + [{"size": list(size), "steps": f["steps"], "seconds": f["seconds"], "loss": f["loss"]}]
        f["steps"], f["seconds"], f["curve"] = c["steps"] + f["steps"], c["seconds"] + f["seconds"], c["curve"] + f["curve"]
        f["message"] = f["message"] or c["message"]
    return fine


# ---- grey levels, verdict, files ------------------------------------------------------------

def match_histogram(img, target):
    """Exact histogram matching by rank: img keeps its pixel order but takes the target's grey levels."""
    out = torch.empty(img.numel(), device=img.device)
    out[img.flatten().argsort()] = quantiles(target.to(img.device), img.numel())
    return out.view_as(img)


def to_uint8(img):
    return (img.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)


def write_png(img, path):
    """Save a (H, W) image in [0, 1] or a PIL image atomically."""
    pil = img if isinstance(img, Image.Image) else Image.fromarray(to_uint8(img).numpy())
    tmp = f"{path}.tmp{os.getpid()}"
    pil.save(tmp, format="PNG")
    os.replace(tmp, path)


def write_json(obj, path):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, default=str)
    os.replace(tmp, path)


@torch.no_grad()
def verdict(net, img, classes, label):
    """Is the image recognised as its class by the network as trained (max pooling, zero padding)?"""
    p = net(img.to(next(net.parameters()).device)[None, None].float()).float().softmax(1)[0].cpu()
    k = int(p.argmax())
    known = label in classes
    return {"predicted": classes[k], "p_predicted": p[k].item(), "target_class": label if known else None,
            "p_target_class": p[classes.index(label)].item() if known else None,
            "recognised": classes[k] == label if known else None}


def collection(entries, path):
    """Target (labelled with its name) and generated texture side by side, one pair per row."""
    band, cells, names = 14, [], []
    imgs = [(Image.open(t), Image.open(g)) for _, t, g in entries]
    h = max(i.height for pair in imgs for i in pair) + band
    w = max(i.width for pair in imgs for i in pair)
    for (name, _, _), pair in zip(entries, imgs):
        for tag, im in zip((name, "generated"), pair):  # short tags: they must fit over a 64 px cell
            cell = torch.ones(1, h, w)
            cell[:, band:band + im.height, :im.width] = pil_to_tensor(im.convert("L")).float() / 255
            cells.append(cell)
            names.append(tag)
    pad = 4
    grid = Image.fromarray(to_uint8(make_grid(torch.stack(cells), nrow=2, padding=pad, pad_value=1)[0]).numpy())
    draw = ImageDraw.Draw(grid)
    for i, text in enumerate(names):
        draw.text((pad + (i % 2) * (w + pad) + 2, pad + (i // 2) * (h + pad) + 1), text, fill=0)
    write_png(grid, path)


# ---- networks: the trained classifier, random weights, or ImageNet VGG-19 ----------------------

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def fold_rgb(conv, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """A one-channel copy of an RGB first convolution: on a grey image g in [0, 1] it gives what
    `conv` gives on the normalised RGB image (g.repeat(3) - mean) / std. Exact in the interior and
    under reflect or circular padding (zero padding would pad g with black, not with the mean)."""
    m = torch.tensor(mean, dtype=conv.weight.dtype)[None, :, None, None]
    w = conv.weight.detach() / torch.tensor(std, dtype=conv.weight.dtype)[None, :, None, None]
    folded = torch.nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
    with torch.no_grad():
        folded.weight.copy_(w.sum(1, keepdim=True))
        folded.bias.copy_(conv.bias.detach() - (w * m).sum((1, 2, 3)))
    return folded


def imagenet_net(path=""):
    """torchvision's ImageNet VGG-19 (Gatys' network) on one grey channel, with the classifier's tap
    names. `path`: a local copy of its state_dict (whole or features only); empty: torchvision
    fetches the weights (VGG19_Weights.IMAGENET1K_V1)."""
    if not path:
        state = torchvision.models.VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
    elif not os.path.isfile(path):
        raise model.CheckpointError(f"--backbone-weights {path}: file not found")
    net = model.TextureNet(1, "vgg19")
    net.features[0] = rgb = torch.nn.Conv2d(3, 64, 3, padding=1)
    try:
        state = state if not path else torch.load(path, map_location="cpu", weights_only=True)
        net.features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                                      if not k.startswith("classifier.")})
    except Exception as e:  # whatever a damaged or foreign file raises, report it as one line
        why = " ".join(f"{type(e).__name__}: {e}".split())[:160]
        raise model.CheckpointError(f"--backbone-weights {path}: unreadable or not a VGG-19 state_dict ({why})")
    net.features[0] = fold_rgb(rgb)
    return net


def random_net(arch, seed):
    """The classifier's architecture with torchvision's random initialisation, seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model.TextureNet(1, arch)


SILENT_WARNING = 0.8  # share of a tap's channels silent on the target above which gen.py warns (README)


@torch.no_grad()
def silent_channels(net, targets, layers, pool, padding):
    """Per target, the share of each tap's channels that stay zero on it under the synthesis settings.

    A plain VGG-19 trained briefly from scratch leaves most ReLUs dead (89% and 94% at pool3/pool4
    on demo textures, README): their Gram entries are zero whatever the image, the loss constrains
    almost nothing there, and the textures come out flat."""
    probe = model.set_padding(model.set_pooling(copy.deepcopy(net).eval(), pool), padding)
    device = next(net.parameters()).device
    out = []
    for t in targets:
        feats = probe.taps(t.to(device).float()[None, None], list(layers))
        out.append({n: (f.float().amax((0, 2, 3)) <= 0).float().mean().item() for n, f in feats.items()})
    return out


def networks(args):
    """(synthesis network, classifier for the verdict, its checkpoint path, its classes).

    Without a checkpoint the classifier is None: allowed for --backbone random|imagenet, unless
    --ckpt names one explicitly."""
    judge = path = classes = None
    try:
        path = args.ckpt or model.latest_checkpoint(Hyperparams.ckpt_dir)
        path = model.latest_checkpoint(path) if os.path.isdir(path) else path
        ckpt = model.load_checkpoint(path)
        judge, classes = model.model_from_checkpoint(ckpt, path), ckpt["classes"]
    except model.CheckpointError:
        if args.backbone == "trained" or args.ckpt:
            raise
        path = None
    if args.backbone == "trained":
        return judge, judge, path, classes
    if args.backbone == "random":
        return random_net(judge.arch if judge else Hyperparams.arch, args.seed), judge, path, classes
    return imagenet_net(args.backbone_weights), judge, path, classes


# ---- command line ---------------------------------------------------------------------------

def label_of(path):
    """Kylberg class from the file name ('blanket1-a-p001.png' -> 'blanket1'), else the file stem."""
    name = os.path.basename(path)
    try:
        label = prepro.label_from_filename(name)
    except (ValueError, prepro.DataError):
        label = ""
    return label or os.path.splitext(name)[0]


def plan(paths, gen_dir, seed):
    """Folder and seed of every target: same-label targets get label, label-2, ...; each target's
    noise depends on --seed and its file name only, so batching and sharding do not change it."""
    jobs, used = [], {}
    for path in paths:
        label = label_of(path)
        used[label] = used.get(label, 0) + 1
        folder = label if used[label] == 1 else f"{label}-{used[label]}"
        key = f"{seed}:{os.path.basename(path)}:{used[label]}"
        jobs.append({"path": path, "label": label, "dir": os.path.join(gen_dir, folder),
                     "seed": zlib.crc32(key.encode())})
    return jobs


def load_target(path, args, min_side):
    """8-bit grey in [0, 1]; the centre --image-size crop unless --full or the image is smaller."""
    img = prepro.load_gray(path).float() / 255
    h, w = img.shape
    s = args.image_size
    if not args.full and min(h, w) >= s:
        img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    elif not args.full:
        tqdm.write(f"{path}: {w}x{h} is smaller than --image-size {s}; using the whole image", file=sys.stderr)
    if min(img.shape) < min_side:
        raise prepro.DataError(f"{path}: {w}x{h} is too small for these layers (needs >= {min_side} px)")
    return img


def options(args, dtype):
    """synthesize's method options from the command line (bench.py times the defaults through this)."""
    return dict(loss=args.loss, features=args.features, optimizer=args.optimizer, lr=args.gen_lr, init=args.init,
                pixels=args.pixels, pool=args.pool, padding=args.padding, tile=args.tile, dtype=dtype,
                spectrum_weight=args.spectrum_weight)


def run_group(net, jobs, size, layers, args, dtype, info, judge=None):
    """Synthesise a batch of same-size outputs and write each target's folder; returns failed paths.
    `judge`: the trained classifier that gives the verdict (None: no verdict)."""
    for j in jobs:
        os.makedirs(j["dir"], exist_ok=True)
        write_png(j["target"], os.path.join(j["dir"], "target.png"))
        save_args(args, os.path.join(j["dir"], "args.json"))
    levels = args.levels or auto_levels(size, min(min(j["target"].shape) for j in jobs), downsampling(net, layers),
                                       args.tile)
    bar = tqdm(total=sum(level_steps(args.steps, levels)), desc=f"{len(jobs)} target(s) {size[0]}x{size[1]}",
               disable=info["rank"] != 0)

    def progress(step, images, losses):
        bar.update()
        bar.set_postfix(loss=f"{losses[torch.isfinite(losses)].mean().item():.4g}")
        if args.snapshot_every and step % args.snapshot_every == 0:
            for j, img, v in zip(jobs, images, losses):
                if torch.isfinite(v):
                    write_png(img[0], os.path.join(j["dir"], f"snapshot_{step:05d}.png"))

    results = synthesize(net, [j["target"] for j in jobs], layers, size, steps=args.steps,
                         time_budget=args.time_budget, seeds=[j["seed"] for j in jobs], callback=progress,
                         levels=levels, **options(args, dtype))
    bar.close()
    failed, silent = [], silent_channels(net, [j["target"] for j in jobs], layers, args.pool, args.padding)
    for j, r, quiet in zip(jobs, results, silent):
        record = {"target": j["path"], "label": j["label"], "seed": j["seed"], "size": list(size),
                  "layers": layers, "status": "stopped" if r["message"] else "ok", "message": r["message"],
                  **{k: r[k] for k in ("loss", "final_loss", "layer_losses", "steps", "seconds", "curve")},
                  "levels": r.get("levels"), "batch": len(jobs), **info, "silent_channels": quiet,
                  "settings": vars(args)}
        worst = max(quiet, key=quiet.get)
        if quiet[worst] >= SILENT_WARNING:
            tqdm.write(f"{j['path']}: {quiet[worst]:.0%} of the {worst} channels of the {args.backbone} network are "
                       "silent on this target, so the loss barely constrains them; train with batch norm "
                       "(train.py --arch vgg19_bn) or try --backbone random", file=sys.stderr)
        if r["message"]:
            tqdm.write(f"{j['path']}: {r['message']}", file=sys.stderr)
            failed.append(j["path"])
        if math.isfinite(r["loss"]):
            record["hist_distance_raw"] = hist_distance(r["raw"], j["target"])
            record["hist_distance"] = hist_distance(r["image"], j["target"])
            record["quality"] = quality.measures(r["image"], j["target"])
            record["quality_raw"] = quality.measures(r["raw"], j["target"])
            if judge is not None:
                record["verdict"] = verdict(judge, r["image"], info["classes"], j["label"])
                record["target_verdict"] = verdict(judge, j["target"], info["classes"], j["label"])
            write_png(r["image"], os.path.join(j["dir"], "final.png"))
        write_json(record, os.path.join(j["dir"], "result.json"))
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


def _init_dist():
    """Rank and world size; a process group only under torchrun with more than one process."""
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    if world > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank, world


def _extra(p):
    p.add_argument("targets", nargs="+", help="target texture images (any format Pillow reads)")
    p.add_argument("--ckpt", help="checkpoint file, or a folder to take the latest from "
                   f"(default: latest in {Hyperparams.ckpt_dir})")
    p.add_argument("--full", action="store_true", help="use the whole target, not its centre --image-size crop")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="output size (default: the target's)")
    p.add_argument("--tile", action="store_true", help="periodic boundaries: the texture tiles seamlessly")


def main(argv=None):
    args = parse_args(__doc__, ["run", "data", "gen"], argv, extra=_extra)
    rank, world = _init_dist()
    device = model.pick_device(args.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dtype = model.pick_dtype(args.dtype, device)
    try:
        layers = parse_layers(args.layers)
        net, judge, path, classes = networks(args)
        net = net.to(device).eval().requires_grad_(False)
        judge = None if judge is None else judge.to(device).eval().requires_grad_(False)
        layers = parse_layers(args.layers, net.names)
    except (model.CheckpointError, ValueError) as e:
        raise SystemExit(str(e))
    factor = downsampling(net, layers)
    least = max(factor, 32)  # the classifier's verdict runs the whole network, which needs 32 px
    if args.size and (min(args.size) < least or (args.tile and any(s % factor for s in args.size))):
        raise SystemExit(f"--size {args.size[0]} {args.size[1]}: must be at least {least}"
                         f"{f' and a multiple of {factor} with --tile' if args.tile else ''} for {args.layers}")
    info = {"rank": rank, "backbone": args.backbone, "checkpoint": path, "classes": classes,
            "device": str(device), "dtype": str(dtype).replace("torch.", "")}
    if judge is None:
        info.update(verdict=None, verdict_skipped="no trained checkpoint: synthesis ran without one, "
                    "nothing to classify with")
    start = time.time()
    jobs, failed, groups = plan(args.targets, args.gen_dir, args.seed), [], {}
    for job in jobs[rank::world]:
        try:
            job["target"] = load_target(job["path"], args, least)
        except prepro.DataError as e:
            tqdm.write(str(e), file=sys.stderr)
            failed.append(job["path"])
            continue
        size = tuple(args.size or job["target"].shape)
        if args.tile and any(s % factor for s in size):
            tqdm.write(f"{job['path']}: --tile needs sides that are multiples of {factor}; pass --size", file=sys.stderr)
            failed.append(job["path"])
            continue
        if args.levels > 1 and (why := levels_problem(size, job["target"].shape, args.levels, factor, args.tile)):
            tqdm.write(f"{job['path']}: --levels {args.levels}: {why}", file=sys.stderr)
            failed.append(job["path"])
            continue
        groups.setdefault(size, []).append(job)
    try:
        for size, group in groups.items():
            failed += run_group(net, group, size, layers, args, dtype, info, judge)
    except OSError as e:  # every file is replaced whole, so earlier outputs stay as they were
        raise SystemExit(f"--gen-dir {args.gen_dir}: cannot write there ({e.strerror or e})")
    if world > 1:
        everyone = [None] * world
        dist.all_gather_object(everyone, failed)
        failed = sum(everyone, [])
    if rank == 0 and len(jobs) > 1:
        done = [(os.path.basename(j["dir"]), os.path.join(j["dir"], "target.png"), os.path.join(j["dir"], "final.png"))
                for j in jobs if j["path"] not in failed]
        if done:
            out = os.path.join(args.gen_dir, f"collection_{time.strftime('%Y%m%d-%H%M%S')}.png")
            collection(done, out)
            print(f"collection: {out}")
    if rank == 0:
        report(jobs, args.gen_dir, start)
    if world > 1:
        dist.destroy_process_group()
    if failed:
        raise SystemExit(f"{len(failed)} of {len(jobs)} target(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
