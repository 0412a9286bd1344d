"""The guided correspondence loss (correspondence.py, --loss gcd): its formula, chunking, occurrence
penalty, and synthesis with it on a tiny object texture (discs on a background)."""
import argparse
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import gram_options
from PIL import Image

import gen
import model
from hyperparams import Hyperparams, add_arguments, given
from texture.measures import quality
from texture.networks import checkpoints as C
from texture.synthesis import correspondence, methods, optimize, recipe
from texture.synthesis.options import Options

GCD = {"relu2_1": 1.0, "relu3_1": 1.0}


def plain_loss(x, t, occurrence):
    """The loss written out on unfolded patches, the whole distance matrix at once."""
    q, p = (F.unfold(f, correspondence.PATCH, stride=correspondence.STRIDE)[0].T for f in (t, x))
    m = q.mean(0)
    d = ((1 - F.normalize(p - m, dim=1) @ F.normalize(q - m, dim=1).T) / 2).clamp_min(0)  # (N_out, N_ref)
    used = torch.bincount(d.argmin(1), minlength=len(q)).float()
    d = d + occurrence * used * len(q) / len(p)
    a = ((1 - d / (d.min(1, keepdim=True).values + 1e-5)) / correspondence.BANDWIDTH).softmax(1)
    return -a.max(1).values.log().mean()


@pytest.mark.parametrize("whole, chunk, copied", [(1 << 24, 1 << 21, 0), (1 << 24, 1 << 21, 16), (0, 1 << 21, 0),
                                                   (0, 40, 16)])
def test_loss_and_gradient_match_the_plain_formula_whole_or_chunked(monkeypatch, whole, chunk, copied):
    """Held whole with the gradient written out; in one chunk; in a chunk per output row of patches; with
    a corner `copied` from the target, whose distances are clamped at 0 and pass no gradient."""
    g = torch.Generator().manual_seed(0)
    t, x = torch.rand(1, 6, 26, 29, generator=g), torch.rand(1, 6, 31, 25, generator=g)
    x[..., :copied, :copied] = t[..., :copied, :copied]
    x.requires_grad_()
    want = plain_loss(x, t, 0.3)
    grad_want, = torch.autograd.grad(want, x)
    ref = correspondence.reference(t, correspondence.PATCH, 1024)
    assert bool((correspondence.distances(x, ref) <= 0).any()) == bool(copied)
    monkeypatch.setattr(correspondence, "WHOLE", whole)
    monkeypatch.setattr(correspondence, "CHUNK", chunk)
    got, best = correspondence.image_loss(x, ref, 0.3)
    grad, = torch.autograd.grad(got, x)
    assert got.item() == pytest.approx(want.item(), rel=1e-4)
    assert (grad - grad_want).abs().max() < 1e-4 * grad_want.abs().max()
    assert torch.equal(best, correspondence.nearest(x, ref))
    held, same = correspondence.image_loss(x, ref, 0.3, best)  # the matches given: the same loss
    assert held.item() == pytest.approx(got.item(), rel=1e-6) and torch.equal(same, best)


def test_chunks_give_the_whole_matrix_loss_and_gradient_with_a_bf16_backward_pass(monkeypatch):
    """Beyond WHOLE distances the rows of patches go chunk by chunk, each chunk's gradient written out at
    once: with the target's patches in bf16 for the backward pass, the whole matrix's matches, loss and
    gradient up to rounding, and the same loss without autograd."""
    g = torch.Generator().manual_seed(3)
    t, x = torch.rand(1, 8, 30, 30, generator=g), torch.rand(1, 8, 34, 31, generator=g).requires_grad_()
    ref = correspondence.reference(t, correspondence.PATCH, 1024, torch.bfloat16)
    whole, best = correspondence.image_loss(x, ref, 0.05)
    grad_whole, = torch.autograd.grad(whole, x)
    monkeypatch.setattr(correspondence, "WHOLE", 0)
    monkeypatch.setattr(correspondence, "CHUNK", 1200)  # two of the ten rows of 9 patches (64 target patches)
    assert len(correspondence.row_chunks(x, correspondence.PATCH, len(ref[0]))) == 5
    chunked, matches = correspondence.image_loss(x, ref, 0.05)
    grad_chunked, = torch.autograd.grad(chunked, x)
    assert torch.equal(matches, best) and chunked.item() == pytest.approx(whole.item(), rel=1e-5)
    assert (grad_chunked - grad_whole).abs().max() < 1e-3 * grad_whole.abs().max()
    with torch.no_grad():
        assert correspondence.image_loss(x, ref, 0.05)[0].item() == pytest.approx(chunked.item(), rel=1e-6)


