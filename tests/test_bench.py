"""bench.py end to end at tiny settings: the table, and bench.json with every section filled in.

Timings are never asserted here (the machine is shared); only that each figure was measured.
"""
import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import bench
from hyperparams import Hyperparams
from texture.measures import speed, speedup, time_to_quality
from texture.networks import checkpoints as C
from texture.synthesis import methods

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--quick", "--image-size", "32", "--bench-batch", "4", "--bench-images", "8", "--bench-steps", "1",
        "--bench-repeats", "1", "--bench-orig-steps", "5", "--bench-orig-every", "2", "--bench-gen-steps", "3",
        "--bench-gen-every", "1", "--bench-chunk", "2", "--bench-matmul", "128", "--bench-texnet-size", "64",
        "--bench-refine-sizes", "32,48", "--bench-dir", "out"]
SECTIONS = {"train": "speedup", "data": "ratio", "synthesis": "original_seconds", "iteration": "ratio",
            "flops": "default_share_of_peak", "colour": "target_ratio", "texnet": "ratio"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench.py"), *TINY], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, cwd / "out"


def numbers(d):
    for k, v in d.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            yield k, v


def test_quick_run_prints_the_table(quick_run):
    out, _ = quick_run
    lines = out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("section")))
    assert "32 px, batch 4" in out and "load average" in out
    for section in SECTIONS:
        assert any(line.startswith(section) for line in lines[header + 1:]), section
    assert "speed-up" in out and "iteration / bare" in out
    assert "--loss gcd iteration / bare" in out and "refinement iteration / bare" in out
    assert "bare / that (padding in the activations' dtype)" in out
    assert "iteration / sample" in out and "sample / the same untempered (--sample-temper 0)" in out
    assert "colouring the luminance's output, s" in out and "default's seconds per target, grey / colour" in out
    assert "channels together at --chroma-layers / grey, first part and refinement" in out
    assert "48 px: refinement iteration / Gram + spectrum's" in out and "48 px: the same with every target patch" in out
    assert "original recipe on gravel, 5 Adam steps" in out and "gram-spectrum: speed-up to all" in out


def test_time_to_quality_measures_the_original_until_its_end_and_each_method_against_it(quick_run):
    _, out_dir = quick_run
    with open(out_dir / "bench.json") as f:
        sy = json.load(f)["synthesis"]
    orig = sy["original"]
    assert [s for s, _ in orig["curve"]] == [1, 2, 4, 5] and orig["steps"] == 5  # the start, every 2 and the last
    assert sy["goal"] == orig["curve"][-1][1] and set(sy["goal"]) == set(time_to_quality.QUALITY)
    # the default, fast and the refine-* methods refine after their first part, which gram-spectrum is
    assert list(sy["methods"]) == [m for m in methods.METHODS if m not in ("default", "fast")
                                      and not m.startswith("refine") and m not in methods.COLOUR_ONLY]
    for name, m in sy["methods"].items():
        steps = [s for s, _ in m["curve"]]
        assert steps == list(range(1, len(steps) + 1)) and len(steps) <= 3, name
        all_at = m["steps_to"]["all"]
        assert (all_at is None) == (m["speedup"] is None), name
        if all_at is not None:  # a run stops once it reaches every goal
            assert all_at == steps[-1] and all(m["final"][k] <= sy["goal"][k] for k in time_to_quality.QUALITY)
        for k, s in m["steps_to"].items():
            assert (s is None) == (m["seconds_to"][k] is None)
            if s is not None:
                assert m["seconds_to"][k] == pytest.approx(s * m["iteration_s"])


def test_first_steps_and_plateau_share_on_a_known_curve():
    goal = {"lbp_distance": 0.1, "patch_nn": 5.0, "patch_cover": 4.0}
    curve = [(10, {"lbp_distance": 0.3, "patch_nn": 9.0, "patch_cover": 3.0}),
             (20, {"lbp_distance": 0.1, "patch_nn": 6.0, "patch_cover": 5.0}),
             (30, {"lbp_distance": 0.1, "patch_nn": 5.0, "patch_cover": 4.0})]
    assert time_to_quality.first_steps(curve, goal) == {"lbp_distance": 20, "patch_nn": 30, "patch_cover": 10, "all": 30}
    assert time_to_quality.first_steps(curve[:2], goal)["all"] is None
    flat = [(s, {k: 1.0 + (s < 50) for k in time_to_quality.QUALITY}) for s in range(10, 101, 10)]
    assert time_to_quality.last_quarter_gain(flat) == {k: 0.0 for k in time_to_quality.QUALITY}
    steady = [(s, {k: 100.0 - s for k in time_to_quality.QUALITY}) for s in range(0, 101, 25)]
    assert time_to_quality.last_quarter_gain(steady) == {k: 0.25 for k in time_to_quality.QUALITY}


