"""texture/measures/colour.py on known cases: the target itself, its grey copy, its red and blue
channels swapped, a new sample of the same texture and another texture; and the colour families."""
import numpy as np
import pytest
import torch

from texture.data import colour as data
from texture.measures import colour, quality, report

SIZE = 48


def rgb(family, seed, size=SIZE):
    return torch.from_numpy(data.colour_texture(family, size, seed)).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def cases():
    whole = rgb("dots", 0, 2 * SIZE)
    target = whole[:, :SIZE, :SIZE]
    grey = colour.luminance(target).expand(3, -1, -1)
    images = {"same": target, "grey copy": grey, "swapped": target[[2, 1, 0]],
              "new sample": whole[:, SIZE:, SIZE:], "other texture": rgb("stripes", 2)}
    return {k: quality.measures(v, target) for k, v in images.items()}


def test_identical_image_scores_zero_and_full_colour(cases):
    m = cases["same"]
    assert m["colourfulness"] == 1.0 and m["colour_copy_share"] == 1.0
    assert m["colour_hist_distance"] == m["colour_patch_nn"] == m["colour_patch_cover"] == 0.0
    assert m["hist_distance"] == m["patch_nn"] == m["lbp_distance"] == 0.0  # the luminance measures


def test_grey_copy_keeps_the_luminance_and_loses_every_colour(cases):
    m, new = cases["grey copy"], cases["new sample"]
    assert m["colourfulness"] == 0.0
    assert m["hist_distance"] < 0.5 and m["patch_nn"] < 0.5  # its luminance is the target's (rounded)
    assert m["colour_hist_distance"] > 10 * new["colour_hist_distance"]
    assert m["colour_patch_nn"] > 3 * new["colour_patch_nn"] and m["colour_copy_share"] == 0.0


def test_swapped_channels_are_as_colourful_but_other_colours(cases):
    m, new = cases["swapped"], cases["new sample"]
    assert m["colourfulness"] == pytest.approx(1.0, abs=0.05)  # Hasler and Suesstrunk's measure is symmetric
    assert m["colour_hist_distance"] > 10 * new["colour_hist_distance"]
    assert m["colour_patch_nn"] > 3 * new["colour_patch_nn"] and m["colour_patch_cover"] > 3 * new["colour_patch_cover"]


def test_other_texture_is_farther_than_a_new_sample_of_the_same(cases):
    other, new = cases["other texture"], cases["new sample"]
    for k in ("colour_hist_distance", "colour_patch_nn", "colour_patch_cover"):
        assert other[k] > 2 * new[k], k
    assert new["colour_copy_share"] < 0.1 and 0.8 < new["colourfulness"] < 1.25


def test_sliced_distance_is_in_grey_levels_and_sees_a_shift_of_one_colour():
    target = torch.full((3, 16, 16), 0.5)
    shifted = target.clone()
    shifted[0] += 10 / 255  # red up by 10 levels: on the axes and diagonals that see red
    axes = colour.DIRECTIONS
    want = 10 * axes[:, 0].abs().mean().item()
    assert colour.colour_hist_distance(shifted, target) == pytest.approx(want, abs=0.3)
    assert len(axes) == 13 and torch.allclose(axes.norm(dim=1), torch.ones(13))


def test_colourfulness_of_grey_is_zero_and_grows_with_saturation():
    g = torch.rand(16, 16, generator=torch.Generator().manual_seed(0))
    assert colour.colourfulness_of(g.expand(3, -1, -1)) == 0.0
    dull, vivid = rgb("stripes", 0) * 0.3 + 0.35, rgb("stripes", 0)
    assert colour.colourfulness_of(vivid) > 2 * colour.colourfulness_of(dull)


def test_colour_families_keep_their_palettes_and_report_shows_colour_columns():
    for family, palette in data.PALETTES.items():
        img = data.colour_texture(family, 64, 3).reshape(-1, 3).astype(float)
        nearest = np.abs(img[:, None] - np.array(palette, float)[None]).sum(2).min(1)
        assert np.mean(nearest < 40) > 0.8, family  # the palette's colours, blended at the edges only
    record = {"name": "dots", "quality": quality.measures(rgb("dots", 1), rgb("dots", 0)), "seconds": 1.0}
    header = report.table([record], report.summarise([record])).splitlines()[0]
    assert "colourfulness" in header and "colour_hist_distance" in header
