import copy
import io
import os
import zipfile

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import model
from texture.networks import checkpoints as C
from texture.run import device


def test_layer_names_follow_vgg19():
    net = model.TextureNet(5)
    assert net.names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert net.names[-1] == "pool5" and net.names.count("pool5") == 1
    assert sum(n.startswith("conv") for n in net.names) == 16
    bn = model.TextureNet(5, "vgg19_bn")
    assert "bn1_1" in bn.names and len(bn.names) == len(bn.features)


@pytest.mark.parametrize("size", [32, 45, 64])
def test_fully_convolutional_logits(size):
    net = model.TextureNet(7).eval()
    assert net(torch.rand(2, 1, size, size)).shape == (2, 7)


def test_taps_stop_at_the_deepest_layer(monkeypatch):
    net = model.TextureNet(3).eval()
    calls = []
    for i, m in enumerate(net.features):
        m.register_forward_hook(lambda *a, i=i: calls.append(i))
    out = net.taps(torch.rand(1, 1, 32, 32), ["relu1_1", "pool2"])
    assert set(out) == {"relu1_1", "pool2"} and out["pool2"].shape == (1, 128, 8, 8)
    assert max(calls) == net.names.index("pool2")
    with pytest.raises(ValueError, match="conv9_9"):
        net.taps(torch.rand(1, 1, 32, 32), ["conv9_9"])


def test_gram_is_batched_symmetric_and_normalised():
    x = torch.randn(3, 4, 5, 6)
    g = model.gram(x)
    assert g.shape == (3, 4, 4) and g.dtype == torch.float32
    assert torch.allclose(g, g.transpose(1, 2))
    f = x[1].reshape(4, -1)
    assert torch.allclose(g[1], f @ f.T / 30, atol=1e-5)
    assert torch.allclose(model.gram(x.bfloat16()), g, rtol=0.05, atol=0.05)


def test_pooling_and_padding_switch_in_place():
    net = model.set_pooling(model.TextureNet(2), "avg")
    assert sum(isinstance(m, torch.nn.AvgPool2d) for m in net.features) == 5
    model.set_pooling(net, "max")
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.features) == 5
    model.set_padding(net, "circular")
    x = torch.rand(1, 1, 32, 32)
    rolled = net.taps(torch.roll(x, 8, dims=3), ["relu1_1"])["relu1_1"]
    assert torch.allclose(torch.roll(net.taps(x, ["relu1_1"])["relu1_1"], 8, dims=3), rolled, atol=1e-5)


def test_device_and_dtype_choice():
    assert device.pick_device("cpu").type == "cpu"
    assert device.pick_dtype("fp32", torch.device("cpu")) == torch.float32
    assert device.pick_dtype("fp16", torch.device("cpu")) == torch.float16
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="--device cuda"):
            device.pick_device("cuda")


@pytest.mark.parametrize("amx, avx512_bf16, expect", [
    (False, False, torch.float32), (True, False, torch.bfloat16), (False, True, torch.bfloat16),
    (None, None, torch.float32)])  # None: a torch without these private probes
def test_auto_dtype_on_cpu_is_bf16_only_with_native_bf16(amx, avx512_bf16, expect, monkeypatch):
    for name, value in [("_is_amx_tile_supported", amx), ("_is_avx512_bf16_supported", avx512_bf16)]:
        if value is None:
            monkeypatch.delattr(torch.cpu, name, raising=False)
        else:
            monkeypatch.setattr(torch.cpu, name, lambda value=value: value)
    assert device.pick_dtype("auto", torch.device("cpu")) == expect


