"""gen.py: texture synthesis on tiny images (48 px demo patches, a randomly initialised network)."""
import copy
import dataclasses
import glob
import json
import math
import os
import re
import subprocess
import sys
import types

import pytest
import torch
from conftest import ROOT, gram_options
from PIL import Image

import gen
import model
from hyperparams import Hyperparams, parse_args
from texture.data import colour as colour_data
from texture.data import folders, images
from texture.measures import quality
from texture.networks import checkpoints as C
from texture.synthesis import batch, histogram, lbfgs, losses, optimize, taps
from texture.synthesis.options import Options

LAYERS = {"pool1": 1.0, "pool2": 1.0, "pool3": 1.0, "pool4": 1.0}


def save_ckpt(net, classes, path):
    C.save_checkpoint({"arch": "vgg19", "classes": classes, "model": net.state_dict(), "optimizer": {},
                           "scheduler": {}, "epoch": 0, "step": 0, "metrics": {}, "hparams": {}, "rng": {}}, path)
    return path


@pytest.fixture(scope="session")
def classes(demo_data):
    return sorted(d for d in os.listdir(demo_data) if os.path.isdir(os.path.join(demo_data, d)))


@pytest.fixture(scope="session")
def net(classes):
    torch.manual_seed(0)
    return model.TextureNet(len(classes)).eval()


@pytest.fixture(scope="session")
def ckpt(net, classes, tmp_path_factory):
    return save_ckpt(net, classes, str(tmp_path_factory.mktemp("ckpt") / C.ckpt_name(1)))


def load(path):
    return images.load_gray(path).float() / 255


@pytest.fixture(scope="session")
def runs(net, firsts):
    """Two targets synthesised as one batch, each alone, and the first alone again."""
    a, b = load(firsts[0]), load(firsts[1])
    opts = gram_options(LAYERS, steps=20)
    return {"batch": optimize.synthesize(net, [a, b], None, opts, seeds=[1, 2]),
            "a": optimize.synthesize(net, [a], None, opts, seeds=[1])[0],
            "b": optimize.synthesize(net, [b], None, opts, seeds=[2])[0],
            "a_again": optimize.synthesize(net, [a], None, opts, seeds=[1])[0],
            "a_other_seed": optimize.synthesize(net, [a], None, opts, seeds=[3])[0]}


# ---- pure pieces ----------------------------------------------------------------------------

def test_parse_layers_weights_presets_and_errors(net):
    assert taps.parse_layers("pool1,pool2:0.5") == {"pool1": 1.0, "pool2": 0.5}
    assert list(taps.parse_layers("gatys")) == ["conv1_1", "pool1", "pool2", "pool3", "pool4"]
    assert taps.parse_layers("original") == LAYERS
    for bad, why in [("pool1:x", "not a number"), ("pool1:-1", "bad entry"), ("pool1,pool1", "bad entry"),
                     ("pool1,", "bad entry"), ("pool1:inf", "bad entry")]:
        with pytest.raises(ValueError, match=f"--layers: .*{why}"):
            taps.parse_layers(bad)
    with pytest.raises(ValueError, match="unknown layer 'pool9'"):
        taps.parse_layers("pool1,pool9", net.names)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gram_loss_and_its_gradient_match_the_plain_formula(layout):
    """Features in either layout (model.frozen's network gives them channels-last); the gradient
    comes back in the features' own."""
    torch.manual_seed(0)
    t, x = torch.rand(2, 6, 5, 4), torch.rand(2, 6, 5, 4)
    for features in ("normalize", "standardize", "raw"):
        s = losses.channel_scale(t) if features == "normalize" else torch.ones(2, 6)

        def plain(f):
            f = losses._scaled(f, features, s).flatten(2)
            return f @ f.transpose(1, 2) / 20
        goal = plain(t)
        for dtype, tol in [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)]:
            a = x.clone().to(dtype).contiguous(memory_format=layout).requires_grad_()
            b = x.clone().requires_grad_()
            loss = losses.gram_loss([{"a": t[i:i + 1]} for i in range(2)], features)({"a": a})["a"]
            ref = (plain(b) - goal).square().sum((1, 2)) / goal.square().sum((1, 2))
            assert loss.shape == (2,) and torch.allclose(loss, ref.detach(), rtol=tol), (features, dtype)
            (loss * torch.tensor([1.0, 3.0])).sum().backward(retain_graph=True)
            (ref * torch.tensor([1.0, 3.0])).sum().backward()
            assert a.grad.dtype == dtype
            own, = torch.autograd.grad(loss.sum(), a)  # as the loss gives it, before .grad's own layout rule
            assert own.is_contiguous(memory_format=layout), (features, dtype)
            assert (a.grad.float() - b.grad).norm() <= tol * b.grad.norm(), (features, dtype)


