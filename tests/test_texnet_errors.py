"""texnet.py's remaining failure paths: each is one line, exit status 1, and keeps what was written."""
import os
import shutil
import signal

import numpy as np
import pytest
import torch
from conftest import TEXNET_TINY
from conftest import texnet_sample as sample
from conftest import texnet_train as train
from PIL import Image

import fidelity
import texnet
from texture.run import memory
from texture.synthesis import generator_training, sampling
from texture.synthesis.targets import label_of

pytestmark = pytest.mark.usefixtures("quick_vgg")

@pytest.fixture
def one_step(firsts, tmp_path):
    """A generator trained for one step: (its checkpoint, the target)."""
    train(firsts[:1], tmp_path, "--texnet-steps", 1)
    return tmp_path / label_of(firsts[0]) / "texnet.pt", firsts[0]


def test_resume_with_other_settings_is_refused_and_keeps_the_generator(one_step, tmp_path):
    path, target = one_step
    before = path.read_bytes()
    with pytest.raises(SystemExit, match=r"texnet.pt: trained as \{.*'width': 4.*\} on .*, not \{.*'width': 8") as e:
        train([target], tmp_path, "--texnet-steps", 2, "--texnet-width", 8, "--resume")
    assert "\n" not in str(e.value) and path.read_bytes() == before


def test_resume_on_another_crop_or_a_changed_file_is_refused_and_keeps_the_generator(firsts, tmp_path):
    target = str(tmp_path / os.path.basename(firsts[0]))
    shutil.copy(firsts[0], target)
    out = tmp_path / "t"
    train([target], out, "--texnet-steps", 1)
    path = out / label_of(target) / "texnet.pt"
    before = path.read_bytes()
    w, h = Image.open(target).size
    refused = rf"^{path}: trained on {target} as 32x32, here %s: resume with --image-size 32 --colour auto, as it trained$"
    with pytest.raises(SystemExit, match=refused % "48x48"):
        train([target], out, "--texnet-steps", 2, "--resume", "--image-size", 48)
    i = TEXNET_TINY.index("--image-size")
    whole = TEXNET_TINY[:i] + TEXNET_TINY[i + 2:]  # --full refuses an --image-size
    with pytest.raises(SystemExit, match=refused % f"{w}x{h}"):
        texnet.main(["train", target, *whole, "--backbone", "random", "--texnet-dir", str(out), "--texnet-steps", "2",
                     "--resume", "--full"])
    Image.fromarray(255 - np.asarray(Image.open(target))).save(target)  # the file replaced
    with pytest.raises(SystemExit, match=r"as 32x32, here other pixels of that size \(another crop, or the file changed\)"):
        train([target], out, "--texnet-steps", 2, "--resume")
    assert path.read_bytes() == before
    shutil.copy(firsts[0], target)  # the same crop of the same file continues
    train([target], out, "--texnet-steps", 2, "--resume")
    assert torch.load(path, weights_only=False)["step"] == 2


def test_sizes_below_the_layers_reach_are_refused(firsts, tmp_path):
    deep = ["--layers", "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1"]  # conv5_1 runs on pool4's map: 2 px there
    with pytest.raises(SystemExit, match="--texnet-size 16: must be at least 32 for --layers relu1_1,.*relu5_1"):
        train(firsts[:1], tmp_path, "--texnet-size", 16, *deep)
    with pytest.raises(SystemExit, match="^--image-size 20: must be at least 32 px for --layers relu1_1,.*relu5_1$"):
        train(firsts[:1], tmp_path, "--image-size", 20, *deep)
    assert not os.listdir(tmp_path)


def test_count_zero_is_refused_and_writes_nothing(one_step, tmp_path):
    with pytest.raises(SystemExit, match="^--count 0: must be at least 1$"):
        sample(one_step[0], tmp_path / "out", "--count", 0)
    assert not (tmp_path / "out").exists()


