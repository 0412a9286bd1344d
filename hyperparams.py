"""Every default of the project, in one place.

Each field is one line: name, type, default and a comment that becomes its `--help` text.
A `# == group ==` line starts a group; a script asks for the groups it uses and gets a
parser whose flags are those fields (`batch_size` -> `--batch-size`).

    from hyperparams import parse_args
    args = parse_args(__doc__, ["device", "seed", "data", "crop", "train"])
"""
import argparse
import dataclasses
import re
from dataclasses import dataclass


@dataclass
class Hyperparams:
    # == device ==
    device: str = "auto"  # auto|cpu|cuda|cuda:N: auto takes CUDA when present
    dtype: str = "auto"  # autocast dtype; auto is bf16 where the hardware runs it natively, else fp16 on CUDA, fp32 on CPU
    # == seed ==
    seed: int = 0  # random seed of the split, the demo set, the weights and the noise (each torchrun rank adds its rank)
    # == fetch ==
    url: str = "http://www.cb.uu.se/~gustaf/texture/data/without-rotations-zip/"  # where the per-class zips live
    zips_dir: str = "data/kylberg-zips"  # downloaded (or hand-placed) per-class zips
    # == data ==
    data_dir: str = "data/kylberg"  # extracted dataset, one folder per class (prepro.py --demo: data/demo)
    split: str = "patch"  # patch|source|all: held-out patches per class, held-out sample d, or no hold-out
    test_fraction: float = 0.25  # share of each class held out by the patch split
    # == crop ==
    image_size: int = 224  # side of the square crop fed to the network
    # == eval ==
    eval_crop: str = "center"  # center|full: what evaluation sees of each image
    # == loader ==
    workers: int = 0  # background threads that prepare training batches (0: in the main loop)
    # == demo ==
    demo_classes: int = 6  # number of procedural texture classes
    demo_patches: int = 40  # patches per class (10 per sample a..d)
    demo_size: int = 96  # side of each demo patch in pixels
    demo_photos: str = "brick,grass,gravel,hubble_deep_field"  # real photographs shipped with scikit-image added as classes, each quadrant a sample a..d (empty: none)
    # == train ==
    ckpt_dir: str = "asset/train/ckpt"  # checkpoints and the run's settings
    log_dir: str = "asset/train/log"  # TensorBoard events, metrics.jsonl, curves.png
    arch: str = "vgg19_bn"  # vgg19|vgg19_bn: the network; batch norm lets it train from scratch (docs/design.md)
    batch_size: int = 16  # images per optimiser step (per process under torchrun)
    epochs: int = 30  # passes over the training split
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 5e-4  # AdamW weight decay
    warmup_epochs: float = 1.0  # linear warm-up before the cosine decay
    keep: int = 5  # most recent checkpoints kept (the best one is kept as well)
    log_every: int = 10  # optimiser steps between log lines
    compile: str = "auto"  # auto|on|off: torch.compile the training step (auto: on CUDA only)
    # == ckpt ==
    ckpt: str = ""  # checkpoint file, a folder (its newest numbered checkpoint), or best (best.pt in asset/train/ckpt); empty: the newest in asset/train/ckpt (bench.py: random weights)
    # == test ==
    test_dir: str = "asset/test"  # confusion matrix and JSON report
    eval_batch_size: int = 32  # images per forward pass during evaluation
    # == gen ==
    gen_dir: str = "gen_images"  # synthesis outputs, one folder per target
    target_side: int = 0  # shrink each target larger than this, keeping its aspect, until its shorter side is this many px (Pillow's antialiased bicubic), before the centre --image-size crop or --full: a large photograph's crop then shows more of it, at a coarser scale (0: as it is)
    layers: str = "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1"  # feature taps whose Gram matrices are matched, name[:weight],... or a preset: blocks (this), original (pool1..pool4), gatys (conv1_1,pool1..pool4)
    pool: str = "avg"  # max|avg: pooling used during synthesis
    optimizer: str = "lbfgs"  # lbfgs|adam
    lbfgs_history: int = 10  # with --optimizer lbfgs: the curvature pairs each image's L-BFGS keeps; more reach a given loss in fewer iterations, each pair costs two passes over the image per iteration (docs/speed.md)
    gen_lr: float = 0.0  # optimiser step size (0: the optimiser's own, see GEN_LR: L-BFGS 1, Adam 0.02)
    steps: int = 300  # optimiser iterations per target
    time_budget: float = 0.0  # stop each batch after this many seconds, refinement and polish included (0: no limit)
    stop_tolerance: float = 0.0  # each image of a batch stops when its best loss improved by less than this share over the last --stop-window iterations, in each part (the Gram + spectrum, refinement and polish); --steps and --refine-steps stay the upper bounds (0: every iteration runs; docs/speed.md)
    stop_window: int = 10  # iterations over which --stop-tolerance judges an image's progress
    snapshot_every: int = 50  # iterations between snapshots (0: none)
    loss: str = "gram"  # gram|swd|gcd|gram+gcd|swd+gcd: Gram matrices (Gatys), sliced Wasserstein distance of the whole feature distribution (Heitz et al.), guided correspondence of feature patches (Zhou et al.), or a statistic plus the correspondence term
    spectrum_weight: float = 0.3  # weight of the Fourier amplitude-spectrum constraint (Liu et al. 2016; 0: off); 0.3 measured best (docs/losses.md)
    levels: int = 0  # coarse-to-fine levels, each half the size of the next (0: auto, more when the output is much larger than the target)
    features: str = "normalize"  # normalize|standardize|raw: channels scaled by their mean on the target, floored at the median (docs/design.md), per-image z-score (original), as is
    init: str = "shuffle"  # shuffle|gauss|uniform: start noise with the target's grey levels, its mean/std, or U(0,1) (original)
    pixels: str = "sigmoid"  # sigmoid|clamp: optimise logits through a sigmoid, or pixels clamped to [0,1] after each step (Adam only)
    padding: str = "reflect"  # reflect|zeros|circular: convolution padding during synthesis (--tile forces circular)
    backbone: str = "trained"  # trained|random|imagenet: synthesis network: the classifier of --ckpt, the same architecture with random weights, or torchvision's ImageNet VGG-19 (Gatys)
    backbone_weights: str = ""  # --backbone imagenet: local copy of torchvision's VGG-19 ImageNet state_dict (empty: torchvision fetches it)
    gcd_layers: str = "relu2_1,relu3_1,relu4_1"  # taps of the guided correspondence term (--loss gcd, gram+gcd, swd+gcd), name[:weight],..., as Zhou et al.
    gcd_weight: float = 0.3  # weight of the guided correspondence term beside the Gram or SWD term (0.3: the refinement's, measured best in docs/correspondence.md)
    gcd_patches: int = 1024  # most target patches per tap the correspondence term compares with: beyond, a fixed random sample of them, so its cost grows with the output alone (docs/correspondence.md)
    occurrence: float = 0.05  # occurrence penalty of the correspondence term: how strongly a target patch already used is avoided (Zhou et al.: 0.05)
    refine_steps: int = 100  # iterations after --steps that add the guided correspondence term on --refine-layers (with --gcd-weight, --occurrence) to --loss, with Adam, at the output's full size: sharpens the objects of the result where it put them (0: none; an output made coarse to fine gets them at its coarsest level and --fine-refine-steps at each finer one, or, when this flag is given, at full size after all levels; docs/correspondence.md, docs/speed.md)
    refine_lr: float = 0.05  # Adam step size of the --refine-steps iterations
    refine_layers: str = "relu1_1,relu2_1,relu3_1,relu4_1"  # taps of the correspondence term during --refine-steps, name[:weight],...
    refine_channels: str = "relu1_1:0.5,relu2_1:0.75"  # share of each listed tap's channels the refinement's correspondence term compares, along the target's strongest principal directions, name:share,... (others, or none: all): 0.8x the time of the 224 px default at its quality (docs/speed.md)
    polish_steps: int = 30  # iterations after --refine-steps with --loss and --optimizer again: they take back what the refinement copied verbatim and keep part of its gain (0: none; docs/correspondence.md)
    short_from: int = 224  # an output made at one level without --tile whose sides are both at least this many pixels takes --short-steps, --short-refine-steps and --short-refine-lr instead of --steps, --refine-steps and --refine-lr, unless one of those three is given: within the seeds' spread there in about 0.6 of the time, not below (docs/speed.md; 0: never)
    short_steps: int = 200  # --steps of an output from --short-from on
    short_refine_steps: int = 50  # --refine-steps of an output from --short-from on
    short_refine_lr: float = 0.15  # --refine-lr of an output from --short-from on
    fine_refine_steps: int = 20  # refinement iterations at each finer level of an output made coarse to fine (without --refine-steps given), after that level's Gram + spectrum iterations: draws what is only a few pixels wide at the coarsest level, such as a gravel's stones (0: the coarsest level alone; docs/speed.md)
    fine_polish_steps: int = 10  # polish iterations after each finer level's --fine-refine-steps (the first loss again)
    occurrence_hold: int = 5  # with --optimizer lbfgs: evaluations for which the occurrence penalty's matches are held, so that each line search sees one smooth objective (0: found again at every evaluation, which stalls L-BFGS)
    colour: str = "auto"  # auto|grey: a colour target gives a colour texture (auto), or its luminance is synthesised as before (grey)
    chroma_layers: str = "relu1_1,relu2_1"  # taps of --layers at which a colour target's three decorrelated channels are matched together through the grey network, for a target whose colours --chroma-share says need it (none: never; docs/colour.md)
    chroma_share: float = 0.7  # a colour target whose strongest principal axis carries more than this share of its pixels' variance is synthesised in luminance, as a grey target, and coloured after from its own patches nearest in luminance (its luminance is the grey synthesis's); at most this share (colours of one luminance, as four-colour tiles), its three decorrelated channels meet in the network at --chroma-layers (0: never, 1: always; docs/colour.md)
    spectrum_scale: str = "absolute"  # absolute|relative|hybrid: the spectrum term's error per frequency as is, relative to the target's power there (weighs a smooth target's top frequencies), or relative with powers above the target's mean counted as the mean (keeps peaks too; docs/ripples.md)
    heap: str = "keep"  # keep|release: a CPU run keeps the memory it frees for its own reuse (glibc only; the README's 1024 px output in 0.75x the time at 1.38x the peak memory; chosen when 1.6x the run's memory estimate fits, given back once the run holds more than that or half the memory free at its start) or returns it to the system at once (docs/speed.md)
    # == bench ==
    bench_dir: str = "asset/bench"  # bench.json (the results) and args.json
    bench_batch: int = 16  # images per timed training step
    bench_steps: int = 2  # training steps per timed round
    bench_repeats: int = 3  # interleaved rounds per comparison; medians are reported
    bench_images: int = 160  # images in the generated dataset (28 classes) whose training epoch is timed
    bench_orig_steps: int = 200000  # most Adam steps of the original synthesis recipe (it runs until its plateau)
    bench_gen_steps: int = 300  # most iterations each method gets to reach the original's final quality measures
    bench_chunk: int = 8  # synthesis iterations per timed round
    bench_matmul: int = 2048  # side of the square matmuls that measure peak FLOP/s
    bench_texnet_size: int = 1024  # side of the texnet.py sample timed against one gen.py iteration at that size
    bench_photo: str = "gravel"  # photograph (photos.PHOTOS) whose centre --image-size crop is the synthesis target
    bench_orig_seconds: float = 3600.0  # stop the original recipe after this many seconds, its own rule (0: --bench-orig-steps only)
    bench_orig_every: int = 250  # original recipe's iterations between quality measurements
    bench_gen_every: int = 5  # each method's iterations between quality measurements
    bench_refine_sizes: str = "96,192,288"  # output sides (= target's) at which the refinement's iteration (fidelity method refine) is timed against the Gram + spectrum iteration
    bench_sections: str = ""  # sections to run, comma-separated: train (with data and flops), synthesis (with iteration), refine, colour, texnet, fast, heap (empty: all but fast and heap, which run whole recipes and only when named)
    bench_batch_targets: int = 28  # sections fast and heap: targets of the batch timed after the single one (the photographs of PHOTOS, then procedural classes; 0: none)
    bench_batch_side: int = 160  # sections fast and heap: side of the batch's targets and outputs
    bench_heap_side: int = 1024  # section heap: side of the tileable output made of --bench-photo's crop
    bench_heap_steps: int = 100  # section heap: gen.py's --steps in each run (the batch's refinement a third of them, its polish a tenth)
    # == fidelity ==
    fidelity_dir: str = "asset/fidelity"  # fidelity.py's data, classifier, outputs, tables, pictures and JSON
    fidelity_methods: str = ""  # methods of fidelity.METHODS to run, comma-separated (empty: all)
    fidelity_seeds: int = 2  # outputs per target and method, each from its own noise
    fidelity_size: int = 96  # side of the held-out targets and of the outputs (at most --demo-size)
    fidelity_train_size: int = 64  # side of the crops the classifier trains on (as the README's demo)
    fidelity_epochs: int = 12  # classifier training epochs (as the README's demo)
    fidelity_steps: int = 0  # gen.py --steps of every output (0: gen.py's own, which from --short-from px on is --short-steps)
    fidelity_set: str = "grey"  # grey: the demo classes and photographs, with the classifier; colour: texture.data.colour's photographs and procedural classes with --backbone random, no classifier (docs/colour.md)
    fidelity_colour_targets: str = "all"  # the colour set's targets, comma-separated names of texture.data.colour's PHOTOS and PALETTES (all: every one; parrot and macaque need plenoptic)
    # == texnet ==
    texnet_dir: str = "asset/texnet"  # trained generators, one folder each: texnet.pt (weights and settings), snapshots
    texnet_steps: int = 1000  # Adam steps per generator
    texnet_loss: str = "gram+gcd"  # the training loss, --loss's choices: the Gram statistics with the guided correspondence term give samples closer to the target in the same time (docs/texnet.md)
    texnet_spectrum_weight: float = 0.3  # weight of the Fourier spectrum term in the training loss, --spectrum-weight's in gen.py (0: off; docs/texnet.md)
    texnet_lr: float = 0.01  # Adam learning rate of the generator (its peak with --texnet-schedule cosine)
    texnet_schedule: str = "constant"  # constant|cosine: the learning rate held, or decayed to 0 along a half cosine over --texnet-steps
    texnet_warmup: int = 100  # steps over which the learning rate rises linearly to --texnet-lr: Adam's first step moves every weight by the full rate, and the loss jumped after it (0: none; docs/texnet.md)
    texnet_polish: float = 0.1  # the last this share of --texnet-steps (or of --time-budget, when that stops training first) trains on the statistic alone (gram of gram+gcd), as gen.py's polish follows its refinement: it brought the brick's copies down to gen.py's; a generator with plane waves trains without it, which bends a lattice's lines (0: none; docs/texnet.md)
    texnet_batch: int = 4  # samples per step (per process under torchrun)
    texnet_size: int = 128  # side of the training samples, a multiple of 2**(scales-1)
    texnet_scales: int = 5  # noise scales; the coarsest is 2**(scales-1) times smaller than the output
    texnet_width: int = 8  # channels per scale (the path grows by this many at each join)
    texnet_noise: int = 3  # noise channels per scale
    texnet_waves: int = 2  # most plane waves beside the half-size noise, at the target's strongest periodic components (as many as it has, often none; --texnet-mode each; 0: none; docs/texnet.md)
    texnet_norm: str = "batch"  # batch|instance: normalise over the images of a texture in the batch, or over each image (docs/texnet.md)
    texnet_mode: str = "each"  # each|joint: one generator per target, or one for all targets conditioned on the target (docs/texnet.md)
    texnet_snapshot_every: int = 200  # steps between a checkpoint and a snapshot sample (0: only at the end)
    texnet_calibrate: int = 512  # side of the sample whose normalisation statistics are kept for sampling
    # == texsample ==
    sample_dir: str = "gen_images/texnet"  # samples, one folder per texture, report.json and collections
    sample_tile: int = 1024  # largest side computed in one pass; larger samples are made in tiles of this (memory)
    sample_temper: float = 8.0  # after the generator, lower the sample's power spectrum wherever it exceeds the target's, both smoothed over frequencies as autocorrelations within this many pixels see them: the fine grain and ripples the target lacks fade, layout and phases stay (0: off; docs/texnet.md)
    sample_fill: float = 1.0  # with --sample-temper: where the sample has less power than the target, add seeded gaussian noise with the missing power, up to this multiple of the target's median power (the pixel noise a generator does not make; 0: off; docs/texnet.md)
    sample_fill_width: float = 24.0  # with --sample-fill: the fill compares the sample's and the target's power spectra smoothed over this many pixels of autocorrelation (24 instead of the tempering's 8 gives a lattice's samples back the target's noise below and between its peaks: spectrum and LBP closer; docs/texnet.md)


