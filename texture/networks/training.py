"""One training run of the classifier, fresh or resumed: data split, network, AdamW with warm-up and
cosine decay, the optimiser step agreed on by every torchrun process, held-out accuracy after every
epoch, and checkpoints (the last --keep and best.pt). train.py is the command line around it;
bench.py times its step.

    run = Run(args, None, rank=0, world=1, device=torch.device("cpu"))   # args: train.py's flags
    best = run.fit()
"""
import math
import os
import shutil
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model import TextureNet
from texture.data import folders
from texture.data.batches import Batches
from texture.networks import checkpoints as C
from texture.networks.evaluation import evaluate, recalibrate
from texture.run import outputs, trainlog
from texture.run.device import autocast, pick_dtype
from texture.run.interrupt import Stop

GROUPS = ["device", "seed", "data", "crop", "eval", "loader", "train"]  # train.py's groups of hyperparams.py


def schedule(warmup_steps, total_steps):
    """Linear warm-up to the peak learning rate, then a cosine decay to zero at the last step."""
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))))
    return factor


def save(state, args, best):
    """Write the numbered checkpoint (and best.pt), then drop all but the last --keep numbered ones."""
    path = os.path.join(args.ckpt_dir, C.ckpt_name(state["step"]))
    try:
        C.save_checkpoint(state, path)
        if best:
            tmp = os.path.join(args.ckpt_dir, "best.pt.tmp")
            if os.path.exists(tmp):
                os.remove(tmp)
            try:  # a hard link costs no space; the copy is for file systems without links
                os.link(path, tmp)
            except OSError:
                shutil.copyfile(path, tmp)
            os.replace(tmp, os.path.join(args.ckpt_dir, "best.pt"))
    except OSError as e:
        raise SystemExit(f"{path}: cannot save checkpoint ({e.strerror or e}); earlier checkpoints are kept")
    for old in C.checkpoints(args.ckpt_dir)[:-args.keep]:
        os.remove(old)
    return path


def load_split(args, rank, world):
    """Process 0 loads (and caches) the data first; the others read its cache, or stop with its error."""
    data, error = None, None
    if rank == 0:
        try:
            data = folders.load_data(args.data_dir, args.split, args.test_fraction, args.image_size, args.seed)
        except folders.DataError as e:
            error = str(e)
    if world > 1:
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error:
        raise SystemExit(error)
    return data or folders.load_data(args.data_dir, args.split, args.test_fraction, args.image_size, args.seed)


def step_once(model, opt, sched, scaler, batch, device, dtype, stopping):
    """One optimiser step. Returns (mean loss, hits, stop requested, gradients finite), agreed on by every
    process.

    The loss and, unless fp16 loss scaling skips such steps itself, the gradients are checked before
    the update, so a diverged step never reaches the weights.
    """
    x = batch[0].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    y = batch[1].to(device, non_blocking=True)
    with autocast(device, dtype):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
    grad_norm = torch.zeros((), device=device) if scaler.is_enabled() or not grads else \
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    sync = torch.stack([loss.detach().float(), (logits.argmax(1) == y).sum().float(),
                        torch.tensor(float(stopping), device=device), grad_norm])
    world = dist.get_world_size() if dist.is_initialized() else 1
    if world > 1:
        dist.all_reduce(sync)
    loss_sum, hits, stop, norm_sum = sync.tolist()
    if math.isfinite(loss_sum) and math.isfinite(norm_sum):
        scaler.step(opt)
        scaler.update()
        sched.step()
    return loss_sum / world, int(hits), stop > 0, math.isfinite(norm_sum)


