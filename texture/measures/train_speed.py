"""bench.py's sections train, flops and data: train.py's own step (training.Run, training.step_once) in
fp32 eager against its default path, both against matmul peaks timed in the same rounds; a whole
epoch of its batches against the same steps on batches already in memory. Each figure is a ratio or
a rate of things timed in the same run, interleaved (timing.interleave)."""
import argparse
import dataclasses
import os
import time
from itertools import islice

import torch
from torch.utils.flop_counter import FlopCounterMode

from hyperparams import Hyperparams
from texture.data.kylberg import KYLBERG
from texture.data.procedural import make_demo
from texture.networks import training
from texture.run.device import pick_device
from texture.run.timing import interleave


def training_run(args, data_dir, plain):
    """A training.Run on the generated data with --bench-batch; `plain`: fp32, eager, default memory layout."""
    h = dataclasses.asdict(Hyperparams())
    run_args = argparse.Namespace(**{**h, **{k: getattr(args, k) for k in ("device", "dtype", "seed", "image_size",
                                                                         "workers")},
                                     "data_dir": data_dir, "batch_size": args.bench_batch})
    if plain:
        run_args.dtype, run_args.compile = "fp32", "off"
    run = training.Run(run_args, None, 0, 1, pick_device(args.device))
    if plain:
        run.raw.to(memory_format=torch.contiguous_format)  # in place: the optimiser keeps its parameters
    return run


def stepper(run):
    def step(batch):
        training.step_once(run.model, run.opt, run.sched, run.scaler, batch, run.device, run.dtype, False)
    return step


def run_steps(step, batches):
    for b in batches:
        step(b)


def matmuls(a, b, k):
    for _ in range(k):
        torch.mm(a, b)


def bench_train(args, device, dtype, data_dir):
    """fp32 eager vs the default step on the same batches, and both against matmul peaks timed in
    the same rounds."""
    plain, fast = training_run(args, data_dir, True), training_run(args, data_dir, False)
    batches = [(x.to(device), y.to(device)) for x, y in islice(fast.train_b, args.bench_steps)]
    n = args.bench_matmul
    mats = {d: [torch.randn(n, n, device=device).to(d) for _ in range(2)] for d in {torch.float32, dtype}}
    fns = {"fp32_eager": lambda: run_steps(stepper(plain), batches),
           "default": lambda: run_steps(stepper(fast), batches)}
    for d, (a, b) in mats.items():
        fns[f"mm_{str(d)[6:]}"] = lambda a=a, b=b: matmuls(a, b, 3)
    t = interleave(fns, args.bench_repeats, device)
    with FlopCounterMode(display=False) as counter:  # eager: the counter sees every aten op
        stepper(plain)(batches[0])
    flops, images = counter.get_total_flops(), len(batches) * args.bench_batch
    mm = {d: f"mm_{str(d)[6:]}" for d in mats}
    peak = {d: 3 * 2 * n ** 3 / t[mm[d]] for d in mats}
    train_out = {"fp32_eager_images_per_s": images / t["fp32_eager"], "default_images_per_s": images / t["default"],
                 "speedup": t.ratio("fp32_eager", "default"), "compiled": fast.model is not fast.raw,
                 "arch": fast.raw.arch, "classes": fast.raw.num_classes, "batch": args.bench_batch,
                 "image_size": args.image_size}
    share = {k: flops * len(batches) / (3 * 2 * n ** 3) * t.ratio(mm[d], k)
             for k, d in (("default", dtype), ("fp32_eager", torch.float32))}
    flops_out = {"flops_per_step": flops, "default_flop_per_s": flops * len(batches) / t["default"],
                 "peak_matmul_flop_per_s": peak[dtype], "default_share_of_peak": share["default"],
                 "fp32_eager_flop_per_s": flops * len(batches) / t["fp32_eager"],
                 "peak_matmul_fp32_flop_per_s": peak[torch.float32],
                 "fp32_eager_share_of_peak": share["fp32_eager"], "matmul_side": n}
    return train_out, flops_out


def demo_data(args, root):
    """--bench-images generated textures spread over 28 class folders (Kylberg's names and class
    count), their sides relating to the crop as Kylberg's 576 px patches to 224."""
    size = max(args.image_size, round(args.image_size * 576 / 224))
    n, classes = max(args.bench_images, len(KYLBERG)), KYLBERG
    src, out = os.path.join(root, "generated"), os.path.join(root, "data")
    make_demo(src, classes=4, patches=-(-n // 16) * 4, size=size, seed=args.seed)
    files = sorted(os.path.join(src, c, f) for c in os.listdir(src) if os.path.isdir(os.path.join(src, c))
                   for f in os.listdir(os.path.join(src, c)))
    for i, f in enumerate(files[:n]):
        dest = os.path.join(out, classes[i % len(classes)])
        os.makedirs(dest, exist_ok=True)
        os.replace(f, os.path.join(dest, os.path.basename(f)))
    return out


def bench_data(args, device, data_dir):
    """A whole epoch of train.py's Batches (crops, flips, rotations, transfer) into its step vs
    the same steps on the same batches already on the device."""
    run = training_run(args, data_dir, False)
    t0 = time.perf_counter()
    training.load_split(run.args, 0, 1)  # as each run starts: from the uint8 cache
    load_s = time.perf_counter() - t0
    step, epochs = stepper(run), iter(range(1, 1 << 30))
    ready = [(x.to(device), y.to(device)) for x, y in run.train_b]

    def epoch():
        run.train_b.set_epoch(next(epochs))
        run_steps(step, run.train_b)
    t = interleave({"epoch": epoch, "preloaded": lambda: run_steps(step, ready)}, args.bench_repeats, device)
    images = len(ready) * args.bench_batch
    return {"epoch_images_per_s": images / t["epoch"], "model_only_images_per_s": images / t["preloaded"],
            "ratio": t.ratio("preloaded", "epoch"), "cache_load_images_per_s": len(run.data.train_labels) / load_s,
            "images": images, "steps": len(ready)}
