"""Named synthesis methods: gen.py's flags for each recipe that fidelity.py compares and bench.py times,
and the Options each one gives for an output as large as its target.

    python -c "from texture.synthesis.methods import method_options; print(method_options('gram-spectrum').refine_steps)"
"""
import argparse
import dataclasses

from hyperparams import Hyperparams, add_arguments, given
from texture.synthesis.losses import LOSSES
from texture.synthesis.options import Options

UNREFINED = ["--refine-steps", "0"]  # the first part of the default alone: Gram + spectrum
# name -> gen.py flags; the first is today's default. Every feature loss of losses.LOSSES is one.
METHODS = {"default": [], "gram-spectrum": UNREFINED,
           # the default's parts shorter, its Gram + spectrum part coarse to fine even at the target's size:
           # about 3x faster, not as good on every measure (docs/speed.md); bench.py's section fast times both
           "fast": ["--levels", "2", "--steps", "100", "--refine-steps", "30", "--refine-lr", "0.15", "--polish-steps", "10"],
           "spectrum0": ["--spectrum-weight", "0", *UNREFINED],
           **{k: ["--loss", k, *UNREFINED] for k in LOSSES if k != Hyperparams.loss},
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
           "refine-polish-hybrid": ["--spectrum-scale", "hybrid"],
           # fidelity.py --fidelity-set colour: a colour target's luminance alone, and its three channels
           # through the network together at --chroma-layers (as colours of one luminance get them)
           "colour-grey": ["--colour", "grey", *UNREFINED], "colour-joint": ["--chroma-share", "1", *UNREFINED]}
COLOUR_ONLY = ("colour-grey", "colour-joint")  # methods that differ from another on colour targets only


def method_options(name, dtype="auto", levels=1):
    """The Options of a method: gen.py's defaults with its flags, for an output as large as the target,
    made at one level (levels=1, as the callers that time iterations need) or at the levels its flags
    and gen.py decide (levels=None)."""
    flags = METHODS[name]
    args = add_arguments(argparse.ArgumentParser(), ["device", "gen"]).parse_args(flags)
    options = dataclasses.replace(Options.from_args(args, given=given(flags, ["gen"])), dtype=dtype)
    return options if levels is None else dataclasses.replace(options, levels=levels)