def test_only_chunks_with_a_distance_at_zero_take_the_masked_gradient(monkeypatch):
    """With the matches' products kept, each chunk knows whether it holds a distance clamped at 0 (a corner
    copied from the target): those chunks take the masked gradient, the others the three-pass one, and
    the loss and gradient stay the plain formula's."""
    g = torch.Generator().manual_seed(1)
    t, x = torch.rand(1, 6, 26, 29, generator=g), torch.rand(1, 6, 31, 25, generator=g)
    x[..., :10, :10] = t[..., :10, :10]
    x.requires_grad_()
    want = plain_loss(x, t, 0.3)
    grad_want, = torch.autograd.grad(want, x)
    ref = correspondence.reference(t, correspondence.PATCH, 1024)
    monkeypatch.setattr(correspondence, "WHOLE", 0)
    monkeypatch.setattr(correspondence, "CHUNK", 40)  # a chunk per row of patches
    chunks = correspondence.row_chunks(x, correspondence.PATCH, len(ref[0]))
    copied = [bool((correspondence.distances(c, ref) <= 0).any()) for _, c in chunks]
    assert copied[0] and not all(copied)
    flags, gradient = [], correspondence._gradient
    monkeypatch.setattr(correspondence, "_gradient", lambda saved, clamped, *a: flags.append(clamped) or
                        gradient(saved, clamped, *a))
    got, _ = correspondence.image_loss(x, ref, 0.3)
    grad, = torch.autograd.grad(got, x)
    assert flags == copied
    assert got.item() == pytest.approx(want.item(), rel=1e-4)
    assert (grad - grad_want).abs().max() < 1e-4 * grad_want.abs().max()


@pytest.mark.parametrize("kept, products", [(0, 10), (1200, 9), (2400, 8), (1 << 27, 5)])
def test_distances_kept_from_the_matches_give_the_same_loss_and_gradient(monkeypatch, kept, products):
    """The chunks' distances that nearest() keeps (none, the first, the first two, all five) serve their
    own chunks' evaluation, which then computes only the others' products: the loss exactly as computed
    afresh, the gradient up to rounding (a kept chunk without a distance at 0 takes the three-pass one)."""
    g = torch.Generator().manual_seed(4)
    t, x = torch.rand(1, 8, 30, 30, generator=g), torch.rand(1, 8, 34, 31, generator=g).requires_grad_()
    ref = correspondence.reference(t, correspondence.PATCH, 1024, torch.bfloat16)
    monkeypatch.setattr(correspondence, "WHOLE", 0)
    monkeypatch.setattr(correspondence, "CHUNK", 1200)
    best = correspondence.nearest(x, ref)
    fresh, _ = correspondence.image_loss(x, ref, 0.05, best)  # matches given: nothing kept
    grad_fresh, = torch.autograd.grad(fresh, x)
    held = []
    correspondence.nearest(x, ref, held)
    assert len(held) == 5
    monkeypatch.setattr(correspondence, "KEPT", kept)
    calls, dots = [], correspondence._dots
    monkeypatch.setattr(correspondence, "_dots", lambda *a: calls.append(1) or dots(*a))
    got, matches = correspondence.image_loss(x, ref, 0.05)
    assert len(calls) == products
    grad, = torch.autograd.grad(got, x)
    assert torch.equal(matches, best) and got.item() == fresh.item()
    assert (grad - grad_fresh).abs().max() < 1e-5 * grad_fresh.abs().max()


