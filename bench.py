"""Speed report: each figure is a ratio or a rate of two things timed in the same run, interleaved.

    python bench.py --quick                     # a few minutes on 2 CPU cores (64 px, 5 repeats, 1000 original steps)
    python bench.py --quick --image-size 32 --bench-orig-steps 20000 --bench-orig-seconds 900  # the original to its plateau
    python bench.py                             # VGG-19 at 224 px, batch 16: tens of minutes on a CPU
    python bench.py --image-size 128 --bench-repeats 3 --device cuda
    python bench.py --quick --ckpt best         # synthesis sections with the trained classifier (default: random weights)
    python bench.py --bench-sections colour     # one section (or several, comma-separated)
    python bench.py --bench-sections fast --bench-batch-targets 6   # whole runs: the default vs method fast
    python bench.py --bench-sections heap --bench-repeats 1   # whole gen.py runs: --heap keep vs release

Sections (medians over --bench-repeats rounds that alternate the compared paths, so machine load
hits both alike; every one but fast and heap, which run only when named):
  train      training step of train.py, plain fp32 eager vs its default path (autocast dtype,
             channels-last, torch.compile by its rule): images/s and the speed-up
  data       a whole epoch through batches.Batches from the uint8 cache vs the same steps on batches
             already in memory: the share of model speed the pipeline keeps
  synthesis  time to quality on a real photograph (--bench-photo): the original recipe (Adam lr 1e-4 from
             U(0,1), standardised Gram at pool1-pool4, max pooling, zero padding, clamp) until it plateaus
             (at most --bench-orig-steps or --bench-orig-seconds), with local_measures' LBP distance and
             patch distances both ways recorded along the way; then each method of texture.synthesis.methods without
             a refinement (gram-spectrum, the default's first part, first): the seconds until it reaches each
             of the original's final measures, and the speed-up to reach all of them (iteration counts
             times iteration times timed side by side)
  iteration  one iteration of gen.py's default (its Gram + spectrum part) vs a bare forward+backward of
             the same network, and the same without the optimiser (forward, loss terms, backward): where
             the extra time goes;
             one iteration of --loss gcd (guided correspondence) against the same bare pass, and one of
             the refinement of the method refine (--refine-steps)
  refine     that refinement's iteration vs the Gram + spectrum iteration before it, at each side of
             --bench-refine-sizes (output = target), and up to 192 px the same with every target patch:
             its cost grows with the output alone; and against the same on every channel of its taps
             (--refine-channels none)
  flops      FLOPs of one training step (counted) per second vs a large matmul in the same dtype
  colour     gen.py's default on a colour photograph (immunohistochemistry's centre --image-size
             crop): the grey synthesis of its luminance, then its colouring (timed); an iteration with
             the three channels together at --chroma-layers (as a target of colours of one luminance
             gets them) vs a grey one, in the Gram + spectrum part and the refinement; and each
             default's seconds per target
  fast       gen.py's default against method fast (its parts shorter, the first coarse to fine) in whole
             runs: on --bench-photo's centre crop alone, then as a batch of --bench-batch-targets
             targets of --bench-batch-side px: the seconds, the speed-up and whether fast reaches the
             default's final measures (LBP, patch_nn, patch_cover, spectrum within 2%, copy share)
  heap       gen.py run whole in processes of their own with --heap keep vs --heap release: a tileable
             --bench-heap-side square of --bench-photo's crop (coarse to fine), then section fast's batch;
             the synthesis's seconds, the process's peak memory and their ratios (texture/measures/heap.py)
  texnet     one texnet.py sample of --bench-texnet-size squared (the default generator; its cost does
             not depend on its weights) vs one iteration of gen.py's default at that size (made coarse to
             fine, so without the refinement), and vs the same sample untempered
Results: a table on stdout and --bench-dir/bench.json (plus the settings, args.json; a later run writes
bench-2.json and args-2.json beside them, and so on).
"""
import os
import platform
import tempfile
import time

import torch

from hyperparams import given, parse_args
from texture.measures.heap import bench_heap
from texture.measures.speed import bench_colour, bench_refine_sizes, bench_synthesis, bench_texnet, synthesis_net
from texture.measures.speedup import bench_fast
from texture.measures.time_to_quality import QUALITY
from texture.measures.train_speed import bench_data, bench_train, demo_data
from texture.networks.checkpoints import CheckpointError, find_checkpoint
from texture.run.device import cpu_has_fast_bf16, pick_device, pick_dtype
from texture.run.outputs import first_free, save_args, save_json

