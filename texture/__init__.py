"""The library behind the scripts at the repository's root, grouped by stage:

    texture/data/       where the data enters: image files, folder-per-class sets with their cache and
                        splits, Kylberg's download, the procedural demo set and photographs, batches
    texture/networks/   the networks around model.py's TextureNet: synthesis backbones, checkpoints,
                        the classifier's training and evaluation, texnet.py's feed-forward generator
    texture/synthesis/  where synthesis happens: options, the loss terms, the optimisation loops, the
                        targets of a command line and their batches, training and sampling texnet.py's
                        generator
    texture/measures/   where the result is judged: quality measures that use neither network nor loss,
                        the run report, speed and time to quality for bench.py
    texture/run/        run infrastructure: device and precision, files written atomically, Ctrl-C,
                        the training log, side-by-side timing

The scripts import this package; it imports only model.py and hyperparams.py from the root, never a
script.
"""
