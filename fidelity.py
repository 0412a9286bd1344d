"""The fidelity table: gen.py's method options on held-out real photographs and demo classes, judged by
quality.py's measures (none uses the network or the loss), with a picture of every output.

    python fidelity.py                                        # the setting of docs/real-photographs.md
    python fidelity.py --fidelity-methods default,spectrum0   # some of METHODS only
    python fidelity.py --ckpt asset/fidelity/ckpt             # reuse a classifier
    python fidelity.py --demo-size 128 --fidelity-size 128 --fidelity-seeds 4 --fidelity-steps 500  # full setting

One command does everything: the data (demo.make_demo: --demo-classes procedural classes and the
--demo-photos photographs, each photograph's quadrants samples a..d) in --fidelity-dir/data; the
classifier (train.py on the `source` split, sample d held out) in --fidelity-dir/ckpt, trained unless
it already holds one or --ckpt names one; then gen.py on the first patch of sample d of every class
(regions of the photographs never seen in training) for every method and seed. Each run writes
--fidelity-dir/fidelity_<time>.md (the table), .json (every target's measures) and .png (each
target beside each method's output). The reference row scores sample c's first patch against the
target: what a new photograph of the same texture scores.
"""
import argparse
import dataclasses
import json
import os
import sys
import time

from PIL import Image, ImageDraw

import dataset
import demo
import gen
import layer_spec
import losses
import model
import photos
import pictures
import quality
import train
from hyperparams import Hyperparams, add_arguments, parse_args, save_args, save_json, write_atomic
from targets import plan

GROUPS = ["device", "seed", "demo", "fidelity"]
# name -> gen.py flags; the first is today's default. Every feature loss of losses.LOSSES is one.
UNREFINED = ["--refine-steps", "0"]  # the first part of the default alone: Gram + spectrum
METHODS = {"default": [], "gram-spectrum": UNREFINED, "spectrum0": ["--spectrum-weight", "0", *UNREFINED],
           **{k: ["--loss", k, *UNREFINED] for k in losses.LOSSES if k != Hyperparams.loss},
           # the occurrence penalty changes with the matches between evaluations: Adam, not L-BFGS
           "gcd-adam": ["--loss", "gcd", "--optimizer", "adam", "--gen-lr", "0.1", "--gcd-weight", "1", *UNREFINED],
           "gram+gcd-adam": ["--loss", "gram+gcd", "--optimizer", "adam", "--gen-lr", "0.1", "--gcd-weight", "1",
                             *UNREFINED],
           # the default without its polish: the refinement's objects, and its verbatim copies
           "refine": ["--polish-steps", "0"],
           "spectrum-relative": ["--spectrum-scale", "relative", *UNREFINED],
           "spectrum-hybrid": ["--spectrum-scale", "hybrid", *UNREFINED],
           # the relative spectrum term takes the ripples, the refinement keeps the demo's peaks
           "refine-polish-relative": ["--spectrum-scale", "relative"],
           # the same with the hybrid scale: the demo's peaks kept best
           "refine-polish-hybrid": ["--spectrum-scale", "hybrid"]}
MEASURES = ["hist_distance", "spectrum_distance", "peak_energy", "hf_excess", "lbp_distance", "patch_nn",
            "patch_cover", "copy_share"]
REFERENCE = "sample c (reference)"