@pytest.mark.parametrize("k", [correspondence.PATCH, 4])
def test_unfold_and_fold_equal_torchs_on_any_shape_layout_and_dtype(k):
    """The term's own unfold and fold (a strided copy; strided additions) give F.unfold's columns and
    F.fold's sums: on maps whose sides the stride does not divide, a channels-last and a row-sliced
    map, and bf16 columns folded into fp32 (off the CPU by F.fold: here its shape on the meta device)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 5, 30, 23, generator=g)
    for view in (x, x.contiguous(memory_format=torch.channels_last), x[:, :, 4:27]):
        want = F.unfold(view, k, stride=correspondence.STRIDE)[0]
        assert torch.equal(correspondence.unfold(view, k), want)
        cols = torch.randn(want.shape, generator=g)
        for c in (cols, cols.bfloat16()):
            got = correspondence.fold(c, view.shape, k)
            assert got.dtype == torch.float32 and got.shape == view.shape
            assert torch.allclose(got, F.fold(c.float()[None], view.shape[2:], k, stride=correspondence.STRIDE),
                                  atol=1e-5)
            on_gpu = correspondence.fold(c.to("meta"), view.shape, k)  # a GPU's branch: F.fold itself
            assert on_gpu.dtype == torch.float32 and on_gpu.shape == view.shape


def test_bf16_backward_keeps_the_loss_and_moves_the_gradient_by_a_few_percent_at_most():
    """With features from a bf16 network the gradient's product with the target's patches runs in bf16;
    the distances stay fp32 (the contextual normalisation divides by the nearest one)."""
    g = torch.Generator().manual_seed(1)
    t, x = torch.rand(1, 16, 30, 30, generator=g), torch.rand(1, 16, 30, 30, generator=g).requires_grad_()
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        loss, best = correspondence.image_loss(x, correspondence.reference(t, correspondence.PATCH, 1024, dtype), 0.05)
        out[dtype] = loss, best, torch.autograd.grad(loss, x)[0]
    (l32, b32, g32), (l16, b16, g16) = out[torch.float32], out[torch.bfloat16]
    assert l16.item() == l32.item() and torch.equal(b16, b32)
    assert (g16 - g32).norm() < 0.03 * g32.norm() and F.cosine_similarity(g16.flatten(), g32.flatten(), 0) > 0.999


def test_principal_channels_lose_nothing_the_target_and_output_do_not_use():
    """--refine-channels: features whose channels span fewer directions than the share keeps give the
    loss and gradient of all channels (the distances are cosines, unchanged by the rotation onto the
    target's principal directions); a share that drops a direction they use changes both."""
    g = torch.Generator().manual_seed(2)
    mix = torch.randn(8, 3, generator=g)  # 8 channels spanning 3 directions, as relu1_1's few strong ones
    t = torch.einsum("cd,bdhw->bchw", mix, torch.rand(1, 3, 30, 30, generator=g))
    x = torch.einsum("cd,bdhw->bchw", mix, torch.rand(1, 3, 30, 30, generator=g)).requires_grad_()
    out = {}
    for share in (1, 0.5, 0.25):  # 8, 4 and 2 of the 8 channels
        loss = correspondence.correspondence_loss([{"a": t}], 0.05, 1024, channels={"a": share})({"a": x})["a"]
        out[share] = loss, torch.autograd.grad(loss.sum(), x)[0]
    (l8, g8), (l4, g4), (l2, g2) = out[1], out[0.5], out[0.25]
    assert torch.allclose(l4, l8, rtol=1e-4) and torch.allclose(g4, g8, rtol=1e-3, atol=1e-4 * g8.abs().max())
    assert not torch.allclose(l2, l8, rtol=1e-2) and F.cosine_similarity(g2.flatten(), g8.flatten(), 0) < 0.99
    dirs = correspondence.principal(t, 0.5)
    assert dirs.shape == (8, 4) and torch.allclose(dirs.T @ dirs, torch.eye(4), atol=1e-5)


def test_the_gradient_comes_back_in_the_layout_of_the_features():
    """The network gives its features channels-last; the term's gradient reaches them in that layout (in
    another, adding it to the network's own costs a copy across layouts), for a batch and with or
    without principal channels, and loss and gradient equal those of the same features in rows; bf16
    features get a bf16 gradient."""
    g = torch.Generator().manual_seed(3)
    t, x = torch.rand(1, 8, 30, 30, generator=g), torch.rand(2, 8, 30, 30, generator=g)
    for share in (1, 0.5):
        fn = correspondence.correspondence_loss([{"a": t}], 0.05, 1024, channels={"a": share})
        rows = x.clone().requires_grad_()
        loss = fn({"a": rows})["a"]
        loss.sum().backward()
        last = x.clone().requires_grad_()
        f = last.contiguous(memory_format=torch.channels_last)
        strides = []
        f.register_hook(lambda grad: strides.append(grad.stride()))
        loss_last = fn({"a": f})["a"]
        loss_last.sum().backward()
        assert strides == [f.stride()], share
        assert torch.allclose(loss_last, loss)
        assert torch.allclose(last.grad, rows.grad, atol=1e-6 * rows.grad.abs().max())
        # as the network gives them under autocast: bf16, whose gradient comes back in bf16
        low = x.bfloat16().contiguous(memory_format=torch.channels_last).requires_grad_()
        fn({"a": low})["a"].sum().backward()
        assert low.grad.dtype == torch.bfloat16 and low.grad.stride() == low.stride(), share


def test_refine_channels_are_checked_against_the_refinement_taps():
    """A share above 1, or a tap the refinement does not read, is a one-line error naming the flag;
    the default's shares of taps left out of --refine-layers are dropped."""
    for value, message in (("relu1_1:1.5", "share 1.5 of 'relu1_1' is above 1"),
                           ("relu1_1:x", "share 'x' of 'relu1_1' is not a number"),
                           ("relu3_1:0.5", "'relu3_1' is not one of --refine-layers (relu1_1,relu2_1)")):
        with pytest.raises(SystemExit) as e:
            gen.main(["x.png", "--backbone", "random", "--refine-layers", "relu1_1,relu2_1",
                      "--refine-channels", value])
        assert e.value.code == f"--refine-channels: {message}"  # printed on one line, exit status 1
    options = recipe.refinement(methods.method_options("default"))
    assert options.gcd_channels == {"relu1_1": 0.5, "relu2_1": 0.75} == options.refine_channels
    flags = ["--refine-layers", "relu2_1,relu3_1"]
    args = add_arguments(argparse.ArgumentParser(), ["device", "gen"]).parse_args(flags)
    assert Options.from_args(args, given=given(flags, ["gen"])).refine_channels == {"relu2_1": 0.75}


def test_a_large_target_gives_a_fixed_sample_of_its_patches():
    """Beyond --gcd-patches target patches, the same random sample of them on every call: the loss stays
    one function and its cost grows with the output alone."""
    t = torch.rand(1, 4, 40, 40, generator=torch.Generator().manual_seed(0))  # 12 x 12 patches
    full = correspondence.reference(t, correspondence.PATCH, 1024)
    a, b = (correspondence.reference(t, correspondence.PATCH, 50) for _ in range(2))
    assert len(full[0]) == 144 and len(a[0]) == 50 and torch.equal(a[0], b[0]) and torch.equal(a[2], full[2])
    # each sampled patch is one of the target's, none twice
    nearest = torch.cdist(a[0].flatten(1), full[0].flatten(1), compute_mode="donot_use_mm_for_euclid_dist").min(1)
    assert nearest.values.max() < 1e-5 and len(nearest.indices.unique()) == 50


def discs(size, seed, n=10, radius=4.5):
    """Bright discs scattered on a dark textured background, in [0, 1]: a small object texture."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                          indexing="ij")
    img = 0.2 + 0.05 * torch.rand(size, size, generator=g)
    for cy, cx in (torch.rand(n, 2, generator=g) * size).tolist():
        dy, dx = (y - cy + size / 2) % size - size / 2, (x - cx + size / 2) % size - size / 2
        img = torch.maximum(img, 0.85 * torch.sigmoid((radius - (dy ** 2 + dx ** 2).sqrt()) * 2))
    return img


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return model.TextureNet(3).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def run(net):
    target = discs(48, 0)
    opts = gram_options(GCD, loss="gcd", gcd_layers=GCD, optimizer="adam", lr=0.1, steps=40)
    return target, optimize.synthesize(net, [target], None, opts, seeds=[2])[0]


def test_synthesis_lowers_the_loss_and_improves_the_patch_measures_without_copying(run):
    target, r = run
    assert r["message"] is None and r["curve"][-1] < 0.5 * r["curve"][0]
    assert set(r["layer_losses"]) == set(GCD)
    start = optimize.init_image(target, target.shape, "shuffle", 2)
    before, after = quality.measures(start, target), quality.measures(r["image"], target)
    assert after["patch_nn"] < 0.6 * before["patch_nn"] and after["patch_cover"] < 0.6 * before["patch_cover"]
    assert after["lbp_distance"] < before["lbp_distance"]
    assert after["copy_share"] < 0.2


def test_occurrence_penalty_spreads_the_matches():
    """Output features that start bunched near the target's mean patch: optimised with the penalty,
    they come to use many more distinct target patches than without it."""
    g = torch.Generator().manual_seed(0)
    t = torch.rand(1, 8, 31, 31, generator=g)
    ref = correspondence.reference(t, correspondence.PATCH, 1024)
    start = t.mean((2, 3), keepdim=True) + 0.05 * torch.randn(1, 8, 31, 31, generator=g)
    used = {}
    for occurrence in (0.0, 0.05):
        x = start.clone().requires_grad_()
        opt = torch.optim.Adam([x], 0.02)
        for _ in range(40):
            opt.zero_grad()
            correspondence.image_loss(x, ref, occurrence)[0].backward()
            opt.step()
        used[occurrence] = len(correspondence.nearest(x, ref).unique())
    assert used[0.05] > 1.3 * used[0.0], used


def test_cli_combines_gram_and_correspondence_and_names_a_bad_tap(net, tmp_path):
    path = tmp_path / "discs-a-p001.png"
    Image.fromarray((discs(48, 1) * 255).round().byte().numpy()).save(path)
    ckpt = str(tmp_path / C.ckpt_name(1))
    C.save_checkpoint({"arch": "vgg19", "classes": ["discs", "x", "y"], "model": net.state_dict()}, ckpt)
    out = tmp_path / "gen"
    gen.main([str(path), "--ckpt", ckpt, "--gen-dir", str(out), "--steps", "2", "--loss", "gram+gcd",
              "--gcd-weight", "0.5", "--snapshot-every", "0", "--size", "64", "48", "--tile", "--refine-steps", "0"])
    r = json.load(open(out / "discs" / "result.json"))
    assert r["status"] == "ok" and r["size"] == [64, 48]
    assert {"relu1_1", "relu5_1", "gcd:relu2_1", "gcd:relu4_1", "spectrum"} <= set(r["layer_losses"])
    with pytest.raises(SystemExit, match="--gcd-layers: unknown layer 'relu9_1'"):
        gen.main([str(path), "--ckpt", ckpt, "--gen-dir", str(out), "--loss", "gcd", "--gcd-layers", "relu9_1"])
    with pytest.raises(SystemExit, match="--refine-layers: unknown layer 'relu9_1'"):
        gen.main([str(path), "--ckpt", ckpt, "--gen-dir", str(out), "--refine-steps", "2", "--refine-layers", "relu9_1"])


REFINED = {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0, "relu4_1": 1.0}


@pytest.fixture(scope="module")
def gram_run(net):
    """Discs, the Gram + spectrum options, and their result without a refinement."""
    target, opts = discs(48, 3), gram_options(REFINED, steps=30, spectrum_weight=0.3)
    return target, opts, optimize.synthesize(net, [target], None, opts, seeds=[4])[0]


@pytest.fixture(scope="module")
def refined(net, gram_run):
    """{--gcd-patches: the same run with a 30-iteration refinement}."""
    target, opts, _ = gram_run
    return {n: optimize.synthesize(net, [target], None, dataclasses.replace(opts, refine_steps=30, gcd_patches=n),
                                   seeds=[4])[0]
            for n in (1024, 64)}


@pytest.mark.parametrize("patches", [1024, 64])
def test_refinement_sharpens_the_gram_result_where_it_is_without_copying(gram_run, refined, patches):
    """--refine-steps: the correspondence term after the Gram synthesis improves the patch measures
    without copying the target, also from a sample of the target's patches (64 of relu1_1's 196)."""
    (target, _, base), r = gram_run, refined[patches]
    assert r["message"] is None and r["steps"] == base["steps"] + 30 and r["refine"]["steps"] == 30
    assert r["curve"][:base["steps"]] == base["curve"] and "gcd:relu1_1" in r["layer_losses"]
    before, after = quality.measures(base["image"], target), quality.measures(r["image"], target)
    assert after["patch_nn"] < 0.9 * before["patch_nn"] and after["patch_cover"] < 0.9 * before["patch_cover"]
    assert after["copy_share"] < 0.2


def test_cli_refines_a_batch_at_the_finest_level_only_and_rejects_flags_without_effect(net, tmp_path, capsys):
    paths = []
    for k in (1, 2):
        paths.append(str(tmp_path / f"discs{k}-a-p001.png"))
        Image.fromarray((discs(48, k) * 255).round().byte().numpy()).save(paths[-1])
    ckpt = str(tmp_path / C.ckpt_name(1))
    C.save_checkpoint({"arch": "vgg19", "classes": ["discs1", "discs2", "y"], "model": net.state_dict()}, ckpt)
    out = tmp_path / "gen"
    gen.main([*paths, "--ckpt", ckpt, "--gen-dir", str(out), "--steps", "4", "--refine-steps", "3",
              "--polish-steps", "0", "--refine-layers", "relu1_1,relu2_1", "--snapshot-every", "0",
              "--size", "96", "64", "--tile", "--levels", "2", "--layers", "relu1_1,relu2_1,relu3_1"])
    for k in (1, 2):
        r = json.load(open(out / f"discs{k}" / "result.json"))
        assert r["status"] == "ok" and r["size"] == [96, 64] and r["batch"] == 2
        assert [lv["size"] for lv in r["levels"]] == [[48, 32], [96, 64]] and r["refine"]["steps"] == 3
        assert r["steps"] == 4 + 2 + 3 and {"gcd:relu1_1", "gcd:relu2_1", "relu3_1"} <= set(r["layer_losses"])
    for flag, value in (("--refine-lr", "0.1"), ("--polish-steps", "5"), ("--refine-channels", "relu1_1:0.5"),
                        ("--fine-refine-steps", "5"), ("--fine-polish-steps", "5")):
        with pytest.raises(SystemExit):
            gen.main([paths[0], "--ckpt", ckpt, "--gen-dir", str(out), "--refine-steps", "0", flag, value])
        assert "--fine-polish-steps apply only with --refine-steps above 0" in capsys.readouterr().err
    for flag in ("--fine-refine-steps", "--fine-polish-steps"):  # --refine-steps given refines at full size alone
        with pytest.raises(SystemExit):
            gen.main([paths[0], "--ckpt", ckpt, "--gen-dir", str(out), "--refine-steps", "5", flag, "5"])
        assert f"{flag} applies only without --refine-steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gen.main([paths[0], "--ckpt", ckpt, "--gen-dir", str(out), "--optimizer", "adam", "--occurrence-hold", "3"])
    assert "--occurrence-hold applies to --optimizer lbfgs only" in capsys.readouterr().err


def test_default_refines_an_output_of_the_targets_size_and_one_made_coarse_to_fine_at_every_level(net, tmp_path):
    path = str(tmp_path / "discs1-a-p001.png")
    Image.fromarray((discs(48, 1) * 255).round().byte().numpy()).save(path)
    ckpt = str(tmp_path / C.ckpt_name(1))
    C.save_checkpoint({"arch": "vgg19", "classes": ["discs1", "x", "y"], "model": net.state_dict()}, ckpt)
    common = [path, "--ckpt", ckpt, "--steps", "2", "--snapshot-every", "0", "--layers", "relu1_1,relu2_1,relu3_1"]
    runs = {"same size": [], "coarse to fine": ["--size", "96", "96", "--levels", "2"],
            "coarse to fine, finer levels set": ["--size", "96", "96", "--levels", "2", "--fine-refine-steps", "4",
                                                 "--fine-polish-steps", "0"],
            "coarse to fine, asked": ["--size", "96", "96", "--levels", "2", "--refine-steps", "3"]}
    got = {}
    for name, flags in runs.items():
        gen.main([*common, *flags, "--gen-dir", str(tmp_path / name)])
        got[name] = json.load(open(tmp_path / name / "discs1" / "result.json"))
    same = got["same size"]
    assert same["refine"]["steps"] == Hyperparams.refine_steps and same["polish"]["steps"] == Hyperparams.polish_steps
    assert same["steps"] == 2 + Hyperparams.refine_steps + Hyperparams.polish_steps
    refine, polish, fine_refine, fine_polish = (getattr(Hyperparams, k) for k in (
        "refine_steps", "polish_steps", "fine_refine_steps", "fine_polish_steps"))
    coarse = got["coarse to fine"]  # the coarsest level refined as a whole output, the finer one briefly
    low, high = coarse["levels"]
    assert low["size"] == [48, 48] and (low["refine"]["steps"], low["polish"]["steps"]) == (refine, polish)
    assert low["steps"] == 2 + refine + polish
    assert high["size"] == [96, 96] and (high["refine"]["steps"], high["polish"]["steps"]) == (fine_refine, fine_polish)
    assert high["steps"] == 1 + fine_refine + fine_polish and coarse["steps"] == low["steps"] + high["steps"]
    assert coarse["refine"]["steps"] == refine + fine_refine and coarse["polish"]["steps"] == polish + fine_polish
    assert coarse["refine"]["loss"] == high["refine"]["loss"]
    assert coarse["refine"]["seconds"] == pytest.approx(low["refine"]["seconds"] + high["refine"]["seconds"])
    set_ = got["coarse to fine, finer levels set"]
    assert set_["levels"][1]["refine"]["steps"] == 4 and "polish" not in set_["levels"][1]
    assert set_["steps"] == 2 + refine + polish + 1 + 4
    asked = got["coarse to fine, asked"]  # given, the refinement runs at full size after all levels
    assert asked["refine"]["steps"] == 3 and not any("refine" in lv for lv in asked["levels"])
    assert asked["steps"] == 2 + 1 + 3 + Hyperparams.polish_steps
    options = {"same size": Options(steps=2, levels=1), "coarse to fine": Options(steps=2, levels=2),
               "coarse to fine, finer levels set": Options(steps=2, levels=2, fine_refine_steps=4, fine_polish_steps=0),
               "coarse to fine, asked": Options(steps=2, levels=2, refine_steps=3, refine_coarse=True)}
    for name, o in options.items():  # the progress bar's length is what ran
        assert recipe.planned_steps(o) == got[name]["steps"], name


def test_finer_levels_are_refined_only_when_the_coarsest_is_and_the_refinement_is_not_asked_at_full_size():
    o = Options(levels=3)
    assert recipe.refines_full_size(o) and not recipe.refined_at_full_size(o)
    f = recipe.fine_level(o, 25)
    assert (f.levels, f.steps, f.refine_steps, f.polish_steps) == (1, 25, o.fine_refine_steps, o.fine_polish_steps)
    for off in ({"refine_steps": 0}, {"fine_refine_steps": 0}, {"refine_coarse": True}):
        f = recipe.fine_level(dataclasses.replace(o, **off), 25)
        assert (f.steps, f.refine_steps, f.polish_steps) == (25, 0, 0), off
    assert not recipe.refines_full_size(dataclasses.replace(o, refine_steps=0))
    assert not recipe.refines_full_size(dataclasses.replace(o, fine_refine_steps=0))
    assert recipe.refines_full_size(dataclasses.replace(o, refine_coarse=True))  # after all levels
    # 100 + 100 + 30 at 256 px, 50 + 20 + 10 at 512 and 25 + 20 + 10 at 1024: the README's 1024 px command
    assert recipe.planned_steps(dataclasses.replace(o, steps=100)) == 365
    assert recipe.planned_steps(dataclasses.replace(o, steps=100, refine_coarse=True)) == 175 + 100 + 30
    assert recipe.planned_steps(dataclasses.replace(o, steps=100, refine_steps=0)) == 175


def test_held_occurrence_penalty_lets_lbfgs_lower_the_loss_where_a_moving_one_stalls(net):
    """With the penalty's matches found again at every evaluation, L-BFGS's line search compares
    values of different objectives and barely moves; held for 5 evaluations it converges."""
    target = discs(48, 0)
    final = {}
    for hold in (0, 5):
        opts = gram_options(GCD, loss="gcd", gcd_layers=GCD, steps=25, occurrence_hold=hold)
        r = optimize.synthesize(net, [target], None, opts, seeds=[2])[0]
        evaluate = optimize.objective(net, [target], target.shape, opts)
        with torch.no_grad():  # the loss with the matches of the result itself
            final[hold] = evaluate(r["raw"][None, None])[0].item()
        start = r["curve"][0]
    assert final[5] < 0.5 * final[0] and final[0] > 0.3 * start, (final, start)


def test_polish_after_the_refinement_goes_back_to_the_gram_loss_and_keeps_part_of_the_gain(net, gram_run, refined):
    """--polish-steps: the first part's loss again after the refinement, from the refined image."""
    (target, opts, base), fine = gram_run, refined[1024]
    r = optimize.synthesize(net, [target], None, dataclasses.replace(opts, refine_steps=30, polish_steps=15),
                            seeds=[4])[0]
    assert r["message"] is None and r["steps"] == fine["steps"] + 15 and r["polish"]["steps"] == 15
    assert r["refine"]["loss"] == fine["refine"]["loss"] and r["curve"][:fine["steps"]] == fine["curve"]
    assert not any(k.startswith("gcd:") for k in r["layer_losses"])
    gram = optimize.objective(net, [target], target.shape, opts)
    with torch.no_grad():
        refined, polished = (gram(x.float()[None, None])[0].item() for x in (fine["raw"], r["raw"]))
    assert polished < 0.8 * refined
    m = {k: quality.measures(x["image"], target) for k, x in (("base", base), ("polished", r))}
    assert m["polished"]["patch_nn"] < m["base"]["patch_nn"] and m["polished"]["copy_share"] < 0.2