def test_a_negative_sample_temper_is_refused_and_writes_nothing(one_step, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        sample(one_step[0], tmp_path / "out", "--sample-temper", -1)
    assert e.value.code == 2 and "argument --sample-temper: must be >= 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_fill_width_of_zero_is_refused_and_writes_nothing(one_step, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        sample(one_step[0], tmp_path / "out", "--sample-fill-width", 0)
    assert e.value.code == 2 and "argument --sample-fill-width: must be > 0, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sample_fill_without_tempering_is_refused_and_writes_nothing(one_step, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        sample(one_step[0], tmp_path / "out", "--sample-fill", 1, "--sample-temper", 0)
    assert e.value.code == 2 and "--sample-fill applies only with --sample-temper above 0" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="^--sample-fill applies only with --sample-temper above 0"):
        fidelity.main(["--fidelity-dir", str(tmp_path / "fid"), "--sample-fill", "1", "--sample-temper", "0"])
    assert not (tmp_path / "out").exists() and not (tmp_path / "fid").exists()


def test_a_sample_that_does_not_fit_in_memory_is_refused(one_step, tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available", lambda device: 2 * memory.GB)  # 16384 px: about 18 GB
    with pytest.raises(SystemExit, match=r"^--size 16384 16384: one sample, about 18\.\d GB needed, 2\.0 GB "
                                         r"available$"):
        sample(one_step[0], tmp_path / "out", "--size", 16384, 16384)
    with pytest.raises(SystemExit, match=r"^--size 16384 16384: one sample, about 15\.\d GB needed"):  # without the fill's 12 B/px
        sample(one_step[0], tmp_path / "out", "--size", 16384, 16384, "--sample-fill", 0)
    assert not (tmp_path / "out").exists()


def test_a_non_finite_loss_stops_before_the_step_and_keeps_the_last_checkpoint(one_step, tmp_path, monkeypatch):
    path, target = one_step
    before = path.read_bytes()
    real = generator_training.step_loss
    monkeypatch.setattr(generator_training, "step_loss", lambda *a: real(*a) * float("nan"))
    with pytest.raises(SystemExit, match=r"loss is nan at step 1; try a lower --texnet-lr$"):
        train([target], tmp_path, "--texnet-steps", 3, "--resume")
    assert path.read_bytes() == before
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # Ctrl-C/SIGTERM handlers given back


def test_sigterm_saves_the_step_reached_and_resume_continues(firsts, tmp_path, monkeypatch):
    real = generator_training.step_loss

    def terminated_at_step_two(g, objs, args, step, *rest):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # caught by interrupt.Stop until the loop has saved
        return real(g, objs, args, step, *rest)
    monkeypatch.setattr(generator_training, "step_loss", terminated_at_step_two)
    with pytest.raises(SystemExit, match=r"^stopped at step 2: saved .*texnet.pt; continue with --resume$"):
        train(firsts[:1], tmp_path, "--texnet-steps", 5)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    path = tmp_path / label_of(firsts[0]) / "texnet.pt"
    assert sampling.load(path)[1]["step"] == 2
    monkeypatch.setattr(generator_training, "step_loss", real)
    train(firsts[:1], tmp_path, "--texnet-steps", 3, "--resume")
    assert sampling.load(path)[1]["step"] == 3


def test_unwritable_texnet_dir_is_one_line(firsts, tmp_path):
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    with pytest.raises(SystemExit, match=f"^--texnet-dir {blocked}: cannot write there") as e:
        train(firsts[:1], blocked, "--texnet-steps", 1)
    assert "\n" not in str(e.value) and blocked.read_text() == "not a folder"


def test_a_saved_tensor_is_not_taken_for_a_generator(tmp_path):
    """A file torch.load reads that is not a checkpoint is one line, not a crash."""
    bad = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), bad)
    with pytest.raises(SystemExit, match="tensor.pt: not a checkpoint, it holds a Tensor instead of a dictionary$"):
        sample(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
