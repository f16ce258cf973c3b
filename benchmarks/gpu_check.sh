#!/usr/bin/env bash
# The GPU check, one script for a machine with NVIDIA GPUs (about 11 minutes on
# an H100/H200): the CUDA tests, then suites/gpu.yaml --quick and
# suites/gpu-decode.yaml --quick on every GPU of the machine (--devices all),
# then their reports and plots, all written under results/reference-<gpu>/
# (<gpu> from nvidia-smi, e.g. h100, h200).
#
#   benchmarks/gpu_check.sh            # from the repository root, in the venv
#
# Each step has a time limit, so the script always ends and leaves what it
# measured: a run cut off by its limit is interrupted like Ctrl-C (what
# finished is saved) and reported all the same. Commit the directory it prints.
set -uo pipefail
cd "$(dirname "$0")/.."

TESTS_LIMIT_S=${TESTS_LIMIT_S:-150}
RUN_LIMIT_S=${RUN_LIMIT_S:-270}
DECODE_LIMIT_S=${DECODE_LIMIT_S:-180}
DECODE_SUITE=${DECODE_SUITE:-suites/gpu-decode.yaml}  # serving: prefill and decode, MHA/GQA/MQA
SUITE=${SUITE:-suites/gpu.yaml}     # the script's own dry run on CPU: SUITE=suites/quick.yaml DEVICES=cpu
DEVICES=${DEVICES:-all}

name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
if [ -z "$name" ]; then
    echo "gpu_check: nvidia-smi finds no GPU here" >&2
    exit 2
fi
# "NVIDIA H200" -> h200, "NVIDIA A100-SXM4-80GB" -> a100, else the whole name.
gpu=$(echo "$name" | tr 'A-Z' 'a-z' | sed 's/^nvidia //' | grep -oE '\b[a-z]+[0-9]+[a-z]*\b' | head -n 1)
[ -n "$gpu" ] || gpu=$(echo "$name" | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9-')
dest="results/reference-$gpu"
mkdir -p "$dest"
echo "gpu_check: $name -> $dest" >&2

attnbench env > "$dest/env.txt" 2>&1
attnbench env --json > "$dest/env.json" 2>/dev/null

echo "== pytest -m cuda (limit ${TESTS_LIMIT_S} s)" >&2
timeout -s INT "$TESTS_LIMIT_S" python -m pytest -q -m cuda 2>&1 | tee "$dest/pytest-cuda.txt" | tail -n 5
tests_status=${PIPESTATUS[0]}

# One suite: run it --quick under its time limit, move the run to $dest/<suite>, report it.
run_suite() {
    local suite=$1 limit=$2 suite_name out scratch run_dir status report
    suite_name=$(basename "$suite" .yaml)
    echo "== attnbench run $suite --quick --devices $DEVICES (limit ${limit} s)" >&2
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
    # SIGINT at the limit: the sweep stops the case in flight and saves the rest (exit 130).
    timeout -s INT "$limit" attnbench run "$suite" --quick --devices "$DEVICES" --out "$scratch" -q \
        > "$dest/run-$suite_name.txt" 2> "$dest/run-$suite_name.err"
    status=$?
    run_dir=$(ls -d "$scratch"/*/ 2>/dev/null | head -n 1)
    if [ -z "$run_dir" ]; then
        echo "gpu_check: $suite left no results (exit $status); see $dest/run-$suite_name.err" >&2
        run_statuses+=("$suite_name=1")
        return
    fi
    out="$dest/$suite_name"
    rm -rf "$out"
    mv "${run_dir%/}" "$out"
    rm -rf "$scratch"
    echo "== report $suite_name" >&2
    attnbench report "$out" --markdown "$out/report.md" --plot "$out/plot.png" > "$out/report.txt" 2> "$out/report.err"
    report=$?
    [ "$report" -eq 0 ] || report_status=$report
    run_statuses+=("$suite_name=$status")
}

report_status=0
run_statuses=()
run_suite "$SUITE" "$RUN_LIMIT_S"
run_suite "$DECODE_SUITE" "$DECODE_LIMIT_S"
run_status=0
for entry in "${run_statuses[@]}"; do
    code=${entry#*=}
    [ "$code" -eq 0 ] || [ "$code" -eq 3 ] || run_status=$code
done

echo "gpu_check: tests exit $tests_status (0 passed, 124 cut off), runs ${run_statuses[*]}" \
     "(0 all ok, 3 some cases failed, 124 cut off at the limit: what finished is reported), report exit $report_status" >&2
echo "$dest"
[ "$tests_status" -eq 0 ] && [ "$report_status" -eq 0 ] && { [ "$run_status" -eq 0 ] || [ "$run_status" -eq 3 ]; }
