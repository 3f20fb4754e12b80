#!/usr/bin/env bash
# advkit evaluate as a Slurm job array: one task per shard, then a dependent merge job.
#   sbatch --array=0-3 deploy/slurm-evaluate.sh            # 4 shards
#   sbatch --dependency=afterok:<array job id> --wrap "advkit merge runs/shard-* --out advkit-report"
#SBATCH --job-name=advkit-evaluate
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=02:00:00
#SBATCH --output=runs/slurm-%A_%a.out
set -euo pipefail
N=${SLURM_ARRAY_TASK_COUNT:?run with sbatch --array=0-(N-1)}
I=${SLURM_ARRAY_TASK_ID:?run with sbatch --array}
mkdir -p runs
# Every shard must use the same settings (merge refuses shards that differ) and the same seed.
advkit evaluate --shard "$I/$N" --seed 0 --threads "${SLURM_CPUS_PER_TASK:-2}" --quiet --out "runs/shard-$I"
