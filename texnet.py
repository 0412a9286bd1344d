"""Instant textures of any size: train a feed-forward generator (generator.py, Ulyanov et al. 2016)
against the frozen classifier and gen.py's loss, once per texture; then sample new textures
of any size in one forward pass, tileable (a lattice's with --tile; texture/synthesis/sampling.py).

    python texnet.py train data/kylberg/blanket1/blanket1-a-p001.png          # asset/texnet/blanket1/texnet.pt
    python texnet.py train a.png b.png --time-budget 600                    # one generator each, 10 min each
    python texnet.py train a.png --resume --texnet-steps 2000               # continue to 2000 steps
    python texnet.py train data/demo/*/*-a-p001.png --texnet-mode joint     # one generator for all, by class
    python texnet.py train a.png --backbone random --texnet-loss swd --texnet-spectrum-weight 1
    torchrun --nproc-per-node 2 texnet.py train a.png                       # one generator, data-parallel
    python texnet.py sample asset/texnet/blanket1/texnet.pt --size 1024 1024 --count 4 --seed 1
    python texnet.py sample asset/texnet/joint/texnet.pt --label blanket1 --size 4096 4096
    python texnet.py sample asset/texnet/canvas1/texnet.pt --size 1024 1024 --tile  # a lattice that tiles

Training takes gen.py's network and loss-term flags (--ckpt, --backbone, --layers, --features,
--pool, --gcd-*) and --time-budget (per generator); its loss is --texnet-loss (gen.py's --loss
choices; default gram+gcd, docs/texnet.md) with --texnet-spectrum-weight, and gen.py's --loss,
--spectrum-weight and optimiser flags do not apply (--texnet-steps, --texnet-lr). It writes
--texnet-dir/<label>/texnet.pt (generator weights, settings, the target crop: never the classifier),
args.json and snapshot_NNNNN.png every --texnet-snapshot-every steps. Each sample gets the target's
grey levels (or colours) and is tempered: its power spectrum lowered wherever it exceeds the
target's (--sample-temper; 0: off) and filled with seeded noise where it falls short (--sample-fill,
--sample-fill-width). A lattice's plane waves keep its own period, drawn with a margin around the
sample, unless --tile rounds them to whole cycles so that the sample tiles. Sampling writes
--sample-dir/<label>/<H>x<W>_seed<S>_<i>.png and .json (gen.py's quality measures and verdict, by
the classifier the generator trained with unless --ckpt names another; measured on the centre
--sample-tile crop of a larger sample), --sample-dir/report.json and a collection image; a later run
writes <label>-2/ and report-2.json beside them.
"""
from texture.synthesis.generator_training import run


def main(argv=None):
    return run(argv, __doc__)


if __name__ == "__main__":
    main()
