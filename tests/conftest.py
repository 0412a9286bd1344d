"""Shared fixtures: tiny datasets made on the fly in the Kylberg layout (nothing is downloaded), a
classifier trained on one, and texnet.py's tiny settings.

The suite runs on as many processes as the machine has cores (pytest-xdist, `-n auto` in
pyproject.toml): each process then computes on one thread, since the tests' tiny images leave a
second thread little to do, and the session's demo set and classifier are made once, by the
first process that needs them, for all."""
import copy
import glob
import importlib.util
import os
import types

if os.environ.get("PYTEST_XDIST_WORKER"):  # before torch is imported; the scripts the tests start inherit it
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from filelock import FileLock

import model
from texture.synthesis.options import Options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# texnet.py train at a tiny generator (3 scales, 4 channels) on 32 px crops, shallow taps, no snapshots
TEXNET_TINY = ["--image-size", "32", "--texnet-size", "32", "--texnet-scales", "3", "--texnet-width", "4",
               "--texnet-noise", "2", "--texnet-batch", "2", "--texnet-calibrate", "64", "--layers",
               "relu1_1,relu2_1,relu3_1", "--dtype", "fp32", "--texnet-snapshot-every", "0"]


def load_script(name):
    """A script of the repository's root as a module named `<name>_script`: `import test` would find
    the standard library's package of that name instead of test.py."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", os.path.join(ROOT, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gram_options(layers, **kw):
    """Gatys' Gram loss alone on `layers`, in fp32, one level, without the spectrum term and the
    refinement: the fixed recipe the tests of the loops start from (`kw` overrides any field)."""
    return Options(**{"layers": layers, "spectrum_weight": 0.0, "levels": 1, "refine_steps": 0, "polish_steps": 0,
                      "gcd_weight": 1.0, "occurrence_hold": 0, "dtype": "fp32", **kw})


def shared(tmp_path_factory, name, make):
    """The folder `name` made by make(folder) once per session: under pytest-xdist in the folder all
    worker processes share, by the first that asks (the others wait on a lock); else in its own."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        out = tmp_path_factory.mktemp(name)
        make(out)
        return out
    root = tmp_path_factory.getbasetemp().parent  # this session's, above each worker's own
    with FileLock(str(root / f"{name}.lock")):
        if not (root / name / "done").exists():
            make(root / name)
            (root / name / "done").touch()
    return root / name


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """A tiny procedural demo set: 3 classes x 8 patches (2 per sample a..d) of 48 px. Returns its folder."""
    from texture.data import procedural

    out = shared(tmp_path_factory, "demo", lambda d: procedural.make_demo(str(d / "demo"), classes=3, patches=8,
                                                                          size=48, seed=0))
    return str(out / "demo")


@pytest.fixture(scope="session")
def trained_ckpt(demo_data, tmp_path_factory):
    """TextureNet trained for 3 epochs on demo_data at 32 px, keeping 2 checkpoints plus best.pt.

    Returns the checkpoint folder; the logs are in the sibling folder `log`. Tests read it, never write it.
    """
    import train

    out = shared(tmp_path_factory, "trained", lambda d: train.main([
        "--data-dir", demo_data, "--image-size", "32", "--epochs", "3", "--batch-size", "4", "--keep", "2",
        "--ckpt-dir", str(d / "ckpt"), "--log-dir", str(d / "log")]))
    return str(out / "ckpt")


@pytest.fixture(scope="session")
def firsts(demo_data):
    """The first patch of sample a of every demo class, sorted."""
    return sorted(glob.glob(os.path.join(demo_data, "*", "*-a-p001.png")))


@pytest.fixture(scope="module")
def quick_vgg():
    """torchvision's VGG initialises a 120M-parameter classifier head that TextureNet drops (seconds
    per network); with this fixture each architecture is built once and its convolutional part copied.
    A build from a random state seen before (a seeded random network) gets that build's weights and
    leaves the random state where it left it, so that what TextureNet initialises next matches too."""
    built, after, archs = {}, {}, dict(model.ARCHS)

    def features_of(arch):
        def build(weights=None):
            key = (arch, torch.random.get_rng_state().numpy().tobytes())
            if key in after:  # as before: the same weights, the random state advanced as a real build would
                torch.random.set_rng_state(after[key][1])
                return types.SimpleNamespace(features=copy.deepcopy(after[key][0]))
            if arch not in built:
                with torch.device("cpu"):  # not TextureNet(init=False)'s meta device: the copies are used as built
                    built[arch] = archs[arch](weights=None).features
                after[key] = built[arch], torch.random.get_rng_state()
            return types.SimpleNamespace(features=copy.deepcopy(built[arch]))
        return build
    with pytest.MonkeyPatch.context() as m:
        m.setattr(model, "ARCHS", {a: features_of(a) for a in archs})
        yield


def texnet_train(targets, out, *extra, ckpt=None):
    """texnet.py train at TEXNET_TINY into `out`, with the classifier `ckpt` or random weights."""
    import texnet
    backbone = ["--ckpt", ckpt] if ckpt else ["--backbone", "random"]
    texnet.main(["train", *targets, *TEXNET_TINY, *backbone, "--texnet-dir", str(out), *map(str, extra)])


def texnet_sample(path, out, *extra):
    """texnet.py sample of the generator `path` into `out`, in fp32."""
    import texnet
    return texnet.main(["sample", str(path), "--sample-dir", str(out), "--dtype", "fp32", *map(str, extra)])
