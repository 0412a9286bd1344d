"""Train TextureNet (VGG-19 convolutions, from scratch) to classify textures; report held-out accuracy.

Examples:
    python prepro.py --demo && python train.py --data-dir data/demo --image-size 64 --epochs 30
    python train.py                                # Kylberg at 224 px with the defaults of hyperparams.py
    python train.py --resume --epochs 40           # continue the latest run in --ckpt-dir, 40 epochs in all
    torchrun --nproc-per-node 2 train.py --data-dir data/demo --image-size 64

Every epoch writes a checkpoint to --ckpt-dir (the last --keep are kept, plus best.pt, the best held-out
accuracy), with hparams.json and classes.json beside them; TensorBoard events, metrics.jsonl and
curves.png go to --log-dir. A fresh run refuses a --ckpt-dir or --log-dir that holds another run's
files. Ctrl-C or SIGTERM saves a checkpoint, then exits; --resume takes the run's settings from that
checkpoint (flags given on the command line override them) and continues exactly where it stopped,
or starts a fresh run when there is none yet. Under torchrun, a restarted worker (--max-restarts)
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

def add_resume(parser):
    parser.add_argument("--resume", action="store_true",
                        help="continue the latest checkpoint in --ckpt-dir with its recorded settings")


def settings(argv):
    """The run's arguments and the checkpoint to resume from (None for a fresh run).

    When resuming, the recorded settings apply except for flags given explicitly on the command line.
    """
    args = hyperparams.parse_args(__doc__, training.GROUPS, argv, extra=add_resume)
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    if args.resume and not C.checkpoints(args.ckpt_dir):
        print(f"--resume: no checkpoint in {args.ckpt_dir} yet, starting a fresh run", flush=True)
        args.resume = False
    if not (args.resume or restarted and C.checkpoints(args.ckpt_dir)):
        if C.checkpoints(args.ckpt_dir):
            raise SystemExit(f"{args.ckpt_dir} already holds checkpoints: continue with --resume, "
                             "or pick another --ckpt-dir")
        if not restarted and earlier_logs(args.log_dir):  # a restarted worker's logs are this run's own
            raise SystemExit(f"--log-dir {args.log_dir} already holds the logs of another run: pick another "
                             "--log-dir, or move those logs away")
        return args, None
    explicit = {k: getattr(args, k) for k in hyperparams.given(argv, training.GROUPS, add_resume)}
    path = C.latest_checkpoint(args.ckpt_dir)
    ckpt = C.load_checkpoint(path)
    recorded = {k: v for k, v in ckpt.get("hparams", {}).items() if hasattr(args, k)}
    args = argparse.Namespace(**{**vars(args), **recorded, **explicit, "resume": True})
    return args, (path, ckpt)


def earlier_logs(log_dir):
    """Whether log_dir holds TensorBoard events or metrics of a run."""
    return os.path.isdir(log_dir) and any(name == "metrics.jsonl" or name.startswith("events.out.tfevents.")
                                          for name in os.listdir(log_dir))


def main(argv=None):
    try:
        args, resume = settings(argv)
    except C.CheckpointError as e:
        raise SystemExit(str(e))
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
