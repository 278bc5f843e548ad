#!/usr/bin/env bash
# `make bench`: every benchmark the README quotes, on ONE bundle exported first, in one run.
# Steps run in this order (the timing-sensitive ones first, while nothing else has warmed the
# machine); a failing step is reported and the rest still run; the exit status says whether all
# passed. Run some steps only:  bench/run_all.sh onnx service
# Per-step wall times go to bench/results/run_all.log.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SW=${SW:-.venv/bin/slicewise}
LOG=bench/results/run_all.log
ALL=(bundle bundle-baseline onnx service service_tuning reliability membership demo_shift drift
     salience slices quality tune_heads membership_quality label_model label_scale epoxy
     snorkel_anchor commentary embed buckets monitor_scale first_run fresh_clone scenario readme)
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=("${ALL[@]}")

run_step() {
  case "$1" in
    bundle) $SW export --out .slicewise/bundle ;;
    bundle-baseline)  # the plain-head bundle the service bench compares the slice heads with
      $SW train --kind baseline | tee .slicewise/baseline-train.log &&
      $SW export --no-register --out .slicewise/bundle-baseline \
        --checkpoint "$(sed -n 's/^checkpoint: //p' .slicewise/baseline-train.log)" ;;
    tune_heads) $PY bench/tune_heads.py ;;
    readme) $PY bench/update_readme.py ;;
    *) $PY "bench/bench_$1.py" ;;
  esac
}

mkdir -p bench/results
echo "# run_all $(date -u '+%F %T UTC') commit $(git rev-parse --short HEAD)" >> "$LOG"
failed=()
for s in "${steps[@]}"; do
  t0=$(date +%s)
  echo "=== $s ($(date -u +%T))"
  if run_step "$s"; then st=ok; else st=FAILED; failed+=("$s"); fi
  echo "$s $st $(( $(date +%s) - t0 ))s load $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$LOG"
done
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
