"""Training and evaluation batches from a uint8 image tensor: crops, the eight symmetries, shards per
torchrun process, optional prefetch threads.

    batches = Batches(data.train_images, data.train_labels, 16, 64, True, seed=0)
    for x, y in batches: ...   # x float32 (16, 1, 64, 64) in [0, 1], y int64 (16,)
"""
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import torch

from texture.data.images import DataError, center_crop


class Batches:
    """Batches of (x float32 (B, 1, S, S) in [0, 1], y int64 (B,)) made from a uint8 (N, H, W) tensor.

    train: shuffled by seed + epoch (pass the same seed on every rank), random crops with flips and
    90-degree rotations drawn per rank, drop_last, equal-length disjoint shards per rank.
    eval: in order, centre crop (crop="center") or the whole image (crop="full"), sharded rank::world_size.
    All randomness of an epoch is drawn up front, so `workers` prefetch threads give the same batches.
    """

    def __init__(self, images, labels, batch_size, image_size, train, seed=0, rank=0, world_size=1,
                 crop="center", workers=0):
        n, h, w = images.shape
        if image_size > min(h, w):
            raise DataError(f"--image-size {image_size} is larger than the {h}x{w} images")
        if train and n // world_size < batch_size:
            raise DataError(f"--batch-size {batch_size} is more than the {n // world_size} training images "
                            "per process")
        self.images, self.labels = images, labels
        self.batch_size, self.image_size, self.train = batch_size, image_size, train
        self.seed, self.rank, self.world_size, self.crop, self.workers = seed, rank, world_size, crop, workers
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        if self.train:
            return len(self.images) // self.world_size // self.batch_size
        return -(-len(range(self.rank, len(self.images), self.world_size)) // self.batch_size)

    def indices(self):
        """This rank's image indices for the current epoch, in the order they are served."""
        n = len(self.images)
        if not self.train:
            return torch.arange(self.rank, n, self.world_size)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        return perm[self.rank::self.world_size][:len(self) * self.batch_size]

    def _plans(self):
        idx = self.indices().split(self.batch_size)
        if not self.train:
            return [(i,) for i in idx]
        g = torch.Generator().manual_seed((self.seed + self.epoch) * 1_000_003 + self.rank)
        _, h, w = self.images.shape
        s, shape = self.image_size, (len(self), self.batch_size)
        oy, ox = torch.randint(h - s + 1, shape, generator=g), torch.randint(w - s + 1, shape, generator=g)
        flips = torch.rand((3,) + shape, generator=g) < 0.5  # flip y, flip x, transpose: the 8 symmetries
        return [(i, oy[k], ox[k], flips[:, k]) for k, i in enumerate(idx)]

    def _train_batch(self, idx, oy, ox, flips):
        """Crop, flip and rotate the whole batch in one gather: the symmetries are index arithmetic."""
        s = self.image_size
        r = torch.arange(s)
        ry = torch.where(flips[0][:, None], s - 1 - r, r) + oy[:, None]
        rx = torch.where(flips[1][:, None], s - 1 - r, r) + ox[:, None]
        t = flips[2][:, None, None]
        rows = torch.where(t, ry[:, None, :], ry[:, :, None])
        cols = torch.where(t, rx[:, :, None], rx[:, None, :])
        return self.images[idx[:, None, None], rows, cols]

    def _batch(self, idx, *aug):
        if self.train:
            x = self._train_batch(idx, *aug)
        elif self.crop == "full":
            x = self.images[idx]
        else:
            x = center_crop(self.images, self.image_size)[idx]
        return x.unsqueeze(1).float().div_(255), self.labels[idx]

    def __iter__(self):
        plans = self._plans()
        if self.workers == 0:
            for p in plans:
                yield self._batch(*p)
            return
        with ThreadPoolExecutor(self.workers) as pool:
            todo, pending = iter(plans), deque()
            for p in todo:
                pending.append(pool.submit(self._batch, *p))
                if len(pending) >= 2 * self.workers:
                    break
            while pending:
                batch = pending.popleft().result()
                if (p := next(todo, None)) is not None:
                    pending.append(pool.submit(self._batch, *p))
                yield batch

