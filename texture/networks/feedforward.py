"""The feed-forward texture generator of texnet.py (Ulyanov et al. 2016, 2017): a noise pyramid in,
convolution blocks at each scale, upsampled and joined coarse to fine, one grey image out (or an RGB
one, `channels=3`, for a colour target).

Every convolution pads circularly, so a sample is periodic: it tiles. While training, each
normalisation runs over all images of a texture in the batch (or over each image, `kind="instance"`);
`calibrate` then freezes the statistics it computes on one large sample (those of the texture as a
whole), so that sampling is purely local and a large image can be made tile by tile (`sample`) with
exactly the result of one pass over the whole image.

With `waves` > 0 the half-size scale also gets plane waves (a cosine and a sine each) at the target's
strongest periodic components (`spectral_peaks`), each sample at its own phases: a global reference
that a lattice of dots or stripes can be drawn against, which noise alone does not give a network
whose reach is a few cells of the lattice. At the finest scale instead, the waves took the place of
the grain there (docs/texnet.md). The waves keep the lattice's own period (`whole=False`), which
seldom fits a sample's side: the generator draws `margin` px more on every side, where their seam
lies, and the centre is the sample (generator_training.step_loss in training, sampling.sample_one).
Rounded to whole cycles across the sample instead (`whole=True`), they wrap around and the sample
tiles, its lattice slightly turned and stretched (texnet.py sample --tile).

    g = Generator(scales=5, width=8, noise=3, classes=1)
    noise = noise_pyramid(g, 1024, 1024, seed=0)
    img = sample(g, noise, label=0, tile=512)           # (1024, 1024) in [0, 1]
"""
import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import model