def chosen_methods(spec):
    names = [n.strip() for n in spec.split(",") if n.strip()] or list(METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise SystemExit(f"--fidelity-methods: unknown {','.join(unknown)}; known: {','.join(METHODS)}")
    return names


def method_options(name, dtype):
    """(layers, synthesis.synthesize options) of a method: gen.py's defaults with its flags, for an output
    as large as the target."""
    given = vars(add_arguments(argparse.ArgumentParser(), ["gen"]).parse_args(METHODS[name]))
    args = argparse.Namespace(**{**dataclasses.asdict(Hyperparams()), **given, "tile": False})
    return layer_spec.parse_layers(args.layers), gen.options(args, dtype)


def build_data(args, folder):
    """The demo set with photographs, written unless the folder already holds one with these settings."""
    want = {"classes": args.demo_classes, "patches": args.demo_patches, "size": args.demo_size, "seed": args.seed,
            "photographs": list(demo.demo_photographs(args.demo_photos))}
    try:
        with open(os.path.join(folder, "demo.json"), encoding="utf-8") as f:
            have = json.load(f)
        if {k: have.get(k) for k in want if k != "classes"} == {k: v for k, v in want.items() if k != "classes"} \
                and len(have["classes"]) == args.demo_classes + len(want["photographs"]):
            return have["classes"]
    except (OSError, ValueError, KeyError):
        pass
    return demo.make_demo(folder, args.demo_classes, args.demo_patches, args.demo_size, args.seed,
                            tuple(want["photographs"]))


def classifier(args, data_dir):
    """--ckpt, else the classifier in --fidelity-dir/ckpt: trained there now if it holds none, resumed if
    its run was stopped before its last epoch (train.py saves a checkpoint on Ctrl-C)."""
    if args.ckpt:
        return args.ckpt
    folder = os.path.join(args.fidelity_dir, "ckpt")
    found = model.checkpoints(folder)
    if found:
        ckpt = model.load_checkpoint(found[-1])
        if ckpt["epoch"] >= ckpt["hparams"]["epochs"]:
            print(f"reusing the classifier in {folder}")
            return folder
        print(f"resuming the classifier's training in {folder}")
    train.main(["--data-dir", data_dir, "--split", "source", "--image-size", str(args.fidelity_train_size),
                "--epochs", str(args.fidelity_epochs), "--ckpt-dir", folder, "--log-dir",
                os.path.join(args.fidelity_dir, "log"), "--device", args.device, "--dtype", args.dtype,
                "--seed", str(args.seed), *(["--resume"] if found else [])])
    return folder


def crop(path, side):
    return dataset.center_crop(dataset.load_gray(path).float() / 255, side)


def synthesise(args, method, seed, targets, ckpt):
    """gen.py with the method's flags on every target as one batch; its result.json per target."""
    out = os.path.join(args.fidelity_dir, "gen", method, f"seed{seed}")
    argv = [*targets, "--ckpt", ckpt, "--gen-dir", out, "--image-size", str(args.fidelity_size), "--steps",
            str(args.fidelity_steps), "--seed", str(seed), "--snapshot-every", "0", "--device", args.device,
            "--dtype", args.dtype, *METHODS[method]]
    try:
        gen.main(argv)
    except SystemExit as e:  # some targets failed: the others are still reported
        print(f"{method}, seed {seed}: {e}", file=sys.stderr)
    results = []
    for job in plan(targets, out, seed):
        path = os.path.join(job["dir"], "result.json")
        with open(path, encoding="utf-8") as f:
            r = json.load(f)
        results.append({"dir": job["dir"], "label": job["label"], "quality": r.get("quality"),
                        "recognised": (r.get("verdict") or {}).get("recognised"),
                        "seconds": r["seconds"] / r["batch"], "message": r.get("message")})
    return results


def mean(rows, key):
    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def summary(records, photo_classes):
    """Means per method and set (photographs, demo classes), over targets and seeds."""
    out = []
    for method in dict.fromkeys(r["method"] for r in records):
        for name, keep in (("photographs", lambda c: c in photo_classes), ("demo", lambda c: c not in photo_classes)):
            rows = [{**(r["quality"] or {}), **r} for r in records if r["method"] == method and keep(r["label"])]
            if rows:
                out.append({"method": method, "set": name, "outputs": len(rows),
                            **{k: mean(rows, k) for k in MEASURES + ["recognised", "seconds"]}})
    return out


def markdown(rows):
    def fmt(v):
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
    head = ["method", "set", "outputs"] + MEASURES + ["recognised", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(fmt(r.get(k)) for k in head) + " |" for r in rows])


