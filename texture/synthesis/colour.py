"""Colour synthesis through a grey network: the target's decorrelated colour space, the network's
features of its channels, the Fourier spectrum term in colour and the exact colour histogram. gen.py
takes this way for targets of colours of one luminance (joint) and texnet.py's generators for every
colour target; gen.py synthesises the others in luminance and colours them after (by_luminance,
chroma.py).

A colour image is (3, H, W) RGB in [0, 1]; a batch (B, 3, H, W). Each target's pixels give its
principal axes (Space): the first channel along the strongest axis (for most photographs nearly the
luminance), the other two across it. The first channel goes through every tap of the grey network;
the other two through `chroma` taps only, where the features of all three channels form one Gram
matrix, so that their correlations (which colour goes with which structure) are matched
(features). The spectrum term keeps the target's phase differences between the channels (Gonthier
et al. 2020), and the output takes the target's colour histogram at the end (match_colours).

    python -c "import torch; from texture.synthesis import colour; t = torch.rand(3, 32, 32); print(colour.Space([t]).decorrelate(t[None]).shape)"
"""
import torch

from texture.synthesis.histogram import sorted_quantiles
from texture.synthesis.spectrum import frequency_weights, periodic_component, target_amplitude

SLICES = 30  # random rotations of the sliced optimal transport of match_colours


def planes(img):
    """An image as channels: (H, W) -> (1, H, W); (C, H, W) as it is."""
    return img[None] if img.dim() == 2 else img


def unplanes(x):
    """The inverse of planes: (1, H, W) -> (H, W); (3, H, W) as it is."""
    return x[0] if x.shape[0] == 1 else x


def is_colour(img):
    return img.dim() == 3 and img.shape[0] == 3


def _pixel_covariance(target):
    """(mean (D,), covariance (D, D) in float64) of a (D, H, W) image's pixels or of points (D, N)."""
    p = target.float().flatten(1)
    mean = p.mean(1)
    q = p - mean[:, None]
    return mean, (q @ q.T / q.shape[1]).double()


def principal_axes(target):
    """(mean (D,), axes (D, D)) of a (D, H, W) image's pixels (or of points (D, N)): their principal
    axes as rows, strongest first, each signed so that its components sum to >= 0 (the first then grows with brightness)."""
    mean, cov = _pixel_covariance(target)
    vals, vecs = torch.linalg.eigh(cov)
    axes = vecs.flip(1).T.float()
    return mean, axes * torch.where(axes.sum(1, keepdim=True) < 0, -1.0, 1.0)


def first_axis_share(target):
    """Share of a (3, H, W) image's pixel variance along its strongest principal axis: near 1 when one
    axis holds its colours (most photographs, red dots on blue), about 0.5 for four colours of one
    luminance; 1 for a flat image."""
    vals = torch.linalg.eigvalsh(_pixel_covariance(target)[1])
    return 1.0 if vals.sum() <= 0 else float(vals[-1] / vals.sum())


def joint(targets, chroma, share):
    """The taps of `chroma` if a colour target of the batch has its strongest axis at most `share` of its
    variance (one axis through the network cannot carry its structure), else none."""
    return list(chroma) if any(is_colour(t) and first_axis_share(t.cpu()) <= share for t in targets) else []


def by_luminance(net, targets, options):
    """Whether a batch holding colour targets is synthesised in luminance and coloured after
    (chroma.colourise): a grey network (no RGB first convolution) and no target whose channels must
    meet in it (joint)."""
    return any(is_colour(t) for t in targets) and getattr(net, "rgb_first", None) is None and \
        not joint(targets, options.chroma_layers, options.chroma_share)


class Space:
    """Each target's decorrelated colour space: channel k is the pixel's coordinate along the
    target's k-th principal axis, plus 0.5 (the network takes grey levels in [0, 1])."""

    def __init__(self, targets):
        found = [principal_axes(t.cpu()) for t in targets]
        self.mean = torch.stack([m for m, _ in found])
        self.axes = torch.stack([a for _, a in found])

    def decorrelate(self, x, index=None):
        """(B, 3, H, W) RGB -> (B, 3, H, W) channels; `index`: the targets' rows (default: all, in order)."""
        mean, axes = self.mean.to(x.device), self.axes.to(x.device)
        if index is not None:
            mean, axes = mean[index], axes[index]
        return torch.einsum("bij,bjhw->bihw", axes, x.float() - mean[:, :, None, None]) + 0.5


class View:
    """How a batch meets the frozen network `net`: grey images as they are; colour images in their
    targets' decorrelated colour space, the first channel at every tap of `every`, all three at the
    taps of `chroma` if joint() asks for them with `share` (features); or as they are if the network has
    an RGB first convolution (backbones.imagenet_net's rgb_first), which then replaces the folded grey
    one in `net`."""

    def __init__(self, net, targets, every, chroma, share=1.0):
        self.net, self.every = net, every
        self.space = Space(targets) if is_colour(targets[0]) else None
        self.chroma = [n for n in joint(targets, chroma, share) if n in every]
        self.rgb = self.space is not None and getattr(net, "rgb_first", None) is not None
        if self.rgb:
            net.rgb_first.padding_mode = net.features[0].padding_mode
            net.features[0] = net.rgb_first

    def channels(self, x, index=None):
        """x (B, C, H, W) as the spectrum term sees it: decorrelated if in colour (`index`: the targets'
        rows, default all)."""
        return x if self.space is None else self.space.decorrelate(x, index)

    def feats(self, x, channels):
        """The taps of x (B, C, H, W), given its channels()."""
        if self.space is None or self.rgb:
            return self.net.taps(x, self.every)
        return features(self.net, channels, self.every, self.chroma)


