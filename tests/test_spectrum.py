"""The spectrum term sees the periodic component of images: the jumps between opposite edges of a
photograph (a cross of energy on the frequency axes of its DFT) are not imposed on the output; a
tileable output, periodic already, is seen whole. A larger output gets no power in the band of the
target's mean. Tempering (texnet.py's samples) lowers a sample's power where it exceeds the target's."""
import pytest
import torch
from conftest import gram_options

import model
from texture.measures.quality import hf_excess
from texture.synthesis import colour, optimize, spectrum
from texture.synthesis.histogram import match_histogram
from texture.synthesis.spectrum import smoothed, target_amplitude, temper


def test_periodic_component_of_a_ramp_is_flat_and_of_a_periodic_image_is_itself():
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(64.0), indexing="ij")
    ramp = (xx + yy) / 110  # all of its DFT energy comes from the edge jumps, on the axes
    assert spectrum.periodic_component(ramp).var() < 1e-3 * ramp.var()
    wave = 0.5 + 0.3 * torch.sin(2 * torch.pi * (3 * xx / 64 + 2 * yy / 48))  # periodic: kept, nearly
    kept = spectrum.periodic_component(wave)
    assert torch.corrcoef(torch.stack([kept.flatten(), wave.flatten()]))[0, 1] > 0.99 and kept.var() > 0.9 * wave.var()
    # the target amplitude holds no energy for the ramp's edges: nothing to impose on the output
    amp = spectrum.target_amplitude(ramp, (48, 64))
    assert amp.square().sum() / (48 * 64) ** 2 < 1e-3 * ramp.var()


