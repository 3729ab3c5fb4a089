#!/usr/bin/env bash
# The GPU machine's part of the GPU check; scripts/gpu-check copies it into the bundle as
# on-device.sh, next to the wgpu binary, check.yaml and the PyTorch peer. Needs no Rust and no
# network: everything it runs is in the bundle.
#   bash BUNDLE/on-device.sh OUT [--dry-run]
# Writes OUT/gpu-check-summary.txt, one line per result, and the raw outputs beside it.
# --dry-run: the same steps on the CPU with small sizes (what CI runs).
set -uo pipefail # no -e: a failed part is written down and the others still run
here=$(cd "$(dirname "$0")" && pwd)
out=$1
dry=0
[[ ${2:-} == --dry-run ]] && dry=1
mkdir -p "$out"
summary="$out/gpu-check-summary.txt"
: >"$summary"
status=pass
say() { echo "$*" | tee -a "$summary"; }
fail() { say "$*"; status=fail; }
sp="$here/spherepipe"
if [[ ! -x $sp ]]; then
  gunzip -c "$sp.gz" >"$sp" && chmod +x "$sp" || { echo "on-device.sh: cannot unpack $sp.gz" >&2; exit 1; }
fi

if [[ $dry == 1 ]]; then
  backend=cpu net=sphere4 batch=8 steps=2 every=2 torch_device=cpu torch_depth=4 limit=300
  sets=(--set train_gpu.device=cpu --set train_gpu.steps=3 --set synth.preset=tiny)
else
  backend=wgpu net=sphere20 batch=256 steps=10 every=auto torch_device=cuda torch_depth=20 limit=240
  sets=()
fi

# What the machine is.
gpus=$( (nvidia-smi -L 2>/dev/null || echo "no nvidia-smi") | paste -sd ';' -)
say "machine: $(nproc) cores; GPUs: $gpus; CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}"

# 1. The demo's data (CPU), then its training for 2 steps on the CPU and 50 on the GPU.
cd "$here"
if timeout $((limit + 60)) "$sp" run check.yaml "${sets[@]}" >"$out/check-run.txt" 2>&1; then
  loss_of() { # the loss at step $2 in the metrics of stage $1
    local dir
    dir=$("$sp" show check.yaml "$1" "${sets[@]}" | awk '$1 == "artifact" { print $2 }')
    awk -F, -v s="$2" 'NR > 1 && $1 == s { print $2 }' "$dir/metrics.csv"
  }
  c0=$(loss_of train_cpu 0) c1=$(loss_of train_cpu 1) g0=$(loss_of train_gpu 0) g1=$(loss_of train_gpu 1)
  close=$(awk -v a="$c0" -v b="$g0" -v c="$c1" -v d="$g1" 'function rel(x, y) { return (x > y ? x - y : y - x) / (y < 0 ? -y : y) }
    BEGIN { m = rel(b, a); if (rel(d, c) > m) m = rel(d, c); printf "%.2e %s", m, (m <= 1e-4 ? "yes" : "no") }')
  say "first losses: cpu $c0, $c1; $backend $g0, $g1; largest relative difference ${close% *}"
  [[ ${close#* } == yes ]] || fail "first losses differ by more than 1e-4"
  gpu_metrics="$("$sp" show check.yaml train_gpu "${sets[@]}" | awk '$1 == "artifact" { print $2 }')/metrics.csv"
  say "gpu training: $(awk -F, 'NR > 1 { n++; last = $2 } END { printf "%d steps, last loss %s", n, last }' "$gpu_metrics"); images/s per step in cache/logs"
else
  fail "first losses: the training run failed (see check-run.txt): $(tail -3 "$out/check-run.txt" | paste -sd ' ' -)"
fi

# 2. SphereFace-20 training step and extraction at batch 256, on one device and on every one
# (`devices: auto`; skipped where that is the same one GPU).
gpu_count=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
for n in 1 "$every"; do
  label=$([[ $n == 1 ]] && echo "1 device" || echo "every device")
  if [[ $n == auto && $gpu_count -le 1 ]]; then
    say "speed $label: the same as on 1 device ($gpu_count GPU here)"
  elif r=$(timeout "$limit" "$sp" speed --net "$net" --batch "$batch" --device "$backend" --devices "$n" --steps "$steps" --json 2>"$out/speed-$n.err"); then
    say "speed $label: $r"
  else
    fail "speed $label: failed: $(tail -3 "$out/speed-$n.err" | paste -sd ' ' -)"
  fi
done

# 3. The PyTorch peer on the same device, where torch is installed ($PYTHON, else python3).
peer="$here/sphereface_torch.py"
py=${PYTHON:-python3}
if [[ ! -f $peer ]]; then
  say "pytorch: not run (the bundle has no sphereface_torch.py: ../shared/bench was missing where it was built)"
elif ! "$py" -c "import torch; assert '$torch_device' == 'cpu' or torch.cuda.is_available()" 2>/dev/null; then
  say "pytorch: not run ($py has no torch that can use $torch_device)"
elif r=$(timeout "$limit" "$py" "$peer" --depth "$torch_depth" --batch "$batch" --steps "$steps" --device "$torch_device" 2>&1); then
  say "pytorch: $(echo "$r" | paste -sd ';' -)"
else
  say "pytorch: failed: $(echo "$r" | tail -2 | paste -sd ' ' -)"
fi

say "check: $status"
[[ $status == pass ]]
