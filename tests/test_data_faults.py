"""Bad data given to `python prepro.py`: one clear line on stderr, a non-zero exit, earlier outputs intact."""
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

import prepro
from texture.data import folders, images


def prepro_cli(cwd, *args):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "prepro.py"), *args],
                       cwd=cwd, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout, r.stderr.strip().splitlines()


def save_png(path, size):
    Image.fromarray(np.random.default_rng(size).integers(0, 256, (size, size), dtype=np.uint8)).save(path)


@pytest.fixture
def good(tmp_path, capsys):
    """A prepared 2-class dataset; returns it and the contents of the outputs prepro wrote."""
    for c in ("aa1", "bb1"):
        os.makedirs(tmp_path / "data" / c)
        for s in "abcd":
            save_png(tmp_path / "data" / c / f"{c}-{s}-p001.png", 40)
    prepro.main(["--data-dir", str(tmp_path / "data"), "--image-size", "32"])
    assert "2 classes, 8 images" in capsys.readouterr().out
    outputs = {f: (tmp_path / "data" / f).read_bytes() for f in ("split_patch.json", "prepro_args.json")}
    return tmp_path / "data", outputs


def assert_intact(data, outputs):
    for f, content in outputs.items():
        assert (data / f).read_bytes() == content, f
    assert len(folders.load_data(str(data), image_size=32).train_files) == 6


def test_images_smaller_than_the_crop_are_named(good):
    data, outputs = good
    save_png(data / "bb1" / "bb1-a-p002.png", 24)
    code, _, err = prepro_cli(data.parent, "--data-dir", "data", "--image-size", "32")
    assert code != 0 and len(err) == 1
    assert "bb1-a-p002.png" in err[0] and "smaller than the 32 px crop" in err[0]
    os.remove(data / "bb1" / "bb1-a-p002.png")
    assert_intact(data, outputs)


def test_class_folder_without_images_is_an_error(good):
    data, outputs = good
    os.makedirs(data / "cc1")
    (data / "cc1" / "notes.txt").write_text("no images here")
    code, _, err = prepro_cli(data.parent, "--data-dir", "data", "--image-size", "32")
    assert code != 0 and len(err) == 1 and "cc1: class folder has no images" in err[0]
    os.remove(data / "cc1" / "notes.txt")
    os.rmdir(data / "cc1")
    assert_intact(data, outputs)


def test_class_whose_images_are_all_unreadable_is_an_error(good):
    data, outputs = good
    os.makedirs(data / "cc1")
    (data / "cc1" / "cc1-a-p001.png").write_bytes(b"not a png")
    code, _, err = prepro_cli(data.parent, "--data-dir", "data", "--image-size", "32")
    assert code != 0 and "class cc1 has no readable image" in err[-1]
    assert "cc1-a-p001.png: unreadable image" in err[0]  # the warning names the file
    (data / "cc1" / "cc1-a-p001.png").unlink()
    os.rmdir(data / "cc1")
    assert_intact(data, outputs)


def test_missing_data_folder_is_named(tmp_path):
    with pytest.raises(images.DataError, match="nowhere: data folder not found"):
        folders.load_data(str(tmp_path / "nowhere"))
    # From the command line only data/kylberg or an empty folder is filled from --zips-dir or the
    # network: another missing folder is a typing error, named with how to proceed.
    code, _, err = prepro_cli(tmp_path, "--data-dir", "nowhere", "--zips-dir", "zips", "--url", "http://127.0.0.1:9/")
    assert code != 0 and len(err) == 1 and "--data-dir nowhere: no such folder" in err[0] and "create it" in err[0]
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "zips").exists()


def test_data_folder_that_cannot_be_written_is_one_line(good, monkeypatch):
    data, outputs = good

    def read_only(args, path):  # what a read-only folder does to the write (root ignores chmod)
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr(prepro, "save_args", read_only)
    with pytest.raises(SystemExit) as e:
        prepro.main(["--data-dir", str(data), "--image-size", "32"])
    message = str(e.value.code)
    assert len(message.splitlines()) == 1 and "prepro_args.json: cannot write (Permission denied)" in message
    assert_intact(data, outputs)