def test_gram_loss_is_relative_and_no_channel_dominates():
    torch.manual_seed(0)
    t, x = torch.rand(1, 8, 6, 6), torch.rand(1, 8, 6, 6)
    for features in ("normalize", "standardize", "raw"):
        loss = losses.gram_loss([{"a": t}], features)
        assert loss({"a": t})["a"].item() == pytest.approx(0, abs=1e-6)
        # the same scale on target and texture (a layer's magnitude) leaves its loss unchanged
        scaled = losses.gram_loss([{"a": 1e3 * t}], features)({"a": 1e3 * x})["a"]
        assert scaled.item() == pytest.approx(loss({"a": x})["a"].item(), rel=1e-4)
    # channel 0 is 1000x stronger: raw, a 10% error there outweighs the same error elsewhere by
    # orders of magnitude; normalised, the two errors cost about the same
    strong = torch.ones(1, 8, 1, 1)
    strong[0, 0] = 1000
    t = t * strong
    ratios = {}
    for features in ("normalize", "raw"):
        loss = losses.gram_loss([{"a": t}], features)
        errs = []
        for c in (0, 5):
            x = t.clone()
            x[0, c] *= 1.1
            errs.append(loss({"a": x})["a"].item())
        ratios[features] = errs[0] / errs[1]
    assert ratios["raw"] > 1e4 and 0.2 < ratios["normalize"] < 5


def test_histogram_matching_is_exact_and_distance_measures_it():
    torch.manual_seed(0)
    target, img = torch.rand(32, 32) ** 2, torch.rand(40, 24)
    out = histogram.match_histogram(img, target)
    assert torch.equal(out.flatten().argsort(), img.flatten().argsort())  # pixel order kept
    assert quality.hist_distance(out, target) < 0.5
    assert quality.hist_distance(img, target) > 20
    same = histogram.match_histogram(torch.rand(32, 32), target)
    assert torch.equal(same.flatten().sort().values, target.flatten().sort().values)


def test_batch_lbfgs_minimises_each_row_as_if_alone():
    """Independent ill-conditioned quadratics: the batch follows each one's solo path."""
    scales = torch.tensor([[1.0, 100.0, 0.1], [5.0, 0.5, 50.0]])
    start = torch.tensor([[1.0, -2.0, 3.0], [-1.0, 0.5, 2.0]])

    def run(rows):
        p = start[rows].clone().requires_grad_()
        opt = lbfgs.BatchLBFGS(p)
        for _ in range(40):
            p.grad = None
            f = (scales[rows] * p ** 2).sum(1)
            f.sum().backward()
            opt.step(f.detach(), torch.ones(len(rows), dtype=torch.bool))
        return p.detach()

    both = run([0, 1])
    assert both.abs().max() < 1e-3
    assert torch.allclose(both[0], run([0])[0], atol=1e-6) and torch.allclose(both[1], run([1])[0], atol=1e-6)


