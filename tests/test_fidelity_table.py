"""fidelity.py end to end at tiny settings: data with a photograph, a classifier trained on it, every
method on the held-out targets, the table, the JSON and the picture; then a rerun that reuses the
classifier and keeps the first run's outputs."""
import json
import os
import shutil

import pytest
import torch
from PIL import Image

import fidelity
from hyperparams import Hyperparams, parse_args
from texture.data import colour as colour_data
from texture.measures import report
from texture.networks import checkpoints as C
from texture.synthesis import methods
from texture.synthesis.options import Options

TINY = ["--demo-classes", "1", "--demo-photos", "gravel", "--demo-patches", "12", "--demo-size", "48",
        "--fidelity-size", "32", "--fidelity-train-size", "32", "--fidelity-epochs", "1", "--fidelity-steps", "2",
        "--fidelity-seeds", "1"]
TEXNET_TINY = ["--texnet-steps", "2", "--texnet-size", "32", "--texnet-scales", "3", "--texnet-width", "4",
               "--texnet-noise", "2", "--texnet-batch", "2", "--texnet-calibrate", "64"]
# the default's first part, and two variants of it; the default's refinement runs in test_correspondence.py
RUN = ["gram-spectrum", "spectrum0", "swd"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fidelity")
    return out, fidelity.main([*TINY, "--fidelity-dir", str(out), "--fidelity-methods", ",".join(RUN)])


def test_every_method_gives_options_and_those_run_are_measured_on_photographs_and_demo_classes(first_run):
    for m in methods.METHODS:  # each method's flags are gen.py's and give its options
        assert methods.method_options(m).levels == 1, m
    out, result = first_run
    assert C.checkpoints(str(out / "ckpt"))  # trained on the data with the photograph
    assert json.load(open(out / "data" / "demo.json"))["classes"] == ["stripes1", "gravel"]
    rows = {(r["method"], r["set"]): r for r in result["summary"]}
    assert set(rows) == {(m, s) for m in [fidelity.REFERENCE, *RUN] for s in ("photographs", "demo")}
    for (method, _), r in rows.items():
        assert r["outputs"] == 1 and all(r[k] is not None for k in fidelity.MEASURES), method
    # the reference is a real new sample of the texture: its patches are structures of the target
    assert rows[fidelity.REFERENCE, "photographs"]["patch_nn"] < rows["gram-spectrum", "photographs"]["patch_nn"]
    for r in result["records"]:
        if r["method"] != fidelity.REFERENCE:
            assert set(report.COLUMNS) - {"recognised", "seconds"} <= set(r["quality"])
            assert r["seed"] == 0 and r["seconds"] > 0


def test_table_json_and_picture_are_written(first_run):
    out, result = first_run
    base = result["base"]
    table = open(base + ".md").read()
    assert table.startswith("| method | set |") and all(f"| {m} |" in table for m in RUN)
    saved = json.load(open(base + ".json"))
    assert saved["summary"] == json.loads(json.dumps(result["summary"]))
    with Image.open(base + ".png") as im:  # a row per target, a column for it and each method
        assert im.width > (1 + len(RUN)) * 32 and im.height > 2 * 32


def test_rerun_reuses_the_classifier_and_keeps_earlier_outputs(first_run, capsys):
    out, result = first_run
    before = {p: os.path.getmtime(out / "ckpt" / p) for p in os.listdir(out / "ckpt")}
    again = fidelity.main([*TINY, "--fidelity-dir", str(out), "--fidelity-methods", "spectrum0"])
    assert "reusing the classifier" in capsys.readouterr().out
    assert {p: os.path.getmtime(out / "ckpt" / p) for p in os.listdir(out / "ckpt")} == before
    assert {r["method"] for r in again["summary"]} == {fidelity.REFERENCE, "spectrum0"}
    assert again["base"] != result["base"] and os.path.isfile(result["base"] + ".md")
    assert open(result["base"] + ".md").read().count("| gram-spectrum |") == 2


def test_failed_outputs_are_left_out_of_the_table_and_not_taken_from_an_earlier_run(first_run, tmp_path, capsys):
    """A classifier with NaN weights fails every output: the new table shows none, the run exits with one
    line naming them, and the first run's outputs stay as they were."""
    out, result = first_run
    ckpt = C.load_checkpoint(C.latest_checkpoint(str(out / "ckpt")))
    ckpt["model"] = {k: v.float() * float("nan") if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    torch.save(ckpt, tmp_path / "nan.pt")
    earlier = {p: p.read_bytes() for p in (out / "gen" / "spectrum0").rglob("*") if p.is_file()}
    with pytest.raises(SystemExit, match=r"^2 of 2 output\(s\) failed, left out of the table: spectrum0 seed 0 "
                                         r"stripes1 \(loss is nan at step 0; stopped this target\), ") as e:
        fidelity.main([*TINY, "--fidelity-dir", str(out), "--fidelity-methods", "spectrum0", "--ckpt",
                       str(tmp_path / "nan.pt")])
    assert "\n" not in str(e.value)
    table = capsys.readouterr().out
    assert "| spectrum0 | photographs | 0 | - | - |" in table and "| spectrum0 | demo | 0 | - | - |" in table
    assert {p: p.read_bytes() for p in (out / "gen" / "spectrum0").rglob("*") if p.is_file() and p in earlier} \
        == earlier


def test_data_of_other_settings_in_the_fidelity_dir_is_refused_and_kept(first_run):
    out, _ = first_run
    kept = {p: p.stat().st_mtime_ns for p in (out / "data").rglob("*")}
    with pytest.raises(SystemExit, match=rf"^fidelity.py: error: --fidelity-dir {out}: {out / 'data'}: holds the "
                                         r"demo set made with --demo-patches 12, not 16: pick another --fidelity-dir"):
        fidelity.main([*TINY, "--fidelity-dir", str(out), "--demo-patches", "16"])
    assert {p: p.stat().st_mtime_ns for p in (out / "data").rglob("*")} == kept


def test_a_fidelity_size_below_32_px_is_refused_before_anything_is_made(tmp_path):
    for colour_set in ([], ["--fidelity-set", "colour"]):
        with pytest.raises(SystemExit, match="^--fidelity-size 8: must be at least 32 px$"):
            fidelity.main(["--fidelity-size", "8", "--fidelity-dir", str(tmp_path), *colour_set])
    assert not os.listdir(tmp_path)


def test_unknown_method_is_a_one_line_error():
    with pytest.raises(SystemExit, match="--fidelity-methods: unknown nope; known: default,gram-spectrum,fast,spectrum0"):
        fidelity.main(["--fidelity-methods", "default,nope"])


@pytest.mark.parametrize("epoch, resumed", [(3, False), (1, True)])
def test_a_stopped_classifier_is_resumed_a_finished_one_reused(tmp_path, monkeypatch, epoch, resumed):
    folder = tmp_path / "ckpt"
    C.save_checkpoint({"epoch": epoch, "hparams": {"epochs": 3}}, str(folder / C.ckpt_name(10)))
    calls = []

    class Run:  # training.Run, recording what it was asked to do
        def __init__(self, args, resume, *rest):
            calls.append(args)

        def fit(self):
            pass
    monkeypatch.setattr(fidelity.training, "Run", Run)
    args = parse_args("", fidelity.GROUPS, ["--fidelity-dir", str(tmp_path)], extra=fidelity._extra)
    assert fidelity.classifier(args, "data") == str(folder)
    assert len(calls) == int(resumed) and (not calls or calls[0].resume)


def test_texnet_method_trains_a_generator_per_target_once_and_scores_its_samples(first_run):
    out, _ = first_run
    args = [*TINY, "--fidelity-dir", str(out), "--fidelity-methods", "texnet", *TEXNET_TINY]
    result = fidelity.main([*args, "--fidelity-seeds", "2"])
    rows = {(r["method"], r["set"]): r for r in result["summary"]}
    assert set(rows) == {(m, s) for m in [fidelity.REFERENCE, "texnet"] for s in ("photographs", "demo")}
    for s in ("photographs", "demo"):
        r = rows["texnet", s]
        assert r["outputs"] == 2 and all(r[k] is not None for k in fidelity.MEASURES) and r["hist_distance"] == 0
    generators = out / "gen" / "texnet" / "generators"
    assert sorted(os.listdir(generators)) == ["gravel", "stripes1"]
    stamps = {c: os.path.getmtime(generators / c / "texnet.pt") for c in ("gravel", "stripes1")}
    again = fidelity.main([*args, "--sample-temper", "0"])  # the generators are reused, not trained again
    assert {c: os.path.getmtime(generators / c / "texnet.pt") for c in stamps} == stamps
    finer = fidelity.main([*args, "--sample-fill-width", "12"])
    # tempered as --sample-temper says, filled with it, compared over --sample-fill-width
    for run, width, fill, fill_width in ((result, 8, 1, 24), (again, 0, 0, 24), (finer, 8, 1, 12)):
        for r in run["records"]:
            if r["method"] == "texnet":
                with open(r["png"].replace(".png", ".json")) as f:
                    settings = json.load(f)["settings"]
                assert (settings["sample_temper"], settings["sample_fill"], settings["sample_fill_width"]) == \
                    (width, fill, fill_width)
    assert again["base"] != result["base"] and os.path.isfile(again["base"] + ".png")
    # more steps continue the generators; the table and picture take the new samples, the old ones stay
    more = fidelity.main([*args, "--texnet-steps", "3"])
    assert all(os.path.getmtime(generators / c / "texnet.pt") > stamps[c] for c in stamps)
    pngs = [{r["label"]: r["png"] for r in run["records"] if r["method"] == "texnet" and r["seed"] == 0}
            for run in (result, more)]
    assert all(pngs[1][c] != pngs[0][c] and os.path.isfile(pngs[0][c]) and os.path.isfile(pngs[1][c])
               for c in stamps)


def test_texnet_joint_mode_trains_one_generator_without_waves_and_samples_each_target_from_it(first_run, tmp_path):
    out, _ = first_run
    for folder in ("data", "ckpt"):  # the first run's data and classifier, in a fidelity dir of this test's own
        shutil.copytree(out / folder, tmp_path / folder)
    args = [*TINY, "--fidelity-dir", str(tmp_path), "--fidelity-methods", "texnet", *TEXNET_TINY,
            "--texnet-mode", "joint"]
    result = fidelity.main(args)
    rows = {(r["method"], r["set"]): r for r in result["summary"]}
    for s in ("photographs", "demo"):
        r = rows["texnet", s]
        assert r["outputs"] == 1 and all(r[k] is not None for k in fidelity.MEASURES) and r["hist_distance"] == 0
    assert os.listdir(tmp_path / "gen" / "texnet" / "generators") == ["joint"]
    assert json.load(open(result["base"] + ".json"))["settings"]["texnet_waves"] == 0
    with pytest.raises(SystemExit, match="^--texnet-waves: .* need --texnet-mode each$"):
        fidelity.main([*args, "--texnet-waves", "2"])


def test_colour_set_measures_every_output_in_colour_against_another_window(tmp_path):
    flags = ["--fidelity-set", "colour", "--fidelity-size", "32", "--fidelity-steps", "2", "--fidelity-seeds", "1",
             "--fidelity-dir", str(tmp_path), "--dtype", "fp32", "--device", "cpu"]
    result = fidelity.main([*flags, "--fidelity-colour-targets", "immunohistochemistry,chelsea,dots",
                            "--fidelity-methods", "gram-spectrum,colour-grey"])
    rows = {(r["method"], r["set"]): r for r in result["summary"]}
    sets = ("development", "held-out", "procedural")
    assert set(rows) == {(m, s) for m in (fidelity.WINDOW, "gram-spectrum", "colour-grey") for s in sets}
    for s in sets:  # a grey output measured as a colour image has no colour; the default's keeps it
        assert rows["colour-grey", s]["colourfulness"] == 0 and rows["gram-spectrum", s]["colourfulness"] > 0.8
        assert all(rows["gram-spectrum", s][k] is not None for k in fidelity.MEASURES + fidelity.COLOUR_MEASURES)
    assert Image.open(result["base"] + ".png").mode == "RGB"
    assert Image.open(tmp_path / "colour" / "32" / "dots" / "dots.png").mode == "RGB"
    with pytest.raises(SystemExit, match="^--fidelity-colour-targets: unknown bricks; known: immunohistochemistry,"):
        fidelity.main([*flags, "--fidelity-colour-targets", "dots,bricks"])
    with pytest.raises(SystemExit, match=r"^--fidelity-size 400: retina: \d+x\d+ is smaller than 800 px$"):
        fidelity.main([*flags, "--fidelity-colour-targets", "retina", "--fidelity-size", "400"])


def test_colour_set_texnet_trains_with_random_weights_and_samples_in_colour(tmp_path):
    """The colour set has no classifier: the generators train with --backbone random, and their
    samples, judged by no classifier, are measured in colour."""
    result = fidelity.main(["--fidelity-set", "colour", "--fidelity-size", "32", "--fidelity-seeds", "1",
                            "--fidelity-dir", str(tmp_path), "--dtype", "fp32", "--device", "cpu",
                            "--fidelity-colour-targets", "dots", "--fidelity-methods", "texnet", *TEXNET_TINY])
    row = {(r["method"], r["set"]): r for r in result["summary"]}["texnet", "procedural"]
    assert row["outputs"] == 1 and row["colourfulness"] > 0.5 and row["recognised"] is None
    assert all(row[k] is not None for k in fidelity.MEASURES + fidelity.COLOUR_MEASURES)


def test_colour_set_without_plenoptic_names_the_photograph_and_the_package(tmp_path, monkeypatch):
    def missing(name):
        raise ModuleNotFoundError("No module named 'plenoptic'", name="plenoptic")
    monkeypatch.setattr(colour_data, "_plenoptic", missing)
    with pytest.raises(SystemExit, match=r"^--fidelity-colour-targets: parrot needs plenoptic \(pip install "
                                         r"plenoptic\); leave it out$"):
        fidelity.main(["--fidelity-set", "colour", "--fidelity-colour-targets", "dots,parrot",
                       "--fidelity-dir", str(tmp_path)])


def test_the_methods_run_gen_pys_own_counts_unless_fidelity_steps_is_given(monkeypatch):
    """gen.py --steps given keeps the long counts at every size; fidelity.py passes it only when asked,
    so that its `default` from --short-from px on is gen.py's default there."""
    seen = []
    monkeypatch.setattr(fidelity.batch, "synthesise", lambda gen_args, given, *_: seen.append((gen_args, given)) or
                        ([], [], []))
    for steps in ([], ["--fidelity-steps", "7"]):
        args = parse_args(fidelity.__doc__, fidelity.GROUPS, steps, extra=fidelity._extra)
        fidelity.synthesise(args, "default", 0, ["a.png"], "")
    (own, own_given), (asked, asked_given) = seen
    assert "steps" not in own_given and Options.from_args(own, None, own_given).short_from == Hyperparams.short_from
    assert "steps" in asked_given and asked.steps == 7 and Options.from_args(asked, None, asked_given).short_from == 0
