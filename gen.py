"""Texture synthesis (Gatys et al. 2015): freeze the trained network and optimise an image, from
noise, until its Gram matrices at the chosen layers match those of a target texture; then sharpen
its objects with a guided correspondence term (--refine-steps; an output made coarse to fine at its
coarsest level, then briefly at each finer one: --fine-refine-steps) and take back what that copied
(--polish-steps, --fine-polish-steps).

    python gen.py data/kylberg/blanket1/blanket1-a-p001.png
    python gen.py a.png b.png --size 448 448 --tile          # twice the crop, periodically tileable
    python gen.py a.png --layers gatys                       # conv1_1,pool1..pool4 as in Gatys et al.
    python gen.py a.png --backbone random                    # untrained weights: no checkpoint needed
    python gen.py photo.jpg --colour grey                    # a colour photograph's luminance alone (auto: colour out)
    python gen.py a.png --backbone imagenet --backbone-weights vgg19-dcbb9e9d.pth  # Gatys' ImageNet VGG-19
    python gen.py a.png --loss swd --spectrum-weight 1          # whole feature distribution + Fourier spectrum
    python gen.py a.png --refine-steps 0                     # Gram + spectrum alone: 1.4x faster at 224 px
    python gen.py a.png --loss gram+gcd --optimizer adam --gen-lr 0.1  # + guided correspondence of feature patches
    python gen.py a.png --size 1024 1024 --tile --steps 100    # coarse to fine (3 levels: 256, 512, 1024 px)
    python gen.py a.png --layers pool1,pool2:0.5 --optimizer adam --gen-lr 0.02 --time-budget 60
    python gen.py a.png --optimizer adam --gen-lr 1e-4 --init uniform --features standardize \\
        --pixels clamp --pool max --padding zeros           # the original TF recipe
    for f in data/kylberg/*/*-a-p001.png; do python gen.py "$f"; done
    torchrun --nproc-per-node 2 gen.py data/kylberg/*/*-a-p001.png

The classifier is the newest numbered checkpoint in asset/train/ckpt unless --ckpt says otherwise
(--ckpt best: best.pt); the line `checkpoint ...` says which. --image-size defaults to the size that
checkpoint was trained at. Its verdict on a target it was trained on is marked (target_in_training in
result.json, a note on stderr): recognising a training image says little. --gen-lr defaults to each
optimiser's own step size; --pixels clamp is for Adam only. Under torchrun every process finishes its
share even when some of its targets fail; failures are reported per target and the exit status is 1.

A colour target gives a colour texture (--colour auto) through the grey network: its luminance is
synthesised as a grey target's would be (in one batch with the grey targets), then each patch of the
output takes the colours of the target patch nearest to it in luminance (texture/synthesis/chroma.py).
A target whose strongest principal colour axis carries at most --chroma-share of its colour variance
(colours of one luminance) has instead its three decorrelated channels meet in the network at
--chroma-layers, in a batch of its own (texture/synthesis/colour.py, docs/colour.md). Snapshots of a
colour target are coloured the same way; the verdict reads the luminance.

Each target gets --gen-dir/<label>/ with target.png, snapshot_NNNNN.png, final.png and
result.json (with quality measures against the target, see quality.py); every call writes
--gen-dir/report.json (the measures per target and their means) and prints them as a table;
several targets in one call also give --gen-dir/collection_<time>.png. An output that exists is
never written over: a later call writes <label>-2/, report-2.json, ... beside it.
"""
import torch.distributed as dist

from hyperparams import given, parse_args
from texture.run.device import distributed
from texture.synthesis import batch


def main(argv=None):
    args = parse_args(__doc__, batch.GROUPS, argv, extra=batch.add_flags, check=batch.check_flags)
    rank, world, device = distributed(args.device)
    try:
        jobs, records, failed = batch.synthesise(args, given(argv, batch.GROUPS, batch.add_flags), rank, world,
                                                 device)
        if rank == 0:
            batch.finish(jobs, records, failed, args.gen_dir)
        if failed:
            raise SystemExit(f"{len(failed)} of {len(jobs)} target(s) failed: "
                             + ", ".join(f"{p} ({why})" for p, why in failed.items()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
