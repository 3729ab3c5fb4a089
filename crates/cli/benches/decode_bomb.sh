#!/usr/bin/env bash
# Peak memory of `align` over the tiny corpus as it is, and with one JPEG whose frame header is
# rewritten to claim 16,000 x 16,000 pixels (a 13 kB decode bomb): the bomb must be refused
# from its header, listed in report.json, and cost no memory (issue 22).
#   bash crates/cli/benches/decode_bomb.sh [path/to/spherepipe]
set -euo pipefail
bin=${1:-target/release/spherepipe}
[[ -x $bin ]] || { echo "build it first: cargo build --release -p spherepipe-cli (or pass the binary)" >&2; exit 2; }
bin=$(realpath "$bin")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$bin" synth --out corpus --preset tiny -q >/dev/null
cp -r corpus corpus-bomb
first=$(head -1 corpus/casia_landmark.txt | cut -f1)
python3 - "corpus-bomb/casia/$first" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
i = b.find(b"\xff\xc0")
b[i + 5:i + 9] = bytes([0x3E, 0x80, 0x3E, 0x80])  # height and width: 16000
open(p, "wb").write(b)
PY
for name in clean bomb; do
  data=corpus; [[ $name == bomb ]] && data=corpus-bomb
  printf 'name: %s\ncache: cache-%s\ndatasets:\n  corpus: {path: %s}\nstages:\n  align: {kind: align, inputs: {images: corpus}}\n' \
    "$name" "$name" "$data" >"$name.yaml"
  /usr/bin/time -f "$name: %e s, peak RSS %M kB" "$bin" run "$name.yaml" -q 2>&1 | tail -1
done
python3 - <<'PY'
import glob, json
r = json.load(open(glob.glob("cache-bomb/artifacts/*/report.json")[0]))
print("bomb listed as:", r["corrupt"][0]["reason"] if r["corrupt"] else "NOT LISTED", "| aligned:", r["aligned"])
PY