def test_lbfgs_history_flag_reaches_each_images_optimiser(net, firsts, tmp_path, monkeypatch, capsys):
    """--lbfgs-history sets the curvature pairs each image's L-BFGS keeps; with Adam it is refused."""
    flags = lambda *argv: parse_args("", ["device", "seed", "gen"], ["t.png", *argv], batch.add_flags)
    assert Options.from_args(flags()).lbfgs_history == Hyperparams().lbfgs_history
    assert Options.from_args(flags("--lbfgs-history", "3")).lbfgs_history == 3
    made = []

    class Recorded(lbfgs.BatchLBFGS):
        def __init__(self, *a):
            super().__init__(*a)
            made.append(self)

    monkeypatch.setattr(lbfgs, "BatchLBFGS", Recorded)
    target = load(firsts[0])
    for history in (2, 6):
        optimize.synthesize(net, [target, target], None, gram_options(LAYERS, steps=12, lbfgs_history=history),
                            seeds=[0, 1])
        assert made[-1].m == history and [len(h) for h in made[-1].hist] == [history, history]
    with pytest.raises(SystemExit):
        gen.main([firsts[0], "--backbone", "random", "--gen-dir", str(tmp_path), "--optimizer", "adam",
                  "--lbfgs-history", "5"])
    assert "--lbfgs-history applies to --optimizer lbfgs only" in capsys.readouterr().err


# ---- synthesis --------------------------------------------------------------------------------

def test_loss_falls_by_more_than_10x(runs):
    for r in runs["batch"]:
        assert r["message"] is None and r["steps"] == 20 and len(r["curve"]) == 20
        assert r["curve"][0] / r["loss"] > 10
        assert set(r["layer_losses"]) == set(LAYERS)


def test_batched_equals_one_by_one(runs):
    """Each row follows its solo path: the curves agree closely at first; later the batch's different
    rounding (convolution kernels chosen per batch size) grows through L-BFGS, as a seed would."""
    for r, alone in zip(runs["batch"], (runs["a"], runs["b"])):
        assert r["curve"][:6] == pytest.approx(alone["curve"][:6], rel=1e-4)
        assert r["loss"] == pytest.approx(alone["loss"], rel=0.25)
        assert (r["image"] - alone["image"]).abs().mean() < 0.02


def test_same_seed_same_result(runs):
    assert torch.equal(runs["a"]["image"], runs["a_again"]["image"])
    assert (runs["a"]["image"] - runs["a_other_seed"]["image"]).abs().mean() > 0.05


def seam_ratio(img):
    """Mean jump across the wrap-around edges over the mean jump between interior neighbours."""
    seam = torch.cat([(img[:, 0] - img[:, -1]).abs(), (img[0] - img[-1]).abs()]).mean()
    inner = torch.cat([(img[:, 1:] - img[:, :-1]).abs().flatten(), (img[1:] - img[:-1]).abs().flatten()]).mean()
    return (seam / inner).item()


def test_tile_is_continuous_across_the_wrap_around(net):
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    stripes = 0.5 + 0.4 * torch.sin(0.45 * xx + 0.2 * yy)  # smooth: neighbours alike, far pixels not
    opts = gram_options(LAYERS, steps=30)
    tiled = optimize.synthesize(net, [stripes], (48, 64), dataclasses.replace(opts, tile=True), seeds=[5])[0]
    plain = optimize.synthesize(net, [stripes], (48, 64), opts, seeds=[5])[0]
    assert tiled["image"].shape == (48, 64)
    assert seam_ratio(tiled["image"]) < 1.5
    assert seam_ratio(plain["image"]) > 1.5 * seam_ratio(tiled["image"])


def test_non_finite_target_stops_alone_and_others_continue(net, firsts, runs):
    bad = load(firsts[1]).clone()
    bad[3, 3] = math.inf
    opts = gram_options(LAYERS, steps=20)
    good, stopped = optimize.synthesize(net, [load(firsts[0]), bad], None, opts, seeds=[1, 2])
    assert stopped["message"].startswith("loss is nan at step 0") and stopped["curve"] == []
    assert good["message"] is None and good["loss"] == pytest.approx(runs["a"]["loss"], rel=0.05)


