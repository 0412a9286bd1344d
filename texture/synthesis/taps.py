"""Which feature taps a loss reads and with what weight, as --layers, --gcd-layers and --refine-layers
give them (a preset name or a list of name[:weight], checked against the network's tap names), the
share of their channels --refine-channels gives, and what the deepest of them asks of an image's size.

    python -c "from texture.synthesis.taps import parse_layers; print(parse_layers('pool1,pool2:0.5'))"
"""
import math

# blocks: the first ReLU of each of the five blocks, the default: measured better than pool1..pool4 for the
# trained classifier, whose last layer in each block has the most silent channels (docs/backbones.md)
LAYER_PRESETS = {"original": "pool1,pool2,pool3,pool4", "gatys": "conv1_1,pool1,pool2,pool3,pool4",
                 "blocks": "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1"}


def parse_layers(spec, known=None, flag="--layers", what="weight"):
    """'pool1,pool2:0.5' (or a preset name) -> {'pool1': 1.0, 'pool2': 0.5}; 'none' -> {}; ValueError
    names the flag, and the number as `what`."""
    text, out = LAYER_PRESETS.get(spec, spec), {}
    if text == "none":
        return out
    for item in text.split(","):
        name, _, weight = item.strip().partition(":")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"{flag}: {what} {weight!r} of {name!r} is not a number")
        if not name or name in out or not (w > 0 and math.isfinite(w)):
            raise ValueError(f"{flag}: bad entry {item!r} in {spec!r} (want name[:{what}>0], each name once)")
        if known is not None and name not in known:
            raise ValueError(f"{flag}: unknown layer {name!r}; known: {','.join(known)}")
        out[name] = w
    return out


def parse_shares(spec, layers, known=None, given=True, flag="--refine-channels"):
    """'relu1_1:0.5' -> {'relu1_1': 0.5}: a share in (0, 1] per tap of `layers` (parse_layers' result);
    'none' -> {}; ValueError names the flag. A tap outside `layers` is an error when the flag was
    given, else (the default's) left out."""
    shares = parse_layers(spec, known, flag, "share")
    for name, share in shares.items():
        if share > 1:
            raise ValueError(f"{flag}: share {share:g} of {name!r} is above 1")
        if given and name not in layers:
            raise ValueError(f"{flag}: {name!r} is not one of --refine-layers ({','.join(layers) or 'none'})")
    return {n: v for n, v in shares.items() if n in layers}


def taps(options):
    """Every tap the loss reads: options.layers for the Gram or SWD term, options.gcd_layers for the
    correspondence term, options.refine_layers if there is a refinement (optimize.refine)."""
    terms = options.loss.split("+")
    return {**(options.layers if terms != ["gcd"] else {}), **(options.gcd_layers if "gcd" in terms else {}),
            **(options.refine_layers if options.refine_steps else {})}


def downsampling(net, layers):
    """How many times the deepest tap is pooled: sizes must be multiples of 2**this (for --tile)."""
    deepest = max(net.names.index(n) for n in layers)
    return 2 ** sum(n.startswith("pool") for n in net.names[: deepest + 1])


def smallest_side(net, layers):
    """The smallest input side the taps can be computed on: downsampling(), twice that if a
    convolution runs on the last pooled map (its reflect or circular padding needs 2 px)."""
    names = net.names[: max(net.names.index(n) for n in layers) + 1]
    last_pool = max((i for i, n in enumerate(names) if n.startswith("pool")), default=-1)
    return downsampling(net, layers) * (2 if any(n.startswith("conv") for n in names[last_pool + 1:]) else 1)
