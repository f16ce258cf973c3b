#!/usr/bin/env bash
# A sweep as a SLURM job array: one shard of the suite per array task (one
# GPU each), then a merge job that starts once every shard has ended.
#
#   examples/slurm_array.sh SUITE.yaml SHARDS [OUT_DIR]
#   examples/slurm_array.sh suites/gpu.yaml 8
#
# Each task runs `attnbench run SUITE --shard K/SHARDS`: the K-th of SHARDS
# disjoint parts, whole setting groups balanced by estimated time, the same
# split in every task. A requeued or resubmitted task resumes its own shard
# (only its missing cases run). The merge job joins the shards into
# OUT_DIR/merged, which `attnbench report` and `compare` read like any run;
# it depends on `afterany`, so a shard with failed cases (exit 3) is still
# merged, and a missing shard leaves an "incomplete" run that
# `attnbench run SUITE --resume OUT_DIR/merged` completes.
#
# Adapt the #SBATCH-style options below (partition, account, time) to your
# cluster; activate the environment attnbench is installed in first, since
# jobs inherit it. Use an explicit device in the suite (cuda, not auto): the
# split is computed from the suite, and `auto` would resolve differently on a
# login node without a GPU.
set -euo pipefail

suite=${1:?usage: $0 SUITE.yaml SHARDS [OUT_DIR]}
shards=${2:?usage: $0 SUITE.yaml SHARDS [OUT_DIR]}
out=${3:-results/$(basename "$suite" .yaml)-$(date +%Y%m%d-%H%M%S)}
gpus_per_task=${GPUS_PER_TASK:-1}
time_limit=${TIME_LIMIT:-04:00:00}

attnbench validate "$suite" >/dev/null  # a broken suite fails here, not in every task
mkdir -p "$out/shards" "$out/logs"

array_job=$(sbatch --parsable \
    --job-name=attnbench-shard --array="1-$shards" \
    --gres="gpu:$gpus_per_task" --cpus-per-task=8 --time="$time_limit" \
    --output="$out/logs/shard-%a.out" <<EOF
#!/usr/bin/env bash
set -uo pipefail
k=\$SLURM_ARRAY_TASK_ID
dir="$out/shards/\$k"
previous=\$(ls -d "\$dir"/*/ 2>/dev/null | head -n 1 || true)
if [ -n "\$previous" ]; then  # requeued: finish this shard's run
    attnbench run "$suite" --shard "\$k/$shards" --resume "\$previous" -q
else
    attnbench run "$suite" --shard "\$k/$shards" --out "\$dir" -q
fi
status=\$?
# 3: the shard finished but some cases failed (oom, timeout, ...): still a result.
[ "\$status" -eq 3 ] && exit 0
exit "\$status"
EOF
)

merge_job=$(sbatch --parsable \
    --job-name=attnbench-merge --dependency="afterany:$array_job" \
    --cpus-per-task=1 --time=00:15:00 --output="$out/logs/merge.out" <<EOF
#!/usr/bin/env bash
set -euo pipefail
attnbench merge "$out"/shards/*/*/ --out "$out/merged"
attnbench report "$out/merged" --markdown "$out/report.md" --plot "$out/plot.png"
EOF
)

echo "submitted shards: job $array_job (array 1-$shards), merge: job $merge_job"
echo "results: $out/merged (report: $out/report.md)"
