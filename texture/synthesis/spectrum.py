"""The Fourier spectrum term of synthesis (Liu et al. 2016): the target's amplitude spectrum, taken
on its periodic component, and the loss pulling an image's spectrum towards it; and the tempering of
texnet.py's samples against that spectrum (temper).

synthesis.objective adds the term when --spectrum-weight is above 0. Example:

    python -c "import torch; from texture.synthesis import spectrum; t = torch.rand(32, 32); print(spectrum.spectrum_loss([t], (32, 32), 'cpu')(t[None, None]))"
"""
import math

import torch


def periodic_component(u):
    """The periodic component of images u (..., H, W) (Moisan 2011, periodic plus smooth decomposition).

    The discrete Fourier transform sees an image as a torus: the jumps between opposite edges of a
    photograph put a cross of energy on the frequency axes. Imposed on the output by the spectrum
    term, that cross came out as fine ripples and streaks along the axes (docs/ripples.md);
    the periodic component has the image's spectrum without it. Linear, so gradients pass through."""
    h, w = u.shape[-2:]
    jumps = torch.zeros_like(u)
    jumps[..., 0, :] += u[..., -1, :] - u[..., 0, :]
    jumps[..., -1, :] += u[..., 0, :] - u[..., -1, :]
    jumps[..., :, 0] += u[..., :, -1] - u[..., :, 0]
    jumps[..., :, -1] += u[..., :, 0] - u[..., :, -1]
    fy = torch.arange(h, device=u.device, dtype=u.dtype)[:, None] * (2 * math.pi / h)
    fx = torch.arange(w, device=u.device, dtype=u.dtype)[None] * (2 * math.pi / w)
    den = 2 * torch.cos(fy) + 2 * torch.cos(fx) - 4
    den[0, 0] = 1  # the smooth component has no mean
    smooth = torch.fft.fft2(jumps) / den
    smooth[..., 0, 0] = 0
    return u - torch.fft.ifft2(smooth).real


