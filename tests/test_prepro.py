"""prepro.py: file names, image modes, the demo set, splits, the cache, batches, and the download path
against a local HTTP server on 127.0.0.1 serving per-class zips in the real Kylberg layout."""
import http.server
import io
import json
import os
import shutil
import socket
import threading
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import prepro
from texture.data import folders, images, kylberg, photographs, procedural
from texture.data.batches import Batches


def png_bytes(size=40, seed=0, mode="L"):
    a = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a, "L").convert(mode).save(buf, "PNG")
    return buf.getvalue()


def write_dataset(root, classes=("aa1", "bb1"), per_sample=1, size=40):
    for ci, c in enumerate(classes):
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for si, s in enumerate("abcd"):
            for k in range(per_sample):
                with open(os.path.join(root, c, f"{c}-{s}-p{k + 1:03d}.png"), "wb") as f:
                    f.write(png_bytes(size, seed=ci * 100 + si * 10 + k))
    return str(root)


# ---- names and image modes -------------------------------------------------------------------

def test_label_from_filename_accepts_both_kylberg_variants():
    assert images.label_from_filename("blanket1-a-p001.png") == "blanket1"
    assert images.label_from_filename("rice1.b-p001.png") == "rice1"
    assert images.label_from_filename("some/dir/stoneslab1-d-p040.png") == "stoneslab1"
    with pytest.raises(images.DataError, match="notkylberg.png"):
        images.label_from_filename("notkylberg.png")


def test_load_gray_converts_rgb_rgba_palette_and_16bit(tmp_path):
    gray = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    rgb = np.stack([gray] * 3, -1)
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full_like(gray, 7)]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb, "RGB").quantize(4).save(tmp_path / "palette.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # 16-bit PNG
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    for name in ["rgb", "rgba", "palette", "deep"]:
        out = images.load_gray(tmp_path / f"{name}.png")
        assert out.dtype == torch.uint8 and out.shape == (2, 2), name
        assert torch.equal(out, torch.from_numpy(gray)), name  # 16-bit is rescaled, not clipped to 255


def test_load_gray_maps_float_and_32_bit_ranges_and_16_bit_pgm(tmp_path):
    """Float TIFFs and 32-bit integer TIFFs map their own range to 0..255 (a float image in [0, 1]
    once became all zeros, a 32-bit one all 255); a 16-bit PGM, which Pillow decodes as mode I, is
    rescaled as 16 bits."""
    gray = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    Image.fromarray(gray.astype(np.float32) / 255).save(tmp_path / "unit.tif")
    Image.fromarray(gray.astype(np.float32) * 3.5 - 100).save(tmp_path / "signed.tif")
    Image.fromarray(gray.astype(np.int32) * 1_000_000).save(tmp_path / "deep32.tif")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "deep.pgm")
    for name, mode in [("unit.tif", "F"), ("signed.tif", "F"), ("deep32.tif", "I"), ("deep.pgm", "I")]:
        assert Image.open(tmp_path / name).mode == mode, name
        assert torch.equal(images.load_gray(tmp_path / name), torch.from_numpy(gray)), name
    Image.fromarray(np.full((2, 2), np.nan, np.float32)).save(tmp_path / "nan.tif")
    with pytest.raises(images.DataError, match="nan.tif: unreadable image .no finite pixel value"):
        images.load_gray(tmp_path / "nan.tif")


