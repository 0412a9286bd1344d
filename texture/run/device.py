"""Where and in what precision a script runs: --device and --dtype (auto: CUDA when present, bf16
where the hardware runs it natively), and the process group under torchrun.

    python -c "from texture.run import device; d = device.pick_device('auto'); print(d, device.pick_dtype('auto', d))"
"""
import os
from contextlib import nullcontext

import torch
import torch.distributed as dist


def pick_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SystemExit(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
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
