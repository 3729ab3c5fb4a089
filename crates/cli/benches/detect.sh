#!/usr/bin/env bash
# Detection speed (issue 26): spherepipe's MTCNN (crates/face-detect/benches/detect.rs) and,
# right after, facenet-pytorch's (../shared/bench/mtcnn_torch.py), same photos, same thread
# count, on 1 thread and on all. The photos: the four real ones of the face-detect fixtures
# (scikit-image's) and a synthetic corpus's CASIA and LFW images (250 x 250).
#
#   SPHEREPIPE_MTCNN_WEIGHTS=DIR TORCH_PYTHON=/tmp/torch-venv/bin/python bash crates/cli/benches/detect.sh [WORKDIR]
#
# TORCH_PYTHON: a python with torch, torchvision, pillow and facenet-pytorch (see the peer's
# docstring). Run with nothing else on the machine.
set -euo pipefail
cd "$(dirname "$0")/../../.."
: "${SPHEREPIPE_MTCNN_WEIGHTS:?set it to a directory with pnet.pt, rnet.pt, onet.pt}"
py="${TORCH_PYTHON:-python3}"
work="${1:-$(mktemp -d)}"
[[ $# -ge 1 ]] || trap 'rm -rf "$work"' EXIT
cargo build --release -q -p spherepipe-cli
cargo bench -q -p spherepipe-face-detect --bench detect --no-run
photos="$work/photos"
rm -rf "$photos" && mkdir -p "$photos"
target/release/spherepipe synth --out "$work/corpus" --preset tiny >/dev/null
cp -r "$work/corpus/casia" "$work/corpus/lfw" "$photos/"
find "$photos" -name '*.txt' -delete
cp -r crates/face-detect/tests/fixtures/photos "$photos/real"
echo "photos: $(find "$photos" -name '*.jpg' -o -name '*.png' | wc -l) ($(lscpu | grep -o 'avx512f' | head -1 || echo 'no avx512'))"
for t in 1 "$(nproc)"; do
  RAYON_NUM_THREADS=$t cargo bench -q -p spherepipe-face-detect --bench detect -- "$(realpath "$photos")" 3
  "$py" ../shared/bench/mtcnn_torch.py "$photos" --threads "$t"
done
