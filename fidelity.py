"""The fidelity table: gen.py's method options on held-out real photographs and demo classes, judged by
quality.py's measures (none uses the network or the loss), with a picture of every output.

    python fidelity.py                                        # the setting of docs/real-photographs.md
    python fidelity.py --fidelity-methods default,spectrum0   # some of METHODS only
    python fidelity.py --ckpt asset/fidelity/ckpt             # reuse a classifier
    python fidelity.py --demo-size 128 --fidelity-size 128 --fidelity-seeds 4 --fidelity-steps 500  # full setting
    python fidelity.py --fidelity-methods default,texnet     # texnet.py's samples beside gen.py's default
    python fidelity.py --fidelity-set colour --fidelity-size 64 --fidelity-steps 100 --fidelity-seeds 3 --dtype fp32

One command does everything: the data (procedural.make_demo: --demo-classes procedural classes and the
--demo-photos photographs, each photograph's quadrants samples a..d) in --fidelity-dir/data; the
classifier (trained as train.py trains it, on the `source` split, sample d held out) in
--fidelity-dir/ckpt, trained unless it already holds one or --ckpt names one; then gen.py on the
first patch of sample d of every class (regions of the photographs never seen in training) for
every method and seed. Each run writes
--fidelity-dir/fidelity_<time>.md (the table), .json (every target's measures) and .png (each
target beside each method's output). The reference row scores sample c's first patch against the
target: what a new photograph of the same texture scores. Method `texnet` (only when named) trains
texnet.py's generator on each target with the --texnet-* flags, once (kept in --fidelity-dir/gen/texnet/
generators and reused), and scores one sample of the target's size per seed (tempered by --sample-temper).

--fidelity-set colour takes texture.data.colour's colour photographs (development and held-out) and
procedural colour classes instead, with --backbone random and no classifier: each target is the top
left --fidelity-size square of a square twice that size, its reference the bottom right one; every
output, grey ones included, is measured in colour against its target (docs/colour.md).
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from hyperparams import Hyperparams, add_arguments, given, parse_args
from texture.data import colour, photographs, procedural
from texture.data.images import DataError, center_crop, load_gray
from texture.measures import quality
from texture.networks import checkpoints as C
from texture.networks import training
from texture.run.device import pick_device
from texture.run.outputs import first_free, save_args, save_json, to_pil, write_atomic, write_png
from texture.synthesis import batch, generator_training
from texture.synthesis.methods import COLOUR_ONLY, METHODS
from texture.synthesis.targets import plan

GROUPS = ["device", "seed", "demo", "fidelity", "texnet"]
MEASURES = ["hist_distance", "spectrum_distance", "peak_energy", "hf_excess", "lbp_distance", "patch_nn",
            "patch_cover", "copy_share"]
COLOUR_MEASURES = ["colourfulness", "colour_hist_distance", "colour_patch_nn", "colour_patch_cover",
                   "colour_copy_share"]
COLOUR_METHODS = ["gram-spectrum", *COLOUR_ONLY, "default"]  # the colour set's, unless --fidelity-methods names others
REFERENCE = "sample c (reference)"
WINDOW = "other window (reference)"  # the colour set's
TEXNET = "texnet"  # not a gen.py recipe: texnet.py's generator of each target, sampled at the target's size


def chosen_methods(spec, in_colour=False):
    names = [n.strip() for n in spec.split(",") if n.strip()] or \
        (COLOUR_METHODS if in_colour else [m for m in METHODS if m not in COLOUR_ONLY])
    unknown = [n for n in names if n not in [*METHODS, TEXNET]]
    if unknown:
        raise SystemExit(f"--fidelity-methods: unknown {','.join(unknown)}; known: {','.join([*METHODS, TEXNET])}")
    return names


def build_data(args, folder):
    """The demo set with photographs: the one in the folder when it was made with these settings, else
    written there. A folder holding another set is refused, its files kept."""
    settings = (folder, args.demo_classes, args.demo_patches, args.demo_size, args.seed,
                procedural.demo_photographs(args.demo_photos))
    try:
        found = procedural.find_demo(*settings)
    except DataError as e:
        raise SystemExit(f"fidelity.py: error: --fidelity-dir {args.fidelity_dir}: {e}: pick another "
                         "--fidelity-dir for these settings")
    return found or procedural.make_demo(*settings)


def classifier(args, data_dir):
    """--ckpt, else the classifier in --fidelity-dir/ckpt: trained there now if it holds none, resumed if
    its run was stopped before its last epoch (training saves a checkpoint on Ctrl-C)."""
    if args.ckpt:
        return args.ckpt
    folder = os.path.join(args.fidelity_dir, "ckpt")
    found, resume = C.checkpoints(folder), None
    if found:
        ckpt = C.load_checkpoint(found[-1])
        if ckpt["epoch"] >= ckpt["hparams"]["epochs"]:
            print(f"reusing the classifier in {folder}")
            return folder
        print(f"resuming the classifier's training in {folder}")
        resume = (found[-1], ckpt)
    argv = ["--data-dir", data_dir, "--split", "source", "--image-size", str(args.fidelity_train_size),
            "--epochs", str(args.fidelity_epochs), "--ckpt-dir", folder, "--log-dir",
            os.path.join(args.fidelity_dir, "log"), "--device", args.device, "--dtype", args.dtype,
            "--seed", str(args.seed)]
    train_args = add_arguments(argparse.ArgumentParser(), training.GROUPS).parse_args(argv)
    train_args.resume = resume is not None
    try:
        training.Run(train_args, resume, 0, 1, pick_device(args.device)).fit()
    except (DataError, C.CheckpointError) as e:
        raise SystemExit(f"fidelity.py: error: {e}")
    return folder


def crop(path, side):
    return center_crop(load_gray(path).float() / 255, side)


def network(ckpt):
    """The flags of the synthesis network: the classifier, or an untrained one (the colour set)."""
    return ["--ckpt", ckpt] if ckpt else ["--backbone", "random"]


def synthesise(args, method, seed, targets, ckpt):
    """The method's flags on every target as one batch, as gen.py runs them: each target's record
    from this run (a failed target: its reason, no measures)."""
    out = os.path.join(args.fidelity_dir, "gen", method, f"seed{seed}")
    # --steps only when asked for: given, it would also keep the long counts from --short-from px on
    steps = ["--steps", str(args.fidelity_steps)] if args.fidelity_steps else []
    argv = [*targets, *network(ckpt), "--gen-dir", out, "--image-size", str(args.fidelity_size), *steps,
            "--seed", str(seed), "--snapshot-every", "0", "--device", args.device, "--dtype", args.dtype,
            *METHODS[method]]
    gen_args = parse_args(None, batch.GROUPS, argv, extra=batch.add_flags, check=batch.check_flags)
    jobs, records, failed = batch.synthesise(gen_args, given(argv, batch.GROUPS, batch.add_flags), 0, 1,
                                             pick_device(args.device))
    if failed:  # the others are still reported
        print(f"{method}, seed {seed}: {len(failed)} target(s) failed: {failed}", file=sys.stderr)
    done = {r["target"]: r for r in records}
    results = []
    for job in jobs:
        r = done.get(job["path"], {})
        results.append({"png": os.path.join(out, r["name"], "final.png") if r else None, "label": job["label"],
                        "quality": r.get("quality"), "recognised": (r.get("verdict") or {}).get("recognised"),
                        "seconds": r["seconds"] / r["batch"] if r else None,
                        "message": failed.get(job["path"], r.get("message"))})
    return results


def texnet_samples(args, seed, targets, ckpt):
    """texnet.py's training and sampling (generator_training.run) on every target: its generator trained
    with the --texnet-* flags (or the one an earlier seed or run trained with them, continued to
    --texnet-steps), then one sample of the target's size
    from this seed; each target's record as synthesise gives it (seconds: the sample's)."""
    common = ["--device", args.device, "--dtype", args.dtype]
    judge = ["--ckpt", ckpt] if ckpt else []  # the samples' verdict; the colour set has no classifier
    flags = [x for k in vars(Hyperparams()) if k.startswith("texnet_") and k != "texnet_dir"
             for x in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]
    folder = os.path.join(args.fidelity_dir, "gen", TEXNET)
    generators = os.path.join(folder, "generators")
    generator_training.run(["train", *targets, *network(ckpt), *common, *flags,
                            "--image-size", str(args.fidelity_size), "--seed", str(args.seed),
                            "--texnet-dir", generators, "--resume"])
    dirs = [p["dir"] for p in plan(targets, generators, args.seed)]  # each target's folder, as training made it
    joint = generator_training.generator_dir(generators, dirs) if args.texnet_mode == "joint" else None
    results = []
    for path, own in zip(targets, dirs):
        label = os.path.basename(os.path.dirname(path))
        side, out = str(args.fidelity_size), os.path.join(folder, f"seed{seed}")
        which = [os.path.join(joint, "texnet.pt"), "--label", os.path.basename(own)] if joint else \
            [os.path.join(own, "texnet.pt")]
        r = generator_training.run(["sample", *which, *judge, *common,
                                    "--size", side, side, "--seed", str(seed), "--sample-dir", out,
                                    "--sample-temper", str(args.sample_temper),
                                    "--sample-fill", str(args.sample_fill),
                                    "--sample-fill-width", str(args.sample_fill_width)])[0]
        results.append({"png": r["png"], "label": label,
                        "quality": r["quality"], "recognised": (r.get("verdict") or {}).get("recognised"),
                        "seconds": r["seconds"], "message": None})
    return results


def mean(rows, key):
    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def summary(records, set_of, measures):
    """Means per method and set (set_of(label)), over targets and seeds."""
    out, sets = [], dict.fromkeys(set_of(r["label"]) for r in records)
    for method in dict.fromkeys(r["method"] for r in records):
        for name in sets:
            rows = [{**(r["quality"] or {}), **r} for r in records
                    if r["method"] == method and set_of(r["label"]) == name]
            if rows:  # outputs: those measured; a failed one has no measures, and none of an earlier run's
                out.append({"method": method, "set": name, "outputs": sum(r["quality"] is not None for r in rows),
                            **{k: mean(rows, k) for k in measures + ["recognised", "seconds"]}})
    return out


def markdown(rows, measures):
    def fmt(v):
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
    head = ["method", "set", "outputs"] + measures + ["recognised", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(fmt(r.get(k)) for k in head) + " |" for r in rows])


def load_rgb(path):
    """An image file as (3, H, W) RGB in [0, 1] (a grey one with three equal channels)."""
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 255


def picture(targets, outputs, methods, path):
    """One row per target: the target, then each method's output (first seed), labelled above."""
    side, band, pad = max(t.shape[-1] for t in targets.values()), 14, 4
    names = ["target"] + methods
    mode = "RGB" if any(t.dim() == 3 for t in targets.values()) else "L"
    grid = Image.new(mode, (pad + len(names) * (side + pad), pad + len(targets) * (side + band + pad)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (label, t) in enumerate(targets.items()):
        y = pad + i * (side + band + pad)
        for j, name in enumerate(names):
            x = pad + j * (side + pad)
            img = t if name == "target" else outputs.get((name, label))
            draw.text((x + 1, y), f"{label[:14]}" if name == "target" else name[:14], fill="black")
            if img is not None:
                grid.paste(to_pil(img).convert(mode), (x, y + band))
    write_atomic(path, lambda tmp: grid.save(tmp, format="PNG", optimize=True))


def write_text(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _extra(p):
    p.add_argument("--ckpt", default="", help="classifier checkpoint file or folder (default: the newest in "
                   "--fidelity-dir/ckpt, trained there first if it holds none)")
    # method texnet's samples
    add_arguments(p, ["texsample"], only={"sample_temper", "sample_fill", "sample_fill_width"})


def grey_set(args):
    """The demo set with photographs and its classifier: (paths, targets, references, set of each label,
    checkpoint); each target the first patch of sample d, its reference sample c's."""
    if args.fidelity_size > args.demo_size or args.fidelity_train_size > args.demo_size:
        raise SystemExit(f"--fidelity-size {args.fidelity_size} / --fidelity-train-size "
                         f"{args.fidelity_train_size}: must not exceed --demo-size {args.demo_size}")
    data_dir = os.path.join(args.fidelity_dir, "data")
    try:
        classes = build_data(args, data_dir)
    except DataError as e:
        raise SystemExit(f"fidelity.py: error: {e}")
    photo_classes = set(photographs.parse(args.demo_photos))
    ckpt = classifier(args, data_dir)
    paths = [os.path.join(data_dir, c, f"{c}-d-p001.png") for c in classes]
    targets = {c: crop(p, args.fidelity_size) for c, p in zip(classes, paths)}
    references = {c: crop(os.path.join(data_dir, c, f"{c}-c-p001.png"), args.fidelity_size) for c in classes}
    return paths, targets, references, {c: "photographs" if c in photo_classes else "demo" for c in classes}, ckpt


def colour_set(args):
    """The colour set (see the module's docstring), its targets written once to
    --fidelity-dir/colour/<size>/<name>/<name>.png: (paths, targets, references, set of each label, no
    checkpoint)."""
    known = [*colour.PHOTOS, *colour.PALETTES]
    names = known if args.fidelity_colour_targets == "all" else \
        [n.strip() for n in args.fidelity_colour_targets.split(",") if n.strip()]
    if unknown := [n for n in names if n not in known]:
        raise SystemExit(f"--fidelity-colour-targets: unknown {','.join(unknown)}; known: {','.join(known)}")
    side, paths, targets, references, sets = args.fidelity_size, [], {}, {}, {}
    for name in names:
        try:
            targets[name], references[name] = colour.windows(name, side, args.seed)
        except ImportError as e:
            raise SystemExit(f"--fidelity-colour-targets: {name} needs {e.name} (pip install {e.name}); leave it out")
        except ValueError as e:
            raise SystemExit(f"--fidelity-size {side}: {e}")
        path = os.path.join(args.fidelity_dir, "colour", str(side), name, f"{name}.png")
        if not os.path.exists(path):  # the same pixels every time: written once
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_png(targets[name], path)
        paths.append(path)
        sets[name] = colour.set_of(name)
    return paths, targets, references, sets, ""


def main(argv=None):
    args = parse_args(__doc__, GROUPS, argv, extra=_extra)
    if problem := generator_training.joint_waves(args, given(argv, GROUPS, _extra)) or \
            generator_training.fill_without_temper(args, given(argv, ["texsample"])):
        raise SystemExit(problem)
    if args.fidelity_size < batch.LEAST_SIDE:  # before the data and classifier, which gen.py would refuse after them
        raise SystemExit(f"--fidelity-size {args.fidelity_size}: must be at least {batch.LEAST_SIDE} px")
    in_colour = args.fidelity_set == "colour"
    methods = chosen_methods(args.fidelity_methods, in_colour)
    paths, targets, references, sets, ckpt = colour_set(args) if in_colour else grey_set(args)
    measures = MEASURES + COLOUR_MEASURES if in_colour else MEASURES
    records, outputs = [], {}
    for c in targets:  # the reference: another sample of the same texture, as if a method had made it
        records.append({"method": WINDOW if in_colour else REFERENCE, "seed": None, "label": c,
                        "quality": quality.measures(references[c], targets[c])})
    for method in methods:
        for seed in range(args.seed, args.seed + args.fidelity_seeds):
            made = texnet_samples(args, seed, paths, ckpt) if method == TEXNET else \
                synthesise(args, method, seed, paths, ckpt)
            for r in made:
                if r["quality"] is not None and (in_colour or seed == args.seed):
                    img = load_rgb(r["png"]) if in_colour else load_gray(r["png"]).float() / 255
                    if in_colour:  # grey outputs too, as colour images
                        r["quality"] = quality.measures(img, targets[r["label"]])
                    if seed == args.seed:
                        outputs[method, r["label"]] = img
                records.append({"method": method, "seed": seed, **r})
    rows = summary(records, sets.get, measures)
    stem = os.path.join(args.fidelity_dir, f"fidelity_{time.strftime('%Y%m%d-%H%M%S')}")
    md = first_free(stem + ".md", stem + ".json", stem + ".png")[0]  # an earlier run's three are kept
    base = os.path.splitext(md)[0]
    table = markdown(rows, measures)
    write_atomic(base + ".md", lambda tmp: write_text(tmp, table + "\n"))
    save_json({"settings": vars(args), "methods": {m: METHODS.get(m, TEXNET) for m in methods}, "summary": rows,
               "records": records, "checkpoint": ckpt}, base + ".json")
    picture(targets, outputs, methods, base + ".png")
    save_args(args, first_free(os.path.join(args.fidelity_dir, "args.json"))[0])
    print(table)
    print(f"wrote {base}.md, .json and .png")
    failed = [r for r in records if r["quality"] is None]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(records) - len(targets)} output(s) failed, left out of the table: "
                         + ", ".join(f"{r['method']} seed {r['seed']} {r['label']} ({r['message']})" for r in failed))
    return {"summary": rows, "records": records, "base": base}


if __name__ == "__main__":
    main()