def features(net, y, every, chroma):
    """The taps `every` of decorrelated images y (B, 3, H, W): the first channel's at every tap, and
    at the taps of `chroma` the features of all three channels side by side, (B, 3 C, h, w). The
    three run as one batch up to the deepest chroma tap; only the first goes on from there."""
    B, last = len(y), max(net.names.index(n) for n in every)
    split = max((net.names.index(n) for n in chroma), default=-1)
    x = y.transpose(0, 1).reshape(3 * B, 1, *y.shape[2:]) if split >= 0 else y[:, :1]
    out = {}
    for i, (name, module) in enumerate(zip(net.names[:last + 1], net.features)):
        x = module(x)
        if name in chroma:
            out[name] = x.view(3, B, *x.shape[1:]).transpose(0, 1).flatten(1, 2)
        elif name in every:
            out[name] = x[:B]
        if i == split:
            x = x[:B]
    return out


def _relative_phase(t, size):
    """Unit complex numbers (C, h, w): each channel's phase minus the first channel's, at the
    frequencies of an output of `size` (the nearest of the target's own)."""
    f = torch.fft.fft2(periodic_component(t.float()))
    rel = f * f[:1].conj()
    rel = rel / rel.abs().clamp_min(1e-12)
    iy = torch.remainder(torch.round(torch.fft.fftfreq(size[0]) * t.shape[1]), t.shape[1]).long()
    ix = torch.remainder(torch.round(torch.fft.fftfreq(size[1]) * t.shape[2]), t.shape[2]).long()
    return rel[:, iy][:, :, ix]


def spectrum_loss(targets, size, device, scale="absolute", periodic=False):
    """spectrum.spectrum_loss in colour, for decorrelated targets (C, H, W): the nearest image whose
    channels have the target's amplitude spectra and, between each other, its phase differences (one
    phase per frequency, shared by the channels: Gonthier et al. 2020); the squared distance to it,
    relative to the target's variance summed over the channels. `scale` weighs each channel's
    frequencies as the grey term does, and a `periodic` image's spectrum is its own, as there."""
    spec = torch.stack([torch.stack([target_amplitude(c, size) for c in t.cpu()]) * _relative_phase(t.cpu(), size)
                        for t in targets]).to(device)
    var = torch.stack([t.float().var((1, 2)).sum() for t in targets]).to(device).clamp_min(1e-12)
    weight = frequency_weights(spec.abs().square(), scale)

    def loss(y):
        x = y.float() if periodic else periodic_component(y.float())
        x = x - x.mean((2, 3), keepdim=True)
        f = torch.fft.fft2(x)
        common = (f * spec.conj()).sum(1, keepdim=True)
        proj = torch.fft.ifft2(spec * common / common.abs().clamp_min(1e-12)).real.detach()
        if weight is None:
            return (x - proj).square().sum(1).mean((1, 2)) / var
        return ((f - torch.fft.fft2(proj)).abs().square() * weight).sum(1).mean((1, 2)) / x[0, 0].numel() / var
    return loss


def _match_along(p, target_p):
    """Values p (N,) take the target's values along the same direction (N_t,), in p's rank order."""
    out = torch.empty_like(p)
    out[p.argsort()] = sorted_quantiles(target_p.sort().values, len(p))
    return out


def transport(x, t, slices=SLICES, seed=0):
    """Points x (D, N) moved to take the distribution of points t (D, M) (sliced optimal transport,
    Pitie et al. 2005): `slices` random rotations, each moving the points so that their projections
    on its D axes take t's values, then exact matching along t's principal axes, so that those D
    marginals are t's. Points keep their rank order in each projection: a value becomes the nearest
    of t's, and values t lacks vanish."""
    g, d = torch.Generator().manual_seed(seed), len(x)
    rotations = [torch.linalg.qr(torch.randn(d, d, generator=g))[0] for _ in range(slices)]
    for r in rotations + [principal_axes(t)[1]]:
        px, pt = r @ x, r @ t
        x = x + r.T @ (torch.stack([_match_along(a, b) for a, b in zip(px, pt)]) - px)
    return x


def match_colours(img, target, slices=SLICES, seed=0):
    """The target's colour histogram for img (3, H, W): transport of its cloud of RGB pixels to the
    target's; a colour becomes the nearest of the target's, and colours the target lacks vanish."""
    x, t = img.float().cpu().flatten(1), target.float().cpu().flatten(1)
    return transport(x, t, slices, seed).clamp(0, 1).view_as(img).to(img.device)


def init_pixels(target, size, seed):
    """Start noise of a colour target: i.i.d. draws of its pixels, whole (3, H, W) colours."""
    g, t = torch.Generator().manual_seed(seed), target.flatten(1).float().cpu()
    return t[:, torch.randint(t.shape[1], size, generator=g)]

