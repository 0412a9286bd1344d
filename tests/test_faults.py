"""Faults and bad input across every script: one line naming the file or flag, a non-zero exit, and
every output written before the failure left byte for byte as it was.

Cases already proven elsewhere are not repeated here: the checkpoint functions (test_model.py), data
faults of `prepro.py` on a prepared folder (test_data_faults.py), zips and downloads at function level
(test_prepro.py), SIGTERM/SIGKILL/torchrun restarts and a full disk while training (test_train.py),
damaged checkpoints given to test.py (test_test.py), failing targets in gen.py (test_gen.py).
"""
import errno
import hashlib
import http.server
import importlib
import io
import json
import os
import threading
import zipfile

import numpy as np
import pytest
import torch
from conftest import load_script
from PIL import Image

import gen
import model
import prepro
import texnet
import train
from texture.data import folders, kylberg
from texture.networks import checkpoints as C
from texture.run import memory

T = load_script("test")

# ---- helpers ----------------------------------------------------------------------------------


def fails(main, argv, capsys):
    """Run a script's main in-process; it must stop with one error line. Returns (exit status, line)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    code, err = e.value.code, capsys.readouterr().err
    assert "Traceback" not in err
    if isinstance(code, str):  # the interpreter prints the message on stderr and exits with status 1
        assert len(code.splitlines()) == 1, code
        return 1, code
    assert code not in (0, None)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    return code, errors[0]


def snapshot(root):
    """{relative path: sha1} of every file under root: a temporary file left by a failed write shows up."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                out[os.path.relpath(os.path.join(d, f), root)] = hashlib.sha1(fh.read()).hexdigest()
    return out