def test_spectrum_loss_gradient_passes_the_periodic_component():
    g = torch.Generator().manual_seed(0)
    target, x = torch.rand(40, 40, generator=g), torch.rand(2, 1, 40, 40, generator=g).requires_grad_()
    loss = spectrum.spectrum_loss([target, target], (40, 40), "cpu")
    assert loss(target.expand(2, 1, 40, 40)).max().item() < 1e-8
    loss(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_an_output_larger_than_the_target_gets_no_power_in_the_band_of_the_targets_mean():
    """Resampled, the frequencies nearer 0 than half the target's lowest would ramp up to its lowest's
    power: on a target of two halves, much of its power, which made patches of one grey level larger
    than the target. Between half the lowest and the lowest, the lowest's own band, the ramp stays:
    an output a little larger than the target keeps the target's largest structure."""
    halves = torch.zeros(32, 32)
    halves[:, 16:] = 1
    halves += 0.1 * torch.rand(32, 32, generator=torch.Generator().manual_seed(0))
    amp = spectrum.target_amplitude(halves, (128, 96))
    fy, fx = torch.fft.fftfreq(128).abs() * 32, torch.fft.fftfreq(96).abs() * 32
    band = (fy < 0.5)[:, None] & (fx < 0.5)[None]
    assert band.sum() == 3 * 3 and (amp[band] == 0).all()
    assert (amp[(fy >= 0.5)[:, None] & (fx < 0.5)[None]] > 0).all()  # the lowest's band, the lowest, and above
    assert 0 < amp[0, 2] < amp[0, 3]  # a third of the way below the lowest: on the ramp up to it
    little = spectrum.target_amplitude(halves, (36, 36))  # 36 / 32: only the mean is in the band
    assert (little == 0).sum() == 1 and little[0, 1] > 0.8 * little[0, 2]
    # where an output frequency is one of the target's, it gets the target's power there, per pixel
    periodic = spectrum.periodic_component(halves)
    own = torch.fft.fft2(periodic - periodic.mean()).abs()
    assert amp[0, 3].square().item() == pytest.approx(own[0, 1].square().item() * 128 * 96 / 32 ** 2, rel=1e-4)
    assert torch.allclose(spectrum.target_amplitude(halves, (32, 32)), own, atol=1e-4)  # the target's size: its own


def test_a_tileable_outputs_large_structure_is_not_hidden_from_the_term():
    """A tileable output's periodic component drops the smooth field its edges' differences define, and
    the optimiser hid large structure there: a torus brightening from top to bottom, with its one sharp
    edge where it wraps, has most of its power in the band of a 16 px target's mean (where the target
    has none), and its periodic component little. Seen as periodic, the term keeps all of that power,
    in grey, in colour, and through optimize.objective with options.tile."""
    g = torch.Generator().manual_seed(0)
    target, x = torch.rand(16, 16, generator=g), 0.2 * torch.rand(1, 1, 64, 64, generator=g)
    x += 2 * torch.arange(64.0)[:, None] / 64
    below = spectrum.target_amplitude(target, (64, 64)) == 0
    power = torch.fft.fft2(x[0, 0] - x.mean()).abs().square()
    hidden = power[below].sum() / 64 ** 4 / target.var()  # the loss those frequencies alone must give
    assert hidden > 2  # twice the target's variance and more, in the band of its mean
    grey = {p: spectrum.spectrum_loss([target], (64, 64), "cpu", periodic=p)(x).item() for p in (False, True)}
    assert grey[True] >= hidden > 3 * grey[False]
    rgb = torch.stack([target, target.flip(0), target.T])
    xc = torch.cat([x, x.roll(5, 3), x.roll(9, 3)], 1)  # each channel as x, shifted along its rows
    share = hidden * target.var() / rgb.var((1, 2)).sum()  # the same power, against the three channels' variance
    colours = {p: colour.spectrum_loss([rgb], (64, 64), "cpu", periodic=p)(xc).item() for p in (False, True)}
    assert colours[True] >= 3 * share and colours[True] > 3 * colours[False]
    torch.manual_seed(0)
    net = model.TextureNet(3).eval().requires_grad_(False)
    for tile, want in grey.items():  # --tile makes the output periodic
        o = gram_options({"relu1_1": 1.0}, spectrum_weight=1.0, tile=tile)
        assert optimize.objective(net, [target], (64, 64), o)(x)[1]["spectrum"].item() == pytest.approx(want, rel=1e-4)


def blurred_noise(seed, side=64, width=3.0):
    """A tileable random field: white noise blurred by a circular gaussian of `width` px."""
    noise = torch.randn(side, side, generator=torch.Generator().manual_seed(seed))
    d = torch.fft.fftfreq(side, 1 / side)
    kernel = torch.exp(-(d.square()[:, None] + d.square()[None]) / (2 * width ** 2))
    return torch.fft.ifft2(torch.fft.fft2(noise) * torch.fft.fft2(kernel)).real


def test_tempering_an_image_against_itself_changes_it_little():
    """Its own spectrum is the target's but for the small smooth component of its edges (periodic_component)."""
    img = blurred_noise(0)
    assert (temper(img, img, 8) - img).square().mean().sqrt() < 0.05 * img.std()


def test_tempering_fades_the_grain_a_target_lacks_and_keeps_the_layout():
    """A smooth target; a sample of the same kind of field under white grain: the grain fades (its
    high-frequency excess falls towards 1), the field's layout stays."""
    target = match_histogram(blurred_noise(0), torch.rand(64, 64))
    field = blurred_noise(1)
    grainy = match_histogram(field + 0.5 * field.std() * torch.randn(64, 64, generator=torch.Generator().manual_seed(2)),
                             target)
    tempered = match_histogram(temper(grainy, target, 8), target)
    before, after = hf_excess(grainy, target)[2], hf_excess(tempered, target)[2]
    assert before > 3 and after < 0.5 * before, (before, after)
    assert torch.corrcoef(torch.stack([tempered.flatten(), field.flatten()]))[0, 1] > 0.9


def test_tempering_never_raises_the_samples_power():
    """Against a target with more fine detail than the sample, no frequency of the sample gains power:
    raising it would amplify the sample's own noise."""
    sample, target = blurred_noise(0), torch.rand(64, 64, generator=torch.Generator().manual_seed(1))
    sample = sample / sample.std() * target.std()
    power = [torch.fft.fft2(x - x.mean()).abs().square() for x in (sample, temper(sample, target, 8))]
    assert (power[1] <= power[0] * (1 + 1e-4) + 1e-6).all() and (power[1] < 0.9 * power[0]).any()


def test_fill_gives_back_the_fine_noise_a_sample_lacks_up_to_the_targets_median_power():
    """A smooth sample against a target of a smooth field under white pixel noise: tempering alone
    leaves the fine power missing; with fill the given noise brings it back (hf_excess near 1). The
    added power follows the noise linearly and, where the target is strong (its low frequencies),
    stays near the target's median power instead of the target's own."""
    rng = torch.Generator().manual_seed(3)
    target = blurred_noise(0) / blurred_noise(0).std() + 0.5 * torch.randn(64, 64, generator=rng)
    sample = blurred_noise(1) / blurred_noise(1).std()
    noise = torch.randn(64, 64, generator=rng)
    plain, filled, twice = (temper(sample, target, 8, f, n) for f, n in ((0, None), (1, noise), (1, 2 * noise)))
    assert hf_excess(plain, target)[2] < 0.1 and 0.7 < hf_excess(filled, target)[2] < 1.3
    assert torch.allclose(twice - plain, 2 * (filled - plain), atol=1e-4)
    want = smoothed(target_amplitude(target, (64, 64)).square(), 8)
    cap, added = want.flatten()[1:].median(), torch.fft.fft2(filled - plain).abs().square()
    strong = want > 10 * cap
    assert strong.sum() > 10 and added[strong].mean() < 1.5 * cap < 0.2 * want[strong].mean()


def test_fill_at_a_finer_width_gives_back_the_noise_below_a_lattice_at_its_own_period():
    """A lattice at its own period (not whole cycles across the crop, as texnet.py's samples are
    drawn) under white noise as the target, the bare lattice as the sample: compared over 24 px of
    autocorrelation (--sample-fill-width) instead of the tempering's 8, the fill gives back far more
    of the noise below the lattice's frequency; at 8 it is the fill it was."""
    y, x = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    lattice = torch.cos(2 * torch.pi * (11.6 * x + 2.3 * y) / 96)
    rng = torch.Generator().manual_seed(0)
    target, noise = lattice + 0.5 * torch.randn(96, 96, generator=rng), torch.randn(96, 96, generator=rng)
    f = torch.fft.fftfreq(96)
    below = (f[:, None].square() + f[None].square()).sqrt() * 96 <= 6  # cycles across; the lattice's 11.8
    plain = temper(lattice, target, 8)
    filled = {w: temper(lattice, target, 8, 1.0, noise, w) for w in (None, 8, 24)}
    assert torch.equal(filled[None], filled[8])
    added = {w: torch.fft.fft2(filled[w] - plain).abs().square()[below].mean() for w in (8, 24)}
    floor = torch.fft.fft2(target - lattice).abs().square()[below].mean()
    assert 2 * added[8] < added[24] < floor, (added, floor)
