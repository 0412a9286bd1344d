"""test.py on a tiny trained checkpoint: output format, reports, single files, and refused checkpoints."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import load_script
from PIL import Image

from texture.data import folders, procedural
from texture.networks import checkpoints as C

T = load_script("test")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def evaluate(demo_data, ckpt, out, *extra):
    return ["--data-dir", demo_data, "--image-size", "32", "--ckpt", str(ckpt), "--test-dir", str(out), *extra]


def test_output_format_and_reports(demo_data, trained_ckpt, tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "test.py"), *evaluate(demo_data, trained_ckpt, tmp_path)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    final = [i for i, line in enumerate(lines) if line.startswith("Final result is")]
    assert len(final) == 1
    hits, n, acc = re.fullmatch(r"Final result is (\d+)/(\d+) = (\d\.\d{4})", lines[final[0]]).groups()
    running = [line for line in lines[:final[0]] if re.fullmatch(r"\d+/\d+ = \d\.\d{4}", line)]
    assert running and running[-1] == f"{hits}/{n} = {acc}" and int(n) == 6
    classes = json.load(open(os.path.join(trained_ckpt, "classes.json")))
    per_class = lines[final[0] + 1:final[0] + 1 + len(classes)]
    assert [line.split()[0] for line in per_class] == classes
    assert all(re.fullmatch(r"\s+\S+\s+\d+/2 = \d\.\d{4}", line) for line in per_class)
    report = json.load(open(tmp_path / "report.json"))
    assert (report["hits"], report["n"], f"{report['accuracy']:.4f}") == (int(hits), 6, acc)
    assert report["checkpoint"] == C.latest_checkpoint(trained_ckpt)
    assert sum(map(sum, report["confusion"])) == 6 and len(report["mistakes"]) == 6 - int(hits)
    assert (tmp_path / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert lines[0] == f"checkpoint {C.latest_checkpoint(trained_ckpt)}: the newest numbered one in {trained_ckpt}; " \
                       "--ckpt best (or a path) picks another"
    assert report["held_out"] and report["training_images"] == 0


def test_data_settings_come_from_the_checkpoint(trained_ckpt, tmp_path, capsys):
    """No data flag: the checkpoint's data folder, split, seed and 32 px crop, so its 6 held-out images."""
    T.main(["--ckpt", trained_ckpt, "--test-dir", str(tmp_path)])
    report = json.load(open(tmp_path / "report.json"))
    held_out = json.load(open(os.path.join(report["data_dir"], "split_patch.json")))["test"]
    assert (report["n"], report["image_size"], report["held_out"]) == (6, 32, True)
    assert report["data_dir"] == C.load_checkpoint(C.latest_checkpoint(trained_ckpt))["hparams"]["data_dir"]
    assert {m["file"] for m in report["mistakes"]} <= set(held_out)


@pytest.mark.parametrize("flags", [["--seed", "1"], ["--test-fraction", "0.5"], ["--split", "source"]])
def test_evaluating_images_the_checkpoint_trained_on_is_refused(flags, trained_ckpt, tmp_path):
    with pytest.raises(SystemExit, match=r"^\d+ of the \d+ images to evaluate were used to train .*ckpt_\d+.pt: .*"
                                         r"pass --split all") as e:
        T.main(["--ckpt", trained_ckpt, "--test-dir", str(tmp_path), *flags])
    assert "\n" not in str(e.value) and not os.listdir(tmp_path)


def test_split_all_with_best_is_marked_as_including_training_images(demo_data, trained_ckpt, tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)  # --ckpt best: best.pt in asset/train/ckpt
    os.makedirs("asset/train")
    os.symlink(trained_ckpt, "asset/train/ckpt")
    T.main(["--ckpt", "best", "--split", "all", "--test-dir", "out"])
    out = capsys.readouterr().out
    assert out.startswith("checkpoint asset/train/ckpt/best.pt: the best held-out accuracy")
    assert re.search(r"^Final result is \d+/24 = \d\.\d{4}$", out, re.M)
    assert "NOTE: 18 of these 24 images were used to train asset/train/ckpt/best.pt: this figure includes " \
           "training images" in out
    report = json.load(open("out/report.json"))
    assert (report["training_images"], report["held_out"], report["n"]) == (18, False, 24)


def test_a_checkpoint_that_cannot_tell_its_training_images_is_refused_unless_split_all(demo_data, trained_ckpt,
                                                                                       tmp_path, capsys):
    """Its recorded data folder is gone (moved here to demo_data): which images it trained on is unknown."""
    ckpt = C.load_checkpoint(C.latest_checkpoint(trained_ckpt))
    ckpt["hparams"]["data_dir"] = str(tmp_path / "gone")
    torch.save(ckpt, tmp_path / "moved.pt")
    argv = ["--ckpt", str(tmp_path / "moved.pt"), "--data-dir", demo_data, "--test-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match=rf"^cannot tell whether these images were held out from .*moved.pt: its "
                                         rf"training data cannot be read \({tmp_path / 'gone'}: data folder not found"
                                         r".*\); pass --split all to evaluate them anyway") as e:
        T.main(argv)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()
    T.main(argv + ["--split", "all"])
    assert "cannot tell which of these 24 images it was trained on: this figure is not a held-out accuracy" in \
        capsys.readouterr().out
    report = json.load(open(tmp_path / "out" / "report.json"))
    assert (report["held_out"], report["training_images"], report["n"]) == (False, None, 24)


