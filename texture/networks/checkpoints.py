"""Checkpoints of the classifier: plain dicts of tensors and builtins, written atomically, found by
the number in their name (not by mtime), read back with weights_only and checked, so that a missing,
damaged or foreign file is one line naming it.

    python -c "from texture.networks import checkpoints; print(checkpoints.find_checkpoint('best'))"
"""
import os
import pickle
import re

import torch

from hyperparams import Hyperparams
from model import TextureNet
from texture.run.outputs import write_atomic


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or does not fit; the message names the file."""


CKPT_PATTERN = re.compile(r"^ckpt_(\d+)\.pt$")


def ckpt_name(step):
    return f"ckpt_{step:08d}.pt"


def save_checkpoint(state, path):
    """Write atomically: a crash or a full disk leaves the previous file as it was."""
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def checkpoints(directory):
    """Numbered checkpoints in `directory`, oldest first (by the number in the name, not mtime)."""
    if not os.path.isdir(directory):
        return []
    found = [(int(m.group(1)), f) for f in os.listdir(directory) if (m := CKPT_PATTERN.match(f))]
    return [os.path.join(directory, f) for _, f in sorted(found)]


def latest_checkpoint(directory):
    found = checkpoints(directory)
    if not found:
        raise CheckpointError(f"no checkpoint in {directory}: run train.py first or pass --ckpt PATH")
    return found[-1]


def find_checkpoint(spec):
    """(path, how it was picked) for `--ckpt`: a file as given; a folder, or nothing, its newest
    numbered checkpoint (of train.py's default --ckpt-dir when nothing); `best`, best.pt there."""
    if spec == "best":
        return os.path.join(Hyperparams.ckpt_dir, "best.pt"), "the best held-out accuracy (--ckpt best)"
    folder = spec or Hyperparams.ckpt_dir
    if not spec or os.path.isdir(folder):
        return latest_checkpoint(folder), f"the newest numbered one in {folder}; --ckpt best (or a path) picks another"
    return spec, "as given by --ckpt"


def load_checkpoint(path, map_location="cpu"):
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"{path}: refused, it holds objects other than tensors and plain data{what}")
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: unreadable checkpoint, truncated or corrupt ({first})")
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a checkpoint, it holds a {type(ckpt).__name__} instead of a dictionary")
    return ckpt


def model_from_checkpoint(ckpt, path="checkpoint", num_classes=None):
    """Rebuild the TextureNet a checkpoint holds; a mismatch is a CheckpointError, not a crash."""
    try:
        arch, classes, weights = ckpt["arch"], ckpt["classes"], ckpt["model"]
    except (KeyError, TypeError):
        raise CheckpointError(f"{path}: not a checkpoint of this project (no arch/classes/model)")
    if num_classes is not None and len(classes) != num_classes:
        raise CheckpointError(f"{path}: trained for {len(classes)} classes, this data has {num_classes}")
    try:
        model = TextureNet(len(classes), arch, init=False)
        model.load_state_dict(weights)
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit {arch} with {len(classes)} classes ({first})")
    return model