def test_load_gray_and_load_image_turn_a_photograph_upright_by_its_exif_orientation(tmp_path):
    stored = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40  # as the camera wrote the pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the viewer turns it 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "camera.png", exif=exif)
    Image.fromarray(stored).save(tmp_path / "plain.png")
    assert torch.equal(images.load_gray(tmp_path / "camera.png"), torch.from_numpy(np.rot90(stored, -1).copy()))
    assert torch.equal(images.load_gray(tmp_path / "plain.png"), torch.from_numpy(stored))
    # in colour too (gen.py's --colour auto): a phone's colour photograph is stored on its side as well
    rgb = np.stack([stored, 255 - stored, stored // 2], -1)
    Image.fromarray(rgb).save(tmp_path / "colour.png", exif=exif)
    upright = torch.from_numpy(np.rot90(rgb, -1).copy()).permute(2, 0, 1)
    assert torch.equal(images.load_image(tmp_path / "colour.png"), upright)
    assert torch.equal(images.load_image(tmp_path / "colour.png", "grey"), images.load_gray(tmp_path / "colour.png"))


def test_a_phones_heic_photograph_is_read_in_colour_and_found_in_a_folder(tmp_path):
    y, x = np.mgrid[0:48, 0:64]
    rgb = np.stack([x * 4, y * 5, 255 - x * 2], -1).astype(np.uint8)  # smooth, so the lossy codec keeps it close
    Image.fromarray(rgb).save(tmp_path / "IMG_0001.HEIC", quality=95)
    img = images.load_image(tmp_path / "IMG_0001.HEIC")
    assert img.shape == (3, 48, 64) and (img.float() - torch.from_numpy(rgb).permute(2, 0, 1)).abs().mean() < 3
    assert images.load_gray(tmp_path / "IMG_0001.HEIC").shape == (48, 64)
    assert images.is_image("phone/IMG_0001.HEIC") and images.is_image("IMG_0002.heif")


def test_load_gray_names_an_unreadable_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(png_bytes()[:60])
    with pytest.raises(images.DataError, match="broken.png"):
        images.load_gray(bad)


# ---- demo set --------------------------------------------------------------------------------

def test_demo_has_kylberg_layout_and_normalisation(demo_data):
    classes = sorted(d for d in os.listdir(demo_data) if os.path.isdir(os.path.join(demo_data, d)))
    assert classes == sorted(list(procedural.FAMILIES)[:3])
    for c in classes:
        files = sorted(os.listdir(os.path.join(demo_data, c)))
        assert files == [f"{c}-{s}-p{k:03d}.png" for s in "abcd" for k in (1, 2)]
        img = images.load_gray(os.path.join(demo_data, c, files[0])).float()
        assert img.shape == (48, 48)
        assert abs(img.mean() - 127) < 3 and abs(img.std() - 40) < 4


def test_demo_is_seeded_and_samples_differ(tmp_path):
    a = procedural.make_demo(str(tmp_path / "a"), classes=2, patches=4, size=32, seed=1)
    procedural.make_demo(str(tmp_path / "b"), classes=2, patches=4, size=32, seed=1)
    procedural.make_demo(str(tmp_path / "c"), classes=2, patches=4, size=32, seed=2)
    read = lambda d, c, s: (tmp_path / d / c / f"{c}-{s}-p001.png").read_bytes()
    for c in a:
        assert read("a", c, "a") == read("b", c, "a")
        assert read("a", c, "a") != read("c", c, "a")
        assert read("a", c, "a") != read("a", c, "b")


def test_demo_command_writes_ten_classes_to_data_dir_and_records_settings(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    prepro.main(["--demo", "--data-dir", str(out), "--demo-classes", "10", "--demo-patches", "4", "--demo-size", "32",
                 "--demo-photos", ""])
    printed = capsys.readouterr().out
    assert "--image-size 224 capped to the demo's 32 px patches" in printed
    assert f"{out}: 10 classes, 40 images of 32x32" in printed
    assert json.loads((out / "prepro_args.json").read_text())["demo_classes"] == 10
    prepro.main(["--demo", "--data-dir", str(tmp_path / "small"), "--demo-classes", "2", "--demo-patches", "4",
                 "--demo-size", "40", "--image-size", "32", "--demo-photos", ""])
    assert "capped" not in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)  # no --data-dir: data/demo
    prepro.main(["--demo", "--demo-classes", "1", "--demo-patches", "4", "--demo-size", "32", "--demo-photos", ""])
    assert "data/demo: 1 classes, 4 images" in capsys.readouterr().out and (tmp_path / "data" / "demo").is_dir()
    with pytest.raises(images.DataError, match="demo-classes"):
        procedural.make_demo(str(tmp_path / "x"), classes=len(procedural.FAMILIES) + 1)


def dated(root):
    """{path: (bytes, modification time)} of every file under root."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_demo_again_reuses_the_same_set_and_refuses_other_settings_keeping_it(tmp_path, capsys):
    argv = ["--demo", "--data-dir", str(tmp_path / "demo"), "--demo-classes", "2", "--demo-patches", "4",
            "--demo-size", "32", "--demo-photos", ""]
    prepro.main(argv)
    kept = dated(tmp_path / "demo")
    capsys.readouterr()
    prepro.main(argv)
    assert f"{tmp_path / 'demo'}: the demo set made with these settings is already there, reused as it is" in \
        capsys.readouterr().out
    for other, why in [(["--demo-size", "48"], "--demo-size 32, not 48"), (["--seed", "1"], "--seed 0, not 1"),
                       (["--demo-photos", "brick"], "--demo-photos '', not brick"),
                       (["--split", "source"], "--split patch, not source")]:
        with pytest.raises(SystemExit, match=rf"^prepro.py: error: --data-dir {tmp_path / 'demo'}: holds the demo set "
                                             rf"(made|prepared) with {why}: pick another --data-dir"):
            prepro.main(argv + other)
    assert dated(tmp_path / "demo") == kept  # nothing replaced, nothing rewritten, dates included
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="mine: holds files but no demo set made by this project, which are kept"):
        prepro.main(argv[:1] + ["--data-dir", str(tmp_path / "mine")])
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_a_mistyped_data_dir_starts_no_download(tmp_path, monkeypatch):
    """Only the default Kylberg folder, or an empty folder made for it, may be filled by the download."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(prepro, "fetch_kylberg", lambda *a: pytest.fail("the download started"))
    with pytest.raises(SystemExit, match=r"^prepro.py: error: --data-dir data/kylbreg: no such folder; the download "
                                         r"fills only data/kylberg or an empty folder: create it first"):
        prepro.main(["--data-dir", "data/kylbreg"])
    assert not os.path.exists("data")

def test_demo_photographs_are_classes_whose_samples_are_quadrants(tmp_path, capsys):
    out = tmp_path / "demo"
    prepro.main(["--demo", "--data-dir", str(out), "--demo-classes", "1", "--demo-patches", "8", "--demo-size", "32",
                 "--demo-photos", "brick,hubble_deep_field", "--split", "source", "--image-size", "32"])
    assert "3 classes, 24 images of 32x32, split source: 18 train / 6 test" in capsys.readouterr().out
    parts = dict(zip("abcd", photographs.quadrants(photographs.photograph("brick"))))
    for letter, part in parts.items():
        windows = np.lib.stride_tricks.sliding_window_view(part, (32, 32))
        for k in (1, 2):
            patch = images.load_gray(str(out / "brick" / f"brick-{letter}-p{k:03d}.png")).numpy()
            assert (windows == patch).all((2, 3)).any(), f"brick-{letter}-p{k:03d} is not a crop of quadrant {letter}"
    split = json.loads((out / "split_source.json").read_text())
    assert all("-d-" in f for f in split["test"]) and not any("-d-" in f for f in split["train"])
    with pytest.raises(SystemExit, match="--demo-photos 'bricks'"):
        prepro.main(["--demo", "--data-dir", str(tmp_path / "x"), "--demo-photos", "bricks"])
    with pytest.raises(images.DataError, match="--demo-size 300"):
        procedural.make_demo(str(tmp_path / "y"), classes=1, size=300, photographs=("brick",))
    assert not (tmp_path / "y").exists()


# ---- splits and cache ------------------------------------------------------------------------

def test_patch_split_is_stratified_deterministic_and_written(demo_data):
    s = folders.load_data(demo_data, "patch", test_fraction=0.25, image_size=32, seed=3)
    assert set(s.train_files).isdisjoint(s.test_files) and len(s.train_files) + len(s.test_files) == 24
    assert torch.bincount(s.test_labels).tolist() == [2, 2, 2]
    assert s.train_images.shape == (18, 48, 48) and s.train_images.dtype == torch.uint8
    assert s.train_labels.dtype == torch.int64
    again = folders.load_data(demo_data, "patch", test_fraction=0.25, image_size=32, seed=3)
    assert again.test_files == s.test_files
    record = json.loads(open(os.path.join(demo_data, "split_patch.json")).read())
    assert record["test"] == s.test_files and record["train"] == s.train_files


def test_source_split_holds_out_every_patch_of_sample_d(demo_data):
    s = folders.load_data(demo_data, "source", image_size=32)
    assert s.test_files and all("-d-p" in f for f in s.test_files)
    assert not any("-d-p" in f for f in s.train_files)
    assert len(s.test_files) == 6


def test_source_split_names_files_it_cannot_use(tmp_path):
    data = write_dataset(tmp_path / "d")
    os.rename(os.path.join(data, "aa1", "aa1-a-p001.png"), os.path.join(data, "aa1", "photo.png"))
    with pytest.raises(images.DataError, match=r"aa1/photo.png: --split source needs names"):
        folders.load_data(data, "source", image_size=32)
    os.remove(os.path.join(data, "aa1", "photo.png"))
    for s in "bcd":
        os.remove(os.path.join(data, "bb1", f"bb1-{s}-p001.png"))
    with pytest.raises(images.DataError, match=r"bb1: --split source needs two or more samples"):
        folders.load_data(data, "source", image_size=32)


def test_split_all_trains_and_tests_on_everything(demo_data):
    s = folders.load_data(demo_data, "all", image_size=32)
    assert s.train_files == s.test_files and len(s.test_files) == 24
    assert torch.equal(s.train_images, s.test_images) and torch.equal(s.train_labels, s.test_labels)


def test_cache_is_reused_then_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
    data = write_dataset(tmp_path / "d")
    first = folders.load_data(data, "all", image_size=32)
    assert os.path.isfile(os.path.join(data, folders.CACHE))

    def no_decode(*a):
        raise AssertionError("decoded again although nothing changed")

    with monkeypatch.context() as m:
        m.setattr(folders, "_decode", no_decode)
        assert torch.equal(folders.load_data(data, "all", image_size=32).train_images, first.train_images)
    changed = os.path.join(data, "aa1", "aa1-a-p001.png")
    with open(changed, "wb") as f:
        f.write(png_bytes(40, seed=999))
    i = first.train_files.index("aa1/aa1-a-p001.png")
    rebuilt = folders.load_data(data, "all", image_size=32)
    assert torch.equal(rebuilt.train_images[i], images.load_gray(changed))
    with open(os.path.join(data, "bb1", "bb1-a-p002.png"), "wb") as f:
        f.write(png_bytes(40, seed=5))
    assert len(folders.load_data(data, "all", image_size=32).train_files) == 9


def test_mixed_sizes_are_centre_cropped_to_the_common_minimum(tmp_path):
    data = write_dataset(tmp_path / "d", size=40)
    big = np.random.default_rng(0).integers(0, 256, (50, 44), dtype=np.uint8)
    Image.fromarray(big).save(os.path.join(data, "aa1", "aa1-a-p009.png"))
    s = folders.load_data(data, "all", image_size=32)
    assert s.train_images.shape[1:] == (40, 40)
    i = s.train_files.index("aa1/aa1-a-p009.png")
    assert torch.equal(s.train_images[i], torch.from_numpy(big[5:45, 2:42]))



def test_center_crop_keeps_short_sides_whole_and_rounds_odd_margins_down():
    img = torch.arange(5 * 8).view(5, 8)
    assert torch.equal(images.center_crop(img, 3), img[1:4, 2:5])  # margins 2 and 5: 1 and 2 above/left
    assert torch.equal(images.center_crop(img, 6), img[:, 1:7])  # 5 rows < 6: all kept, not padded
    assert torch.equal(images.center_crop(img, 2, 4), img[1:3, 2:6])
    batch = torch.stack([img, img + 100])
    assert torch.equal(images.center_crop(batch, 3), torch.stack([img[1:4, 2:5], img[1:4, 2:5] + 100]))

# ---- batches ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def split(demo_data):
    return folders.load_data(demo_data, "all", image_size=32)


def test_training_batches_shapes_range_and_determinism(split):
    make = lambda workers: Batches(split.train_images, split.train_labels, 5, 32, True, seed=1, workers=workers)
    b = make(0)
    assert len(b) == 4
    batches = list(b)
    assert len(batches) == 4
    for x, y in batches:
        assert x.shape == (5, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert 0 <= x.min() and x.max() <= 1
    threaded = list(make(2))
    assert len(threaded) == len(batches)
    assert all(torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]) for a, c in zip(batches, threaded))
    b.set_epoch(1)
    assert not torch.equal(next(iter(b))[0], batches[0][0])


def test_augmentation_yields_exactly_the_eight_symmetries_of_a_crop():
    img = torch.arange(16, dtype=torch.uint8).view(1, 4, 4)
    b = Batches(img, torch.zeros(1, dtype=torch.int64), 1, 4, True)
    seen = set()
    for epoch in range(60):
        b.set_epoch(epoch)
        seen.add(tuple((next(iter(b))[0] * 255).round().long().flatten().tolist()))
    base = img[0].long()
    assert seen == {tuple(torch.rot90(t, k).flatten().tolist()) for k in range(4) for t in (base, base.flip(1))}


def test_training_shards_are_equal_and_disjoint_across_ranks(split):
    ranks = [Batches(split.train_images, split.train_labels, 4, 32, True, seed=7, rank=r, world_size=3)
             for r in range(3)]
    shards = [b.indices() for b in ranks]
    assert {len(b) for b in ranks} == {2} and {len(s) for s in shards} == {8}
    assert len(set(torch.cat(shards).tolist())) == 24


def test_evaluation_is_in_order_sharded_and_keeps_the_remainder(split):
    ev = [Batches(split.test_images, split.test_labels, 5, 32, False, rank=r, world_size=2) for r in range(2)]
    got = [torch.cat([y for _, y in b]) for b in ev]
    assert sorted(torch.cat([b.indices() for b in ev]).tolist()) == list(range(24))
    assert torch.equal(got[0], split.test_labels[0::2]) and len(ev[0]) == 3
    x, _ = next(iter(ev[0]))
    assert torch.equal(x[0, 0], split.test_images[0, 8:40, 8:40].float() / 255)
    full = Batches(split.test_images, split.test_labels, 5, 32, False, crop="full")
    assert next(iter(full))[0].shape == (5, 1, 48, 48)


# ---- download path, against a local server ---------------------------------------------------

class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (bytes=N-), recording the Range headers it was sent."""
    ranges = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            return self.send_error(404)
        data = open(path, "rb").read()
        start = 0
        if rng := self.headers.get("Range"):
            RangeHandler.ranges.append((os.path.basename(path), rng))
            start = int(rng.split("=")[1].split("-")[0])
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    handler = lambda *a, **k: RangeHandler(*a, directory=str(root), **k)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def class_zip(c, extra=()):
    """One class zip like Kylberg's: a folder of 4 patches (a..d), plus junk a Mac or Windows adds."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for s in "abcd":
            z.writestr(f"{c}/{c}-{s}-p001.png", png_bytes(40, seed=hash(c + s) % 1000))
        z.writestr(f"__MACOSX/{c}/._{c}-a-p001.png", b"resource fork")
        z.writestr(f"{c}/Thumbs.db", b"thumbs")
        for name, data in extra:
            z.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


def publish(server, case, changes=None):
    """Serve the 28 class zips under <case>/without-rotations-zip/; changes maps class -> zip bytes."""
    root, base = server
    folder = root / case / "without-rotations-zip"
    folder.mkdir(parents=True)
    for c in kylberg.KYLBERG:
        (folder / f"{c}-without-rotations.zip").write_bytes((changes or {}).get(c) or class_zip(c))
    return folder, f"{base}/{case}/without-rotations-zip/"


def run_prepro(tmp_path, url, *more):
    (tmp_path / "kylberg").mkdir(exist_ok=True)  # an empty folder made for the download
    argv = ["--url", url, "--zips-dir", str(tmp_path / "zips"), "--data-dir", str(tmp_path / "kylberg"),
            "--image-size", "32", *more]
    prepro.main(argv)
    return tmp_path / "kylberg"


def test_download_and_extract_the_28_classes_resuming_a_partial_zip(server, tmp_path, capsys):
    folder, url = publish(server, "full")
    name = "blanket1-without-rotations.zip"
    whole = (folder / name).read_bytes()
    (tmp_path / "zips").mkdir()
    (tmp_path / "zips" / (name + ".part")).write_bytes(whole[: len(whole) // 2])
    data = run_prepro(tmp_path, url)
    assert (name, f"bytes={len(whole) // 2}-") in RangeHandler.ranges
    assert (tmp_path / "zips" / name).read_bytes() == whole
    assert sorted(os.listdir(data)) == sorted(kylberg.KYLBERG + ["prepro_args.json", folders.CACHE, "split_patch.json"])
    assert sorted(os.listdir(data / "rice1")) == [f"rice1-{s}-p001.png" for s in "abcd"]  # no junk
    assert "28 classes, 112 images of 40x40, split patch: 84 train / 28 test" in capsys.readouterr().out


def test_hand_placed_zips_need_no_network(server, tmp_path, capsys):
    folder, _ = publish(server, "byhand")
    shutil.copytree(folder, tmp_path / "zips")
    data = run_prepro(tmp_path, "http://127.0.0.1:9/nothing-here/")
    assert len(folders.load_data(str(data), image_size=32).classes) == 28


@pytest.mark.parametrize("entry", ["../evil.png", "/abs-evil.png"])
def test_zip_slip_is_refused_naming_the_archive(server, tmp_path, entry):
    _, url = publish(server, "slip" + str(len(entry)), {"canvas1": class_zip("canvas1", [(entry, png_bytes())])})
    with pytest.raises(SystemExit, match=r"canvas1-without-rotations\.zip: refused"):
        run_prepro(tmp_path, url)
    assert not (tmp_path / "evil.png").exists() and not os.path.exists("/abs-evil.png")
    assert not os.listdir(tmp_path / "kylberg") and not (tmp_path / "kylberg.partial" / "canvas1").exists()


def test_truncated_zip_is_reported_by_name_and_not_extracted(server, tmp_path):
    whole = class_zip("floor2")
    _, url = publish(server, "truncated", {"floor2": whole[: len(whole) * 2 // 3]})
    with pytest.raises(SystemExit, match=r"floor2-without-rotations\.zip: truncated or corrupt"):
        run_prepro(tmp_path, url)
    assert not os.listdir(tmp_path / "kylberg")
    assert not (tmp_path / "kylberg.partial" / "floor2").exists()
    assert [e for e in os.listdir(tmp_path / "kylberg.partial") if e.startswith(".")] == []


def test_corrupt_png_in_a_valid_zip_is_reported_and_left_out(server, tmp_path, capsys):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for s in "abc":
            z.writestr(f"sand1/sand1-{s}-p001.png", png_bytes(40, seed=ord(s)))
        z.writestr("sand1/sand1-d-p001.png", png_bytes(40)[:100])
    _, url = publish(server, "badpng", {"sand1": buf.getvalue()})
    data = run_prepro(tmp_path, url)
    err = capsys.readouterr().err
    assert "sand1-d-p001.png: unreadable image" in err and "left out" in err
    split = json.loads((data / "split_patch.json").read_text())
    assert len(split["train"]) + len(split["test"]) == 111 and "sand1/sand1-d-p001.png" not in split["train"] + \
        split["test"]


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_server_gives_one_line_telling_how_to_proceed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        prepro.main(["--url", f"http://127.0.0.1:{closed_port()}/", "--zips-dir", "zips"])  # into data/kylberg
    msg = str(e.value.code)
    assert len(msg.splitlines()) == 1 and "download failed" in msg and "refused" in msg
    assert "--zips-dir" in msg and "--data-dir" in msg and "data/kylberg does not hold one" in msg
    assert capsys.readouterr().err == "" and not (tmp_path / "data").exists()