class Run:
    """Data, network, optimiser and position of one training run (fresh or resumed)."""

    def __init__(self, args, resume, rank, world, device):
        self.args, self.rank, self.world, self.device = args, rank, world, device
        self.dtype = pick_dtype(args.dtype, device)
        torch.manual_seed(args.seed + rank)
        self.data = data = load_split(args, rank, world)
        self.train_b = Batches(data.train_images, data.train_labels, args.batch_size, args.image_size, True,
                               seed=args.seed, rank=rank, world_size=world, workers=args.workers)
        self.test_b = Batches(data.test_images, data.test_labels, args.batch_size, args.image_size, False,
                              rank=rank, world_size=world, crop=args.eval_crop)
        self.spe = spe = len(self.train_b)
        self.raw = C.model_from_checkpoint(resume[1], resume[0], len(data.classes)) if resume \
            else TextureNet(len(data.classes), args.arch)
        self.raw.to(device, memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.raw.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, schedule(round(args.warmup_epochs * spe), args.epochs * spe))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.epoch, self.step, self.best = 0, 0, -1.0
        if resume:
            self.restore(resume[1])
        self.model = DistributedDataParallel(self.raw, device_ids=[device.index] if device.type == "cuda"
                                             else None) if world > 1 else self.raw
        if args.compile == "on" or args.compile == "auto" and device.type == "cuda":
            self.model = torch.compile(self.model)

    def restore(self, ckpt):
        args = self.args
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt.get("scaler", {}))
        # --lr, --weight-decay and --epochs given with --resume take effect from here on.
        self.sched.base_lrs = [args.lr] * len(self.opt.param_groups)
        for group in self.opt.param_groups:
            group.update(initial_lr=args.lr, weight_decay=args.weight_decay,
                         lr=args.lr * self.sched.lr_lambdas[0](self.sched.last_epoch))
        self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.best = ckpt["metrics"].get("best_acc", -1.0)
        if self.rank == 0:
            torch.set_rng_state(ckpt["rng"]["torch"])
            if self.device.type == "cuda" and "cuda" in ckpt["rng"]:
                torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])

    def state(self, metrics):
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"arch": self.raw.arch, "classes": self.data.classes, "model": self.raw.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step,
                "metrics": {**metrics, "best_acc": self.best}, "hparams": vars(self.args), "rng": rng}

    def write_settings(self):
        args = self.args
        try:
            outputs.save_args(args, os.path.join(args.ckpt_dir, "hparams.json"))
            outputs.save_json(self.data.classes, os.path.join(args.ckpt_dir, "classes.json"))
        except OSError as e:
            raise SystemExit(f"--ckpt-dir {args.ckpt_dir}: cannot write there ({e.strerror or e})")
        print(f"{len(self.data.train_labels)} training / {len(self.data.test_labels)} held-out images, "
              f"{len(self.data.classes)} classes; {self.raw.arch} on {self.device} "
              f"({str(self.dtype).split('.')[-1]}), {self.world} process(es), {self.spe} steps per epoch"
              + (f"; resuming at step {self.step}" if self.step else ""))

    def train_epoch(self, log, stop):
        """The rest of the current epoch; Ctrl-C/SIGTERM saves and leaves, a non-finite loss just leaves."""
        args, rank = self.args, self.rank
        self.train_b.set_epoch(self.epoch)
        skip = self.step - self.epoch * self.spe  # batches done before an interruption
        losses, hits, t0 = [], 0, time.perf_counter()
        with tqdm(total=self.spe, initial=skip, desc=f"epoch {self.epoch + 1}/{args.epochs}", leave=False,
                  disable=rank != 0, dynamic_ncols=True) as bar:
            for i, batch in enumerate(self.train_b):
                if i < skip:
                    continue
                loss, h, stopping, finite_grads = step_once(self.model, self.opt, self.sched, self.scaler, batch,
                                                            self.device, self.dtype, stop.signum is not None)
                if not (math.isfinite(loss) and finite_grads):
                    what = f"loss is {loss}" if not math.isfinite(loss) else "gradients are not finite"
                    last = C.checkpoints(args.ckpt_dir)
                    raise SystemExit(f"{what} at epoch {self.epoch + 1} step {self.step + 1}: training "
                                     f"diverged, nothing saved (last good checkpoint: "
                                     f"{last[-1] if last else 'none'}); try a lower --lr" if rank == 0 else 1)
                self.step += 1
                losses.append(loss)
                hits += h
                bar.update()
                if stopping:
                    path = save(self.state({}), args, False) if rank == 0 else ""
                    raise SystemExit(f"stopped at epoch {self.epoch + 1} step {self.step}: saved {path}; "
                                     "continue with --resume" if rank == 0 else 1)
                if self.step % args.log_every == 0 or i == self.spe - 1:
                    seen = len(losses) * args.batch_size * self.world
                    log(self.step, loss=sum(losses) / len(losses), train_acc=hits / seen,
                        lr=self.sched.get_last_lr()[0], images_per_s=seen / (time.perf_counter() - t0))
                    losses, hits, t0 = [], 0, time.perf_counter()

    def fit(self):
        args = self.args
        if self.rank == 0:
            self.write_settings()
        log, stop = trainlog.Log(args.log_dir, self.step, self.rank == 0), Stop()
        try:
            while self.epoch < args.epochs:
                self.train_epoch(log, stop)
                recalibrate(self.raw, self.train_b, self.device, self.dtype)
                correct, n, nll = evaluate(self.raw, self.test_b, self.device, self.dtype)
                acc, test_loss = correct / max(n, 1), nll / max(n, 1)
                self.epoch += 1
                is_best, self.best = acc > self.best, max(self.best, acc)
                log(self.step, test_acc=acc, test_loss=test_loss, epoch=self.epoch)
                if self.rank == 0:
                    path = save(self.state({"test_acc": acc, "hits": correct, "n": n, "test_loss": test_loss}),
                                args, is_best)
                    tqdm.write(f"epoch {self.epoch}/{args.epochs}: held-out {correct}/{n} = {acc:.4f} "
                               f"(best {self.best:.4f}), saved {path}")
        finally:
            stop.restore()
            log.close()
        return self.best