def test_time_budget_stops_at_the_first_check_past_it(net, firsts, monkeypatch):
    ticks = iter(range(1000))  # a clock that advances 0.1 s each time it is read
    monkeypatch.setattr(optimize, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks) / 10))
    r = optimize.synthesize(net, [load(firsts[0])[:32, :32]], None,
                            gram_options(LAYERS, steps=30, time_budget=0.45))[0]
    assert r["steps"] == 4 and r["message"] is None  # read at 0.1 .. 0.4 s: go on; at 0.5 s: stop


def test_each_optimiser_gets_its_own_step_size_unless_given():
    lr = lambda *argv: Options.from_args(parse_args("", ["device", "seed", "gen"], ["t.png", *argv], batch.add_flags)).step_size
    assert lr() == 1.0 and lr("--optimizer", "adam") == 0.02
    assert lr("--optimizer", "adam", "--gen-lr", "0.5") == 0.5 == lr("--gen-lr", "0.5")
    assert Options().step_size == 1.0


@pytest.mark.parametrize("script", ["gen", "train"])
def test_process_group_backend_follows_the_device(script, firsts, tmp_path, monkeypatch):
    """--device cpu under torchrun joins with gloo even where CUDA is present (NCCL needs GPUs)."""
    class Joined(Exception):
        pass

    def init_process_group(backend):
        raise Joined(backend)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "init_process_group", init_process_group)
    argv = [firsts[0], "--backbone", "random"] if script == "gen" else []
    with pytest.raises(Joined, match="^gloo$"):
        __import__(script).main([*argv, "--device", "cpu"])


# ---- command line -----------------------------------------------------------------------------

def test_cli_writes_every_output(ckpt, firsts, tmp_path, classes):
    out = tmp_path / "gen"
    args = [firsts[0], firsts[1], firsts[0], "--ckpt", ckpt, "--gen-dir", str(out), "--size", "64", "32",
            "--steps", "4", "--snapshot-every", "2", "--image-size", "32", "--refine-steps", "0"]
    gen.main(args)
    label = images.label_from_filename(os.path.basename(firsts[0]))
    assert sorted(os.listdir(out / label)) == ["args.json", "final.png", "result.json", "snapshot_00002.png",
                                               "snapshot_00004.png", "target.png"]
    # the same target twice: two folders, two textures (each its own noise), both of that target
    twice = [json.load(open(out / d / "result.json")) for d in (label, f"{label}-2")]
    assert [r["target"] for r in twice] == [firsts[0]] * 2 and twice[0]["seed"] != twice[1]["seed"]
    assert not torch.equal(load(out / label / "final.png"), load(out / f"{label}-2" / "final.png"))
    assert Image.open(out / label / "final.png").size == (32, 64)  # PIL: (W, H)
    assert Image.open(out / label / "target.png").size == (32, 32)  # centre crop of --image-size
    r = json.load(open(out / label / "result.json"))
    assert r["status"] == "ok" and r["size"] == [64, 32] and len(r["curve"]) == 4
    assert r["hist_distance"] < 0.5 <= r["hist_distance_raw"]
    assert r["verdict"]["target_class"] == label and r["verdict"]["predicted"] in classes
    assert 0 <= r["verdict"]["p_target_class"] <= 1 and r["settings"]["steps"] == 4
    [coll] = glob.glob(str(out / "collection_*.png"))
    assert Image.open(coll).size[1] > 3 * 64  # three target/texture rows


def test_cli_full_target_and_tile_size_check(ckpt, firsts, tmp_path):
    out = tmp_path / "gen"
    gen.main([firsts[2], "--ckpt", ckpt, "--gen-dir", str(out), "--steps", "1", "--full", "--tile", "--refine-steps", "0"])
    label = images.label_from_filename(os.path.basename(firsts[2]))
    assert Image.open(out / label / "final.png").size == (48, 48)
    with pytest.raises(SystemExit, match="--size 40 48: must be .* multiple of 16 with --tile"):
        gen.main([firsts[2], "--ckpt", ckpt, "--gen-dir", str(out), "--size", "40", "48", "--tile"])


