"""The feed-forward texture generator of texnet.py (Ulyanov et al. 2016, 2017): a noise pyramid in,
convolution blocks at each scale, upsampled and joined coarse to fine, one grey image out (or an RGB
one, `channels=3`, for a colour target).

Every convolution pads circularly, so a sample is periodic: it tiles. While training, each
normalisation runs over all images of a texture in the batch (or over each image, `kind="instance"`);
`calibrate` then freezes the statistics it computes on one large sample (those of the texture as a
whole), so that sampling is purely local and a large image can be made tile by tile (`sample`) with
exactly the result of one pass over the whole image.

    g = Generator(scales=5, width=8, noise=3, classes=1)
    noise = noise_pyramid(g, 1024, 1024, seed=0)
    img = sample(g, noise, label=0, tile=512)           # (1024, 1024) in [0, 1]
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


class Norm(nn.Module):
    """Normalisation with an affine map. Training: over each image (`instance`, Ulyanov et al. 2017)
    or over all images of the same class in the batch (`batch`, as their 2016 batch norm); eval mode
    uses the statistics stored for each image's class (`labels`, set by the Generator each pass)."""

    def __init__(self, channels, classes, kind="batch"):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))
        self.register_buffer("mean", torch.zeros(classes, channels))
        self.register_buffer("var", torch.ones(classes, channels))
        self.kind, self.calibrating, self.labels = kind, False, None

    def forward(self, x):
        if self.training and not self.calibrating and (self.kind == "instance" or self.mean.shape[0] == 1):
            # all images of the batch are of one texture (or each is normalised alone): torch's fused
            # kernel computes the same in two passes over the image, not about ten (half the
            # generator's time a training step)
            norm = F.batch_norm if self.kind == "batch" else F.instance_norm
            return norm(x, None, None, self.weight, self.bias, True, eps=1e-5)
        f = x.float()
        if self.training or self.calibrating:
            m, sq = f.mean((2, 3)), f.square().mean((2, 3))  # per image (B, C)
            if self.kind == "batch":  # pooled over the images of each class
                onehot = F.one_hot(self.labels, self.mean.shape[0]).float()
                share = onehot / onehot.sum(0).clamp_min(1)
                m, sq = [onehot @ (share.T @ a) for a in (m, sq)]
            v = (sq - m.square()).clamp_min(0)
            if self.calibrating:  # one image per class
                self.mean[self.labels] = m.to(self.mean.dtype)
                self.var[self.labels] = v.to(self.var.dtype)
        else:
            m, v = self.mean[self.labels], self.var[self.labels]
        y = (f - m[:, :, None, None]) * torch.rsqrt(v[:, :, None, None] + 1e-5)
        return (y * self.weight[None, :, None, None] + self.bias[None, :, None, None]).to(x.dtype)