def test_files_notes_those_the_checkpoint_trained_on(demo_data, trained_ckpt, capsys):
    recorded = C.load_checkpoint(C.latest_checkpoint(trained_ckpt))["hparams"]
    trained = folders.training_files(demo_data, recorded["split"], recorded["test_fraction"], recorded["seed"])
    files = sorted(os.path.join(demo_data, "dots1", f) for f in os.listdir(os.path.join(demo_data, "dots1")))
    seen, held = next(f for f in files if os.path.realpath(f) in trained), next(
        f for f in files if os.path.realpath(f) not in trained)
    T.main(["--ckpt", trained_ckpt, "--files", seen, held])
    out, err = capsys.readouterr()
    assert [line.split("  ")[0] for line in out.splitlines()[1:]] == [seen, held]  # path  class  probability
    assert err.strip() == f"{seen}: the checkpoint was trained on this image, so this is not a held-out result"


def test_a_second_evaluation_writes_beside_the_first(trained_ckpt, tmp_path, capsys):
    T.main(["--ckpt", trained_ckpt, "--test-dir", str(tmp_path)])
    kept = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    T.main(["--ckpt", trained_ckpt, "--test-dir", str(tmp_path)])
    assert f"wrote {tmp_path / 'report-2.json'} and confusion-2.png" in capsys.readouterr().out
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir() if p.name in kept} == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["report.json", "confusion.png", "hparams.json", "report-2.json", "confusion-2.png", "hparams-2.json"])
    first, second = (json.load(open(tmp_path / n)) for n in ("report.json", "report-2.json"))
    assert first["confusion"] == second["confusion"]


def test_files_prints_class_and_probability_and_reports_unreadable(trained_ckpt, tmp_path, capsys):
    Image.new("RGB", (50, 40), (200, 10, 30)).save(tmp_path / "rgb.png")
    Image.effect_noise((80, 80), 40).convert("RGBA").save(tmp_path / "big.png")
    Image.new("L", (20, 20)).save(tmp_path / "tiny.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    files = [str(tmp_path / n) for n in ["rgb.png", "broken.png", "big.png", "tiny.png"]]
    with pytest.raises(SystemExit, match="2 of 4 file"):
        T.main(["--ckpt", trained_ckpt, "--image-size", "32", "--files", *files])
    out = capsys.readouterr().out.splitlines()
    classes = json.load(open(os.path.join(trained_ckpt, "classes.json")))
    good = [line.split("  ") for line in out if len(line.split("  ")) == 3]
    assert [g[0] for g in good] == [files[0], files[2]]
    assert all(g[1] in classes and 0 < float(g[2]) <= 1 for g in good)
    assert any(files[1] in line for line in out if line.split("  ")[0] != files[1] or len(line.split("  ")) != 3)
    assert any(files[3] in line and "32 px" in line for line in out)


def damaged(trained_ckpt, tmp_path, kind):
    """A copy of the trained checkpoint spoiled in one way."""
    ckpt = C.load_checkpoint(C.latest_checkpoint(trained_ckpt))
    path = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        data = open(C.latest_checkpoint(trained_ckpt), "rb").read()
        path.write_bytes(data[:len(data) // 2])
    elif kind == "other arch":
        torch.save({**ckpt, "arch": {"vgg19": "vgg19_bn", "vgg19_bn": "vgg19"}[ckpt["arch"]]}, path)
    elif kind == "pickled object":
        torch.save({**ckpt, "extra": folders.Split}, path)
    return path


@pytest.mark.parametrize("kind, message", [
    ("truncated", "unreadable checkpoint, truncated or corrupt"),
    ("other arch", "weights do not fit vgg19"),
    ("pickled object", "refused, it holds objects other than tensors"),
])
def test_damaged_checkpoint_is_refused(kind, message, demo_data, trained_ckpt, tmp_path):
    path = damaged(trained_ckpt, tmp_path, kind)
    with pytest.raises(SystemExit, match=message) as e:
        T.main(evaluate(demo_data, path, tmp_path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_errors_are_one_line(demo_data, trained_ckpt, tmp_path):
    (tmp_path / "none").mkdir()
    other = tmp_path / "four"
    procedural.make_demo(str(other), classes=4, patches=4, size=40, seed=1)
    cases = [(evaluate(demo_data, tmp_path / "none", tmp_path), "no checkpoint in .*run train.py first or pass --ckpt"),
             (evaluate(str(other), trained_ckpt, tmp_path), "trained for 3 classes, this data has 4"),
             (evaluate(str(tmp_path / "nowhere"), trained_ckpt, tmp_path), "nowhere: data folder not found")]
    for argv, message in cases:
        r = subprocess.run([sys.executable, os.path.join(ROOT, "test.py"), *argv], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert re.search(message, r.stderr.strip().splitlines()[-1]), r.stderr
