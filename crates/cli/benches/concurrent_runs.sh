#!/usr/bin/env bash
# Two colleagues on one cache (issue 24): the demo and the ablation started together, against
# the same two runs one after the other (the old whole-run lock's best case: the second starts
# when the first ends). Both share the data stages (built once either way) and nothing else.
#
#   bash crates/cli/benches/concurrent_runs.sh [WORKDIR]
#
# Prints each run's wall time, the total, and when the ablation's first training started
# (seconds after both were launched). Builds the release binary first. Run it with nothing
# else on the machine: the two runs share its cores.
set -euo pipefail
cd "$(dirname "$0")/../../.."
work="${1:-$(mktemp -d)}"
[[ $# -ge 1 ]] || trap 'rm -rf "$work"' EXIT
cargo build --release -q -p spherepipe-cli
bin="$PWD/target/release/spherepipe"
now() { date +%s.%N; }

setup() {  # a fresh directory with the two shipped pipelines (their `root: ..` is it)
  rm -rf "$work/$1" && mkdir -p "$work/$1/pipelines"
  cp pipelines/demo.yaml pipelines/ablation-m.yaml "$work/$1/pipelines/"
}

# The ablation's first training start, in seconds after $2, from its run record in cache $1.
first_training() {
  python3 - "$1/cache/runs.jsonl" "$2" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
abl = [r for r in runs if r["pipeline"] == "ablation-m"][-1]
t = min(s["started_unix"] for s in abl["stages"] if s["kind"] == "train" and s["state"] == "ran")
print(f"{t - float(sys.argv[2]):.1f}")
PY
}

ran_once() {  # how many times each shared data stage ran across both run records
  python3 - "$1/cache/runs.jsonl" <<'PY'
import json, sys, collections
n = collections.Counter()
for l in open(sys.argv[1]):
    for s in json.loads(l)["stages"]:
        if s["kind"] in ("synth", "dedupe", "align", "flip", "shard") and s["state"] == "ran":
            n[s["stage"]] += 1
print(" ".join(f"{k}={v}" for k, v in sorted(n.items())))
PY
}

setup sequential
cd "$work/sequential"
t0=$(now)
"$bin" run pipelines/demo.yaml --quiet >/dev/null
t1=$(now)
"$bin" run pipelines/ablation-m.yaml --quiet >/dev/null
t2=$(now)
seq_first=$(first_training "$work/sequential" "$t0")
seq_ran=$(ran_once "$work/sequential")
cd - >/dev/null

setup concurrent
cd "$work/concurrent"
c0=$(now)
( "$bin" run pipelines/demo.yaml --quiet >/dev/null; now >"$work/demo.end" ) &
( "$bin" run pipelines/ablation-m.yaml --quiet >/dev/null; now >"$work/ablation.end" ) &
wait
c1=$(now)
con_first=$(first_training "$work/concurrent" "$c0")
con_ran=$(ran_once "$work/concurrent")
cd - >/dev/null

awk -v t0="$t0" -v t1="$t1" -v t2="$t2" -v c0="$c0" -v c1="$c1" \
    -v d="$(cat "$work/demo.end")" -v a="$(cat "$work/ablation.end")" \
    -v sf="$seq_first" -v cf="$con_first" 'BEGIN {
  printf "one after the other: demo %.1f s, then ablation %.1f s: %.1f s in all; ablation first training at %s s\n", t1 - t0, t2 - t1, t2 - t0, sf
  printf "together:            demo %.1f s, ablation %.1f s: %.1f s in all; ablation first training at %s s\n", d - c0, a - c0, c1 - c0, cf
  printf "together / one after the other: %.2f of the wall time\n", (c1 - c0) / (t2 - t0)
}'
echo "data stages run (sequential): $seq_ran"
echo "data stages run (together):   $con_ran"
