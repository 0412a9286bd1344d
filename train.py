"""Train TextureNet (VGG-19 convolutions, from scratch) to classify textures; report held-out accuracy.

Examples:
    python prepro.py --demo && python train.py --data-dir data/demo --image-size 64 --epochs 30
    python train.py                                # Kylberg at 224 px with the defaults of hyperparams.py
    python train.py --resume --epochs 40           # continue the latest run in --ckpt-dir, 40 epochs in all
    torchrun --nproc-per-node 2 train.py --data-dir data/demo --image-size 64

Every epoch writes a checkpoint to --ckpt-dir (the last --keep are kept, plus best.pt, the best held-out
accuracy), with hparams.json and classes.json beside them; TensorBoard events, metrics.jsonl and
curves.png go to --log-dir. The same command again continues the run in --ckpt-dir when its settings
are these (a finished run: it says so, with its held-out result, and writes nothing); a fresh run
refuses a --ckpt-dir or --log-dir that holds another run's files. Ctrl-C or SIGTERM saves a
checkpoint, then exits; --resume takes the run's settings from that checkpoint (flags given on the
command line override them, except the network, split and batch size) and continues exactly where
it stopped, or starts a fresh run when there is none yet. Under torchrun, a restarted worker (--max-restarts)
resumes by itself. After each epoch batch norm is re-estimated with the epoch's final weights
(averaged over every process's batches), so the held-out accuracy printed is the one test.py
reports for the saved checkpoint.
"""
import argparse
import os

import torch.distributed as dist

import hyperparams
from texture.data.images import DataError
from texture.networks import checkpoints as C
from texture.networks import training
from texture.run.device import distributed

# What decides the network, the split and the steps of a run: --resume continues it as it was trained.
FIXED = ("arch", "split", "test_fraction", "seed", "batch_size")


def add_resume(parser):
    parser.add_argument("--resume", action="store_true",
                        help="continue the latest checkpoint in --ckpt-dir with its recorded settings")


def differing(args, recorded, names):
    """The first of `names` whose value in args is not the one recorded: (its flag, value, recorded value)."""
    for k in names:
        if getattr(args, k) != recorded.get(k, object()):
            return "--" + k.replace("_", "-"), getattr(args, k), recorded.get(k)
    return None


def settings(argv):
    """The run's arguments and the checkpoint to resume from: None for a fresh run, (path, checkpoint)
    to continue one. A --ckpt-dir that holds a run of the same settings continues it without --resume;
    one of other settings is refused unless --resume, which takes the recorded settings except for
    the flags given (not those of FIXED)."""
    latest = {}

    def check(args, given):  # a changed FIXED flag with --resume is a flag error
        if not args.resume or not C.checkpoints(args.ckpt_dir):
            return None
        latest["path"] = C.latest_checkpoint(args.ckpt_dir)
        latest["ckpt"] = C.load_checkpoint(latest["path"])
        recorded = latest["ckpt"].get("hparams") or {}
        changed = differing(args, recorded, [k for k in FIXED if k in given and k in recorded])
        if changed:
            flag, value, was = changed
            return (f"{flag} {value}: the run in {args.ckpt_dir} was trained with {flag} {was}, and --resume "
                    "continues it as it was; pick another --ckpt-dir for a new run")
        return None

    args = hyperparams.parse_args(__doc__, training.GROUPS, argv, extra=add_resume, check=check)
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    if args.resume and not C.checkpoints(args.ckpt_dir):
        print(f"--resume: no checkpoint in {args.ckpt_dir} yet, starting a fresh run", flush=True)
        args.resume = False
    if not (args.resume or restarted) and C.checkpoints(args.ckpt_dir):
        path = C.latest_checkpoint(args.ckpt_dir)
        ckpt = C.load_checkpoint(path)
        # the folder itself is no setting: a run's checkpoints moved to another folder are the same run
        other = differing(args, ckpt.get("hparams") or {}, [k for k in vars(args) if k not in ("resume", "ckpt_dir")])
        if other:
            raise SystemExit(f"{args.ckpt_dir} already holds checkpoints of a run with other settings ({other[0]} "
                             f"{other[2]} there): continue it with --resume, or pick another --ckpt-dir")
        args.resume = True  # the same settings: the same run, continued
        return args, (path, ckpt)
    if not (args.resume or restarted and C.checkpoints(args.ckpt_dir)):
        if not restarted and earlier_logs(args.log_dir):  # a restarted worker's logs are this run's own
            raise SystemExit(f"--log-dir {args.log_dir} already holds the logs of another run: pick another "
                             "--log-dir, or move those logs away")
        return args, None
    explicit = {k: getattr(args, k) for k in hyperparams.given(argv, training.GROUPS, add_resume)}
    path = latest.get("path") or C.latest_checkpoint(args.ckpt_dir)
    ckpt = latest.get("ckpt") or C.load_checkpoint(path)
    recorded = {k: v for k, v in ckpt.get("hparams", {}).items() if hasattr(args, k)}
    args = argparse.Namespace(**{**vars(args), **recorded, **explicit, "resume": True})
    return args, (path, ckpt)


def finished(args, ckpt):
    """A message when the checkpoint's run has trained all its --epochs, else None."""
    if ckpt.get("epoch", 0) < args.epochs:
        return None
    m = ckpt.get("metrics", {})
    result = f"held-out {m['hits']}/{m['n']} = {m['test_acc']:.4f}, best {m.get('best_acc', m['test_acc']):.4f}" \
        if {"hits", "n", "test_acc"} <= set(m) else "no held-out result recorded"
    return (f"{args.ckpt_dir}: the run is done, {ckpt['epoch']}/{args.epochs} epochs ({result}); nothing written. "
            "--resume --epochs N trains it further, another --ckpt-dir starts a new run")


def earlier_logs(log_dir):
    """Whether log_dir holds TensorBoard events or metrics of a run."""
    return os.path.isdir(log_dir) and any(name == "metrics.jsonl" or name.startswith("events.out.tfevents.")
                                          for name in os.listdir(log_dir))


def main(argv=None):
    try:
        args, resume = settings(argv)
    except C.CheckpointError as e:
        raise SystemExit(str(e))
    if resume and (done := finished(args, resume[1])):
        print(done)
        return resume[1].get("metrics", {}).get("best_acc")
    if args.image_size < 32:
        raise SystemExit(f"--image-size {args.image_size}: the network needs at least 32 px")
    rank, world, device = distributed(args.device)
    try:
        return training.Run(args, resume, rank, world, device).fit()
    except (DataError, C.CheckpointError) as e:
        raise SystemExit(str(e))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
