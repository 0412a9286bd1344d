"""The networks gen.py synthesises with: the trained classifier, random weights, or ImageNet VGG-19
(folded to one grey channel), and the share of a network's channels silent on a target.

texnet.py, bench.py and fidelity.py pick their network here too (networks). Example:

    python -c "from texture.networks import backbones; print(backbones.random_net('vgg19', 0).arch)"
"""
import os

import torch
import torchvision

import model
from hyperparams import Hyperparams
from texture.networks import checkpoints as C

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def fold_rgb(conv, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """A one-channel copy of an RGB first convolution: on a grey image g in [0, 1] it gives what
    `conv` gives on the normalised RGB image (g.repeat(3) - mean) / std. Exact in the interior and
    under reflect or circular padding (zero padding would pad g with black, not with the mean)."""
    m = torch.tensor(mean, dtype=conv.weight.dtype)[None, :, None, None]
    w = conv.weight.detach() / torch.tensor(std, dtype=conv.weight.dtype)[None, :, None, None]
    folded = torch.nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
    with torch.no_grad():
        folded.weight.copy_(w.sum(1, keepdim=True))
        folded.bias.copy_(conv.bias.detach() - (w * m).sum((1, 2, 3)))
    return folded


def normalise_rgb(conv, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """A copy of an RGB first convolution that takes RGB in [0, 1]: on x it gives what `conv` gives on
    the normalised (x - mean) / std (exact under reflect or circular padding, as fold_rgb)."""
    m = torch.tensor(mean, dtype=conv.weight.dtype)[None, :, None, None]
    w = conv.weight.detach() / torch.tensor(std, dtype=conv.weight.dtype)[None, :, None, None]
    out = torch.nn.Conv2d(3, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
    with torch.no_grad():
        out.weight.copy_(w)
        out.bias.copy_(conv.bias.detach() - (w * m).sum((1, 2, 3)))
    return out


def imagenet_net(path=""):
    """torchvision's ImageNet VGG-19 (Gatys' network) on one grey channel, with the classifier's tap
    names, and its RGB first convolution kept as `rgb_first` (normalise_rgb), through which colour
    targets go as they are (synthesis.colour.View). `path`: a local copy of its state_dict (whole or features only); empty: torchvision
    fetches the weights (VGG19_Weights.IMAGENET1K_V1)."""
    if not path:
        weights = torchvision.models.VGG19_Weights.IMAGENET1K_V1
        try:
            state = weights.get_state_dict(progress=True)
        except (OSError, RuntimeError, ValueError) as e:  # offline, or a damaged download in torch's cache
            why = " ".join(f"{type(e).__name__}: {e}".split())[:160]
            raise C.CheckpointError(f"--backbone imagenet: cannot fetch torchvision's VGG-19 weights ({why}); "
                                    f"download {weights.url} and pass it as --backbone-weights FILE")
    elif not os.path.isfile(path):
        raise C.CheckpointError(f"--backbone-weights {path}: file not found")
    net = model.TextureNet(1, "vgg19")
    net.features[0] = rgb = torch.nn.Conv2d(3, 64, 3, padding=1)
    try:
        state = state if not path else torch.load(path, map_location="cpu", weights_only=True)
        net.features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                                      if not k.startswith("classifier.")})
    except Exception as e:  # whatever a damaged or foreign file raises, report it as one line
        why = " ".join(f"{type(e).__name__}: {e}".split())[:160]
        raise C.CheckpointError(f"--backbone-weights {path}: unreadable or not a VGG-19 state_dict ({why})")
    net.features[0], net.rgb_first = fold_rgb(rgb), normalise_rgb(rgb)
    return net


def random_net(arch, seed):
    """The classifier's architecture with torchvision's random initialisation, seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model.TextureNet(1, arch)


SILENT_WARNING = 0.8  # share of a tap's channels silent on the target above which gen.py warns (docs/backbones.md)


@torch.no_grad()
def silent_channels(net, targets, layers, pool, padding):
    """Per target, the share of each tap's channels that stay zero on it under the synthesis settings.

    A plain VGG-19 trained briefly from scratch leaves most ReLUs dead (89% and 94% at pool3/pool4
    on demo textures, docs/backbones.md): their Gram entries are zero whatever the image, the loss constrains
    almost nothing there, and the textures come out flat."""
    probe = model.frozen(net, pool, padding, keep=layers)
    device = next(net.parameters()).device
    out = []
    for t in targets:
        feats = probe.taps(t.to(device).float()[None, None], list(layers))
        out.append({n: (f.float().amax((0, 2, 3)) <= 0).float().mean().item() for n, f in feats.items()})
    return out


def networks(args):
    """(synthesis network, classifier for the verdict, its checkpoint: {path, how (it was picked),
    classes, hparams (its recorded settings)}).

    Without a checkpoint the classifier and its record are None: allowed for --backbone
    random|imagenet, unless --ckpt names one explicitly."""
    judge = found = None
    try:
        path, how = C.find_checkpoint(args.ckpt)
        ckpt = C.load_checkpoint(path)
        judge = C.model_from_checkpoint(ckpt, path)
        found = {"path": path, "how": how, "classes": ckpt["classes"], "hparams": ckpt.get("hparams") or {}}
    except C.CheckpointError:
        if args.backbone == "trained" or args.ckpt:
            raise
    if args.backbone == "trained":
        return judge, judge, found
    if args.backbone == "random":
        return random_net(judge.arch if judge else Hyperparams.arch, args.seed), judge, found
    return imagenet_net(args.backbone_weights), judge, found
