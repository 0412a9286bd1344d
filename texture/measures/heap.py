"""bench.py's section `heap`: gen.py run whole, as a user runs it, with --heap keep against --heap
release (memory.keep_freed). The choice holds for a whole process, so each run is a process of its own,
the two alternating round by round so that load hits both alike. Per run: the synthesis's seconds (the
`seconds` of report.json, the batch's), the process's wall-clock and system seconds and its peak
resident memory (wait4's ru_maxrss); reported as medians and as ratios keep / release.

Two cases: --bench-photo made into a tileable --bench-heap-side square (coarse to fine, as the README's
large output) with --steps --bench-heap-steps; and section fast's batch (--bench-batch-targets targets
of --bench-batch-side px) with the default's parts at a third of that: --steps --bench-heap-steps,
--refine-steps a third of them, --polish-steps a tenth.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from hyperparams import PHOTOS
from texture.measures.speedup import batch_targets
from texture.measures.time_to_quality import photo_target
from texture.run.outputs import write_png
from texture.run.timing import alternating

GEN = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "gen.py")
MODES = ("keep", "release")


def gen_run(argv, out):
    """One gen.py process writing to `out`: {seconds: the synthesis's, wall, system, peak_gb, released_at}."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: tqdm's progress would fill a pipe and stall it
        child = subprocess.Popen([sys.executable, GEN, *argv, "--gen-dir", out], stdout=subprocess.DEVNULL,
                                 stderr=log, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        log.seek(0)
        errors = log.read()
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: Popen must not wait for it again
    if child.returncode:  # gen.py's own one-line error is its last line
        last = errors.strip().splitlines()[-1] if errors.strip() else f"exit status {child.returncode}"
        raise SystemExit(f"--bench-sections heap: gen.py failed: {last}")
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        seconds = max(t["seconds"] for t in json.load(f)["targets"])  # every target of a batch has the batch's
    released = re.search(r"memory freed is returned to the system from iteration (\d+) on", errors)
    # ru_maxrss is in KiB on Linux
    return {"seconds": seconds, "wall": wall, "system": usage.ru_stime, "peak_gb": usage.ru_maxrss / 2 ** 20,
            "released_at": released and int(released.group(1))}


def compare(argv, rounds, tmp):
    """gen.py `argv` with --heap keep and --heap release, `rounds` times, alternating (A B, B A, ...)."""
    runs = {m: [] for m in MODES}
    for r, mode in alternating(MODES, rounds):
        runs[mode].append(gen_run([*argv, "--heap", mode], os.path.join(tmp, f"{mode}-{r}")))
    median = {m: {k: statistics.median(x[k] for x in runs[m]) for k in ("seconds", "wall", "system", "peak_gb")}
              for m in MODES}
    return {"argv": argv, "rounds": rounds, "runs": runs, "median": median,
            "ratio": {k: statistics.median(a[k] / b[k] for a, b in zip(runs["keep"], runs["release"]))
                      for k in ("seconds", "wall", "peak_gb")}}


def bench_heap(args):
    """Section heap: compare() on the large tileable output, then on the batch (none with 0 targets)."""
    common = ["--seed", str(args.seed), "--device", args.device, "--dtype", args.dtype,
              *(["--ckpt", args.ckpt] if args.ckpt else ["--backbone", "random"])]
    steps = args.bench_heap_steps
    with tempfile.TemporaryDirectory() as tmp:
        photo = os.path.join(tmp, f"{args.bench_photo}.png")
        write_png(photo_target(args.bench_photo, args.image_size, "cpu"), photo)
        side = str(args.bench_heap_side)
        out = {"large": compare([photo, "--image-size", str(args.image_size), "--size", side, side, "--tile",
                                 "--steps", str(steps), *common],
                                args.bench_repeats, os.path.join(tmp, "large"))}
        out["large"]["side"] = args.bench_heap_side
        if args.bench_batch_targets:
            names, images = batch_targets(args.bench_batch_targets, args.bench_batch_side, PHOTOS, "cpu")
            paths = [os.path.join(tmp, f"{n}.png") for n in names]
            for im, path in zip(images, paths):
                write_png(im, path)
            out["batch"] = compare([*paths, "--image-size", str(args.bench_batch_side), "--steps", str(steps),
                                    "--refine-steps", str(max(1, steps // 3)), "--polish-steps", str(steps // 10),
                                    *common], args.bench_repeats, os.path.join(tmp, "batch"))
            out["batch"].update(targets=len(names), side=args.bench_batch_side)
    return out
