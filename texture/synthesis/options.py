"""How synthesis runs: one Options object, built once and handed to texture.synthesis.optimize.

Options() is gen.py's recipe: every default comes from hyperparams.py, the one source of defaults.
Options.from_args builds it from a script's parsed flags (gen.py, texnet.py, fidelity.py's methods).

    python -c "from texture.synthesis.options import Options; print(Options().refine_steps)"
"""
import dataclasses

from hyperparams import GEN_LR, Hyperparams
from texture.synthesis.taps import parse_layers, parse_shares

H = Hyperparams()


def _layers(spec):
    return dataclasses.field(default_factory=lambda: parse_layers(spec))


@dataclasses.dataclass(frozen=True)
class Options:
    """layers: the Gram or SWD term's taps and weights; loss: a key of losses.LOSSES, or a statistic and gcd
    joined by +; features: normalize|standardize|raw (losses._scaled); optimizer: lbfgs|adam (L-BFGS keeping
    lbfgs_history curvature pairs per image), with step size lr (0: the optimiser's own, GEN_LR), for `steps`
    iterations or `time_budget` seconds (0: no limit; it covers the refinement and polish too), each image
    stopping on its own once its best loss improved by less than stop_tolerance over stop_window iterations
    (stopping.Plateau; 0: never); init: the start noise
    (optimize.init_image); pixels: sigmoid (optimise logits) or clamp; pool, padding: the network's during
    synthesis (tile: circular, the output tiles); dtype: --dtype (auto|bf16|fp16|fp32), resolved on the
    network's device; spectrum_weight > 0 adds the Fourier spectrum term, its errors scaled by
    spectrum_scale (spectrum.spectrum_loss); levels > 1 works coarse to fine (0: decided per output size,
    optimize.resolve); gcd_layers, gcd_weight, occurrence: the taps, weight and occurrence penalty of the
    correspondence term, which compares with at most gcd_patches target patches per tap; refine_steps > 0
    adds a refinement with Adam at refine_lr and the correspondence term on refine_layers, on the share
    refine_channels of a tap's channels (gcd_channels: those of the term being run, set by
    recipe.refinement), then polish_steps of the first loss (optimize.refine); an output made coarse to
    fine gets them at its coarsest level and fine_refine_steps, fine_polish_steps at each finer one, or with
    refine_coarse at full size after all levels;
    an output made at one level without tile whose sides are both at least short_from (0: never) takes
    short_steps, short_refine_steps and short_refine_lr instead (optimize.resolve; from_args sets short_from
    0 when steps, refine_steps or refine_lr is given);
    occurrence_hold > 0: with L-BFGS, the occurrence penalty's matches are found again only every
    occurrence_hold evaluations; chroma_layers: the taps of `layers` at which a colour target's three
    decorrelated channels are matched together (colour.features), for a batch holding a target whose
    strongest principal axis carries at most chroma_share of its variance (colour.joint); other colour
    targets are synthesised in luminance and coloured after (optimize.in_luminance), and texnet.py's
    generators, which make colour directly, take the first channel alone through the network, the others
    held by the spectrum term and the colour histogram."""
    layers: dict = _layers(H.layers)
    loss: str = H.loss
    features: str = H.features
    optimizer: str = H.optimizer
    lbfgs_history: int = H.lbfgs_history
    lr: float = H.gen_lr
    steps: int = H.steps
    time_budget: float = H.time_budget
    stop_tolerance: float = H.stop_tolerance
    stop_window: int = H.stop_window
    init: str = H.init
    pixels: str = H.pixels
    pool: str = H.pool
    padding: str = H.padding
    tile: bool = False
    dtype: str = H.dtype
    spectrum_weight: float = H.spectrum_weight
    spectrum_scale: str = H.spectrum_scale
    levels: int = H.levels
    gcd_layers: dict = _layers(H.gcd_layers)
    gcd_weight: float = H.gcd_weight
    occurrence: float = H.occurrence
    gcd_patches: int = H.gcd_patches
    refine_steps: int = H.refine_steps
    refine_lr: float = H.refine_lr
    refine_layers: dict = _layers(H.refine_layers)
    refine_channels: dict = _layers(H.refine_channels)
    gcd_channels: dict = dataclasses.field(default_factory=dict)
    polish_steps: int = H.polish_steps
    fine_refine_steps: int = H.fine_refine_steps
    fine_polish_steps: int = H.fine_polish_steps
    short_from: int = H.short_from
    short_steps: int = H.short_steps
    short_refine_steps: int = H.short_refine_steps
    short_refine_lr: float = H.short_refine_lr
    occurrence_hold: int = H.occurrence_hold
    refine_coarse: bool = False
    chroma_layers: dict = _layers(H.chroma_layers)
    chroma_share: float = H.chroma_share

    @property
    def step_size(self):
        """lr, or the optimiser's own step size when lr is 0 (Adam diverges at L-BFGS's 1)."""
        return self.lr or GEN_LR[self.optimizer]

    @classmethod
    def from_args(cls, args, known=None, given=()):
        """The options of parsed flags (gen.py's `gen` group, plus args.tile); `known`: the network's
        tap names, against which the layer flags are checked (ValueError names the flag); `given`: the
        flags set on the command line: --refine-steps among them refines outputs made coarse to fine at full size,
        and --steps, --refine-steps or --refine-lr among them keeps those for every size (short_from 0)."""
        refine_layers = parse_layers(args.refine_layers, known, "--refine-layers")
        return cls(layers=parse_layers(args.layers, known), loss=args.loss, features=args.features,
                   optimizer=args.optimizer, lbfgs_history=args.lbfgs_history, lr=args.gen_lr, steps=args.steps,
                   time_budget=args.time_budget, stop_tolerance=args.stop_tolerance, stop_window=args.stop_window,
                   init=args.init, pixels=args.pixels, pool=args.pool, padding=args.padding,
                   tile=getattr(args, "tile", False), dtype=args.dtype, spectrum_weight=args.spectrum_weight,
                   spectrum_scale=args.spectrum_scale, levels=args.levels,
                   gcd_layers=parse_layers(args.gcd_layers, known, "--gcd-layers"), gcd_weight=args.gcd_weight,
                   occurrence=args.occurrence, gcd_patches=args.gcd_patches, refine_steps=args.refine_steps,
                   refine_lr=args.refine_lr, refine_layers=refine_layers,
                   refine_channels=parse_shares(args.refine_channels, refine_layers, known, "refine_channels" in given),
                   polish_steps=args.polish_steps, fine_refine_steps=args.fine_refine_steps,
                   fine_polish_steps=args.fine_polish_steps, occurrence_hold=args.occurrence_hold,
                   short_from=0 if {"steps", "refine_steps", "refine_lr"} & set(given) else args.short_from,
                   short_steps=args.short_steps, short_refine_steps=args.short_refine_steps,
                   short_refine_lr=args.short_refine_lr,
                   refine_coarse="refine_steps" in given,
                   chroma_layers=parse_layers(args.chroma_layers, known, "--chroma-layers"),
                   chroma_share=args.chroma_share)