def test_bench_json_has_every_section_with_finite_positive_figures(quick_run):
    _, out_dir = quick_run
    assert sorted(os.listdir(out_dir)) == ["args.json", "bench.json"]
    with open(out_dir / "bench.json") as f:
        result = json.load(f)
    for section, headline in SECTIONS.items():
        assert headline in result[section], section
        for key, value in numbers(result[section]):
            assert math.isfinite(value) and value > 0, f"{section}.{key} = {value}"
    machine = result["machine"]
    assert {"device", "dtype", "torch", "cpu", "threads"} <= set(machine) and machine["threads"] >= 1
    assert result["flops"]["flops_per_step"] > 1e9  # counted: VGG-19 at 32 px, 4 images, about 9.5 GFLOP
    settings = result["settings"]
    assert settings["quick"] and settings["image_size"] == 32  # explicit flags win over --quick
    assert settings["bench_matmul"] == 128 and settings["bench_gen_steps"] == 3
    assert [x["side"] for x in result["refine"]] == [32, 48]
    for x in result["refine"]:  # at most --gcd-patches target patches, at 32 and 48 px all of them anyway
        assert all(math.isfinite(x[k]) and x[k] > 0 for k in ("first_iteration_s", "refine_iteration_s", "ratio"))
        assert x["all_patches_ratio"] > 0 and x["channels_ratio"] > 0


def test_quick_fills_in_only_what_was_not_given():
    defaults, quick = Hyperparams(), bench.QUICK
    assert quick["bench_repeats"] != defaults.bench_repeats and quick["image_size"] != defaults.image_size
    args = bench.settings(["--quick", "--bench-repeats", "2"])  # neither the default nor --quick's value
    assert args.bench_repeats == 2 and args.image_size == quick["image_size"]
    assert bench.settings(["--quick"]).bench_repeats == quick["bench_repeats"]
    assert (bench.settings([]).image_size, bench.settings([]).bench_repeats) == (defaults.image_size,
                                                                              defaults.bench_repeats)


def test_too_small_image_is_a_one_line_error():
    with pytest.raises(SystemExit, match="--image-size 16"):
        bench.main(["--image-size", "16"])
    for sizes in ("64,16", "64,x", ""):
        with pytest.raises(SystemExit, match=f"--bench-refine-sizes {sizes}: comma-separated sides of at least 32 px"):
            bench.main(["--bench-refine-sizes", sizes])


def test_bad_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="--ckpt"):
        bench.main(["--ckpt", str(tmp_path / "missing.pt")])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="--ckpt.*junk.pt"):
        speed.synthesis_net(bench.settings(["--ckpt", str(tmp_path / "junk.pt")]), torch.device("cpu"))


def test_synthesis_network_is_the_checkpoint_or_seeded_random(trained_ckpt):
    cpu = torch.device("cpu")
    net = speed.synthesis_net(bench.settings(["--ckpt", trained_ckpt]), cpu)
    saved = C.load_checkpoint(C.latest_checkpoint(trained_ckpt))["model"]
    assert all(torch.equal(net.state_dict()[k], v) for k, v in saved.items())
    a, b = (speed.synthesis_net(bench.settings([]), cpu) for _ in range(2))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.features[0].weight, net.features[0].weight)


