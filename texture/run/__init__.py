"""Run infrastructure: device and precision, files written atomically, Ctrl-C, the training log, timing."""