def picture(targets, outputs, methods, path):
    """One row per target: the target, then each method's output (first seed), labelled above."""
    side, band, pad = max(t.shape[0] for t in targets.values()), 14, 4
    names = ["target"] + methods
    grid = Image.new("L", (pad + len(names) * (side + pad), pad + len(targets) * (side + band + pad)), 255)
    draw = ImageDraw.Draw(grid)
    for i, (label, t) in enumerate(targets.items()):
        y = pad + i * (side + band + pad)
        for j, name in enumerate(names):
            x = pad + j * (side + pad)
            img = t if name == "target" else outputs.get((name, label))
            draw.text((x + 1, y), f"{label[:14]}" if name == "target" else name[:14], fill=0)
            if img is not None:
                grid.paste(Image.fromarray(pictures.to_uint8(img).numpy()), (x, y + band))
    write_atomic(path, lambda tmp: grid.save(tmp, format="PNG", optimize=True))


def new_base(base):
    """base, or base-2, base-3, ...: the first whose outputs do not exist (earlier runs are kept)."""
    k, found = 1, base
    while any(os.path.exists(found + ext) for ext in (".md", ".json", ".png")):
        k += 1
        found = f"{base}-{k}"
    return found


def write_text(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _extra(p):
    p.add_argument("--ckpt", default="", help="classifier checkpoint file or folder (default: the newest in "
                   "--fidelity-dir/ckpt, trained there first if it holds none)")


def main(argv=None):
    args = parse_args(__doc__, GROUPS, argv, extra=_extra)
    methods = chosen_methods(args.fidelity_methods)
    if args.fidelity_size > args.demo_size or args.fidelity_train_size > args.demo_size:
        raise SystemExit(f"--fidelity-size {args.fidelity_size} / --fidelity-train-size "
                         f"{args.fidelity_train_size}: must not exceed --demo-size {args.demo_size}")
    data_dir = os.path.join(args.fidelity_dir, "data")
    try:
        classes = build_data(args, data_dir)
    except dataset.DataError as e:
        raise SystemExit(f"fidelity.py: error: {e}")
    photo_classes = set(photos.parse(args.demo_photos))
    ckpt = classifier(args, data_dir)
    paths = [os.path.join(data_dir, c, f"{c}-d-p001.png") for c in classes]
    targets = {c: crop(p, args.fidelity_size) for c, p in zip(classes, paths)}
    records, outputs = [], {}
    for c in classes:  # the reference: another sample of the same texture, as if a method had made it
        other = crop(os.path.join(data_dir, c, f"{c}-c-p001.png"), args.fidelity_size)
        records.append({"method": REFERENCE, "seed": None, "label": c, "quality": quality.measures(other, targets[c])})
    for method in methods:
        for seed in range(args.seed, args.seed + args.fidelity_seeds):
            for r in synthesise(args, method, seed, paths, ckpt):
                records.append({"method": method, "seed": seed, **r})
                final = os.path.join(r["dir"], "final.png")
                if seed == args.seed and os.path.isfile(final):
                    outputs[method, r["label"]] = dataset.load_gray(final).float() / 255
    rows = summary(records, photo_classes)
    base = new_base(os.path.join(args.fidelity_dir, f"fidelity_{time.strftime('%Y%m%d-%H%M%S')}"))
    table = markdown(rows)
    write_atomic(base + ".md", lambda tmp: write_text(tmp, table + "\n"))
    save_json({"settings": vars(args), "methods": {m: METHODS[m] for m in methods}, "summary": rows,
               "records": records, "checkpoint": ckpt}, base + ".json")
    picture(targets, outputs, methods, base + ".png")
    save_args(args, os.path.join(args.fidelity_dir, "args.json"))
    print(table)
    print(f"wrote {base}.md, .json and .png")
    return {"summary": rows, "records": records, "base": base}


if __name__ == "__main__":
    main()