GROUPS = ["device", "seed", "crop", "loader", "ckpt", "bench"]
SECTIONS = ("train", "synthesis", "refine", "colour", "texnet", "fast", "heap")  # --bench-sections; train brings data and flops, synthesis brings iteration
NAMED_ONLY = ("fast", "heap")  # whole runs (an hour and more at the defaults): run only when named
FAST_LEAST = 64  # fast makes its first level at half the side, where the default taps need 32 px
# --quick replaces these defaults (flags given explicitly still win).
QUICK = {"image_size": 64, "bench_repeats": 5, "bench_steps": 1, "bench_images": 112, "bench_orig_steps": 1000,
         "bench_gen_steps": 100, "bench_chunk": 4, "bench_matmul": 1024,
         "bench_texnet_size": 256, "bench_refine_sizes": "64,128", "bench_batch_targets": 4, "bench_batch_side": 64,
         "bench_heap_side": 256, "bench_heap_steps": 10}


def machine(device, dtype):
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    info = {"device": str(device), "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__,
            "cpu": cpu, "threads": torch.get_num_threads(), "fast_bf16_cpu": cpu_has_fast_bf16()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        info["load_avg_1min_start"] = os.getloadavg()[0]
    return info


# ---- report ---------------------------------------------------------------------------------

def rows(r):
    """(section, measure, value) lines of the table."""
    m, out = r["machine"], []
    if "train" in r:
        out += train_rows(r["train"], r["data"], m)
    if "synthesis" in r:
        out += synthesis_rows(r["synthesis"], r["iteration"])
    if "train" in r:
        fl = r["flops"]
        out += [("flops", "training step, GFLOP (counted)", f"{fl['flops_per_step'] / 1e9:.1f}"),
                ("flops", f"default step, GFLOP/s ({m['dtype']})", f"{fl['default_flop_per_s'] / 1e9:.1f}"),
                ("flops", f"peak matmul, GFLOP/s ({m['dtype']})", f"{fl['peak_matmul_flop_per_s'] / 1e9:.1f}"),
                ("flops", "default step / peak", f"{fl['default_share_of_peak']:.1%}"),
                ("flops", "fp32 eager step / fp32 peak", f"{fl['fp32_eager_share_of_peak']:.1%}")]
    for x in r.get("refine", ()):
        out += [("refine", f"{x['side']} px: refinement iteration / Gram + spectrum's", f"{x['ratio']:.2f}x"),
                ("refine", f"{x['side']} px: the same with every target patch",
                 "-" if x["all_patches_ratio"] is None else f"{x['all_patches_ratio']:.2f}x"),
                ("refine", f"{x['side']} px: refinement iteration / the same on every channel",
                 f"{x['channels_ratio']:.2f}x")]
    if "colour" in r:
        c = r["colour"]
        out += [("colour", f"{c['photo']} {c['size']} px: colouring the luminance's output, s (grey iterations)",
                 f"{c['colourise_s']:.2f} ({c['colourise_iterations']:.1f})"),
                ("colour", "channels together at --chroma-layers / grey, first part and refinement",
                 f"{c['joint_ratio']:.2f}x, {c['joint_refine_ratio']:.2f}x"),
                ("colour", "default's seconds per target, grey / colour",
                 f"{c['grey_target_s']:.1f} / {c['colour_target_s']:.1f} ({c['target_ratio']:.2f}x)"),
                ("colour", "the same with the channels together",
                 f"{c['joint_target_s']:.1f} ({c['joint_target_ratio']:.2f}x)")]
    if "texnet" in r:
        tx = r["texnet"]
        out += [("texnet", f"texnet.py sample {tx['size']}x{tx['size']}, s", f"{tx['sample_s']:.3f}"),
                ("texnet", f"gen.py default iteration at {tx['size']}x{tx['size']}, s", f"{tx['gen_iteration_s']:.3f}"),
                ("texnet", "iteration / sample", f"{tx['ratio']:.1f}x"),
                ("texnet", "sample / the same untempered (--sample-temper 0)", f"{tx['temper_ratio']:.2f}x")]
    for key, d in (r.get("fast") or {}).items():
        what = f"{d['targets'][0]} {d['side']} px" if key == "one" else f"{len(d['targets'])} targets {d['side']} px"
        out += [("fast", f"{what}: default / fast, s", f"{d['default_s']:.1f} / {d['fast_s']:.1f}"),
                ("fast", f"{what}: speed-up", f"{d['speedup']:.2f}x"),
                ("fast", f"{what}: reaches the default's measures (mean; targets)",
                 f"{'yes' if d['reached']['all'] else 'no: ' + ', '.join(k for k, v in d['reached'].items() if not v and k != 'all')}"
                 f"; {d['reached_one_by_one']} of {len(d['targets'])}")]
    for key, d in (r.get("heap") or {}).items():
        what = f"{d['side']} px tileable" if key == "large" else f"{d['targets']} targets {d['side']} px"
        k, rel = d["median"]["keep"], d["median"]["release"]
        out += [("heap", f"{what}: synthesis s, keep / release", f"{k['seconds']:.1f} / {rel['seconds']:.1f}"
                 f" ({d['ratio']['seconds']:.2f}x)"),
                ("heap", f"{what}: system s, keep / release", f"{k['system']:.1f} / {rel['system']:.1f}"),
                ("heap", f"{what}: peak GB, keep / release", f"{k['peak_gb']:.2f} / {rel['peak_gb']:.2f}"
                 f" ({d['ratio']['peak_gb']:.2f}x)"),
                ("heap", f"{what}: keep runs released from iteration", ", ".join(
                    str(x["released_at"] or "-") for x in d["runs"]["keep"]))]
    return out


def train_rows(tr, d, m):
    """Sections train (with the training step's flops) and data."""
    default = f"{m['dtype']}, channels-last{', compiled' if tr['compiled'] else ''}"
    return [("train", "fp32 eager, images/s", f"{tr['fp32_eager_images_per_s']:.2f}"),
           ("train", f"default ({default}), images/s", f"{tr['default_images_per_s']:.2f}"),
           ("train", "speed-up", f"{tr['speedup']:.2f}x"),
           ("data", "whole epoch through batches.Batches, images/s", f"{d['epoch_images_per_s']:.2f}"),
           ("data", "model step alone (preloaded), images/s", f"{d['model_only_images_per_s']:.2f}"),
           ("data", "epoch / model-alone throughput", f"{d['ratio']:.3f}"),
           ("data", "split loaded from the uint8 cache, images/s", f"{d['cache_load_images_per_s']:.0f}")]


def synthesis_rows(sy, it):
    """Sections synthesis and iteration."""
    out = [("synthesis", f"original recipe on {sy['target']}, {sy['original_steps']} Adam steps, s",
            f"{sy['original_seconds']:.1f}"),
           ("synthesis", "its final " + ", ".join(QUALITY), ", ".join(f"{sy['goal'][k]:.3f}" for k in QUALITY)),
           ("synthesis", "its last quarter's share of its gain", ", ".join(
               f"{sy['original']['last_quarter_gain'][k]:.2f}" for k in QUALITY))]
    for name, run in sy["methods"].items():
        reached = ", ".join("not reached" if v is None else f"{v:.1f}" for v in run["seconds_to"].values())
        out.append(("synthesis", f"{name}: s to reach each, all ({run['steps_to']['all']} steps)", reached))
        out.append(("synthesis", f"{name}: speed-up to all", "-" if run["speedup"] is None else f"{run['speedup']:.1f}x"))
    out += [("iteration", "gen.py default iteration, ms", f"{1e3 * it['default_iteration_s']:.1f}"),
            ("iteration", "bare forward+backward, ms", f"{1e3 * it['bare_forward_backward_s']:.1f}"),
            ("iteration", "forward+loss+backward (no optimiser), ms", f"{1e3 * it['loss_s']:.1f}"),
            ("iteration", "forward+loss+backward / bare", f"{it['loss_ratio']:.2f}x"),
            ("iteration", "iteration / bare", f"{it['ratio']:.2f}x"),
            ("iteration", "--loss gcd iteration (correspondence alone), ms", f"{1e3 * it['gcd_iteration_s']:.1f}"),
            ("iteration", "--loss gcd iteration / bare", f"{it['gcd_ratio']:.2f}x"),
            ("iteration", "method refine: refinement iteration, ms", f"{1e3 * it['refine_iteration_s']:.1f}"),
            ("iteration", "refinement iteration / bare", f"{it['refine_ratio']:.2f}x"),
            ("iteration", "bare, reflect padding as autocast runs it (fp32), ms", f"{1e3 * it['bare_autocast_pads_s']:.1f}"),
            ("iteration", "bare / that (padding in the activations' dtype)", f"{it['pads_ratio']:.2f}x")]
    return out


def table(r):
    m = r["machine"]
    head = (f"{m['cpu']}, torch threads {m['threads']}, torch {m['torch']}, {m['device']}"
            f"{' (' + m['gpu'] + ')' if 'gpu' in m else ''}, autocast {m['dtype']}")
    if "train" in r:
        head += (f", {r['train']['arch']} ({r['train']['classes']} classes) at {r['train']['image_size']} px, "
                 f"batch {r['train']['batch']}")
    if "load_avg_1min_start" in m:
        head += f"\nload average (1 min) {m['load_avg_1min_start']:.1f} at the start, {m['load_avg_1min_end']:.1f} at the end"
    lines = rows(r)
    w = max(len(x[1]) for x in lines)
    return "\n".join([head, f"{'section':<10} {'measure':<{w}} value"] +
                     [f"{a:<10} {b:<{w}} {c}" for a, b, c in lines])


def add_quick(p):
    p.add_argument("--quick", action="store_true", help="a few minutes on 2 CPU cores: "
                   + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()))


