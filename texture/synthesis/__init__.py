"""Where synthesis happens: options, loss terms, optimisation loops, targets and batches, generator sampling."""
