"""Shared fixtures: tiny datasets made on the fly in the Kylberg layout (nothing is downloaded)."""
import importlib.util
import os

import pytest

from texture.synthesis.options import Options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """A tiny procedural demo set: 3 classes x 8 patches (2 per sample a..d) of 48 px. Returns its folder."""
    from texture.data import procedural

    out = tmp_path_factory.mktemp("demo") / "demo"
    procedural.make_demo(str(out), classes=3, patches=8, size=48, seed=0)
    return str(out)


@pytest.fixture(scope="session")
def trained_ckpt(demo_data, tmp_path_factory):
    """TextureNet trained for 3 epochs on demo_data at 32 px, keeping 2 checkpoints plus best.pt.

    Returns the checkpoint folder; the logs are in the sibling folder `log`.
    """
    import train

    out = tmp_path_factory.mktemp("trained")
    train.main(["--data-dir", demo_data, "--image-size", "32", "--epochs", "3", "--batch-size", "4",
                "--keep", "2", "--ckpt-dir", str(out / "ckpt"), "--log-dir", str(out / "log")])
    return str(out / "ckpt")
