"""Guided correspondence between feature patches (Zhou et al., CVPR 2023, "Neural Texture Synthesis
with Guided Correspondence"), the loss behind `gen.py --loss gcd`.

Every PATCH x PATCH patch of a feature map, taken at STRIDE, is matched to the target's patches by
cosine distance (both centred on the target's mean patch). An occurrence penalty adds to each target
patch's distance how often it is already the nearest one, relative to an even use, so that the
output does not build itself from a few target patches. Distances are normalised by each output
patch's nearest one (contextual normalisation) and the loss is, per output patch,
-log of its contextual similarity to its best match: low when each output patch has one clear match
in the target. losses.gcd_loss scales the features and registers it.

The dot products with every target patch are one matrix product of the target's patches with the
output's unfolded ones, in fp32; in the backward pass the product runs in bf16 when the network does
(the gradient moves by under 3%, the loss not at all). On a CPU both run faster than the convolutions
with the target's patches as kernels they replace (bench.py section refine). The gradient is written
out (one product forward, one back): up to WHOLE entries on the whole distance matrix, beyond on chunks
of output rows (CHUNK entries), each one's gradient at once, so that memory stays bounded; there the
distances that found the matches are kept for the evaluation, up to KEPT entries.
"""
import math

import torch
import torch.nn.functional as F

PATCH, STRIDE = 7, 3  # patch side and step in feature pixels, as Zhou et al.
BANDWIDTH = 0.5  # h of the contextual similarity exp((1 - d / d_min) / h), as Zhou et al.
CHUNK = 1 << 21  # entries of the distance matrix evaluated at once beyond WHOLE (8 MB in fp32)
WHOLE = 1 << 24  # most entries of the distance matrix held whole (64 MB in fp32: relu1_1 of a 384 px output)
KEPT = 1 << 27  # most distances nearest() keeps for the evaluation beyond WHOLE (512 MB: relu1_1 at 1024 px)