def test_chosen_sections_alone_are_run_printed_and_saved(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # the per-target seconds count the iterations gen.py's default gives the size: short ones from 32 px here
    default = speed.method_options
    monkeypatch.setattr(speed, "method_options", lambda name, dtype="auto", levels=1: dataclasses.replace(
        default(name, dtype, levels), short_from=32, short_steps=7, short_refine_steps=3))
    result = bench.main([*TINY, "--bench-sections", "colour"])
    assert set(result) == {"machine", "colour", "settings"}
    lines = capsys.readouterr().out.splitlines()
    assert {line.split()[0] for line in lines[lines.index(next(x for x in lines if x.startswith("section"))) + 1:]
            if line.split()} == {"colour", "wrote"}  # the table's rows, then the file written
    c = json.load(open(tmp_path / "out" / "bench.json"))["colour"]
    assert c["colourise_s"] > 0 and c["colour_target_s"] > c["grey_target_s"] and c["joint_ratio"] > 0
    assert c["counts"] == {"steps": 7, "refine_steps": 3, "polish_steps": Hyperparams().polish_steps}
    with pytest.raises(SystemExit, match=r"^--bench-sections colour,foo: sections are train, synthesis, refine"):
        bench.main(["--bench-sections", "colour,foo"])


def test_fast_section_times_both_recipes_whole_on_one_target_and_a_batch(tmp_path, monkeypatch, capsys):
    """The two recipes shortened (their iterations are what bench.py times, not what is tested here)."""
    short = {"default": (4, 2, 1), "fast": (2, 1, 1)}
    monkeypatch.setattr(speedup, "method_options", lambda name, dtype, levels: dataclasses.replace(
        methods.method_options(name, dtype), steps=short[name][0], refine_steps=short[name][1],
        polish_steps=short[name][2]))
    monkeypatch.chdir(tmp_path)
    result = bench.main([*TINY, "--bench-sections", "fast", "--image-size", "64", "--bench-batch-targets", "3",
                         "--bench-batch-side", "64", "--bench-repeats", "2"])["fast"]
    one, batch = result["one"], result["batch"]
    assert one["targets"] == ["gravel"] and batch["targets"] == ["brick", "grass", "gravel"]
    assert (one["side"], batch["side"]) == (64, 64)
    for d in (one, batch):
        assert all(len(s) == 2 and min(s) > 0 for s in d["seconds"].values()) and d["speedup"] > 0
        assert [x["all"] for x in d["iterations"]["default"]] == [7] * len(d["targets"])
        assert [x["all"] for x in d["iterations"]["fast"]] == [4] * len(d["targets"])
        assert set(d["reached"]) == {*speedup.MEASURES, "all"} and 0 <= d["reached_one_by_one"] <= len(d["targets"])
    out = capsys.readouterr().out
    assert "gravel 64 px: default / fast, s" in out and "3 targets 64 px: speed-up" in out
    assert "3 targets 64 px: reaches the default's measures (mean; targets)" in out


def test_fast_recipe_keeps_its_two_levels_and_refinement_for_whole_runs_and_one_level_for_iterations():
    whole, timed = methods.method_options("fast", levels=None), methods.method_options("fast")
    assert (whole.levels, whole.steps, whole.refine_steps, whole.polish_steps) == (2, 100, 30, 10) and whole.refine_coarse
    assert timed.levels == 1 and methods.method_options("default", levels=None).levels == 0  # gen.py decides


def test_reaching_the_defaults_measures_allows_the_spectrum_two_percent_and_nothing_else():
    goal = {"lbp_distance": 0.1, "patch_nn": 9.0, "patch_cover": 9.0, "spectrum_distance": 0.2, "copy_share": 0.0}
    assert speedup.reaches({**goal, "spectrum_distance": 0.2039}, goal)["all"]
    assert not speedup.reaches({**goal, "spectrum_distance": 0.2041}, goal)["all"]
    for k in speedup.AT_MOST:
        worse = speedup.reaches({**goal, k: goal[k] + 1e-3}, goal)
        assert not worse["all"] and not worse[k] and sum(not v for v in worse.values()) == 2


def test_a_batch_is_the_photographs_then_the_procedural_classes_sample_by_sample():
    names, images = speedup.batch_targets(7, 32, ["brick", "gravel"], torch.device("cpu"))
    assert names == ["brick", "gravel", "stripes1-a", "checker1-a", "dots1-a", "grid1-a", "waves1-a"]
    assert all(x.shape == (32, 32) and 0 <= x.min() < x.max() <= 1 for x in images)
    more, _ = speedup.batch_targets(16, 32, [], torch.device("cpu"))
    assert more[11:] == ["speckle1-a", "stripes1-b", "checker1-b", "dots1-b", "grid1-b"] and len(set(more)) == 16


def test_fast_runs_only_when_named_and_refuses_sides_its_first_level_cannot_have(capsys):
    assert "fast" not in bench.settings([]).bench_sections and "fast" in bench.settings(["--bench-sections", "fast"]).bench_sections
    for flags, error in ((["--image-size", "48"], "--image-size 48"), (["--bench-batch-side", "32"], "--bench-batch-side 32")):
        with pytest.raises(SystemExit, match=f"^{error}: section fast needs at least 64 px"):
            bench.settings(["--bench-sections", "fast", *flags])
    assert bench.settings(["--bench-sections", "fast", "--bench-batch-targets", "0", "--bench-batch-side", "32"])
    assert bench.settings(["--image-size", "32"]).image_size == 32  # the other sections take it
    with pytest.raises(SystemExit):  # argparse's one line, as for every count
        bench.settings(["--bench-batch-targets", "-1"])
    assert "--bench-batch-targets: must be >= 0, got -1" in capsys.readouterr().err