PHOTOS = ("brick", "grass", "gravel", "hubble_deep_field")  # texture photographs shipped with scikit-image (photos.py)
# Allowed values of the fields that take a word.
CHOICES = {
    "dtype": ["auto", "bf16", "fp16", "fp32"],
    "split": ["patch", "source", "all"],
    "eval_crop": ["center", "full"],
    "compile": ["auto", "on", "off"],
    "arch": ["vgg19", "vgg19_bn"],
    "pool": ["max", "avg"],
    "optimizer": ["lbfgs", "adam"],
    "loss": ["gram", "swd", "gcd", "gram+gcd", "swd+gcd"],
    "features": ["normalize", "standardize", "raw"],
    "init": ["shuffle", "gauss", "uniform"],
    "pixels": ["sigmoid", "clamp"],
    "spectrum_scale": ["absolute", "relative", "hybrid"],
    "heap": ["keep", "release"],
    "colour": ["auto", "grey"],
    "fidelity_set": ["grey", "colour"],
    "padding": ["reflect", "zeros", "circular"],
    "backbone": ["trained", "random", "imagenet"],
    "bench_photo": list(PHOTOS),
    "texnet_loss": ["gram", "swd", "gcd", "gram+gcd", "swd+gcd"],
    "texnet_mode": ["each", "joint"],
    "texnet_norm": ["batch", "instance"],
    "texnet_schedule": ["constant", "cosine"],
}
# Numeric fields that may be zero; every other number must be positive.
ZERO_OK = {"seed", "target_side", "workers", "weight_decay", "warmup_epochs", "texnet_warmup", "time_budget", "snapshot_every", "spectrum_weight", "levels",
           "stop_tolerance", "gen_lr", "bench_orig_seconds", "occurrence", "refine_steps", "occurrence_hold", "polish_steps",
           "fine_refine_steps", "fine_polish_steps", "short_from", "short_refine_steps", "texnet_snapshot_every", "texnet_waves", "texnet_polish", "texnet_spectrum_weight", "chroma_share", "bench_batch_targets",
           "sample_temper", "sample_fill", "fidelity_steps"}
