#!/usr/bin/env bash
# Peak memory of the data stages over a large synthetic corpus (issue 15): a corpus of about
# 100,000 CASIA-layout images, then dedupe, align, flip and shard, each stage run by its own
# `spherepipe run` (the stages before it already cached), so each process's peak resident set
# (GNU time's "Maximum resident set size") is that stage's.
#
#   bash crates/cli/benches/peak_memory.sh [IDENTITIES] [WORKDIR]
#
# IDENTITIES (default 4200) CASIA identities of 10-60 images each (long-tailed, about 24 on
# average: 4,200 make about 100,000 images); WORKDIR (default a new temporary directory, removed
# at the end) holds the cache: about 10 GB for 100,000 images. Builds the release binary first.
set -euo pipefail
cd "$(dirname "$0")/../../.."
ids="${1:-4200}"
work="${2:-$(mktemp -d)}"
[[ $# -ge 2 ]] || trap 'rm -rf "$work"' EXIT
cargo build --release -q -p spherepipe-cli
bin="$PWD/target/release/spherepipe"
stages=(synth dedupe align flip shard)
pipeline() {  # the first $1 stages of the pipeline
  echo "name: peak-memory"
  echo "cache: cache"
  echo "seed: 7"
  echo "stages:"
  local all=(
    "  synth: {kind: synth, params: {preset: bench, sizes: {casia_identities: $ids, casia_images: [10, 60], distractors: 100}}}"
    "  dedupe: {kind: dedupe, inputs: {train: synth, tests: [synth]}}"
    "  align: {kind: align, inputs: {images: synth, samples: dedupe}, params: {format: casia}}"
    "  flip: {kind: flip, inputs: {faces: align}}"
    "  shard: {kind: shard, inputs: {faces: flip}}"
  )
  printf '%s\n' "${all[@]:0:$1}"
}
printf '%-8s %10s %12s\n' stage seconds "peak RSS MB"
for n in 1 2 3 4 5; do
  pipeline "$n" > "$work/p.yaml"
  /usr/bin/time -f "%e %M" -o "$work/time" "$bin" run "$work/p.yaml" --quiet > "$work/out" 2>&1 ||
    { cat "$work/out"; exit 1; }
  read -r secs kb < "$work/time"
  printf '%-8s %10.1f %12.0f\n' "${stages[$((n - 1))]}" "$secs" "$((kb / 1024))"
done
echo "corpus: $(find "$work/cache" -name casia_landmark.txt -exec wc -l {} + | tail -1 | awk '{print $1}') CASIA images; cache $(du -sh "$work/cache" | cut -f1)"
