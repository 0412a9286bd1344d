"""The texture network shared by every script, its feature taps and the Gram matrix.

TextureNet is torchvision's VGG-19 (convolutional part, trained from scratch) on one grayscale
channel, followed by a 1x1 convolution to the classes and a global mean: fully convolutional, so
any input of 32 px or more gives logits.
"""
import contextlib
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

ARCHS = {"vgg19": torchvision.models.vgg19, "vgg19_bn": torchvision.models.vgg19_bn}


def layer_names(features):
    """VGG names for each module of `features`: conv1_1, (bn1_1,) relu1_1, ..., pool5."""
    names, block, conv = [], 1, 0
    for m in features:
        if isinstance(m, nn.Conv2d):
            conv += 1
            names.append(f"conv{block}_{conv}")
        elif isinstance(m, nn.BatchNorm2d):
            names.append(f"bn{block}_{conv}")
        elif isinstance(m, nn.ReLU):
            names.append(f"relu{block}_{conv}")
        else:
            names.append(f"pool{block}")
            block, conv = block + 1, 0
    return names


class TextureNet(nn.Module):
    def __init__(self, num_classes=28, arch="vgg19", init=True):
        """init=False leaves the weights unset, for a checkpoint to fill: torchvision's VGG draws its
        120M-parameter dense head too, about 2.6 s on one CPU thread, before this module drops it."""
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHS)}")
        self.arch, self.num_classes = arch, num_classes
        with contextlib.nullcontext() if init else torch.device("meta"):
            self.features = ARCHS[arch](weights=None).features
            first = self.features[0]
            self.features[0] = nn.Conv2d(1, first.out_channels, 3, padding=1)
            nn.init.kaiming_normal_(self.features[0].weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(self.features[0].bias)
            self.classifier = nn.Conv2d(512, num_classes, 1)
        if not init:
            self.to_empty(device="cpu")
        self.names = layer_names(self.features)

    def forward(self, x):
        return self.classifier(self.features(x)).mean((2, 3))

    def taps(self, x, layers):
        """Activations at the named layers, running the network only as deep as the deepest one."""
        unknown = set(layers) - set(self.names)
        if unknown:
            raise ValueError(f"unknown layer(s) {sorted(unknown)}; known: {','.join(self.names)}")
        out, last = {}, max(self.names.index(n) for n in layers)
        for name, module in zip(self.names[: last + 1], self.features):
            x = module(x)
            if name in layers:
                out[name] = x
        return out


class CircularPad(torch.autograd.Function):
    """Circular padding of (..., H, W) written into one new tensor of the input's dtype and memory
    layout, its backward one copy of the inner gradient with each border's added back onto the pixels
    it came from. Torch's circular pad returns a channels-last input in the other layout, and the
    backward of a padding built from slices of the input adds a zero-filled copy of the whole
    activation per slice (docs/speed.md)."""

    @staticmethod
    def forward(ctx, x, left, right, top, bottom):
        h, w = x.shape[-2:]
        layout = torch.channels_last if x.dim() == 4 and not x.is_contiguous() and \
            x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = torch.empty(*x.shape[:-2], h + top + bottom, w + left + right, dtype=x.dtype, device=x.device,
                          memory_format=layout)
        mid = out[..., top:top + h, :]
        mid[..., left:left + w] = x
        mid[..., :left] = x[..., w - left:]
        mid[..., left + w:] = x[..., :right]
        out[..., :top, :] = mid[..., h - top:, :]
        out[..., top + h:, :] = mid[..., :bottom, :]
        ctx.inner = top, left, h, w
        return out

    @staticmethod
    def backward(ctx, grad):
        top, left, h, w = ctx.inner
        right, bottom = grad.shape[-1] - left - w, grad.shape[-2] - top - h

        def fold_columns(rows):
            g = rows[..., left:left + w].clone()
            g[..., w - left:] += rows[..., :left]
            g[..., :right] += rows[..., left + w:]
            return g
        g = fold_columns(grad[..., top:top + h, :])
        g[..., h - top:, :] += fold_columns(grad[..., :top, :])
        g[..., :bottom, :] += fold_columns(grad[..., top + h:, :])
        return g, None, None, None, None


class PadAsInputConv(nn.Conv2d):
    """nn.Conv2d that pads its input in the input's own dtype and memory layout. Autocast on the CPU
    runs reflect and replicate padding in fp32, so every bf16 activation went to fp32 and back around
    each padding, and its gradient the same way: a fifth of a synthesis iteration at 224 px. Circular
    padding (tileable outputs) is CircularPad's, which keeps the layout (docs/speed.md)."""

    def _conv_forward(self, input, weight, bias):
        pad = self._reversed_padding_repeated_twice
        if self.padding_mode == "zeros":
            return super()._conv_forward(input, weight, bias)
        if self.padding_mode == "circular" and any(pad):
            input = CircularPad.apply(input, *pad)
        elif any(pad):  # reflect or replicate; a 1x1 convolution pads nothing, and copies nothing
            with torch.autocast(input.device.type, enabled=False):
                input = F.pad(input, pad, mode=self.padding_mode)
        return F.conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups)


def frozen(model, pool, padding, dtype=torch.float32, keep=()):
    """A copy for synthesis: eval mode, no parameter gradients, the given pooling and padding, each
    batch norm folded into the convolution before it (unless that convolution's own output is in
    `keep`), and the weights stored in `dtype`. Autocast does not cache the casts of weights that
    need no gradient, so without that step every iteration would cast the whole network again. The
    weights are channels-last, so its activations are too: oneDNN's convolutions then skip reordering
    each one to and from their own layout (0.81x a Gram + spectrum iteration at 224 px in bf16, the
    same numbers)."""
    model = set_padding(set_pooling(copy.deepcopy(model).eval().requires_grad_(False), pool), padding)
    f = model.features
    for i in range(len(f) - 1):
        if isinstance(f[i], nn.Conv2d) and isinstance(f[i + 1], nn.BatchNorm2d) and model.names[i] not in keep:
            f[i], f[i + 1] = torch.nn.utils.fuse_conv_bn_eval(f[i], f[i + 1]), nn.Identity()
    for m in model.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = PadAsInputConv
    return model.to(dtype, memory_format=torch.channels_last)


def set_pooling(model, kind):
    """Use max (as trained) or average pooling (smoother gradients for synthesis) in place."""
    for i, m in enumerate(model.features):
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            model.features[i] = nn.MaxPool2d(2, 2) if kind == "max" else nn.AvgPool2d(2, 2)
    return model


def set_padding(model, mode):
    """'zeros' as trained; 'circular' makes the network see its input as a torus (tileable output)."""
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            m.padding_mode = mode
    return model


def gram(x):
    """Batched Gram matrix (B, C, H, W) -> (B, C, C), averaged over positions, computed in fp32."""
    f = x.float().flatten(2)
    return f @ f.transpose(1, 2) / f.shape[2]
