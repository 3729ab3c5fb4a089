"""PyTorch's side of `cargo bench -p spherepipe-nn --bench conv_layers`: every distinct
convolution shape of SphereFace-20 at batch BATCH (default 32), forward, input gradient and
weight gradient (aten.convolution_backward, the kernel autograd calls, one output at a time),
median of REPS (default 5) after one warm-up, in ms per training step (times the number of
such layers), all cores.

Run: /tmp/torch-venv/bin/python crates/nn/benches/conv_layers_torch.py  (setup: see
../shared/bench/sphereface_torch.py)."""
import os, statistics, time
import torch

LAYERS = [(3, 64, 2, 112, 96, 1), (64, 64, 1, 56, 48, 2), (64, 128, 2, 56, 48, 1),
          (128, 128, 1, 28, 24, 4), (128, 256, 2, 28, 24, 1), (256, 256, 1, 14, 12, 8),
          (256, 512, 2, 14, 12, 1), (512, 512, 1, 7, 6, 2)]


def timed(reps, f):
    f()
    t = []
    for _ in range(reps):
        s = time.perf_counter()
        f()
        t.append(time.perf_counter() - s)
    return statistics.median(t)


def main():
    batch, reps = int(os.environ.get("BATCH", 32)), int(os.environ.get("REPS", 5))
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"torch {torch.__version__} conv layers of SphereFace-20, batch {batch}, median of {reps}, ms per step")
    print(f"{'layer':<22} {'count':>5} {'forward':>9} {'x-grad':>9} {'w-grad':>9} {'all three':>11}")
    totals = [0.0, 0.0, 0.0]
    with torch.no_grad():
        for cin, cout, s, h, w, count in LAYERS:
            x, k = torch.randn(batch, cin, h, w), torch.randn(cout, cin, 3, 3)
            y = torch.nn.functional.conv2d(x, k, None, s, 1)
            g = torch.randn_like(y)
            back = lambda mask: torch.ops.aten.convolution_backward(
                g, x, k, None, [s, s], [1, 1], [1, 1], False, [0, 0], 1, mask)
            fwd = timed(reps, lambda: torch.nn.functional.conv2d(x, k, None, s, 1))
            dx = timed(reps, lambda: back([True, False, False]))
            dw = timed(reps, lambda: back([False, True, False]))
            per_step = [count * t * 1e3 for t in (fwd, dx, dw)]
            totals = [a + b for a, b in zip(totals, per_step)]
            name = f"{cin}->{cout} s{s} {h}x{w}"
            f, x, wg = per_step
            print(f"{name:<22} {count:>5} {f:>9.1f} {x:>9.1f} {wg:>9.1f} {sum(per_step):>11.1f}")
    f, x, wg = totals
    print(f"{'all convolutions':<22} {'':>5} {f:>9.1f} {x:>9.1f} {wg:>9.1f} {sum(totals):>11.1f}")


main()