# --gen-lr 0: each optimiser's own step size (Adam diverges at L-BFGS's 1, L-BFGS crawls at Adam's 0.02).
GEN_LR = {"lbfgs": 1.0, "adam": 0.02}
# Where `prepro.py --demo` writes when --data-dir is not given.
DEMO_DIR = "data/demo"


def _comments():
    """Field name -> (group, help text), read from this file's source lines."""
    out, group = {}, None
    with open(__file__, encoding="utf-8") as f:
        for line in f:
            if m := re.match(r"\s*# == (\w+) ==", line):
                group = m.group(1)
            elif m := re.match(r"\s+(\w+): \w+ = .*?  # (.*)$", line):
                out[m.group(1)] = (group, m.group(2))
    return out


def _checked(name, kind):
    """An argparse type that names the flag in its error and rejects out-of-range numbers and devices
    other than the ones --device names."""
    def convert(text):
        if name == "device" and not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
            raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {text!r}")
        value = kind(text)
        if kind in (int, float) and (value < 0 or (value == 0 and name not in ZERO_OK)):
            raise argparse.ArgumentTypeError(f"must be {'>= 0' if name in ZERO_OK else '> 0'}, got {text}")
        if name in ("test_fraction", "texnet_polish") and not value < 1:
            raise argparse.ArgumentTypeError(f"must be below 1, got {text}")
        if name == "chroma_share" and value > 1:
            raise argparse.ArgumentTypeError(f"must be at most 1, got {text}")
        return value
    convert.__name__ = kind.__name__
    return convert


