"""The README's claims that are behaviour: its first command, run twice in a row in an empty folder at
tiny settings (the second run succeeds and keeps every file of the first, byte for byte and date for
date), the Gram-only example, and the crop of --backbone random."""
import glob
import hashlib
import json
import os
import shlex

import pytest
from conftest import ROOT, load_script

import gen
import prepro
import train

pytestmark = pytest.mark.usefixtures("quick_vgg")  # each VGG built once: the command builds several
MAINS = {"prepro.py": prepro.main, "train.py": train.main, "test.py": load_script("test").main, "gen.py": gen.main}
# appended to the README's flags of each script (argparse keeps the last value of a flag given twice)
TINY = {"prepro.py": ["--demo-classes", "2", "--demo-photos", "", "--demo-patches", "8", "--demo-size", "32"],
        "train.py": ["--image-size", "32", "--epochs", "1", "--batch-size", "4"],
        "test.py": [],
        "gen.py": ["--steps", "2", "--refine-steps", "1", "--polish-steps", "1"]}


def readme_command():
    """(script, flags) of each step of the README's first command after its pip install."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        line = next(x for x in f if x.startswith("pip install") and "prepro.py --demo" in x)
    steps = [shlex.split(part) for part in line.strip().split(" && ")[1:]]
    assert [s[0] for s in steps] == ["python"] * 4 and [s[1] for s in steps] == list(MAINS)
    return [(s[1], s[2:]) for s in steps]


def run(capsys):
    """The command once, in the working folder, globs expanded as bash does; returns what it printed."""
    for script, flags in readme_command():
        argv = [a for f in flags for a in (sorted(glob.glob(f)) if "*" in f else [f])]
        MAINS[script](argv + TINY[script])
    return capsys.readouterr().out


def files(root):
    """{path: (modification time in ns, sha1)} of every file under root."""
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            path = os.path.join(d, n)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = (os.stat(path).st_mtime_ns, hashlib.sha1(f.read()).hexdigest())
    return out


def test_the_first_command_runs_twice_and_keeps_every_output_of_the_first(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    first = run(capsys)
    before = files(tmp_path)
    assert "Final result is" in first and "gen_images/report.json" in first
    assert {"data/demo/demo.json", "asset/train/ckpt/best.pt", "asset/test/report.json", "gen_images/report.json",
            "gen_images/stripes1/final.png", "gen_images/checker1/final.png"} <= set(before)
    second = run(capsys)
    after = files(tmp_path)
    assert {k: after.get(k) for k in before} == before  # nothing deleted, nothing written over
    assert "data/demo: the demo set made with these settings is already there, reused as it is" in second
    assert "asset/train/ckpt: the run is done, 1/1 epochs (held-out " in second
    assert "Final result is" in second and "gen_images/report-2.json" in second
    new = set(after) - set(before)
    collections = {p for p in new if p.startswith("gen_images/collection_")}
    assert len(collections) == 1 and new - collections == {
        "asset/test/report-2.json", "asset/test/confusion-2.png", "asset/test/hparams-2.json",
        "gen_images/report-2.json", *(f"gen_images/{c}-2/{n}" for c in ("checker1", "stripes1")
                                      for n in ("target.png", "final.png", "result.json", "args.json"))}


def test_the_gram_only_example_runs_the_gram_loss_alone_on_gatys_taps(demo_data, tmp_path):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        line = next(x for x in f if "# Gram only" in x)
    words = shlex.split(line.split("#")[0])
    assert words[:3] == ["python", "gen.py", "a.png"]
    target = os.path.join(demo_data, "dots1", "dots1-a-p001.png")
    gen.main([target, *words[3:], "--backbone", "random", "--steps", "2", "--snapshot-every", "0", "--gen-dir",
              str(tmp_path)])
    r = json.load(open(tmp_path / "dots1" / "result.json"))
    assert set(r["layer_losses"]) == {"conv1_1", "pool1", "pool2", "pool3", "pool4"}  # no spectrum, no gcd term
    assert (r["refine"], r["polish"], r["steps"]) == (None, None, 2)


def test_backbone_random_crops_the_centre_224_px_whatever_the_checkpoint_trained_at(demo_data, trained_ckpt,
                                                                                    tmp_path):
    """The quick start's claim, also after the first command: the trained checkpoint (32 px here)
    gives the verdict, not the crop; a 48 px target is smaller than 224 px, so it is used whole."""
    target = os.path.join(demo_data, "dots1", "dots1-b-p001.png")
    common = [target, "--ckpt", trained_ckpt, "--steps", "1", "--refine-steps", "0", "--snapshot-every", "0"]
    gen.main([*common, "--backbone", "random", "--gen-dir", str(tmp_path / "random")])
    gen.main([*common, "--gen-dir", str(tmp_path / "trained")])
    random, trained = (json.load(open(tmp_path / b / "dots1" / "result.json")) for b in ("random", "trained"))
    assert (random["size"], random["settings"]["image_size"]) == ([48, 48], 224)
    assert (trained["size"], trained["settings"]["image_size"]) == ([32, 32], 32)
    assert random["verdict"]["target_class"] == "dots1"  # the checkpoint still judges
