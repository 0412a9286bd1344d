"""Ctrl-C and SIGTERM as a request to stop: the training loops of train.py and texnet.py check it
between steps, save a checkpoint, then leave, so that --resume continues where they stopped.
"""
import signal


class Stop:
    """Remembers a Ctrl-C/SIGTERM so that the loop can save a checkpoint before leaving."""

    def __init__(self):
        self.signum = None
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def handle(self, signum, frame):
        self.signum = signum

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
