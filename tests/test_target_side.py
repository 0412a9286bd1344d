"""--target-side: a large photograph is shrunk, keeping its aspect, before the centre crop, in gen.py and
texnet.py train; without it, an image many crops wide gets a note naming the flag."""
import json
import types

import numpy as np
import pytest
import torch
from conftest import TEXNET_TINY
from PIL import Image

import gen
from texture.data.images import DataError
from texture.synthesis.targets import load_target

RUN = ["--backbone", "random", "--device", "cpu", "--dtype", "fp32", "--image-size", "32", "--steps", "1",
       "--refine-steps", "0", "--snapshot-every", "0"]


def photograph(path, h, w, colour=False):
    """A textured image whose coarse layout (blocks of 16 px) differs from its fine grain."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 200, (h // 16 + 1, w // 16 + 1, 3 if colour else 1))
    a = np.kron(coarse, np.ones((16, 16, 1)))[:h, :w] + rng.integers(0, 56, (h, w, 1))
    Image.fromarray(a.astype(np.uint8) if colour else a[..., 0].astype(np.uint8)).save(path)
    return path


def expected(path, size, crop):
    """Pillow's own bicubic resize of the file to `size` (W, H), then its centre crop x crop."""
    with Image.open(path) as im:
        a = np.array(im.resize(size, Image.Resampling.BICUBIC))
    top, left = (size[1] - crop) // 2, (size[0] - crop) // 2
    return a[top:top + crop, left:left + crop]


def test_gen_shrinks_the_target_to_its_shorter_side_before_the_crop_and_records_it(tmp_path, capsys):
    big = photograph(tmp_path / "wall-a-p001.png", 192, 256)
    gen.main([str(big), *RUN, "--target-side", "64", "--gen-dir", str(tmp_path / "g")])
    target = np.array(Image.open(tmp_path / "g" / "wall" / "target.png"))
    # 256 x 192 shrunk to a shorter side of 64 is 85 x 64 (the aspect kept), then its centre 32 px
    assert np.array_equal(target, expected(big, (85, 64), 32))
    plain = np.array(Image.open(big))[80:112, 112:144]
    assert np.abs(target.astype(int) - plain).mean() > 10  # not the unshrunk image's centre crop
    assert json.load(open(tmp_path / "g" / "wall" / "args.json"))["target_side"] == 64
    assert "small detail" not in capsys.readouterr().err


def test_an_image_many_crops_wide_gets_a_note_naming_the_flag_and_a_small_one_is_kept_as_it_is(tmp_path, capsys):
    big = photograph(tmp_path / "big.png", 160, 128)
    args = types.SimpleNamespace(image_size=32, full=False, target_side=0, colour="auto")
    img = load_target(str(big), args, 32)
    assert f"{big}: 128x160: its centre 32x32 crop is a small detail of it (--target-side N" in capsys.readouterr().err
    assert torch.equal((img * 255).round().byte(), torch.from_numpy(np.array(Image.open(big))[64:96, 48:80]))
    # a target side above the image's shorter side leaves it as it is, with no note
    args.target_side = 200
    assert torch.equal(load_target(str(big), args, 32), img) and capsys.readouterr().err == ""
    # --full with --target-side: the whole image, shrunk (128 x 160 to 64 x 80)
    args.full, args.target_side = True, 64
    whole = load_target(str(big), args, 32)
    with Image.open(big) as im:
        shrunk = np.array(im.resize((64, 80), Image.Resampling.BICUBIC))
    assert torch.equal((whole * 255).round().byte(), torch.from_numpy(shrunk))
    # a strip wider than the crop but shorter: kept whole, and the note says which side is short
    strip = photograph(tmp_path / "strip.png", 40, 300)
    args.full, args.target_side, args.image_size = False, 0, 64
    assert load_target(str(strip), args, 32).shape == (40, 300)
    assert f"{strip}: 300x40: its shorter side is under --image-size 64; using the whole image" in \
        capsys.readouterr().err


def test_a_colour_photograph_is_shrunk_in_colour(tmp_path):
    big = photograph(tmp_path / "c.png", 128, 192, colour=True)
    args = types.SimpleNamespace(image_size=32, full=False, target_side=48, colour="auto")
    img = load_target(str(big), args, 32)
    assert img.shape == (3, 32, 32)
    assert torch.equal((img * 255).round().byte(), torch.from_numpy(expected(big, (72, 48), 32)).permute(2, 0, 1))


def test_a_target_side_below_what_the_layers_need_is_refused_naming_the_file_and_the_flag(tmp_path, capsys):
    big = photograph(tmp_path / "wall-a-p001.png", 96, 96)
    out = tmp_path / "g"
    with pytest.raises(SystemExit, match=r"1 of 1 target\(s\) failed"):
        gen.main([str(big), *RUN, "--target-side", "24", "--gen-dir", str(out)])
    err = capsys.readouterr().err
    assert f"{big}: 24x24 (shrunk by --target-side 24) is too small for these layers (needs >= 32 px)" in err
    assert "Traceback" not in err and not list(out.glob("**/*.png"))
    with pytest.raises(DataError, match="shrunk by --target-side 24"):
        load_target(str(big), types.SimpleNamespace(image_size=32, full=True, target_side=24), 32)
    with pytest.raises(SystemExit) as e:
        gen.main([str(big), "--target-side", "-1"])
    assert e.value.code == 2 and "argument --target-side: must be >= 0, got -1" in capsys.readouterr().err


def test_texnet_trains_on_the_shrunk_target(tmp_path):
    import texnet
    big = photograph(tmp_path / "wall-a-p001.png", 192, 256)
    texnet.main(["train", str(big), *TEXNET_TINY, "--texnet-steps", "1", "--backbone", "random", "--target-side", "64",
                 "--texnet-dir", str(tmp_path / "t")])
    ckpt = torch.load(tmp_path / "t" / "wall" / "texnet.pt", weights_only=False)
    assert np.array_equal(ckpt["target_images"][0].numpy(), expected(big, (85, 64), 32))
    assert ckpt["settings"]["target_side"] == 64
    # resumed, it continues only on the target it trained on
    with pytest.raises(SystemExit, match=r"as 32x32, here other pixels of that size \(another crop, or the file changed\): resume with "
                                         r"--image-size 32 --target-side 64 --colour auto, as it trained$"):
        texnet.main(["train", str(big), *TEXNET_TINY, "--texnet-steps", "2", "--backbone", "random", "--resume",
                     "--texnet-dir", str(tmp_path / "t")])
