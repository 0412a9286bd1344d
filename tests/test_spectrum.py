"""The spectrum term sees the periodic component of images: the jumps between opposite edges of a
photograph (a cross of energy on the frequency axes of its DFT) are not imposed on the output. The
spot start (--init spot) has the target's spectrum and grey levels."""
import torch

from texture.measures import quality
from texture.synthesis import optimize, spectrum


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


def stripes_and_grain(h, w, seed):
    """A target with structure at one frequency (slanted stripes) over fine grain, in [0, 1]."""
    yy, xx = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
    grain = torch.rand(h, w, generator=torch.Generator().manual_seed(seed))
    return (0.5 + 0.3 * torch.sin(2 * torch.pi * (xx + 2 * yy) / 9) + 0.2 * (grain - 0.5)).clamp(0, 1)


def test_spot_start_has_the_targets_grey_levels_and_spectrum_at_any_size():
    target = stripes_and_grain(48, 48, 0)
    for size in ((48, 48), (64, 40)):
        spot, shuffled = (optimize.init_image(target, size, kind, 1) for kind in ("spot", "shuffle"))
        assert spot.shape == size and quality.hist_distance(spot, target) < 1
        assert quality.spectrum_distance(spot, target) < 0.6 * quality.spectrum_distance(shuffled, target)
    assert torch.equal(optimize.init_image(target, (48, 48), "spot", 1), optimize.init_image(target, (48, 48), "spot", 1))
    assert not torch.equal(optimize.init_image(target, (48, 48), "spot", 1), optimize.init_image(target, (48, 48), "spot", 2))


def test_spot_noise_of_a_colour_target_keeps_its_channels_correlated():
    grey = stripes_and_grain(40, 40, 1)
    target = torch.stack([grey, 1 - grey, stripes_and_grain(40, 40, 2)])  # red and green anti-correlated
    noise = spectrum.spot_noise(target, (56, 56), 3)
    own, its = torch.corrcoef(noise.flatten(1)), torch.corrcoef(target.flatten(1))
    assert noise.shape == (3, 56, 56) and own[0, 1] < -0.9 and (own - its).abs().max() < 0.2
    start = optimize.init_image(target, (56, 56), "spot", 3)
    assert start.shape == (3, 56, 56) and 0 <= start.min() and start.max() <= 1