def block(cin, cout, classes, norm):
    """Two 3x3 convolutions and a 1x1, each normalised and followed by a leaky ReLU (as Ulyanov et al.)."""
    layers = []
    for i, k in enumerate((3, 3, 1)):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, k, padding=k // 2, padding_mode="circular"),
                   Norm(cout, classes, norm), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """`scales` noise images, the coarsest 2**(scales-1) times smaller than the output, each with
    `noise` channels (and a one-hot of the class when `classes` > 1) through a block of `width`
    channels; the path grows by `width` channels at every join; `channels` out (1: grey, 3: RGB)."""

    def __init__(self, scales=5, width=8, noise=3, classes=1, norm="batch", channels=1):
        super().__init__()
        self.scales, self.width, self.noise, self.classes, self.norm = scales, width, noise, classes, norm
        self.channels = channels
        cin = noise + (classes if classes > 1 else 0)
        self.branches = nn.ModuleList(block(cin, width, classes, norm) for _ in range(scales))
        self.joins = nn.ModuleList(block(width * (k + 1), width * (k + 1), classes, norm) for k in range(1, scales))
        self.skip_norms = nn.ModuleList(Norm(width * k, classes, norm) for k in range(1, scales))
        self.out = nn.Conv2d(width * scales, channels, 1)

    @property
    def factor(self):
        """Output sides must be multiples of this (the coarsest noise is this many times smaller)."""
        return 2 ** (self.scales - 1)

    @property
    def halo(self):
        """Pixels around a tile that reach its centre, rounded up to a multiple of `factor`. From the
        coarsest scale k = scales-1 down, each block's two 3x3 convolutions reach 2 * 2**k output
        pixels: 2**(scales+1) - 2 in all (nearest upsampling of an aligned crop adds nothing)."""
        return -(-(2 ** (self.scales + 1) - 2) // self.factor) * self.factor

    def config(self):
        """The constructor's arguments; `channels` only for a colour generator, so that a grey one's
        configuration (and its checkpoints') is as before."""
        colour = {"channels": self.channels} if self.channels != 1 else {}
        return {"scales": self.scales, "width": self.width, "noise": self.noise, "classes": self.classes,
                "norm": self.norm, **colour}

    def forward(self, noise, labels):
        """noise: list of (B, noise, H / 2**k, W / 2**k), finest first; labels: (B,) class indices.
        Returns (B, H, W) grey or (B, 3, H, W) RGB images in [0, 1]."""
        for m in self.modules():
            if isinstance(m, Norm):
                m.labels = labels
        x = None
        for k in reversed(range(self.scales)):
            z = noise[k]
            if self.classes > 1:
                onehot = F.one_hot(labels, self.classes).to(z.dtype)[:, :, None, None]
                z = torch.cat([z, onehot.expand(-1, -1, *z.shape[2:])], 1)
            y = self.branches[k](z)
            if x is not None:
                j = self.scales - 2 - k  # joins so far
                # nearest upsampling repeats each pixel 4 times, so it keeps every channel's mean and
                # variance: normalised before it, the same result costs a quarter
                x = F.interpolate(self.skip_norms[j](x), scale_factor=2, mode="nearest")
                y = self.joins[j](torch.cat([x, y], 1))
            x = y
        out = torch.sigmoid(self.out(x).float())
        return out[:, 0] if self.channels == 1 else out


def noise_pyramid(gen, h, w, seed, batch=1, device="cpu"):
    """The generator's input for (h, w) outputs, drawn on the CPU from `seed` alone (so a sample
    does not depend on the device or on tiling), finest scale first."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, gen.noise, h >> k, w >> k, generator=g).to(device) for k in range(gen.scales)]


@torch.no_grad()
def calibrate(gen, noise):
    """Store, in every Norm, the instance statistics of each class's sample of `noise` (one large
    image, batch 1): afterwards eval mode computes what instance normalisation computes on it."""
    norms = [m for m in gen.modules() if isinstance(m, Norm)]
    training = gen.training
    gen.eval()
    for m in norms:
        m.calibrating = True
    try:
        for c in range(gen.classes):
            gen(noise, torch.tensor([c], device=noise[0].device))
    finally:
        for m in norms:
            m.calibrating = False
        gen.train(training)


@torch.no_grad()
def folded(gen, label):
    """A copy of gen for sampling class `label` in eval mode, each block's normalisation (an affine
    map per channel with the stored statistics) folded into the convolution before it: the same
    function without the normalisation's passes over the image, which cost more than the narrow
    convolutions themselves."""
    out = copy.deepcopy(gen).eval()
    for seq in [*out.branches, *out.joins]:
        for i, m in enumerate(seq):
            if isinstance(m, Norm):
                conv, a = seq[i - 1], m.weight * torch.rsqrt(m.var[label] + 1e-5)
                conv.weight.mul_(a[:, None, None, None].to(conv.weight.dtype))
                conv.bias.mul_(a.to(conv.bias.dtype)).add_((m.bias - m.mean[label] * a).to(conv.bias.dtype))
                seq[i] = nn.Identity()
    return out


def _wrap(start, length, period, device):
    """Indices start..start+length-1, periodically continued over `period`."""
    return torch.arange(start, start + length, device=device) % period


@torch.no_grad()
def sample(gen, noise, label=0, tile=1024, halo=None):
    """One (H, W) (or (3, H, W)) sample in eval mode (its normalisations folded), made in tiles of at
    most `tile` px (a multiple of gen.factor) each computed with `halo` px of periodically continued
    noise around it (default gen.halo): the result equals one pass over the whole image, and memory
    stays that of one tile."""
    H, W = noise[0].shape[-2:]
    halo = gen.halo if halo is None else halo
    gen = folded(gen, label)
    labels = torch.full((1,), label, dtype=torch.long, device=noise[0].device)
    if H <= tile and W <= tile:
        return gen(noise, labels)[0]
    out = torch.empty(*(() if gen.channels == 1 else (gen.channels,)), H, W, device=noise[0].device)
    for y in range(0, H, tile):
        for x in range(0, W, tile):
            th, tw = min(tile, H - y), min(tile, W - x)
            crop = [z[..., _wrap((y - halo) >> k, (th + 2 * halo) >> k, z.shape[-2], z.device), :]
                    [..., _wrap((x - halo) >> k, (tw + 2 * halo) >> k, z.shape[-1], z.device)]
                    for k, z in enumerate(noise)]
            out[..., y:y + th, x:x + tw] = gen(crop, labels)[0, ..., halo:halo + th, halo:halo + tw]
    return out