def test_an_output_larger_than_its_target_without_tile_is_noted(ckpt, firsts, tmp_path, capsys):
    """Without --tile an output larger than its target takes the target's edges and spreads a layout
    the target has over its whole size (a stained-tissue photograph's dark top half; docs/speed.md):
    gen.py says so, and not with --tile or at the target's size."""
    run = ["--ckpt", ckpt, "--steps", "1", "--refine-steps", "0", "--snapshot-every", "0"]
    note = f"{firsts[2]}: a 64x48 output of a 48x48 target without --tile takes the target's edges"
    gen.main([firsts[2], *run, "--full", "--size", "64", "48", "--gen-dir", str(tmp_path / "larger")])
    assert note in capsys.readouterr().err
    gen.main([firsts[2], *run, "--full", "--size", "64", "48", "--tile", "--gen-dir", str(tmp_path / "tile")])
    gen.main([firsts[2], *run, "--full", "--gen-dir", str(tmp_path / "same")])
    assert "without --tile" not in capsys.readouterr().err
    label = images.label_from_filename(os.path.basename(firsts[2]))
    assert all(Image.open(tmp_path / d / label / "final.png").size == (48, 64 if d != "same" else 48)
               for d in ("larger", "tile", "same"))


def test_missing_and_unreadable_targets_are_named_and_others_finish(ckpt, firsts, tmp_path, capsys):
    junk = tmp_path / "junk-a-p001.png"
    junk.write_text("not an image")
    missing = str(tmp_path / "nothere-a-p001.png")
    with pytest.raises(SystemExit, match=r"2 of 3 target\(s\) failed") as e:
        gen.main([missing, firsts[0], str(junk), "--ckpt", ckpt, "--gen-dir", str(tmp_path / "g"), "--steps", "2",
                  "--refine-steps", "0"])
    assert missing in str(e.value) and str(junk) in str(e.value)
    err = capsys.readouterr().err
    assert f"{missing}: unreadable image" in err and f"{junk}: unreadable image" in err
    label = images.label_from_filename(os.path.basename(firsts[0]))
    assert (tmp_path / "g" / label / "final.png").exists()


