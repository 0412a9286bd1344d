"""The spectrum term sees the periodic component of images: the jumps between opposite edges of a
photograph (a cross of energy on the frequency axes of its DFT) are not imposed on the output."""
import torch

from texture.synthesis import spectrum


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
