"""The classifier's judgement: the held-out evaluation shared by train.py (after every epoch) and
test.py (class probabilities batch by batch, batch-norm statistics re-estimated with the final
weights and agreed on by every process, correct predictions and the summed cross-entropy over every
process's shard), and its verdict on a synthesised texture (gen.py, texnet.py).

    python -c "import torch; from texture.networks import evaluation as E; print(E.cross_entropy_sum(torch.full((1, 2), 0.5), torch.tensor([0])))"
"""
import itertools

import torch
import torch.distributed as dist
from torch.optim.swa_utils import update_bn

from texture.run.device import autocast


@torch.no_grad()
def predict(net, batches, device, dtype):
    """Yield (class probabilities, labels) for each batch, with the network in eval mode."""
    training = net.training
    net.eval()
    try:
        for x, y in batches:
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with autocast(device, dtype):
                logits = net(x)
            yield logits.float().softmax(1).cpu(), y
    finally:
        net.train(training)


@torch.no_grad()
def recalibrate(net, batches, device, dtype, max_batches=50):
    """Re-estimate batch-norm statistics with the final weights of the epoch (a cumulative average
    over up to `max_batches` batches), then average them over the processes.

    The running averages lag behind weights that change fast; measured on the demo data, vgg19_bn
    scored chance with them and 0.83 after this.
    """
    inputs = (x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
              for x, _ in itertools.islice(batches, max_batches))
    with autocast(device, dtype):
        update_bn(inputs, net)
    if dist.is_initialized() and dist.get_world_size() > 1:
        average_batch_norm(net)


@torch.no_grad()
def average_batch_norm(net):
    """Give every process the same batch-norm statistics: each one's mean and variance are cumulative
    averages of per-batch statistics over its own batches, so their average weighted by batch count
    is what one process would have estimated from every process's batches (the variances are the
    per-batch ones, as in training mode, not widened by the spread between the processes' means)."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    parts = []
    for m in norms:
        n = m.num_batches_tracked.to(m.running_mean.dtype).view(1)
        parts += [m.running_mean * n, m.running_var * n, n]
    total = torch.cat(parts)
    dist.all_reduce(total)
    chunks = total.split([x.numel() for x in parts])
    for i, m in enumerate(norms):
        mean, var, n = chunks[3 * i:3 * i + 3]
        m.running_mean.copy_(mean / n)
        m.running_var.copy_(var / n)
        m.num_batches_tracked.copy_(n.long().squeeze())


def evaluate(net, batches, device, dtype):
    """Correct predictions, images and the summed cross-entropy over every process's shard of `batches`."""
    count, nll = torch.zeros(2, dtype=torch.int64), torch.zeros((), dtype=torch.float64)
    for p, y in predict(net, batches, device, dtype):
        count += torch.tensor([(p.argmax(1) == y).sum().item(), len(y)])
        nll += cross_entropy_sum(p, y)
    if dist.is_initialized():
        count, nll = count.to(device), nll.to(device)
        dist.all_reduce(count)
        dist.all_reduce(nll)
    return count.tolist() + [nll.item()]


def cross_entropy_sum(probs, labels):
    """Summed -log p(true class) of a batch, from the probabilities predict() yields (as test.py reports it)."""
    return -probs.gather(1, labels[:, None]).clamp_min(1e-12).log().double().sum()


@torch.no_grad()
def verdict(net, img, classes, label):
    """Is the image recognised as its class by the network as trained (max pooling, zero padding)?"""
    p = net(img.to(next(net.parameters()).device)[None, None].float()).float().softmax(1)[0].cpu()
    k = int(p.argmax())
    known = label in classes
    return {"predicted": classes[k], "p_predicted": p[k].item(), "target_class": label if known else None,
            "p_target_class": p[classes.index(label)].item() if known else None,
            "recognised": classes[k] == label if known else None}
