"""How close a synthesised texture is to its target, measured without the network or the loss.

Pure functions of two (H, W) images in [0, 1] (sizes may differ):
    hist_distance      Wasserstein-1 distance of the 8-bit grey levels, in grey levels (0: same histogram)
    spectrum_distance  mean |log10| ratio of the radially averaged power spectra (0: same spectrum)
    peak_energy        share of the energy of the target's dominant spectral peaks that the texture
                       has at the same 2-D frequencies (1: periodic structure kept, ~0: lost)
    target_peak_share  share of the target's energy in those peaks (how periodic the target is)
    hf_excess          power at the upper half of the frequencies relative to the target's (1: as much
                       fine detail; above 1: ripples, streaks or specks the target lacks; below 1: blur)
and texture.measures.local's measures of micro-texture and objects: lbp_distance, patch_nn (are the
structures real?), patch_cover (is every structure present?) and copy_share (copied verbatim?);
of colour images, these on the luminance and texture.measures.colour's measures.
"""

import torch
import torch.nn.functional as F

from texture.measures.colour import colour_hist_distance, colour_measures, luminance
from texture.measures.local import local_measures
from texture.run.outputs import grey_levels
from texture.synthesis.histogram import quantiles
from texture.synthesis.spectrum import periodic_component

PEAKS = 4  # dominant peaks of the target (each with its mirror image at -f)
BINS = 32  # radial frequency bins from 0 to the Nyquist frequency
HF_LOW = 0.25  # cycles per pixel: hf_excess looks from here to the Nyquist frequency, along x and y


def hist_distance(a, b):
    """Wasserstein-1 distance between the grey-level distributions of two images in [0, 1], as
    saved (8-bit), in grey levels."""
    a, b = grey_levels(a), grey_levels(b)
    n = max(a.numel(), b.numel())
    return (quantiles(a, n) - quantiles(b, n)).abs().mean().item()


def histogram_distance(img, target):
    """hist_distance of grey images; of (3, H, W) colour images, the colour histogram's
    (colour.colour_hist_distance)."""
    return (colour_hist_distance if img.dim() == 3 else hist_distance)(img, target)


def power(img):
    """Power spectrum of the Hann-windowed, mean-free image, divided by the pixel count (so images
    of different sizes compare), and each bin's frequency |f| in cycles per pixel."""
    x = img.detach().float().cpu()
    h, w = x.shape
    win = torch.hann_window(h, periodic=False)[:, None] * torch.hann_window(w, periodic=False)[None]
    x = (x - x.mean()) * win
    p = torch.fft.fft2(x).abs().square() / (win.square().sum())
    fy, fx = torch.fft.fftfreq(h)[:, None], torch.fft.fftfreq(w)[None]
    return p, fy.expand(h, w), fx.expand(h, w)


def radial_spectrum(img):
    p, fy, fx = power(img)
    r = (fy.square() + fx.square()).sqrt()
    k = (r / 0.5 * BINS).long().clamp(max=BINS)  # bin BINS: the corners beyond Nyquist, dropped
    total = torch.zeros(BINS + 1).index_add_(0, k.flatten(), p.flatten())
    count = torch.zeros(BINS + 1).index_add_(0, k.flatten(), torch.ones(k.numel()))
    return (total / count.clamp_min(1))[1:BINS]  # bin 0 holds only the (removed) mean


def spectrum_distance(a, b):
    pa, pb = radial_spectrum(a), radial_spectrum(b)
    return (pa.clamp_min(1e-12).log10() - pb.clamp_min(1e-12).log10()).abs().mean().item()


def peaks(img, k=PEAKS):
    """Frequencies (cycles/pixel) of the k strongest local maxima of the power spectrum, DC excluded."""
    p, fy, fx = power(img)
    s = torch.fft.fftshift(p)
    is_max = s == F.max_pool2d(s[None, None], 3, 1, 1, ceil_mode=False)[0, 0]
    fys, fxs = torch.fft.fftshift(fy), torch.fft.fftshift(fx)
    low = fys.square() + fxs.square() < (2.0 / min(p.shape)) ** 2  # the window's main lobe around DC
    score = torch.where(is_max & ~low, s, torch.zeros(()))
    idx = score.flatten().argsort(descending=True)
    out = []
    for i in idx.tolist():  # a peak and its mirror at -f are one peak of a real image
        f = (fys.flatten()[i].item(), fxs.flatten()[i].item())
        if not any(abs(f[0] + g[0]) < 1e-9 and abs(f[1] + g[1]) < 1e-9 for g in out):
            out.append(f)
        if len(out) == k:
            break
    return out


def peak_shares(img, freqs):
    """Share of the image's (non-DC) power within 2 bins of each frequency and of its mirror."""
    p, fy, fx = power(img)
    h, w = p.shape
    low = fy.square() + fx.square() < (2.0 / min(h, w)) ** 2
    total = p[~low].sum().clamp_min(1e-20)
    out = []
    for f0, f1 in freqs:
        near = torch.zeros_like(p, dtype=torch.bool)
        for s in (1, -1):  # distances on the periodic frequency grid, in this image's bins
            dy = ((fy - s * f0 + 0.5) % 1 - 0.5) * h
            dx = ((fx - s * f1 + 0.5) % 1 - 0.5) * w
            near |= dy.square() + dx.square() <= 2.0 ** 2
        out.append((p[near & ~low].sum() / total).item())
    return out


def peak_energy(img, target):
    """How much of the target's dominant peak energy the image has at the same frequencies, in [0, 1]
    (per peak capped at the target's share, so extra energy elsewhere does not count). Shift-invariant."""
    freqs = peaks(target)
    want, got = peak_shares(target, freqs), peak_shares(img, freqs)
    return sum(min(g, t) for g, t in zip(got, want)) / max(sum(want), 1e-20), sum(want)


def high_power(img, low=HF_LOW):
    """Mean power per pixel of the image's periodic component (as saved, 8-bit) at the frequencies
    whose x component is at least `low` cycles per pixel, whose y component is, and either: (x, y, both).

    The periodic component (spectrum.periodic_component) leaves out the jumps between opposite
    edges, which would otherwise add a cross of energy along the frequency axes."""
    x = periodic_component(grey_levels(img) / 255)
    p = torch.fft.fft2(x - x.mean()).abs().square() / x.numel()
    fy = torch.fft.fftfreq(x.shape[0]).abs()[:, None].expand_as(p) >= low
    fx = torch.fft.fftfreq(x.shape[1]).abs()[None].expand_as(p) >= low
    return p[fx].mean(), p[fy].mean(), p[fx | fy].mean()


def hf_excess(img, target, low=HF_LOW):
    """The image's power at the upper frequencies relative to the target's (high_power), along x, along y
    and both: 1 when the image has as much fine detail as its target; fine ripples, streaks or specks
    raise it (white noise on a smooth photograph by orders of magnitude), blur lowers it."""
    return tuple((a / b.clamp_min(1e-12)).item() for a, b in zip(high_power(img, low), high_power(target, low)))


def measures(img, target):
    """Every measure of one texture against its target; of two (3, H, W) colour images, the grey
    measures of their luminance and colour.colour_measures."""
    if img.dim() == 3:
        return {**measures(luminance(img), luminance(target)), **colour_measures(img, target)}
    pe, share = peak_energy(img, target)
    return {"hist_distance": hist_distance(img, target), "spectrum_distance": spectrum_distance(img, target),
            "peak_energy": pe, "target_peak_share": share, "hf_excess": hf_excess(img, target)[2],
            **local_measures(img, target)}