def test_no_checkpoint_is_a_one_line_error(firsts, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        gen.main([firsts[0]])
    assert "run train.py" in str(e.value) and "--ckpt" in str(e.value) and "\n" not in str(e.value)


def test_nan_weights_stop_each_target_with_a_message(net, classes, firsts, tmp_path):
    broken = copy.deepcopy(net)
    with torch.no_grad():
        broken.features[0].weight[0, 0, 0, 0] = math.nan
    path = save_ckpt(broken, classes, str(tmp_path / "nan.pt"))
    with pytest.raises(SystemExit, match=r"2 of 2 target\(s\) failed"):
        gen.main([firsts[0], firsts[1], "--ckpt", path, "--gen-dir", str(tmp_path / "g"), "--steps", "3"])
    for f in firsts[:2]:
        r = json.load(open(tmp_path / "g" / images.label_from_filename(os.path.basename(f)) / "result.json"))
        assert r["status"] == "stopped" and "loss is nan at step 0" in r["message"]
        assert "verdict" not in r


def test_readme_bash_loop_over_first_patch_of_each_class(ckpt, demo_data, classes, tmp_path):
    loop = (f'for f in {demo_data}/*/*-a-p001.png; do '
            f'{sys.executable} {ROOT}/gen.py "$f" --ckpt {ckpt} --steps 2 --refine-steps 0 --snapshot-every 0 || exit 1; done')
    subprocess.run(["bash", "-c", loop], cwd=tmp_path, check=True, capture_output=True, timeout=300)
    out = tmp_path / "gen_images"
    firsts = sorted(glob.glob(f"{demo_data}/*/*-a-p001.png"))
    for c, f in zip(classes, firsts):  # one call per target: its own folder, its own texture
        r = json.load(open(out / c / "result.json"))
        assert (r["target"], r["status"], r["size"]) == (f, "ok", [48, 48]) and r["hist_distance"] < 0.5
        assert Image.open(out / c / "final.png").size == (48, 48)
    # each call's report kept beside the earlier ones, in the loop's order; no collection of one target
    reports = [json.load(open(out / n)) for n in ["report.json", "report-2.json", "report-3.json"]]
    assert [[t["name"] for t in r["targets"]] for r in reports] == [[c] for c in classes]
    assert not glob.glob(str(out / "collection_*.png")) and not (out / "report-4.json").exists()


def test_torchrun_shards_targets_and_a_failing_rank_stops_no_one(ckpt, firsts, tmp_path):
    """Rank 1's only target cannot be read: it reports it and finishes; rank 0 makes its two targets
    and the collection; the exit status is 1 and no process crashes or waits for ever."""
    broken = tmp_path / "broken-a-p001.png"
    broken.write_bytes(b"not an image")
    coloured = tmp_path / "dots-a-p001.png"  # rank 0 makes a grey and a colour target, one batch (in luminance)
    Image.fromarray(colour_data.colour_texture("dots", 48, 0)).save(coloured)
    targets = [firsts[0], str(broken), str(coloured)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           f"{ROOT}/gen.py", *targets, "--ckpt", ckpt, "--steps", "2", "--refine-steps", "0",
           "--device", "cpu"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    # torchrun itself prints a traceback of its own for any worker's non-zero exit; the workers print none
    assert r.returncode == 1 and "gen.py\", line" not in r.stderr and "ChildFailedError" in r.stderr, r.stderr[-3000:]
    results = [json.load(open(p)) for p in glob.glob(str(tmp_path / "gen_images" / "*" / "result.json"))]
    assert sorted((x["target"], x["rank"], x["batch"]) for x in results) == sorted([(firsts[0], 0, 2),
                                                                                    (str(coloured), 0, 2)])
    assert Image.open(tmp_path / "gen_images" / "dots" / "final.png").mode == "RGB"
    assert f"{broken}: unreadable image" in r.stderr
    assert re.search(rf"1 of 3 target\(s\) failed: {re.escape(str(broken))} \(unreadable image", r.stderr)
    assert len(glob.glob(str(tmp_path / "gen_images" / "collection_*.png"))) == 1


def test_verdict_on_a_training_image_is_marked_and_the_crop_is_the_checkpoints(trained_ckpt, demo_data, tmp_path,
                                                                               capsys):
    recorded = C.load_checkpoint(C.latest_checkpoint(trained_ckpt))["hparams"]
    trained = folders.training_files(demo_data, recorded["split"], recorded["test_fraction"], recorded["seed"])
    files = sorted(glob.glob(os.path.join(demo_data, "dots1", "*.png")))
    seen = next(f for f in files if os.path.realpath(f) in trained)
    held_out = next(f for f in files if os.path.realpath(f) not in trained)
    gen.main([seen, held_out, "--ckpt", trained_ckpt, "--steps", "1", "--snapshot-every", "0", "--refine-steps", "0",
              "--gen-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert f"checkpoint {C.latest_checkpoint(trained_ckpt)}: the newest numbered one" in out
    assert f"{seen}: the classifier was trained on this image" in err and held_out not in err
    results = {r["target"]: r for r in map(lambda p: json.load(open(p)), glob.glob(str(tmp_path / "*" / "result.json")))}
    assert (results[seen]["target_in_training"], results[held_out]["target_in_training"]) == (True, False)
    assert results[seen]["size"] == [32, 32]  # the 48 px patches cropped to the 32 px the classifier trained at
