#!/usr/bin/env bash
# Rebuilds DejaVuSans-subset.ttf: DejaVu Sans cut to printable ASCII, the superscript and
# subscript digits and signs (tick labels such as 10⁻⁶), ± · × − – —, and θ λ ψ (A-Softmax's
# symbols). Needs fonttools (`pip install fonttools`) and Debian's fonts-dejavu-core. The charts' PNGs are drawn with it;
# their SVGs name the family and leave the font to the viewer.
set -euo pipefail
cd "$(dirname "$0")"
pyftsubset /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf \
  --unicodes="U+0020-007E,U+00B1,U+00B7,U+00B9,U+00B2,U+00B3,U+00D7,U+2070-208E,U+2212,U+2013,U+2014,U+03B8,U+03BB,U+03C8" \
  --layout-features='kern' --output-file=DejaVuSans-subset.ttf