def add_arguments(parser, groups, hidden=(), only=None):
    """Add every field of the given groups (or, given `only`, those of them it names) to an argparse
    parser as `--flag-name`; those named in `hidden` are parsed but left out of --help (a script that
    refuses them)."""
    info = _comments()
    defaults = Hyperparams()
    for f in dataclasses.fields(Hyperparams):
        group, text = info[f.name]
        if group not in groups or (only is not None and f.name not in only):
            continue
        parser.add_argument("--" + f.name.replace("_", "-"), type=_checked(f.name, f.type),
                            default=getattr(defaults, f.name), choices=CHOICES.get(f.name),
                            help=argparse.SUPPRESS if f.name in hidden else text + " (default: %(default)s)")
    return parser


def given(argv, groups, extra=None):
    """Names of the fields of these groups set explicitly in `argv` (None: sys.argv), not by default.
    `extra`: as for parse_args, so that abbreviations resolve as they do there."""
    unset = object()  # argparse fills in defaults only for attributes the namespace lacks
    info = _comments()
    names = [f.name for f in dataclasses.fields(Hyperparams) if info[f.name][0] in groups]
    parser = argparse.ArgumentParser(add_help=False)
    if extra:
        extra(parser)
    seen = add_arguments(parser, groups).parse_known_args(argv, argparse.Namespace(**{k: unset for k in names}))[0]
    return {k for k in names if getattr(seen, k) is not unset}


def parse_args(doc, groups, argv=None, extra=None, check=None):
    """Parse the command line of a script that uses the given groups of hyperparameters.

    `extra(parser)` may add the script's own arguments (positional files, switches).
    `check(args, given)` may return why a combination of flags cannot work (a flag without effect,
    say); it becomes an argparse error. `given` holds the fields set explicitly.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if extra:
        extra(parser)
    args = add_arguments(parser, groups).parse_args(argv)
    if check and (problem := check(args, given(argv, groups, extra))):
        parser.error(problem)
    return args