@pytest.mark.parametrize("capability, expect", [((6, 1), torch.float16), ((7, 5), torch.float16),
                                                ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_dtype_on_cuda_is_fp16_before_ampere_even_where_bf16_is_emulated(capability, expect, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert device.pick_dtype("auto", torch.device("cuda", 0)) == expect


def test_find_checkpoint_says_which_it_picked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "asset" / "train" / "ckpt"
    folder.mkdir(parents=True)
    for name in (C.ckpt_name(4), C.ckpt_name(12), "best.pt"):
        (folder / name).write_bytes(b"")
    path, how = C.find_checkpoint("")
    assert path.endswith(C.ckpt_name(12)) and "newest" in how and "--ckpt best" in how
    assert C.find_checkpoint("best")[0] == os.path.join("asset", "train", "ckpt", "best.pt")
    assert C.find_checkpoint(str(folder))[0] == str(folder / C.ckpt_name(12))
    assert C.find_checkpoint("x.pt") == ("x.pt", "as given by --ckpt")


def state(classes=3, arch="vgg19"):
    net = model.TextureNet(classes, arch)
    return {"arch": arch, "classes": [f"c{i}" for i in range(classes)], "model": net.state_dict(),
            "epoch": 1, "step": 10, "metrics": {"acc": 0.5}, "hparams": {"lr": 1e-3}}


def test_checkpoint_round_trip_and_latest_by_number(tmp_path):
    s = state()
    for step in (9, 10, 100):
        C.save_checkpoint(s, str(tmp_path / C.ckpt_name(step)))
    os.utime(tmp_path / C.ckpt_name(9), (4e9, 4e9))  # newest mtime must not matter
    latest = C.latest_checkpoint(str(tmp_path))
    assert latest.endswith(C.ckpt_name(100))
    net = C.model_from_checkpoint(C.load_checkpoint(latest))
    for k, v in s["model"].items():
        assert torch.equal(net.state_dict()[k], v)


class Payload:
    """Unpickling this calls a function: exactly what weights_only loading must refuse."""
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(C.CheckpointError, match="no checkpoint in"):
        C.latest_checkpoint(str(tmp_path))
    good = tmp_path / "good.pt"
    C.save_checkpoint(state(), str(good))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(C.CheckpointError, match="truncated.pt: unreadable"):
        C.load_checkpoint(str(truncated))
    junk = tmp_path / "junk.pt"
    with zipfile.ZipFile(junk, "w") as z:  # a zip, as torch's format is, without its records
        z.writestr("junk/readme.txt", "not a checkpoint")
    with pytest.raises(C.CheckpointError, match="junk.pt: unreadable"):
        C.load_checkpoint(str(junk))
    evil = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"model": {}, "payload": Payload()}, buf)
    evil.write_bytes(buf.getvalue())
    with pytest.raises(C.CheckpointError, match="evil.pt: refused"):
        C.load_checkpoint(str(evil))
    with pytest.raises(C.CheckpointError, match="trained for 3 classes, this data has 28"):
        C.model_from_checkpoint(C.load_checkpoint(str(good)), str(good), num_classes=28)
    bn = state(arch="vgg19_bn")
    bn["arch"] = "vgg19"
    with pytest.raises(C.CheckpointError, match="do not fit vgg19"):
        C.model_from_checkpoint(bn, "bn.pt")


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / C.ckpt_name(1))
    C.save_checkpoint(state(), path)
    before = open(path, "rb").read()

    def disk_full(obj, f):
        open(f, "wb").write(b"half")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        C.save_checkpoint(state(), path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == [C.ckpt_name(1)]


def test_frozen_folds_batch_norm_without_changing_the_taps():
    net = model.TextureNet(3, "vgg19_bn").eval()
    for m in net.features:  # statistics away from the identity, so folding them is visible
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2)
    x, taps = torch.rand(1, 1, 32, 32), ["conv1_1", "relu2_1", "relu3_1"]
    ref = model.set_padding(model.set_pooling(net, "avg"), "reflect").taps(x, taps)
    frozen = model.frozen(net, "avg", "reflect", keep=taps)
    assert not any(p.requires_grad for p in frozen.parameters())
    kinds = {n: type(m).__name__ for n, m in zip(frozen.names, frozen.features)}
    assert kinds["bn1_1"] == "BatchNorm2d" and kinds["bn1_2"] == kinds["bn2_1"] == "Identity"
    out = frozen.taps(x, taps)
    for n in taps:
        assert torch.allclose(out[n], ref[n], rtol=1e-4, atol=1e-5), n
    assert next(model.frozen(net, "avg", "reflect", torch.bfloat16).parameters()).dtype == torch.bfloat16


class Inputs(TorchDispatchMode):
    """Records what(input) of every call of the aten op `op` while active."""

    def __init__(self, op, what):
        super().__init__()
        self.op, self.what, self.seen = op, what, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is self.op:
            self.seen.append(self.what(args[0]))
        return func(*args, **(kwargs or {}))