def png(size=40, seed=0):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def disk_full(real, inside):
    """Wrap a writer(obj, file_or_path, ...) so that writes under `inside` stop half-way with ENOSPC."""
    def write(obj, f, *a, **k):
        name = f if isinstance(f, (str, os.PathLike)) else getattr(f, "name", "")
        if str(inside) not in str(name):
            return real(obj, f, *a, **k)
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as out:
                out.write(b"\x89PNG half")
        else:
            f.write("{\"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write


class Payload:
    """Unpickling this would create a file: weights_only loading must refuse it before it runs."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def classes(demo_data):
    return sorted(d for d in os.listdir(demo_data) if os.path.isdir(os.path.join(demo_data, d)))


@pytest.fixture(scope="module")
def ckpt(classes, tmp_path_factory):
    """Random vgg19 weights for the demo classes, as a checkpoint file (enough for test.py and gen.py)."""
    torch.manual_seed(0)
    net = model.TextureNet(len(classes), "vgg19")
    path = str(tmp_path_factory.mktemp("ckpt") / C.ckpt_name(4))
    C.save_checkpoint({"arch": "vgg19", "classes": classes, "model": net.state_dict(), "epoch": 1, "step": 4,
                       "metrics": {}, "hparams": {}, "rng": {}}, path)
    return path


def spoiled(ckpt, path, kind, marker=None):
    """A copy of `ckpt` spoiled in one way, written to `path`."""
    state = C.load_checkpoint(ckpt)
    if kind == "truncated":
        data = open(ckpt, "rb").read()
        path.write_bytes(data[:len(data) // 2])
        return str(path)
    if kind == "other arch":  # vgg19 weights, labelled vgg19_bn
        state["arch"] = "vgg19_bn"
    elif kind == "other class count":
        state["classes"] = [f"x{i}" for i in range(5)]
        state["model"] = model.TextureNet(5, "vgg19").state_dict()
    elif kind == "pickled object":
        state["payload"] = Payload(str(marker))
    elif kind == "not a checkpoint":
        state = {"weights": state["model"]}
    torch.save(state, path)
    return str(path)


# ---- command line: every script refuses bad flags before doing anything ---------------------------

BAD_FLAGS = [
    ("prepro", ["--no-such-flag"], "--no-such-flag"),
    ("prepro", ["--image-size", "big"], "--image-size"),
    ("prepro", ["--demo-size", "0"], "--demo-size"),
    ("prepro", ["--test-fraction", "1.5"], "--test-fraction"),
    ("prepro", ["--split", "half"], "--split"),
    ("train", ["--no-such-flag"], "--no-such-flag"),
    ("train", ["--batch-size", "0"], "--batch-size"),
    ("train", ["--epochs", "-1"], "--epochs"),
    ("train", ["--lr", "fast"], "--lr"),
    ("train", ["--arch", "resnet50"], "--arch"),
    ("test", ["--no-such-flag"], "--no-such-flag"),
    ("test", ["--eval-batch-size", "0"], "--eval-batch-size"),
    ("test", ["--image-size", "-32"], "--image-size"),
    ("test", ["--ckpt"], "--ckpt"),
    ("test", ["--files"], "--files"),
    ("gen", ["t.png", "--no-such-flag"], "--no-such-flag"),
    ("gen", ["t.png", "--steps", "-1"], "--steps"),
    ("gen", ["t.png", "--gen-lr", "-1"], "--gen-lr"),
    ("gen", ["t.png", "--size", "32", "wide"], "--size"),
    ("gen", ["t.png", "--optimizer", "sgd"], "--optimizer"),
    ("gen", [], "targets"),
    ("bench", ["--no-such-flag"], "--no-such-flag"),
    ("bench", ["--bench-batch", "0"], "--bench-batch"),
    ("bench", ["--bench-steps", "-1"], "--bench-steps"),
    ("bench", ["--bench-matmul", "1e3"], "--bench-matmul"),
    # flags a script never reads, or that would have no effect in this call
    ("prepro", ["--device", "cpu"], "--device"),
    ("prepro", ["--demo-dir", "x"], "--demo-dir"),
    ("prepro", ["--demo-size", "32"], "--demo-size applies to --demo only"),
    ("prepro", ["--demo", "--zips-dir", "z"], "--zips-dir has no effect with --demo"),
    ("test", ["--workers", "2"], "--workers"),
    ("test", ["--url", "http://x"], "--url"),
    ("gen", ["t.png", "--data-dir", "d"], "--data-dir"),
    ("gen", ["t.png", "--split", "all"], "--split"),
    ("gen", ["t.png", "--url", "http://x"], "--url"),
    ("gen", ["t.png", "--pixels", "clamp"], "--pixels clamp needs --optimizer adam"),
    ("gen", ["t.png", "--backbone-weights", "w.pth"], "--backbone-weights applies to --backbone imagenet"),
    ("bench", ["--data-dir", "d"], "--data-dir"),
    ("bench", ["--url", "http://x"], "--url"),
    ("bench", ["--bench-ckpt", "c.pt"], "--bench-ckpt"),
    ("bench", ["--eval-crop", "full"], "--eval-crop"),
    ("prepro", ["--split", "source"], "--split has no effect without --demo: train.py splits the data itself"),
    ("prepro", ["--test-fraction", "0.5"], "--test-fraction has no effect without --demo"),
    ("prepro", ["--seed", "1"], "--seed has no effect without --demo"),
    ("prepro", ["--url", "foo"], "--url foo: not a URL"),
    ("test", ["--files", "a.png", "--split", "all"], "--split has no effect with --files"),
    ("test", ["--files", "a.png", "--data-dir", "d"], "--data-dir has no effect with --files"),
    ("test", ["--files", "a.png", "--test-dir", "t"], "--test-dir has no effect with --files"),
    ("gen", ["t.png", "--gcd-layers", "relu2_1"], "--gcd-layers applies to --loss gcd, gram+gcd or swd+gcd only"),
    ("gen", ["t.png", "--refine-steps", "0", "--gcd-weight", "1"], "--gcd-weight applies to --loss gcd, gram+gcd "
                                                                   "or swd+gcd only, or with --refine-steps above 0"),
    ("gen", ["t.png", "--refine-steps", "0", "--occurrence", "0.1"], "--occurrence applies to --loss gcd"),
    ("gen", ["t.png", "--refine-steps", "0", "--gcd-patches", "64"], "--gcd-patches applies to --loss gcd"),
    ("gen", ["t.png", "--occurrence-hold", "3"], "--occurrence-hold applies to --loss gcd, gram+gcd or swd+gcd"),
    ("gen", ["t.png", "--spectrum-weight", "0", "--spectrum-scale", "hybrid"], "--spectrum-scale applies only with "
                                                                               "--spectrum-weight above 0"),
    ("gen", ["t.png", "--full", "--image-size", "64"], "--image-size has no effect with --full"),
    ("gen", ["t.png", "--heap", "forever"], "argument --heap: invalid choice: 'forever'"),
    ("bench", ["--bench-sections", "heap", "--bench-heap-side", "0"], "--bench-heap-side"),
    ("texnet", ["train", "t.png", "--steps", "300"], "--steps: gen.py's flag, texnet.py train does not use it"),
    ("texnet", ["train", "t.png", "--texnet-loss", "gram", "--gcd-weight", "1"],
     "--gcd-weight applies to --texnet-loss gcd, gram+gcd or swd+gcd"),
    ("texnet", ["train", "t.png", "--full", "--image-size", "64"], "--image-size has no effect with --full"),
    *((script, [*pre, "--device", "foo"], "argument --device: must be auto, cpu, cuda or cuda:N, got 'foo'")
      for script, pre in [("train", []), ("test", []), ("gen", ["t.png"]), ("bench", []), ("fidelity", []),
                          ("texnet", ["train", "t.png"]), ("texnet", ["sample", "g.pt"])]),
]


@pytest.mark.parametrize("script, argv, flag", BAD_FLAGS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_bad_flag_is_one_line_naming_it(script, argv, flag, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, not even in the working folder
    status, line = fails(importlib.import_module(script).main, argv, capsys)
    assert status == 2 and flag in line
    assert os.listdir(tmp_path) == []


def test_values_checked_after_parsing_are_one_line(demo_data, ckpt, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = os.path.join(demo_data, "dots1", "dots1-a-p001.png")
    cases = [(train.main, ["--image-size", "16"], "--image-size 16"),
             (T.main, ["--image-size", "16", "--ckpt", ckpt], "--image-size 16"),
             (gen.main, [target, "--ckpt", ckpt, "--size", "8", "8"], "--size 8 8"),
             # the flag is too small, not the 48 px image
             (gen.main, [target, "--ckpt", ckpt, "--image-size", "16"], "--image-size 16: must be at least 32 px"),
             (texnet.main, ["train", target, "--backbone", "random", "--image-size", "8"],
              "--image-size 8: must be at least 32 px for --layers relu1_1,"),
             (prepro.main, ["--demo", "--demo-classes", "99"], "--demo-classes 99"),
             (train.main, ["--data-dir", demo_data, "--image-size", "32", "--batch-size", "100", "--ckpt-dir",
                           "ckpt", "--log-dir", "log"], "--batch-size 100")]
    for main, argv, flag in cases:
        status, line = fails(main, argv, capsys)
        assert status == 1 and flag in line, line
    assert os.listdir(tmp_path) == []


def test_sizes_that_do_not_fit_in_memory_are_refused_before_allocating(ckpt, demo_data, tmp_path, capsys,
                                                                       monkeypatch):
    """On a machine with 2 GB free: a 1024 px output of a 48 px target (too small a target for coarse to
    fine: refined at full size, about 4.4 GB), a
    2048 px image with --full (refined at full size, about 16.4 GB) and a demo set of 2048 px patches
    are refused with both figures; nothing is written."""
    monkeypatch.setattr(memory, "available", lambda device: 2 * memory.GB)
    target = os.path.join(demo_data, "dots1", "dots1-a-p001.png")
    big = tmp_path / "big-a-p001.png"
    Image.fromarray(np.indices((2048, 2048)).sum(0).astype(np.uint8)).save(big)  # not uniform: that is refused first
    out = tmp_path / "g"
    for argv, why in [([target, "--size", "1024", "1024"], "--size 1024 1024: 1 output(s) of 1024x1024 at once, "
                                                           "about 4.4 GB needed, 2.0 GB available"),
                      ([str(big), "--full"], "--full: 1 output(s) of 2048x2048 at once, about 16.4 GB needed")]:
        status, line = fails(gen.main, [*argv, "--ckpt", ckpt, "--gen-dir", str(out)], capsys)
        assert status == 1 and line.startswith(f"1 of 1 target(s) failed: {argv[0]} ({why}") and not out.exists()
    status, line = fails(prepro.main, ["--demo", "--data-dir", str(tmp_path / "demo"), "--demo-size", "2048",
                                       "--demo-photos", ""], capsys)
    assert status == 1 and line.startswith("prepro.py: error: --demo-size 2048: 240 patches of 2048 px, about 3.")
    assert line.endswith("GB needed, 2.0 GB available") and not (tmp_path / "demo").exists()
    monkeypatch.undo()
    assert memory.available(torch.device("cpu")) > 0  # this machine tells (/proc/meminfo or psutil)


def test_gen_target_below_the_networks_32_px_is_named(ckpt, tmp_path, capsys):
    small = tmp_path / "small-a-p001.png"
    small.write_bytes(png(24))
    with pytest.raises(SystemExit, match=r"1 of 1 target\(s\) failed: .*small-a-p001.png"):
        gen.main([str(small), "--ckpt", ckpt, "--gen-dir", str(tmp_path / "g")])
    err = capsys.readouterr().err
    assert f"{small}: 24x24 is too small" in err and "32 px" in err and "Traceback" not in err


@pytest.mark.parametrize("colour", [False, True], ids=["grey", "colour"])
def test_uniform_target_is_refused_in_one_line_naming_it(colour, tmp_path, capsys):
    """A target of one grey level or one colour has no texture: gen.py and texnet.py say so in one line
    naming the file, exit non-zero and write no output; a uniform centre crop of a textured image is
    named as the crop."""
    flat = tmp_path / "flat-a-p001.png"
    Image.fromarray(np.full((48, 48, 3), (200, 30, 90), np.uint8) if colour else np.full((48, 48), 200, np.uint8)).save(flat)
    out = tmp_path / "g"
    with pytest.raises(SystemExit, match=r"1 of 1 target\(s\) failed: .*flat-a-p001.png \(the image is uniform"):
        gen.main([str(flat), "--backbone", "random", "--gen-dir", str(out)])
    err = capsys.readouterr().err
    kind = "colour" if colour else "grey level"
    assert f"{flat}: the image is uniform, one {kind} throughout" in err and "Traceback" not in err
    assert not list(out.glob("**/*.png"))
    status, line = fails(texnet.main, ["train", str(flat), "--backbone", "random", "--texnet-dir", str(tmp_path / "t")],
                         capsys)
    assert status == 1 and line == f"{flat}: the image is uniform, one {kind} throughout: there is no texture to synthesise"
    assert not (tmp_path / "t").exists()
    # a textured image whose centre crop is flat: the crop is named, and --full is the way out
    framed = tmp_path / "framed-a-p001.png"
    a = np.random.default_rng(0).integers(0, 256, (96, 96), dtype=np.uint8)
    a[16:80, 16:80] = 120
    Image.fromarray(a).save(framed)
    with pytest.raises(SystemExit):
        gen.main([str(framed), "--backbone", "random", "--image-size", "64", "--gen-dir", str(out)])
    assert f"{framed}: its centre 64x64 crop (--full takes the whole image) is uniform" in capsys.readouterr().err


# ---- data: image modes, interrupted downloads and bad zips through `python prepro.py` --------------

def test_rgb_rgba_palette_and_16bit_pngs_are_converted_by_the_command(tmp_path, capsys):
    gray = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    rgb = np.stack([gray] * 3, -1)
    writers = {"L": lambda p: Image.fromarray(gray).save(p),
               "RGB": lambda p: Image.fromarray(rgb).save(p),
               "RGBA": lambda p: Image.fromarray(np.dstack([rgb, np.full_like(gray, 9)])).save(p),
               "P": lambda p: Image.fromarray(rgb).quantize(256).save(p),
               "I;16": lambda p: Image.fromarray(gray.astype(np.uint16) * 257).save(p)}
    for c in ("aa1", "bb1"):
        os.makedirs(tmp_path / c)
        for s, (mode, write) in zip("abcde", writers.items()):
            write(tmp_path / c / f"{c}-{s}-p001.png")
            assert Image.open(tmp_path / c / f"{c}-{s}-p001.png").mode.startswith(mode[0])
    prepro.main(["--data-dir", str(tmp_path), "--image-size", "32"])
    out = capsys.readouterr()
    assert "2 classes, 10 images of 40x40" in out.out and "left out" not in out.err
    s = folders.load_data(str(tmp_path), "all", image_size=32)
    for f, img in zip(s.train_files, s.train_images):
        if "-c-" not in f:  # the palette image is quantised; the others are exactly the grey levels
            assert torch.equal(img, torch.from_numpy(gray)), f


class ZipServer(http.server.BaseHTTPRequestHandler):
    """Per-class zips from memory with HTTP Range support; a name in `cut` is cut off half-way, once."""
    files, cut, seen = {}, set(), []

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[1]
        if name not in self.files:
            return self.send_error(404)
        data = self.files[name]
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        self.seen.append((name, start))
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if name in self.cut:
            self.cut.discard(name)
            body, self.close_connection = body[:len(body) // 2], True
        self.wfile.write(body)


def class_zip(c, extra=()):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, s in enumerate("abcd"):
            z.writestr(f"{c}/{c}-{s}-p001.png", png(40, seed=k))
        for name, data in extra:
            z.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


@pytest.fixture
def zips():
    """A local server (127.0.0.1) publishing the 28 class zips; returns its handler class and URL."""
    handler = type("Handler", (ZipServer,), {"cut": set(), "seen": [],
                                             "files": {f"{c}-without-rotations.zip": class_zip(c)
                                                       for c in kylberg.KYLBERG}})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}/zips/"
    httpd.shutdown()
    httpd.server_close()


def fetch_argv(tmp_path, url):
    (tmp_path / "kylberg").mkdir(exist_ok=True)  # an empty folder made for the download
    return ["--url", url, "--zips-dir", str(tmp_path / "zips"), "--data-dir", str(tmp_path / "kylberg"),
            "--image-size", "32"]


def test_download_cut_half_way_then_run_again_resumes(zips, tmp_path, capsys):
    handler, url = zips
    name = "floor1-without-rotations.zip"
    handler.cut.add(name)
    status, line = fails(prepro.main, fetch_argv(tmp_path, url), capsys)
    assert status == 1 and f"{url}{name}" in line and "run again to resume" in line
    before = kylberg.KYLBERG[:kylberg.KYLBERG.index("floor1")]
    done = {k: v for k, v in snapshot(tmp_path / "zips").items() if not k.endswith(".part")}
    assert done == {f"{c}-without-rotations.zip": hashlib.sha1(handler.files[f"{c}-without-rotations.zip"])
                    .hexdigest() for c in before}
    half = os.path.getsize(tmp_path / "zips" / (name + ".part"))
    assert 0 < half < len(handler.files[name]) and not os.listdir(tmp_path / "kylberg")

    handler.seen.clear()
    prepro.main(fetch_argv(tmp_path, url))
    assert "28 classes, 112 images" in capsys.readouterr().out
    assert handler.seen[0] == (name, half)  # resumed where it stopped; the whole zips are not fetched again
    assert len(handler.seen) == 28 - len(before)
    assert {k: v for k, v in snapshot(tmp_path / "zips").items() if k in done} == done


@pytest.mark.parametrize("kind", ["truncated", "../ entry", "absolute entry"])
def test_bad_zip_keeps_what_was_fetched_and_extracted_before(kind, zips, tmp_path, capsys):
    handler, url = zips
    name = "rice1-without-rotations.zip"
    good = handler.files[name]
    handler.files[name] = {"truncated": good[:len(good) * 2 // 3],
                           "../ entry": class_zip("rice1", [("../evil.png", png())]),
                           "absolute entry": class_zip("rice1", [(str(tmp_path / "evil.png"), png())])}[kind]
    status, line = fails(prepro.main, fetch_argv(tmp_path, url), capsys)
    assert status == 1 and str(tmp_path / "zips" / name) in line
    assert ("truncated or corrupt" if kind == "truncated" else "outside the data folder") in line
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "zips" / "evil.png").exists()
    staged = tmp_path / "kylberg.partial"
    before = kylberg.KYLBERG[:kylberg.KYLBERG.index("rice1")]
    assert sorted(os.listdir(staged)) == sorted(before) and not os.listdir(tmp_path / "kylberg")
    kept = {"zips": snapshot(tmp_path / "zips"), "staged": snapshot(staged)}
    inode = os.stat(staged / "blanket1" / "blanket1-a-p001.png").st_ino

    handler.files[name] = good  # as the message says: delete the zip and run again
    os.remove(tmp_path / "zips" / name)
    prepro.main(fetch_argv(tmp_path, url))
    assert "28 classes, 112 images" in capsys.readouterr().out
    assert {k: v for k, v in snapshot(tmp_path / "zips").items() if k in kept["zips"] and k != name} == \
        {k: v for k, v in kept["zips"].items() if k != name}
    data = snapshot(tmp_path / "kylberg")
    assert {k: data[k] for k in kept["staged"]} == kept["staged"]
    assert os.stat(tmp_path / "kylberg" / "blanket1" / "blanket1-a-p001.png").st_ino == inode  # not extracted again


# ---- checkpoints given to each script -----------------------------------------------------------

@pytest.mark.parametrize("kind, message", [
    ("truncated", "unreadable checkpoint, truncated or corrupt"),
    ("other arch", "weights do not fit vgg19_bn"),
    ("pickled object", "refused, it holds objects other than tensors"),
    ("not a checkpoint", "not a checkpoint of this project"),
])
def test_gen_refuses_a_damaged_checkpoint(kind, message, ckpt, demo_data, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    path = spoiled(ckpt, tmp_path / f"{kind}.pt", kind, marker)
    earlier = tmp_path / "g" / "dots1"
    earlier.mkdir(parents=True)
    (earlier / "final.png").write_bytes(png(32))
    kept = snapshot(tmp_path / "g")
    target = os.path.join(demo_data, "dots1", "dots1-a-p001.png")
    status, line = fails(gen.main, [target, "--ckpt", path, "--gen-dir", str(tmp_path / "g")], capsys)
    assert status == 1 and line.startswith(path) and message in line
    assert not marker.exists() and snapshot(tmp_path / "g") == kept


def test_gen_accepts_a_checkpoint_of_other_classes(ckpt, demo_data, tmp_path):
    """Synthesis only needs the features: other classes are no error, the verdict just has no target class."""
    path = spoiled(ckpt, tmp_path / "five.pt", "other class count")
    target = os.path.join(demo_data, "dots1", "dots1-a-p001.png")
    gen.main([target, "--ckpt", path, "--gen-dir", str(tmp_path / "g"), "--steps", "1", "--image-size", "32",
              "--snapshot-every", "0", "--refine-steps", "0"])
    r = json.load(open(tmp_path / "g" / "dots1" / "result.json"))
    assert r["status"] == "ok" and r["verdict"]["target_class"] is None and r["verdict"]["predicted"] in \
        [f"x{i}" for i in range(5)]


@pytest.mark.parametrize("kind, message", [
    ("pickled object", "refused, it holds objects other than tensors"),
    ("other class count", "trained for 5 classes, this data has 3"),
    ("other arch", "weights do not fit vgg19_bn"),
])
def test_train_resume_refuses_a_checkpoint_it_cannot_use(kind, message, ckpt, demo_data, tmp_path, capsys):
    marker, folder = tmp_path / "code-ran", tmp_path / "ckpt"
    folder.mkdir()
    (folder / "hparams.json").write_text("{}")
    spoiled(ckpt, folder / C.ckpt_name(4), kind, marker)
    kept = snapshot(folder)
    status, line = fails(train.main, ["--resume", "--ckpt-dir", str(folder), "--data-dir", demo_data,
                                      "--image-size", "32", "--batch-size", "4", "--log-dir", str(tmp_path / "log")],
                         capsys)
    assert status == 1 and str(folder) in line and message in line
    assert not marker.exists() and snapshot(folder) == kept and not (tmp_path / "log").exists()


def test_test_refuses_a_pickled_payload_without_running_it(ckpt, demo_data, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    path = spoiled(ckpt, tmp_path / "evil.pt", "pickled object", marker)
    status, line = fails(T.main, ["--data-dir", demo_data, "--image-size", "32", "--ckpt", path,
                                  "--test-dir", str(tmp_path / "out")], capsys)
    assert status == 1 and line.startswith(path) and "refused" in line
    assert not marker.exists() and not (tmp_path / "out").exists()


# ---- outputs that cannot be written -------------------------------------------------------------

def test_test_report_that_cannot_be_written_keeps_the_earlier_one(ckpt, demo_data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"  # the checkpoint records no data settings: --split all evaluates anyway
    argv = ["--data-dir", demo_data, "--image-size", "32", "--ckpt", ckpt, "--split", "all", "--test-dir", str(out)]
    T.main(argv)
    kept = snapshot(out)
    assert {"report.json", "confusion.png"} <= set(kept)
    monkeypatch.setattr(json, "dump", disk_full(json.dump, out))
    status, line = fails(T.main, argv, capsys)
    assert status == 1 and f"--test-dir {out}" in line and "No space left on device" in line
    assert snapshot(out) == kept
    monkeypatch.undo()
    (tmp_path / "file").write_text("")
    status, line = fails(T.main, argv[:-1] + [str(tmp_path / "file" / "out")], capsys)
    assert status == 1 and "--test-dir" in line and "cannot write there" in line


def test_gen_outputs_that_cannot_be_written_keep_the_earlier_ones(ckpt, demo_data, tmp_path, capsys, monkeypatch):
    target = os.path.join(demo_data, "dots1", "dots1-a-p001.png")
    argv = [target, "--ckpt", ckpt, "--steps", "1", "--refine-steps", "0", "--image-size", "32", "--snapshot-every",
            "0", "--gen-dir"]
    gen.main(argv + [str(tmp_path / "g")])
    kept = snapshot(tmp_path / "g")
    assert "dots1/final.png" in kept
    monkeypatch.setattr(Image.Image, "save", disk_full(Image.Image.save, tmp_path / "g"))
    status, line = fails(gen.main, argv + [str(tmp_path / "g")], capsys)
    assert status == 1 and f"--gen-dir {tmp_path / 'g'}" in line and "No space left on device" in line
    assert snapshot(tmp_path / "g") == kept
    monkeypatch.undo()
    (tmp_path / "file").write_text("")
    status, line = fails(gen.main, argv + [str(tmp_path / "file" / "g")], capsys)
    assert status == 1 and "--gen-dir" in line and "cannot write there" in line


def test_failed_targets_leave_earlier_outputs_of_others_intact(ckpt, demo_data, tmp_path, capsys):
    a, b = (os.path.join(demo_data, c, f"{c}-a-p001.png") for c in ("dots1", "stripes1"))
    argv = ["--ckpt", ckpt, "--steps", "1", "--refine-steps", "0", "--image-size", "32", "--snapshot-every", "0",
            "--gen-dir", str(tmp_path / "g")]
    gen.main([a, *argv])
    kept = snapshot(tmp_path / "g" / "dots1")
    missing = str(tmp_path / "nothere-a-p001.png")
    status, line = fails(gen.main, [missing, b, *argv], capsys)
    assert status == 1 and "1 of 2 target(s) failed" in line and missing in line
    assert snapshot(tmp_path / "g" / "dots1") == kept
    assert (tmp_path / "g" / "stripes1" / "final.png").exists()
