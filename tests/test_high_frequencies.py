"""Fine ripples, streaks and specks: quality.hf_excess, the output's power at the upper half of the
frequencies against its target's, on known cases."""
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from texture.measures import quality
from texture.synthesis import methods, spectrum


def smooth_texture(side=64, seed=0, shift=0):
    """Soft blobs with little power at the highest frequencies, like the faces of a photograph; `shift`
    crops the same texture `shift` pixels further right and down."""
    g = torch.Generator().manual_seed(seed)
    x = gaussian_blur(torch.rand(1, side + 40, side + 40, generator=g), 13, 2.0)[0, 6 + shift:, 6 + shift:]
    x = x[:side, :side]
    return (x - 0.5) / 0.05 * 0.1 + 0.5  # the blurred U(0, 1) has a std of about 0.05: now 0.1


def test_hf_excess_is_one_on_itself_below_one_when_blurred_above_when_noise_is_added():
    t = smooth_texture()
    assert 0.07 < t.std() < 0.14 and 0 < t.min() and t.max() < 1
    assert quality.hf_excess(t, t) == pytest.approx((1, 1, 1))
    assert quality.hf_excess(smooth_texture(shift=19), t) == pytest.approx((1, 1, 1), abs=0.3)  # same texture
    blurred = F.avg_pool2d(t[None, None], 3, 1, 1, count_include_pad=False)[0, 0]
    assert max(quality.hf_excess(blurred, t)) < 0.5
    noisy = t + 0.02 * torch.randn(t.shape, generator=torch.Generator().manual_seed(1))
    assert min(quality.hf_excess(noisy, t)) > 5


def test_hf_excess_sees_streaks_along_their_axis_and_not_the_edges():
    t = smooth_texture(seed=2)
    rows = torch.arange(64.0)[:, None].expand(64, 64)
    streaks = t + 0.02 * torch.cos(torch.pi * 0.8 * rows)  # horizontal streaks: fine detail along y only
    x, y, both = quality.hf_excess(streaks, t)
    assert y > 5 and x == pytest.approx(1, abs=0.1) and 1.5 < both < y
    # a ramp is smooth, but the jump between its opposite edges is not: the periodic component drops it
    ramp = (rows + rows.T) / 600
    assert quality.hf_excess(t + ramp - ramp.mean(), t) == pytest.approx((1, 1, 1), abs=0.1)


def test_relative_spectrum_term_weighs_fine_ripples_on_a_smooth_target_more_than_coarse_changes():
    """The absolute spectrum error prices a few grey levels of ripples at the top frequencies of a
    smooth target like a change of its low frequencies; the relative one (--spectrum-scale relative)
    prices the ripples far higher, and its gradient passes."""
    t = smooth_texture()
    rows = torch.arange(64.0)[:, None].expand(64, 64)
    ripples = (t + 0.01 * torch.cos(torch.pi * 0.8 * rows))[None, None]
    contrast = (0.5 + (t - 0.5) * 1.2)[None, None]  # the target's own frequencies, 20% stronger
    absolute = spectrum.spectrum_loss([t], (64, 64), "cpu")
    relative = spectrum.spectrum_loss([t], (64, 64), "cpu", "relative")
    assert absolute(t[None, None]).item() < 1e-8 and relative(t[None, None]).item() < 1e-8
    by_absolute = absolute(ripples).item() / absolute(contrast).item()
    assert relative(ripples).item() / relative(contrast).item() > 100 * by_absolute
    x = ripples.clone().requires_grad_()
    relative(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_hybrid_spectrum_term_prices_ripples_as_the_relative_one_and_a_weakened_peak_far_higher():
    """--spectrum-scale hybrid: relative errors, but frequencies stronger than the target's mean power
    count as that mean, so a weakened spectral peak (stripes at 20% less contrast) costs more than
    under the relative scale, which barely sees it, while ripples on the smooth rest cost the same."""
    cols = torch.arange(64.0)[None, :].expand(64, 64)
    stripes = 0.1 * torch.cos(2 * torch.pi * 8 * cols / 64)
    t = smooth_texture() + stripes
    rows = torch.arange(64.0)[:, None].expand(64, 64)
    ripples = (t + 0.01 * torch.cos(torch.pi * 0.8 * rows))[None, None]
    weak = (t - 0.2 * stripes)[None, None]
    relative, hybrid = (spectrum.spectrum_loss([t], (64, 64), "cpu", s) for s in ("relative", "hybrid"))
    assert hybrid(ripples).item() == pytest.approx(relative(ripples).item(), rel=0.05)
    assert hybrid(weak).item() > 10 * relative(weak).item()


def test_spectrum_scale_flag_reaches_the_synthesis_options():
    assert methods.method_options("spectrum-relative").spectrum_scale == "relative"
    assert methods.method_options("default").spectrum_scale == "absolute"