def test_frozen_runs_channels_last_and_pads_bf16_activations_in_bf16_with_the_same_taps():
    """Autocast on the CPU runs reflect padding in fp32; the frozen copy pads each activation in its own
    dtype instead, and holds its weights (so its activations) channels-last. The taps stay those of the
    plain network within one bf16 rounding (bit for bit on an Intel Xeon with AMX; on an AMD EPYC the
    kernels of the two layouts round differently), the input's gradient too."""
    net, taps = model.TextureNet(3).eval(), ["relu1_1", "relu2_1", "relu3_1"]
    plain = model.set_padding(model.set_pooling(net, "avg"), "reflect").to(torch.bfloat16)
    frozen = model.frozen(net, "avg", "reflect", torch.bfloat16)
    x = torch.rand(1, 1, 40, 40)
    out = {}
    for name, m in (("plain", plain), ("frozen", frozen)):
        xi = x.clone().requires_grad_()
        with Inputs(torch.ops.aten.reflection_pad2d.default, lambda t: t.dtype) as mode, \
                torch.autocast("cpu", dtype=torch.bfloat16):
            f = m.taps(xi, taps)
        sum(v.float().square().mean() for v in f.values()).backward()
        out[name] = f, xi.grad, mode.seen
    (f0, g0, pads0), (f1, g1, pads1) = out["plain"], out["frozen"]
    assert pads0[1:] and set(pads0[1:]) == {torch.float32}  # what autocast does to the plain convolutions
    assert pads1[0] == torch.float32 and set(pads1[1:]) == {torch.bfloat16}  # the image, then the activations
    for n in taps:
        # one bf16 rounding of the largest activation: sums near 0 round at their addends' scale;
        # a wrong padding is off by the activations themselves at the borders
        scale = f0[n].float().abs().max().item()
        torch.testing.assert_close(f1[n], f0[n], rtol=2 ** -7, atol=2 ** -7 * scale, msg=lambda m, n=n: f"{n}: {m}")
        assert f1[n].is_contiguous(memory_format=torch.channels_last) and f0[n].is_contiguous(), n
    assert ((g1 - g0).norm() / g0.norm()).item() < 1e-2


def test_frozen_pads_circularly_in_the_activations_layout_with_the_same_taps_and_gradient():
    """Circular padding (tileable outputs) by torch's own pad returns a channels-last activation in the
    other layout, so each convolution reorders it; the frozen copy's padding keeps the layout and
    gives the plain network's taps and input gradient."""
    net, taps = model.TextureNet(3).eval(), ["relu1_1", "relu2_1", "relu3_1"]
    plain = model.set_padding(model.set_pooling(copy.deepcopy(net), "avg"), "circular")
    frozen = model.set_padding(model.frozen(net, "avg", "reflect"), "circular")
    x = torch.rand(1, 1, 24, 40)
    out = {}
    for name, m in (("plain", plain), ("frozen", frozen)):
        xi = x.clone().requires_grad_()
        with Inputs(torch.ops.aten.convolution.default,
                    lambda t: t.is_contiguous(memory_format=torch.channels_last)) as mode:
            f = m.taps(xi, taps)
        sum((v * v.flip(-1)).mean() for v in f.values()).backward()  # a gradient that differs across the image
        out[name] = f, xi.grad, mode.seen
    (f0, g0, layouts0), (f1, g1, layouts1) = out["plain"], out["frozen"]
    assert layouts1[1:] and all(layouts1[1:]) and not any(layouts0[1:])  # after the first, one-channel image
    for n in taps:
        assert torch.allclose(f0[n], f1[n], atol=1e-6), n
    assert torch.allclose(g0, g1, atol=1e-6)


def test_circular_pad_equals_torchs_and_its_gradient_in_the_inputs_layout():
    """model.CircularPad gives torch's circular padding and, in its backward, the gradient of torch's
    (each border pixel's gradient added back where it came from, the corners' twice), on uneven sides
    and paddings, keeping a channels-last input channels-last."""
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 3, 7, 9, dtype=torch.float64).to(memory_format=layout)
        weights = torch.randn(2, 3, 7 + 1 + 3, 9 + 2 + 3, dtype=torch.float64)
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ours, theirs = model.CircularPad.apply(a, 2, 3, 1, 3), F.pad(b, (2, 3, 1, 3), mode="circular")
        assert torch.equal(ours, theirs)
        (ours * weights).sum().backward()
        (theirs * weights).sum().backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)
        assert ours.is_contiguous(memory_format=layout) and a.grad.is_contiguous(memory_format=layout)
