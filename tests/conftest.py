"""Shared fixtures: tiny datasets made on the fly in the Kylberg layout (nothing is downloaded)."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """A tiny procedural demo set: 3 classes x 8 patches (2 per sample a..d) of 48 px. Returns its folder."""
    import demo

    out = tmp_path_factory.mktemp("demo") / "demo"
    demo.make_demo(str(out), classes=3, patches=8, size=48, seed=0)
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