# pixels drawn around an image whose plane waves keep the lattice's own period (margin): more than the
# generator's reach from the half-size scale's seam (two 3x3 convolutions there and in each join
# after it, 10-11 px measured by gradient) and a multiple of 8
WAVE_MARGIN = 16


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
        # model.PadAsInputConv: torch's circular padding, its gradient added up in fewer passes
        layers += [model.PadAsInputConv(cin if i == 0 else cout, cout, k, padding=k // 2, padding_mode="circular"),
                   Norm(cout, classes, norm), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """`scales` noise images, the coarsest 2**(scales-1) times smaller than the output, each with
    `noise` channels (and a one-hot of the class when `classes` > 1) through a block of `width`
    channels; the path grows by `width` channels at every join; `channels` out (1: grey, 3: RGB)."""

    def __init__(self, scales=5, width=8, noise=3, classes=1, norm="batch", channels=1, waves=0):
        super().__init__()
        self.scales, self.width, self.noise, self.classes, self.norm = scales, width, noise, classes, norm
        self.channels, self.waves = channels, waves
        cin = noise + (classes if classes > 1 else 0)
        self.wave_scale = min(WAVE_SCALE, scales - 1)
        self.branches = nn.ModuleList(block(cin + (2 * waves if k == self.wave_scale else 0), width, classes, norm)
                                      for k in range(scales))
        if waves:  # their frequencies (cycles per pixel, (y, x)); without, the state is as before waves
            self.register_buffer("wavevectors", torch.zeros(waves, 2))
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

    @property
    def margin(self):
        """WAVE_MARGIN rounded up to a multiple of `factor`, so that a sample's sides stay multiples
        of it; 0 without waves."""
        return -(-WAVE_MARGIN // self.factor) * self.factor if self.waves else 0

    def config(self):
        """The constructor's arguments; `channels` and `waves` only where they are not 1 and 0, so that
        a grey generator's configuration without waves (and its checkpoints') is as before."""
        extra = {"channels": self.channels} if self.channels != 1 else {}
        extra.update({"waves": self.waves} if self.waves else {})
        return {"scales": self.scales, "width": self.width, "noise": self.noise, "classes": self.classes,
                "norm": self.norm, **extra}

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


def noise_pyramid(gen, h, w, seed, batch=1, device="cpu", whole=True):
    """The generator's input for (h, w) outputs, drawn on the CPU from `seed` alone (so a sample
    does not depend on the device or on tiling), finest scale first; at gen.wave_scale followed by
    the plane waves' channels (plane_waves, `whole` as there) at phases drawn after the noise."""
    g = torch.Generator().manual_seed(seed)
    noise = [torch.randn(batch, gen.noise, h >> k, w >> k, generator=g) for k in range(gen.scales)]
    if gen.waves:
        k, phases = gen.wave_scale, torch.rand(batch, gen.waves, generator=g)
        waves = plane_waves(gen.wavevectors.cpu() * 2 ** k, h >> k, w >> k, phases, whole)
        noise[k] = torch.cat([noise[k], waves], 1)
    return [z.to(device) for z in noise]


def plane_waves(freqs, h, w, phases, whole=True):
    """cos and sin of 2 pi (f . (y, x) + phase) over an (h, w) image for each frequency f of `freqs`
    (K, 2), per image of `phases` (B, K): (B, 2K, h, w). Each frequency is first rounded to whole
    cycles across the image, so that the waves, like the generator's circular padding, wrap around
    seamlessly at every size; a frequency that rounds to none gives zeros. `whole=False` keeps the
    frequencies as they are (training: the lattice's own period, its seam where the image wraps)."""
    cycles = freqs.double() * torch.tensor([h, w])  # (K, 2)
    cycles = cycles.round() if whole else cycles
    y, x = torch.arange(h, dtype=torch.float64) / h, torch.arange(w, dtype=torch.float64) / w
    turns = cycles[:, 0, None, None] * y[:, None] + cycles[:, 1, None, None] * x  # (K, h, w)
    angle = 2 * math.pi * (turns.frac()[None] + phases.double()[:, :, None, None])  # (B, K, h, w)
    used = (cycles != 0).any(1).double()[None, :, None, None]
    return torch.cat([angle.cos() * used, angle.sin() * used], 1).float()


WAVE_SCALE = 1  # the noise scale the waves join: the half-size one, so that they reach up to 0.25 cycles a pixel
# a lattice's peak over the median power of its ring, and over the largest power two bins away (a
# sinusoid's windowed peak is at most 1.5 bins wide; the ridge of a few lines or an edge is wider):
# 400-6000 and 22-435 on the fidelity set's lattices; its photographs' peaks reach 125 and 3
PROMINENCE, SHARPNESS = 100, 10


def spectral_peaks(image, k):
    """Up to k frequencies (cycles per pixel, (y, x), one of each +-f pair) of the strongest peaks of
    the grey image's power spectrum (Hann-windowed, mean removed) that stand PROMINENCE times above
    the median power of their ring (frequencies as far from 0 to the nearest 1 / the shorter side) and
    SHARPNESS times above the bins two away, repeat at least twice across the image and have periods of
    4 px or more along both axes (finer ones are grain, and the half-size scale cannot hold them):
    (n <= k, 2), strongest first."""
    h, w = image.shape
    x = image.double() - image.double().mean()
    win = torch.hann_window(h, periodic=False, dtype=torch.float64)[:, None] * \
        torch.hann_window(w, periodic=False, dtype=torch.float64)
    power = torch.fft.fft2(x * win).abs().square()
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None].expand(h, w)
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None].expand(h, w)
    ring = (torch.hypot(fy, fx) * min(h, w)).round().long()  # every ring up to the largest holds a frequency
    r, order = ring.flatten().sort(stable=True)
    median = torch.stack([p.median() for p in power.flatten()[order].split(torch.bincount(r).tolist())])
    padded = F.pad(power[None, None], (2, 2, 2, 2), mode="circular")[0, 0]
    near = [padded[i:i + h, j:j + w] for i in range(5) for j in range(5)]
    local_max = torch.stack([a for n, a in enumerate(near) if max(abs(n // 5 - 2), abs(n % 5 - 2)) <= 1]).amax(0)
    two_away = torch.stack([a for n, a in enumerate(near) if max(abs(n // 5 - 2), abs(n % 5 - 2)) == 2]).amax(0)
    found = ((fy > 0) | ((fy == 0) & (fx > 0))) & (ring >= 2) & (fy.abs() <= 0.25) & (fx.abs() <= 0.25) & \
        (power >= local_max) & (power >= PROMINENCE * median[ring]) & (power >= SHARPNESS * two_away)
    order = power[found].argsort(descending=True)[:k]
    peaks = torch.stack([fy[found], fx[found]], 1)[order]
    return torch.stack([_between_bins(x * win, f) for f in peaks]).float() if len(peaks) else peaks.float()


def _between_bins(x, f):
    """The frequency near bin f (cycles per pixel, (y, x)) where the windowed image x's Fourier power
    peaks, to 1/64 of a bin: a lattice's period is seldom a whole fraction of the crop's side, and the
    generator learns it from waves at this frequency (generator_training.step_loss)."""
    h, w = x.shape
    n = [torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)]
    for step in (1 / 8, 1 / 64):  # bins: a grid over the bin and its neighbours, then around its best
        grid = [f[a] + torch.arange(-8, 9, dtype=torch.float64) * step / x.shape[a] for a in range(2)]
        ey, ex = [torch.exp(-2j * math.pi * grid[a][:, None] * n[a]) for a in range(2)]
        power = (ey @ x.to(ey.dtype) @ ex.T).abs()
        i = int(power.argmax())
        f = torch.stack([grid[0][i // 17], grid[1][i % 17]])
    return f


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