def grid(shape, k):
    """How many k x k patches at STRIDE fit along the height and width of a map of `shape` (..., H, W)."""
    return tuple((s - k) // STRIDE + 1 for s in shape[-2:])


def unfold(x, k):
    """x's (1, C, H, W) k x k patches at STRIDE as the columns of a (C k k, N) matrix, exactly as
    F.unfold gives them, from a strided view copied once: on the CPU in a fifth to a third of
    F.unfold's time at relu1_1..relu3_1 of a 224 px output (docs/speed.md)."""
    return x[0].unfold(1, k, STRIDE).unfold(2, k, STRIDE).permute(0, 3, 4, 1, 2).reshape(x.shape[1] * k * k, -1)


def fold(cols, shape, k):
    """The sum of unfold's columns (C k k, N), of any dtype, back at their patches' places in an fp32
    (1, C, H, W) map, as F.fold does: k * k strided additions, each reading the columns in their own
    dtype, take 0.6-0.8 of F.fold's time on the CPU with the copy to fp32 it would need first. On a GPU,
    where each addition would be a kernel launch of its own, F.fold's one kernel."""
    if cols.device.type != "cpu":
        return F.fold(cols.float()[None], shape[2:], k, stride=STRIDE)
    n, m = grid(shape, k)
    out, cols = cols.new_zeros(shape, dtype=torch.float32), cols.view(shape[1], k, k, n, m)
    for i in range(k):
        for j in range(k):
            out[0, :, i:i + STRIDE * (n - 1) + 1:STRIDE, j:j + STRIDE * (m - 1) + 1:STRIDE] += cols[:, i, j]
    return out


def reference(f, k, most, dtype=torch.float32):
    """The target's patches (f: (1, C, H, W)) as unit-norm rows after removing their mean patch:
    (patches (N, C k k) in fp32, the same in `dtype` for the backward pass, the mean patch (1, C, k, k),
    each patch's dot product with it (N,)).
    N is at most `most`: beyond, the same random sample of them on every call, so the loss stays one
    function and its cost grows with the output alone."""
    q = unfold(f, k).T  # (N, C k k)
    m = q.mean(0)
    if len(q) > most:
        q = q[torch.randperm(len(q), generator=torch.Generator().manual_seed(0))[:most].to(q.device)]
    q = q - m
    q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return q, q.to(dtype), m.view(1, f.shape[1], k, k), q @ m


def principal(f, share):
    """The directions of f's (1, C, H, W) channel space with the most variance, ceil(share C) of them, as
    the columns of a (C, r) matrix that projects features on them. Projected, every patch is r/C as
    long, and the term's products, unfolding and folding shrink with it; the directions left out hold
    little of the target's variance at relu1_1 and relu2_1 (docs/speed.md)."""
    a = f[0].flatten(1).float()
    a = a - a.mean(1, keepdim=True)
    vecs = torch.linalg.eigh(a @ a.T).eigenvectors  # ascending eigenvalues
    return vecs[:, -math.ceil(share * len(a)):].contiguous()


def _dots(x, ref):
    """Dot products of x's patches (x: (1, C, H, W), minus the mean patch) with the target's unit
    patches, (N_ref, N_out), and the norms of those centred patches (N_out,); all in fp32, which the
    contextual normalisation needs: in bf16 the rounding of the products alone turned the gradient
    of relu1_1's term on a brick photograph (nearest distances near 0) to another direction."""
    patches, _, mean, mdot = ref
    k = mean.shape[-1]
    dots = torch.addmm(mdot[:, None], patches, unfold(x, k), beta=-1)
    sq = F.conv2d(x.square().sum(1, keepdim=True), x.new_ones(1, 1, k, k), stride=STRIDE)
    sq = sq - 2 * F.conv2d(x, mean, stride=STRIDE) + mean.square().sum()
    return dots, sq.flatten().clamp_min(1e-12).sqrt()


def distances(x, ref, dots=None):
    """(1 - cos) / 2 from every patch of x (1, C, H, W) to every target patch: (N_ref, N_out); from x's
    `dots` (_dots) if given. Rounded as _evaluate rounds them, so that both see the same zeros."""
    dots, r = _dots(x, ref) if dots is None else dots
    return torch.addcmul(dots.new_tensor(0.5), dots, -0.5 / r).clamp_min_(0)


def row_chunks(x, k, n_ref):
    """(first row, slice) of x, the slices overlapping by k - STRIDE rows, whose patches fill at most
    CHUNK distances each."""
    h, w = grid(x.shape, k)
    rows = max(1, CHUNK // (n_ref * w))
    return [(r * STRIDE, x[:, :, r * STRIDE:(min(h, r + rows) - 1) * STRIDE + k]) for r in range(0, h, rows)]


def nearest(x, ref, kept=None):
    """Index of the nearest target patch of every output patch, row by row (N_out,). Given a list `kept`,
    the first chunks' distances and patch norms, up to KEPT distances in all, are appended to it with
    whether the chunk has a distance clamped at 0, so that the evaluation does not compute them again."""
    best, held = [], 0
    with torch.no_grad():
        for _, c in row_chunks(x.detach(), ref[2].shape[-1], len(ref[0])):
            dots, r = _dots(c, ref)
            d = distances(c, ref, (dots, r))
            smallest, at = d.min(0)  # on the CPU a third of argmin's time, the same index
            best.append(at)
            held += d.numel()
            if kept is not None and held <= KEPT:
                kept.append(((d, r), bool((smallest <= 0).any())))
    return torch.cat(best)


def penalty_of(best, n_ref, occurrence):
    """The occurrence penalty per target patch: its use as the nearest one in `best`, relative to an
    even use, times `occurrence`."""
    return occurrence * torch.bincount(best, minlength=n_ref).float() * n_ref / len(best)


def _evaluate(x, ref, occurrence, best, penalty=None, dist=None, clamped=True):
    """-log of the contextual similarity of each patch of x (1, C, H, W) to its best match (N_out,), the
    tensors _gradient needs, whether a distance was clamped, and the matches. The occurrence penalty is
    `penalty`, else that of `best`, else that of the nearest patches now, found from these distances.
    x's distances and patch norms are `dist` (as nearest keeps them; overwritten) if given; with matches
    given, `clamped` says whether a distance may be at or below 0 (False only when known that none is).

    Each elementwise step is a pass over the whole (N_ref, N_out) matrix, as long as a tenth of the
    product at relu1_1, so the steps are fused where one torch call does two: eight passes here."""
    if dist is None:
        dots, r = _dots(x, ref)
        d = torch.addcmul(dots.new_tensor(0.5), dots, -0.5 / r, out=dots)  # (N_ref, N_out), as distances() rounds
    else:
        d, r = dist  # already clamped at 0, as below
    # distances at or below 0 (an output patch equal to a target patch, up to rounding) are clamped at 0
    # and pass no gradient; the smallest of each column tells whether there are any, and without them,
    # as in most iterations, the clamp and the backward pass's mask are skipped (three passes)
    if best is None:
        smallest, best = d.min(0)  # on the CPU a third of argmin's time, the same first index
        clamped = bool((smallest <= 0).any())
        if clamped:
            best = d.clamp_min_(0).argmin(0)  # the first of equal zeros, as nearest() finds it
    elif clamped and dist is None:  # held matches: unless the caller knows, the smallest distances are not at hand
        d.clamp_min_(0)
    penalty = penalty_of(best, len(d), occurrence) if penalty is None else penalty
    dp = d + penalty[:, None]
    near, at = dp.min(0)
    n1 = near + 1e-5
    # the exponent (1 - dp / n1) / h is at most 1e-5 / (n1 h) <= 1 / h: exp needs no shift by its maximum
    soft = torch.addcmul(dp.new_tensor(1 / BANDWIDTH), dp, -1 / (BANDWIDTH * n1), out=dp).exp_()
    total = soft.sum(0)
    soft = soft.div_(total)  # the contextual similarities, each output patch's softmax over the target's
    return total.log(), (x, ref[1], ref[2], d, soft, penalty, n1, at, r), clamped, best


def _gradient(saved, clamped, grad, n):
    """The gradient on x of `grad` times the sum of _evaluate's values over x's patches divided by n,
    from the tensors _evaluate gave: three passes over the distance matrix and one product with the
    target's patches in their backward dtype (eight passes with a clamped distance)."""
    x, low, mean, d, soft, penalty, n1, at, r = saved
    # d loss / d dp_j: -soft_j / (h n1) through every distance, plus sum_j soft_j dp_j / (h n1^2)
    # through the nearest one, which n1 holds
    soft_d = torch.linalg.vecdot(soft, d, dim=0)
    pulled = soft_d + penalty @ soft
    every = -grad / (n * BANDWIDTH * n1)  # g = soft * every, plus `nearest` at the nearest one
    nearest = grad * pulled / (n * BANDWIDTH * n1.square())
    cols = torch.arange(d.shape[1])
    dc = torch.empty(soft.shape, dtype=low.dtype, device=soft.device)
    if clamped:
        g = soft * every
        g[at, cols] += nearest
        g.masked_fill_(d <= 0, 0)
        g_sum, g_d = g.sum(0), torch.linalg.vecdot(g, d, dim=0)
        torch.mul(g, -0.5 / r, out=dc)
    else:  # g's sums from the columns' own (soft sums to 1): three passes over the matrix instead of eight
        g_sum, g_d = every + nearest, every * soft_d + nearest * d[at, cols]
        torch.mul(soft, every * (-0.5 / r), out=dc)
        dc[at, cols] = ((soft[at, cols] * every + nearest) * (-0.5 / r)).to(dc.dtype)
    # d = (1 - c) / 2 with c = dots / r, r = sqrt(sq): through r, -(dc * c).sum / (2 r^2) with dc = -g / 2
    g_sq = (g_sum - 2 * g_d) / (4 * r.square()) * (r > 1e-6)
    # through the dot products (dc): the patches' weighted sum, each output patch's own, in `low`'s dtype
    k, shape = mean.shape[-1], x.shape
    gx = fold(low.T @ dc, shape, k)
    g_sq = g_sq.view(1, 1, *grid(shape, k))
    ones = x.new_ones(1, 1, k, k)
    gx += 2 * x * torch.nn.grad.conv2d_input((1, 1, *shape[2:]), ones, g_sq, stride=STRIDE)
    gx -= 2 * torch.nn.grad.conv2d_input(shape, mean, g_sq, stride=STRIDE)
    return gx


class _WholeLoss(torch.autograd.Function):
    """image_loss for an output whose distance matrix is held whole, with its gradient written out.

    Autograd through the distances keeps half a dozen (N_ref, N_out) tensors and makes fifteen passes
    over them forward and twenty back; here eight forward (_evaluate) and three back (_gradient; eight
    with a clamped distance), one product with the target's patches each way, the matches (when `best`
    is None) taken from the same distances."""

    @staticmethod
    def forward(ctx, x, patches, low, mean, mdot, occurrence, best):
        vals, saved, ctx.clamped, best = _evaluate(x, (patches, low, mean, mdot), occurrence, best)
        ctx.save_for_backward(*saved)
        ctx.mark_non_differentiable(best)
        return vals.mean(), best

    @staticmethod
    def backward(ctx, grad, _):
        saved = ctx.saved_tensors
        return _gradient(saved, ctx.clamped, grad, saved[3].shape[1]), None, None, None, None, None, None


class _ChunkedLoss(torch.autograd.Function):
    """image_loss beyond WHOLE distances, given the matches (nearest): the rows of patches in chunks of
    at most CHUNK distances, each evaluated and its gradient for a unit gradient written out before the
    next, as _WholeLoss does; the backward pass scales their sum. Through autograd, with each chunk
    recomputed there, it took two more fp32 products and twice the passes (docs/speed.md). The first
    chunks' distances come from `kept` (nearest's), popped as they are used; a chunk of them without a
    distance at 0 then takes the three-pass gradient."""

    @staticmethod
    def forward(ctx, x, patches, low, mean, mdot, occurrence, best, kept):
        penalty, n = penalty_of(best, len(patches), occurrence), len(best)
        gx = torch.zeros(x.shape, dtype=torch.float32, device=x.device) if ctx.needs_input_grad[0] else None
        total = 0
        for top, c in row_chunks(x, mean.shape[-1], len(patches)):
            dist, clamped = kept.pop(0) if kept else (None, True)
            vals, saved, clamped, _ = _evaluate(c, (patches, low, mean, mdot), occurrence, best, penalty, dist,
                                                clamped)
            total = total + vals.sum()
            if gx is not None:
                gx[:, :, top:top + c.shape[2]] += _gradient(saved, clamped, 1.0, n)
        ctx.save_for_backward(gx)
        ctx.mark_non_differentiable(best)
        return total / n, best

    @staticmethod
    def backward(ctx, grad, _):
        return ctx.saved_tensors[0] * grad, None, None, None, None, None, None, None


def image_loss(x, ref, occurrence, best=None):
    """(loss, matches): the mean over the output patches of x (1, C, H, W) of -log of each one's
    contextual similarity to its best match, with the occurrence penalty of the matches `best` (None:
    x's nearest target patches now), and those matches. Up to WHOLE distances in one pass (_WholeLoss);
    beyond, in row chunks of CHUNK (_ChunkedLoss), so that memory stays bounded for large outputs."""
    k, n_ref = ref[2].shape[-1], len(ref[0])
    if n_ref * math.prod(grid(x.shape, k)) <= WHOLE:
        return _WholeLoss.apply(x, *ref, occurrence, best)
    kept = []
    best = nearest(x, ref, kept) if best is None else best
    return _ChunkedLoss.apply(x, *ref, occurrence, best, kept)


class _Rows(torch.autograd.Function):
    """f in fp32 rows (contiguous), as unfold reads it, in one copy from f's dtype and layout, with the
    gradient given back in f's own dtype and layout, again in one copy."""

    @staticmethod
    def forward(ctx, f):
        ctx.dtype = f.dtype
        ctx.last = f.is_contiguous(memory_format=torch.channels_last) and not f.is_contiguous()
        return f.to(torch.float32, memory_format=torch.contiguous_format)

    @staticmethod
    def backward(ctx, grad):
        return grad.to(ctx.dtype, memory_format=torch.channels_last if ctx.last else torch.contiguous_format)


def correspondence_loss(target_feats, occurrence, patches, dtype=torch.float32, channels=None):
    """builder(target_feats) -> loss(feats, renew=True) -> {layer: (B,) fp32}, as synthesis' losses;
    features in fp32, one target per image (or one for all). Patches are PATCH wide, or as wide as the
    smaller of the two maps, compared with at most `patches` target patches per tap (reference), in
    `dtype` in the backward pass; at a tap of `channels` ({tap: share}), on the share of its channels
    that the target's principal directions give (principal), both maps projected on them. The
    occurrence penalty counts the matches found at the last call with renew=True: held in between, the
    loss is one smooth function of the features, as a line search needs."""
    refs, held, dirs, channels = {}, {}, {}, channels or {}

    def project(n, t, f):
        """f (1, C, H, W) in fp32 as unfold reads it (rows), on the tap's principal directions if any.
        The network gives its features channels-last: projected as positions (H W, C) they stay so in the
        backward pass, and the gradient meets the network's own in its layout (a copy and an addition
        across layouts at relu1_1's size otherwise cost about 30 ms of a 224 px iteration)."""
        if channels.get(n, 1) >= 1:
            return _Rows.apply(f)
        if (n, t) not in dirs:
            dirs[n, t] = principal(target_feats[t][n], channels[n])
        _, c, h, w = f.shape
        positions = f.float().permute(0, 2, 3, 1).reshape(h * w, c)  # a view of channels-last features
        # the product (r, C) @ (C, H W) is written in rows; its gradient comes back as positions
        return (dirs[n, t].T @ positions.T).view(1, -1, h, w)

    def ref(n, b, k):
        if (n, b, k) not in refs:
            refs[n, b, k] = reference(project(n, b, target_feats[b][n]), k, patches, dtype)
        return refs[n, b, k]

    def loss(feats, renew=True):
        out = {}
        for n, f in feats.items():
            vals = []
            # split, not sliced: a slice's gradient would come back in the default layout, not the network's
            for b, x in enumerate(f.split(1)):
                t = b if len(target_feats) > 1 else 0  # one target serves every image, as for the Gram loss
                k = min(PATCH, *f.shape[2:], *target_feats[t][n].shape[2:])
                x = project(n, t, x)
                renewed = renew or (n, b) not in held
                loss, matches = image_loss(x, ref(n, t, k), occurrence, None if renewed else held[n, b])
                held[n, b] = matches
                vals.append(loss)
            out[n] = torch.stack(vals)
        return out
    return loss
