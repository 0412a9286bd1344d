"""Which feature taps a loss reads and with what weight, as --layers and --gcd-layers give them: a
preset name or a list of name[:weight], checked against the network's tap names.

    python -c "import layer_spec; print(layer_spec.parse_layers('pool1,pool2:0.5'))"
"""
import math

# blocks: the first ReLU of each of the five blocks, the default: measured better than pool1..pool4 for the
# trained classifier, whose last layer in each block has the most silent channels (docs/backbones.md)
LAYER_PRESETS = {"original": "pool1,pool2,pool3,pool4", "gatys": "conv1_1,pool1,pool2,pool3,pool4",
                 "blocks": "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1"}


def parse_layers(spec, known=None, flag="--layers"):
    """'pool1,pool2:0.5' (or a preset name) -> {'pool1': 1.0, 'pool2': 0.5}; ValueError names the flag."""
    text, out = LAYER_PRESETS.get(spec, spec), {}
    for item in text.split(","):
        name, _, weight = item.strip().partition(":")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"{flag}: weight {weight!r} of {name!r} is not a number")
        if not name or name in out or not (w > 0 and math.isfinite(w)):
            raise ValueError(f"{flag}: bad entry {item!r} in {spec!r} (want name[:weight>0], each name once)")
        if known is not None and name not in known:
            raise ValueError(f"{flag}: unknown layer {name!r}; known: {','.join(known)}")
        out[name] = w
    return out