def test_time_budget_covers_the_refinement_and_the_polish(net):
    """A budget spent before the first iteration leaves none to the later parts either."""
    target = discs(32, 3)
    opts = gram_options({"relu1_1": 1.0, "relu2_1": 1.0}, steps=5, refine_steps=5, polish_steps=5, time_budget=1e-9)
    r = optimize.synthesize(net, [target], None, opts, seeds=[4])[0]
    assert r["steps"] == 0 and r["refine"]["steps"] == 0 and r["polish"]["steps"] == 0


@pytest.mark.parametrize("flag, value, message", [("--gcd-weight", "0", "must be > 0, got 0"),
                                                  ("--occurrence", "-1", "must be >= 0, got -1"),
                                                  ("--gcd-patches", "0", "must be > 0, got 0"),
                                                  ("--refine-steps", "-1", "must be >= 0, got -1"),
                                                  ("--polish-steps", "-2", "must be >= 0, got -2"),
                                                  ("--occurrence-hold", "-1", "must be >= 0, got -1"),
                                                  ("--spectrum-scale", "rel", "invalid choice: 'rel' (choose from 'absolute', 'relative', 'hybrid')")])
def test_correspondence_flags_out_of_range(flag, value, message, capsys):
    with pytest.raises(SystemExit) as e:
        gen.main(["x.png", "--backbone", "random", flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(f"argument {flag}: {message}")