def settings(argv):
    args = parse_args(__doc__, GROUPS, argv, extra=add_quick)
    if args.quick:
        explicit = given(argv, GROUPS, add_quick)
        for k, v in QUICK.items():
            if k not in explicit:
                setattr(args, k, v)
    if args.image_size < 32:
        raise SystemExit(f"--image-size {args.image_size}: the network needs at least 32 px")
    spec = args.bench_refine_sizes
    try:
        args.bench_refine_sizes = [int(s) for s in spec.split(",")]
    except ValueError:
        args.bench_refine_sizes = [0]
    if min(args.bench_refine_sizes) < 32:
        raise SystemExit(f"--bench-refine-sizes {spec}: comma-separated sides of at least 32 px")
    chosen = [x for x in args.bench_sections.split(",") if x] or [s for s in SECTIONS if s not in NAMED_ONLY]
    if set(chosen) - set(SECTIONS):
        raise SystemExit(f"--bench-sections {args.bench_sections}: sections are {', '.join(SECTIONS)} "
                         "(data and flops come with train, iteration with synthesis)")
    args.bench_sections = chosen
    if "fast" in chosen:
        sides = {"--image-size": args.image_size}
        if args.bench_batch_targets:
            sides["--bench-batch-side"] = args.bench_batch_side
        for flag, side in sides.items():
            if side < FAST_LEAST:
                raise SystemExit(f"{flag} {side}: section fast needs at least {FAST_LEAST} px (its first level is "
                                 "half the side)")
    if args.ckpt:
        try:
            path = find_checkpoint(args.ckpt)[0]
        except CheckpointError as e:
            raise SystemExit(f"--ckpt: {e}")
        if not os.path.isfile(path):
            raise SystemExit(f"--ckpt {args.ckpt}: no such checkpoint file or folder")
    return args


