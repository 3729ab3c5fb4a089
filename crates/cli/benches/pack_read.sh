#!/usr/bin/env bash
# Pack read throughput (issue 25): a synthetic insightface pack (`synth` with `insightface:
# true`, CASIA at IDENTITIES identities aligned to 112x112 JPEGs), read by spherepipe
# (stages/unpack/benches/pack_read.rs) and then, right after, by the Python peer
# (../shared/bench/recordio_python.py: struct framing + OpenCV decode, one thread).
#
#   bash crates/cli/benches/pack_read.sh [IDENTITIES] [WORKDIR]
#
# Times both of unpack's JPEG decoders: zune-jpeg (the default) and libjpeg-turbo (the
# `libjpeg-turbo` feature, when nasm is installed). Needs python3 with numpy and
# opencv-python-headless for the peer. Run with nothing else on the machine.
set -euo pipefail
cd "$(dirname "$0")/../../.."
ids="${1:-2000}"
work="${2:-$(mktemp -d)}"
[[ $# -ge 2 ]] || trap 'rm -rf "$work"' EXIT
cargo build --release -q -p spherepipe-cli
cargo bench -q -p spherepipe-stage-unpack --bench pack_read --no-run
turbo=()
if command -v nasm >/dev/null; then
  cargo bench -q -p spherepipe-stage-unpack --bench pack_read --features libjpeg-turbo --no-run
  turbo=(--features libjpeg-turbo)
else
  echo "nasm not found: timing the default decoder (zune-jpeg) only" >&2
fi
mkdir -p "$work"
cat >"$work/p.yaml" <<YAML
name: pack-read
cache: cache
seed: 7
stages:
  synth: {kind: synth, params: {preset: bench, insightface: true, sizes: {casia_identities: $ids, casia_images: [10, 60], distractors: 100}}}
YAML
target/release/spherepipe run "$work/p.yaml" --quiet >/dev/null
pack=$(ls -d "$work"/cache/artifacts/*/insightface/faces_synth_112x112)
echo "pack: $pack ($(du -sh "$pack/train.rec" | cut -f1), $(($(wc -l <"$pack/train.idx") - 1)) records)"
cargo bench -q -p spherepipe-stage-unpack --bench pack_read -- "$pack"
[[ ${#turbo[@]} -eq 0 ]] || cargo bench -q -p spherepipe-stage-unpack --bench pack_read "${turbo[@]}" -- "$pack"
python3 ../shared/bench/recordio_python.py "$pack"
