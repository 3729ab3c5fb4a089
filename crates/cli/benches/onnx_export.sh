#!/usr/bin/env bash
# ONNX export (issue 27): export time and file size of a full-width SphereFace-20, then
# onnxruntime's CPU images/s on it next to spherepipe's own extraction (`spherepipe speed`),
# same batch, one right after the other. Information for choosing a runtime; no goal.
#
#   PYTHON=/path/to/python-with-onnxruntime bash crates/cli/benches/onnx_export.sh [BATCH] [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/../../.."
batch="${1:-64}"
work="${2:-$(mktemp -d)}"
[[ $# -ge 2 ]] || trap 'rm -rf "$work"' EXIT
py="${PYTHON:-python3}"
cargo build --release -q -p spherepipe-cli
sp="$PWD/target/release/spherepipe"
mkdir -p "$work"
cat >"$work/p.yaml" <<YAML
name: onnx-bench
cache: cache
seed: 1
stages:
  synth: {kind: synth, params: {preset: tiny}}
  align: {kind: align, inputs: {images: synth}, params: {format: casia}}
  shard: {kind: shard, inputs: {faces: align}}
  train: {kind: train, inputs: {shards: shard}, params: {net: sphere20, steps: 1, batch: 8, milestones: [1]}}
YAML
(cd "$work" && "$sp" run p.yaml --quiet >/dev/null)
start=$(date +%s.%N)
(cd "$work" && "$sp" export p.yaml train --out model.onnx --quiet >/dev/null)
end=$(date +%s.%N)
echo "export: $(echo "$end - $start" | bc) s (the command, the cached training found), $(du -b "$work/model.onnx" | cut -f1) bytes"
echo "machine: $(nproc) cores, $(lscpu | grep -o 'avx512f' | head -1 || echo 'no avx512')"
"$sp" speed --net sphere20 --batch "$batch" --steps 5 --json | "$py" -c "import json,sys; d=json.load(sys.stdin); print('spherepipe extract:', {k: v for k, v in d.items() if 'extract' in k})"
"$py" - "$work/model.onnx" "$batch" <<'PY'
import sys, time, numpy as np, onnxruntime as ort
path, batch = sys.argv[1], int(sys.argv[2])
s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal((batch, 3, 112, 96), dtype=np.float32)
s.run(None, {"input": x})
t = time.perf_counter(); n = 5
for _ in range(n):
    s.run(None, {"input": x})
dt = time.perf_counter() - t
print(f"onnxruntime {ort.__version__}: {n * batch / dt:.1f} images/s (batch {batch}, {n} passes)")
PY