def main(argv=None):
    args = settings(argv)
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    results = {"machine": machine(device, dtype)}
    start = time.perf_counter()

    def say(what):
        print(f"[{time.perf_counter() - start:6.0f} s] {what}", flush=True)
    run = args.bench_sections
    with tempfile.TemporaryDirectory() as tmp:
        if {"train", "data", "texnet"} & set(run):
            say("generating the dataset")
            data_dir = demo_data(args, tmp)
        if "train" in run:
            say("training step: fp32 eager vs default, matmul peaks")
            results["train"], results["flops"] = bench_train(args, device, dtype, data_dir)
            say(f"training speed-up {results['train']['speedup']:.2f}x; data pipeline: epochs vs preloaded batches")
            results["data"] = bench_data(args, device, data_dir)
        if "synthesis" in run:
            say("synthesis: original recipe vs gen.py's default, iteration vs bare network")
            results["synthesis"], results["iteration"] = bench_synthesis(args, device)
        if "refine" in run:
            say(f"refinement iteration vs the Gram + spectrum one at {args.bench_refine_sizes} px")
            results["refine"] = bench_refine_sizes(args, device)
        if "colour" in run:
            say(f"colour iteration vs grey at {args.image_size} px")
            results["colour"] = bench_colour(args, device)
        if "texnet" in run:
            say(f"texnet.py sample vs gen.py iteration at {args.bench_texnet_size} px")
            results["texnet"] = bench_texnet(args, device, dtype, data_dir)
        if "fast" in run:
            say(f"gen.py's default vs method fast, whole runs at {args.image_size} px and a batch")
            results["fast"] = bench_fast(args, synthesis_net(args, device), device)
        if "heap" in run:
            say(f"gen.py with --heap keep vs release, whole runs at {args.bench_heap_side} px and a batch")
            results["heap"] = bench_heap(args)
        say("done")
    if hasattr(os, "getloadavg"):
        results["machine"]["load_avg_1min_end"] = os.getloadavg()[0]
    results["settings"] = vars(args)
    print(table(results))
    # an earlier run's pair is kept: bench-2.json and args-2.json, ...
    path, settings_path = first_free(*(os.path.join(args.bench_dir, n) for n in ("bench.json", "args.json")))
    save_json(results, path)
    save_args(args, settings_path)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
