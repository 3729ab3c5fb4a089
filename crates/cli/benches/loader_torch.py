"""The training loader's peer: a PyTorch DataLoader over the same Parquet shards.

Reads the `image` (PNG) and `label` columns with pyarrow, decodes each PNG with Pillow, flips
half of them, swaps RGB to BGR and normalises to (x - 127.5) / 128 as a float32 CHW tensor,
and batches 256 of them, as spherepipe's loader does (crates/face-loader). One process, no
worker processes (num_workers=0) and one torch thread: one core's images/s, to set beside

    DEPTHS= LOADER_SHARDS=DIR RAYON_NUM_THREADS=1 cargo bench -p spherepipe-cli --bench training

Usage: python3 crates/cli/benches/loader_torch.py SHARD_DIR [--batches 32]
(needs torch, pyarrow, pillow, numpy; /tmp/torch-venv has them here).
"""

import argparse
import glob
import io
import os
import time

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class Faces(Dataset):
    """Every row of the shards; PNG bytes kept in memory as the Parquet reader returns them."""

    def __init__(self, files):
        self.images, self.labels = [], []
        for f in files:
            t = pq.read_table(f, columns=["image", "label"])
            self.images += t.column("image").to_pylist()
            self.labels += t.column("label").to_pylist()
        self.rng = np.random.default_rng(1)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        rgb = np.asarray(Image.open(io.BytesIO(self.images[i])).convert("RGB"))
        if self.rng.random() < 0.5:
            rgb = rgb[:, ::-1]
        bgr = rgb[:, :, ::-1].astype(np.float32)
        x = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))
        return (x - 127.5) / 128.0, self.labels[i]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shards")
    ap.add_argument("--batches", type=int, default=32)
    a = ap.parse_args()
    torch.set_num_threads(1)
    files = sorted(glob.glob(os.path.join(a.shards, "*.parquet")))
    data = Faces(files)
    loader = DataLoader(data, batch_size=256, shuffle=True, num_workers=0, drop_last=True)
    it = iter(loader)
    next(it)  # one batch of warm-up, as the Rust side
    start, n = time.perf_counter(), 0
    for _ in range(a.batches):
        try:
            x, _ = next(it)
        except StopIteration:
            it = iter(loader)
            x, _ = next(it)
        n += x.shape[0]
    secs = time.perf_counter() - start
    print(f"torch DataLoader (Pillow, 1 thread): {n} images in {secs:.2f}s = {n / secs:.0f} images/s")


if __name__ == "__main__":
    main()
