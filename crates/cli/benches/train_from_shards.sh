#!/usr/bin/env bash
# Training from shards against training on made-up data (issue 29): the `train` stage's
# images/s on the demo corpus's Parquet shards (read, PNG decode, flip, normalise, overlapped
# with the step) beside the training bench's, which feeds the same network made-up batches;
# then the loader alone on those shards, on one core, beside a PyTorch DataLoader reading the
# same rows (crates/cli/benches/loader_torch.py).
#
#   TORCH_PYTHON=/tmp/torch-venv/bin/python bash crates/cli/benches/train_from_shards.sh [WORKDIR]
#
# Env: DEPTH (20), BATCH (32), STEPS (12 timed by each side; the stage's first two are left
# out as warm-up). TORCH_PYTHON: a python with torch, pyarrow and Pillow. Run with nothing
# else on the machine.
set -euo pipefail
cd "$(dirname "$0")/../../.."
depth="${DEPTH:-20}" batch="${BATCH:-32}" steps="${STEPS:-12}"
py="${TORCH_PYTHON:-python3}"
work="${1:-$(mktemp -d)}"
[[ $# -ge 1 ]] || trap 'rm -rf "$work"' EXIT
cargo build --release -q -p spherepipe-cli
cargo bench -q -p spherepipe-cli --bench training --no-run
bin=target/release/spherepipe
mkdir -p "$work/pipelines"
cat >"$work/pipelines/shards.yaml" <<EOF
name: train-from-shards
root: ..
cache: cache
seed: 7
stages:
  synth: {kind: synth, params: {preset: hard-demo}}
  dedupe: {kind: dedupe, inputs: {train: synth, tests: [synth]}}
  align: {kind: align, inputs: {images: synth, samples: dedupe}, params: {format: casia}}
  flip: {kind: flip, inputs: {faces: align}}
  shard: {kind: shard, inputs: {faces: flip}, params: {rows_per_shard: 2000, row_group_size: 256}}
  train:
    kind: train
    inputs: {shards: shard}
    params: {net: sphere$depth, loss: softmax, batch: $batch, steps: $((steps + 2)), lr: 0.01, checkpoint_every: 100000}
EOF
json() { "$bin" show "$work/pipelines/shards.yaml" "$1" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(lscpu | grep -o 'avx512f' | head -1 || echo 'AVX2 only')"
"$bin" run "$work/pipelines/shards.yaml" --quiet >/dev/null
timing="$work/cache/logs/$(json train fingerprint)/timing.csv"
python3 - "$timing" <<'EOF'
import statistics, sys
rows = [l.split(",") for l in open(sys.argv[1]).read().split("\n")[1:] if l]
ips = [float(r[1]) for r in rows][2:]
print(f"train stage on shards: median {statistics.median(ips):.1f} images/s over {len(ips)} steps")
EOF
DEPTHS="$depth" BATCHES="$batch" STEPS="$steps" LOADER=0 cargo bench -q -p spherepipe-cli --bench training 2>/dev/null | grep "step, batch"
shards="$(json shard artifact)"
DEPTHS= LOADER_SHARDS="$shards" RAYON_NUM_THREADS=1 cargo bench -q -p spherepipe-cli --bench training 2>/dev/null | grep "^loader"
"$py" crates/cli/benches/loader_torch.py "$shards"
