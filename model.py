"""The texture network shared by every script, its feature taps, the Gram matrix, and checkpoints.

TextureNet is torchvision's VGG-19 (convolutional part, trained from scratch) on one grayscale
channel, followed by a 1x1 convolution to the classes and a global mean: fully convolutional, so
any input of 32 px or more gives logits.
"""
import copy
import os
import pickle
import re
from contextlib import nullcontext

import torch
import torch.distributed as dist
import torch.nn as nn
import torchvision

from hyperparams import Hyperparams, write_atomic

ARCHS = {"vgg19": torchvision.models.vgg19, "vgg19_bn": torchvision.models.vgg19_bn}


def layer_names(features):
    """VGG names for each module of `features`: conv1_1, (bn1_1,) relu1_1, ..., pool5."""
    names, block, conv = [], 1, 0
    for m in features:
        if isinstance(m, nn.Conv2d):
            conv += 1
            names.append(f"conv{block}_{conv}")
        elif isinstance(m, nn.BatchNorm2d):
            names.append(f"bn{block}_{conv}")
        elif isinstance(m, nn.ReLU):
            names.append(f"relu{block}_{conv}")
        else:
            names.append(f"pool{block}")
            block, conv = block + 1, 0
    return names


class TextureNet(nn.Module):
    def __init__(self, num_classes=28, arch="vgg19"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHS)}")
        self.arch, self.num_classes = arch, num_classes
        self.features = ARCHS[arch](weights=None).features
        first = self.features[0]
        self.features[0] = nn.Conv2d(1, first.out_channels, 3, padding=1)
        nn.init.kaiming_normal_(self.features[0].weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.features[0].bias)
        self.classifier = nn.Conv2d(512, num_classes, 1)
        self.names = layer_names(self.features)

    def forward(self, x):
        return self.classifier(self.features(x)).mean((2, 3))

    def taps(self, x, layers):
        """Activations at the named layers, running the network only as deep as the deepest one."""
        unknown = set(layers) - set(self.names)
        if unknown:
            raise ValueError(f"unknown layer(s) {sorted(unknown)}; known: {','.join(self.names)}")
        out, last = {}, max(self.names.index(n) for n in layers)
        for name, module in zip(self.names[: last + 1], self.features):
            x = module(x)
            if name in layers:
                out[name] = x
        return out


def frozen(model, pool, padding, dtype=torch.float32, keep=()):
    """A copy for synthesis: eval mode, no parameter gradients, the given pooling and padding, each
    batch norm folded into the convolution before it (unless that convolution's own output is in
    `keep`), and the weights stored in `dtype`. Autocast does not cache the casts of weights that
    need no gradient, so without the last step every iteration would cast the whole network again."""
    model = set_padding(set_pooling(copy.deepcopy(model).eval().requires_grad_(False), pool), padding)
    f = model.features
    for i in range(len(f) - 1):
        if isinstance(f[i], nn.Conv2d) and isinstance(f[i + 1], nn.BatchNorm2d) and model.names[i] not in keep:
            f[i], f[i + 1] = torch.nn.utils.fuse_conv_bn_eval(f[i], f[i + 1]), nn.Identity()
    return model.to(dtype)


def set_pooling(model, kind):
    """Use max (as trained) or average pooling (smoother gradients for synthesis) in place."""
    for i, m in enumerate(model.features):
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            model.features[i] = nn.MaxPool2d(2, 2) if kind == "max" else nn.AvgPool2d(2, 2)
    return model


def set_padding(model, mode):
    """'zeros' as trained; 'circular' makes the network see its input as a torus (tileable output)."""
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            m.padding_mode = mode
    return model


def gram(x):
    """Batched Gram matrix (B, C, H, W) -> (B, C, C), averaged over positions, computed in fp32."""
    f = x.float().flatten(2)
    return f @ f.transpose(1, 2) / f.shape[2]


# ---- device and precision -------------------------------------------------------------------

def pick_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine")
    return device


def cpu_has_fast_bf16():
    """bf16 only pays off on CPUs with native bf16 (AVX512-BF16 or AMX); elsewhere it is emulated.
    The probes are private torch functions that some versions lack: without them, no."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(probe() for probe in probes if probe is not None)


def cuda_has_fast_bf16(device):
    """Native bf16 from Ampere (compute capability 8) on; `torch.cuda.is_bf16_supported()` also
    counts the slow emulation of older GPUs, which should get fp16 with loss scaling instead."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def pick_dtype(name, device):
    """The autocast dtype for `--dtype`; fp32 means autocast off."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if cuda_has_fast_bf16(device) else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def distributed(device_name):
    """(rank, world size, device) of this process. Under torchrun with several processes each takes
    its own GPU (LOCAL_RANK) and joins the process group: NCCL on CUDA, gloo when the device is the
    CPU, even on a machine with GPUs."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = pick_device(device_name)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def autocast(device, dtype):
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# ---- checkpoints ----------------------------------------------------------------------------

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
        model = TextureNet(len(classes), arch)
        model.load_state_dict(weights)
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit {arch} with {len(classes)} classes ({first})")
    return model