def target_amplitude(t, size):
    """Amplitude spectrum of the mean-free target's periodic component for an output of `size`: its
    own if the sizes agree, else its power spectrum resampled at the output's frequencies (bilinear)
    and rescaled by the ratio of their pixel counts, so that the output would have about the target's
    variance (a peak widens by the size ratio).

    An output larger than the target has frequencies nearer 0 than half the target's lowest, in the
    band of the target's removed mean: the target cannot show structure that large, so they get no
    power. Resampled, they would take a share of the lowest frequencies' (the ramp from the target's
    zero mean up to them), and a 1024 px output of a 224 px stained-tissue crop, a fifth of whose power
    the frequencies below the lowest drew, grew patches of one colour several times the target's size.
    Those between half the lowest and the lowest belong to the lowest's band and keep the ramp: zeroed
    as well, they held a third of the term's power on that crop at 256 px (docs/speed.md)."""
    t = periodic_component(t.float())
    t = t - t.mean()
    if tuple(t.shape) == tuple(size):
        return torch.fft.fft2(t).abs()
    p = torch.fft.fftshift(torch.fft.fft2(t).abs().square())
    fy, fx = torch.fft.fftfreq(size[0]), torch.fft.fftfreq(size[1])
    h, w = t.shape  # frequency f sits at shifted index f * n + n // 2
    gy = (fy * h + h // 2) / (h - 1) * 2 - 1
    gx = (fx * w + w // 2) / (w - 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1)[None]
    q = torch.nn.functional.grid_sample(p[None, None], grid, align_corners=True, padding_mode="border")[0, 0]
    q[(fy.abs() * h < 0.5)[:, None] & (fx.abs() * w < 0.5)[None]] = 0  # the band of the target's mean
    return (q * (size[0] * size[1]) / (h * w)).sqrt()


def smoothed(power, width):
    """A power spectrum (H, W) averaged over nearby frequencies: its autocorrelation (the inverse
    transform) kept within a gaussian window of `width` px, as a filter of about that extent sees it."""
    h, w = power.shape
    dy, dx = (torch.fft.fftfreq(n, 1 / n, device=power.device) for n in (h, w))  # circular displacements in px
    window = torch.exp(-(dy.square()[:, None] + dx.square()[None]) / (2 * width ** 2))
    return torch.fft.fft2(torch.fft.ifft2(power).mul_(window)).real.clamp_min_(0)


def temper(img, target, width, fill=0.0, noise=None, fill_width=None):
    """img (H, W), a tileable sample, with its power spectrum lowered by a smooth filter wherever it
    exceeds the target's (target_amplitude at img's size), both smoothed over what `width` px of
    autocorrelation tell (smoothed): the fine grain and ripples the target lacks fade,
    and the sample keeps its layout and phases. Where the sample has less power than the target its
    own is not raised: that amplified the sample's noise (the Hubble deep field's dark sky grew grain;
    docs/texnet.md). With `fill` > 0, the gaussian `noise` (H, W) is added there instead, shaped to
    the missing power up to `fill` times the target's median power: white pixel noise, which a
    generator's smoothing layers hardly make, comes back, and a photograph's strong structure (the
    brick's mortar lines) gets no random stand-in. The fill compares the spectra smoothed over
    `fill_width` px (default `width`): texnet.py's 24 px instead of 8 see finer, and give a lattice's
    samples back the target's noise below and between its peaks, which 8 px took as there, lost in
    the peaks' spread (docs/texnet.md). Its grey levels change, so the caller matches them again."""
    mean = img.float().mean()
    f = torch.fft.fft2(img.float() - mean)
    target_power, power = target_amplitude(target.cpu(), img.shape).to(img.device).square(), f.abs().square()
    want, have = smoothed(target_power, width), smoothed(power, width)
    gain = (want / have.clamp_min(1e-12)).clamp_max_(1)
    gain[0, 0] = 1
    f.mul_(gain.sqrt_())
    if fill > 0:
        if fill_width not in (None, width):
            want, have = smoothed(target_power, fill_width), smoothed(power, fill_width)
        missing = (want.clamp_max(want.flatten()[1:].median() * fill) - have).clamp_min_(0)
        missing[0, 0] = 0
        f.add_(torch.fft.fft2(noise.to(img.device)) * missing.div_(img.numel()).sqrt_())
    return torch.fft.ifft2(f).real + mean


def frequency_weights(power, scale):
    """Each frequency's weight in the spectrum term from the target's power (..., H, W) there, for
    `scale` (spectrum_loss): None for "absolute", else weights of mean 1 over the last two dimensions."""
    if scale == "absolute":
        return None
    mean = power.mean((-2, -1), keepdim=True)
    weight = 1 / ((power.clamp_max(mean) if scale == "hybrid" else power) + 1e-3 * mean)
    return weight / weight.mean((-2, -1), keepdim=True)


def spectrum_loss(targets, size, device, scale="absolute", periodic=False):
    """Fourier spectrum constraint (Liu et al. 2016): the image projected on the target's amplitude
    spectrum, keeping its own phase, is the nearest image with the target's spectrum; the loss is
    the squared distance to it (projection held fixed), relative to the target's variance. Both
    spectra are those of the periodic components (periodic_component), except a `periodic` image's
    (a tileable output), whose own spectrum has no cross to remove: its periodic component would drop
    the smooth field its edges' differences define, and the optimiser used that to hide large
    structure from the term (a tileable output half dark, half light; docs/speed.md).

    scale "relative" weighs each frequency's error by 1 / the target's power there (floored at 1e-3
    of its mean), the weights scaled to mean 1: errors count less where the target is strong (its low
    frequencies, its peaks) and more where it is faint. With absolute errors a smooth target's top
    frequencies, where its power is tiny, fill with the Gram loss's fine ripples at almost no cost
    (docs/ripples.md). Scale "hybrid" is relative with powers above the target's mean counted
    as the mean: its strong frequencies (a regular texture's peaks) are charged more than by the
    relative scale, which barely sees their errors."""
    amps = torch.stack([target_amplitude(t.cpu(), size) for t in targets]).to(device)
    var = torch.stack([t.float().var() for t in targets]).to(device).clamp_min(1e-12)
    weight = frequency_weights(amps.square(), scale)

    def loss(x):
        x = x[:, 0].float() if periodic else periodic_component(x[:, 0].float())
        x = x - x.mean((1, 2), keepdim=True)
        f = torch.fft.fft2(x)
        proj = torch.fft.ifft2(amps * f / f.abs().clamp_min(1e-12)).real.detach()
        if weight is None:
            return (x - proj).square().mean((1, 2)) / var
        # Parseval: with weights 1 this would be the line above
        return ((f - torch.fft.fft2(proj)).abs().square() * weight).mean((1, 2)) / x[0].numel() / var
    return loss
