#!/usr/bin/env bash
# advkit evaluate as a Slurm job array: one task per share of the defenses, then a dependent merge job.
#   sbatch --array=0-3 deploy/slurm-evaluate.sh                # 4 shares; prints "Submitted batch job <A>"
#   sbatch --dependency=afterok:<A> --wrap "advkit merge runs/shard-* --out advkit-report"
# Every share must run with the same settings (merge refuses shares that differ), the same seed and the same thread
# count (--threads $SLURM_CPUS_PER_TASK, one value for one array: training at another thread count gives other
# weights, and merge cannot tell; docs/DISTRIBUTED.md). Options of
# `advkit evaluate` for every task go in ADVKIT_ARGS (sbatch passes the submitting shell's environment on):
#   ADVKIT_ARGS="--quick" sbatch --array=0-3 deploy/slurm-evaluate.sh
# ADVKIT is the advkit binary (default: advkit on PATH); ADVKIT_RUNS the shares' parent folder (default: runs,
# relative to the folder sbatch ran in). Share I writes ADVKIT_RUNS/shard-I; its log is Slurm's default for an
# array, slurm-<A>_<I>.out in the submit folder (an --output folder that does not exist yet fails the task at
# launch, before this script could create it: JobLaunchFailure, exit code 0:53).
#
# A killed share resumes: when advkit dies from a signal while this script lives (kill -9, the kernel's OOM
# killer), the task requeues itself (at most ADVKIT_REQUEUES times, default 2) and its rerun reuses every unit
# advkit's journal kept in ADVKIT_RUNS/shard-I/progress. The task requeues itself rather than failing because
# in Slurm 22.05 a FAILED task leaves the merge's afterok:<A> unsatisfiable for good, even after a later
# `scontrol requeue` of that task succeeds (docs/DISTRIBUTED.md shows both). scancel and the time limit signal
# this script as well, so they end the task as usual and nothing requeues. A requeued task waits ~2 minutes
# (Slurm's delay) before it starts again; `scontrol update jobid=<A>_<I> StartTime=now` skips the wait.
#SBATCH --job-name=advkit-evaluate
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=02:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
set -uo pipefail
N=${SLURM_ARRAY_TASK_COUNT:?run with sbatch --array=0-(N-1)}
I=${SLURM_ARRAY_TASK_ID:?run with sbatch --array}
ADVKIT=${ADVKIT:-advkit}
RUNS=${ADVKIT_RUNS:-runs}
mkdir -p "$RUNS" || exit 1
echo "advkit-evaluate: share $I/$N on $(hostname -s), attempt $((${SLURM_RESTART_COUNT:-0} + 1)), $(date -u +%FT%TZ)"
# ADVKIT_ARGS is split on spaces on purpose (a list of options); quote nothing inside it.
# shellcheck disable=SC2086
"$ADVKIT" evaluate ${ADVKIT_ARGS:-} --shard "$I/$N" --seed "${ADVKIT_SEED:-0}" --threads "${SLURM_CPUS_PER_TASK:-2}" \
    --out "$RUNS/shard-$I"
rc=$?
if [ "$rc" -gt 128 ] && [ "${SLURM_RESTART_COUNT:-0}" -lt "${ADVKIT_REQUEUES:-2}" ]; then
    echo "advkit-evaluate: advkit died from signal $((rc - 128)); requeueing share $I (it resumes from $RUNS/shard-$I/progress)"
    scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}" && sleep 60   # the requeue ends this run
fi
exit "$rc"
