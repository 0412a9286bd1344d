"""local_measures.py on known cases: the image itself, a shifted copy, its pixels shuffled, a new
sample of the same texture and a different texture, on tiny generated textures."""
import pytest
import torch
from torchvision.transforms.functional import gaussian_blur

from texture.measures import local as L
from texture.measures import quality, report
from texture.run import outputs

SIZE = 96


def texture(kind, seed, size=SIZE):
    """blobs: round-ish objects on a background; grain: fine isotropic grain. In [0, 1]."""
    noise = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(seed))
    if kind == "blobs":
        x = gaussian_blur(noise, 15, 3.0)[0, 0]
        return torch.sigmoid((x - 0.05) / x.std() * 6) * 0.7 + 0.15
    x = gaussian_blur(noise, 5, 1.0)[0, 0]
    return (0.5 + 0.18 * x / x.std()).clamp(0, 1)


@pytest.fixture(scope="module")
def cases():
    target = texture("blobs", 0)
    shuffled = target.flatten()[torch.randperm(target.numel(), generator=torch.Generator().manual_seed(1))]
    images = {"same": target, "shifted": torch.roll(target, (21, 13), (0, 1)), "shuffled": shuffled.view_as(target),
              "new sample": texture("blobs", 2), "other texture": texture("grain", 3)}
    return {k: L.local_measures(v, target) for k, v in images.items()}


def test_identical_image_scores_zero_distances_and_is_a_copy(cases):
    assert cases["same"] == {"lbp_distance": 0.0, "patch_nn": 0.0, "patch_cover": 0.0, "copy_share": 1.0}


def test_shifted_copy_is_recognised_as_a_copy(cases):
    m, new = cases["shifted"], cases["new sample"]
    assert m["lbp_distance"] < 0.1 * new["lbp_distance"]
    # only the patches across the seams differ (at 96 px a quarter of them)
    assert m["patch_nn"] < 0.3 * new["patch_nn"] and m["patch_cover"] < 0.2 * new["patch_cover"]
    assert m["copy_share"] > 0.5 and new["copy_share"] < 0.1


def test_shuffled_pixels_have_no_structure(cases):
    m, new = cases["shuffled"], cases["new sample"]
    assert m["lbp_distance"] > 5 * new["lbp_distance"]
    assert m["patch_nn"] > 3 * new["patch_nn"] and m["patch_cover"] > 2 * new["patch_cover"]
    assert m["copy_share"] == 0.0


def test_other_texture_is_farther_than_a_new_sample_of_the_same(cases):
    other, new = cases["other texture"], cases["new sample"]
    for k in ("lbp_distance", "patch_nn", "patch_cover"):
        assert other[k] > 1.5 * new[k], k
    assert other["copy_share"] == 0.0


def test_wholesale_copy_in_a_larger_output_scores_badly():
    target = texture("blobs", 0, 64)
    assert L.copy_share(target.repeat(2, 2), target) > 0.7  # tiled: every patch not across a seam is a copy
    assert L.copy_share(texture("blobs", 5, 128), target) < 0.1


def test_a_structure_the_target_repeats_is_drawn_not_copied():
    """An element the target shows twice (a brick's mortar segment) is the texture's own: an output
    patch that matches it is no copy. An element the target shows once is copied."""
    g = torch.Generator().manual_seed(4)
    repeated, unique = torch.rand(16, 16, generator=g), torch.rand(16, 16, generator=g)
    target = texture("blobs", 0, 64)
    target[0:16, 0:16] = target[40:56, 40:56] = repeated
    target[0:16, 40:56] = unique
    pool = L.patches(outputs.grey_levels(target), 16, 1)
    for element, share in ((repeated, 0.0), (unique, 1.0)):
        assert L.nearest(L.patches(outputs.grey_levels(element), 16, 1), pool)[0].item() == 0  # both within max_rms
        assert L.copy_share(element, target) == share


def test_flat_image_has_no_textured_patch_to_copy():
    assert L.copy_share(torch.full((48, 48), 0.5), texture("blobs", 0, 48)) == 0.0


def test_blocked_nearest_search_matches_brute_force(monkeypatch):
    monkeypatch.setattr(L, "BLOCK", 64)  # several blocks of queries and of pool patches
    g = torch.Generator().manual_seed(0)
    queries, pool = torch.rand(300, 49, generator=g) * 255, torch.rand(500, 49, generator=g) * 255
    want = torch.cdist(queries.double(), pool.double()).min(1).values / 7
    assert torch.allclose(L.nearest(queries, pool)[0].double(), want, rtol=1e-5)


def test_report_has_the_new_columns():
    target = texture("blobs", 0, 48)
    m = quality.measures(texture("blobs", 1, 48), target)
    assert {"lbp_distance", "patch_nn", "patch_cover", "copy_share"} <= set(m) & set(report.COLUMNS)
    record = {"name": "blobs", "quality": m, "seconds": 1.0}
    text = report.table([record], report.summarise([record]))
    assert all(c in text.splitlines()[0] for c in ("lbp_distance", "patch_nn", "patch_cover", "copy_share"))
