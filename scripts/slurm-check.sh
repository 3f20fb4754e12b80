#!/usr/bin/env bash
# deploy/slurm-evaluate.sh run by a real Slurm (issue #19), on one Debian 12 machine, as root:
#   1. installs Debian's Slurm 22.05 (slurmctld, slurmd, slurm-client: the daemons of the slurm-wlm metapackage
#      without its optional plugins) and munge, if missing;
#   2. writes a one-node cluster (this machine, its CPUs and memory from `slurmd -C`) into a temporary folder and
#      starts munged, slurmctld and slurmd there, on ports SLURM_CHECK_PORT and +1 (default 6817, 6818);
#   3. builds advkit (release, scratch folder SCRATCH, default .build-slurm) unless ADVKIT names a binary;
#   4. submits deploy/slurm-evaluate.sh as a job array of 2 tasks and the merge as a job that depends on it
#      (afterok), kills one task's advkit (kill -9) once it has kept a few finished units, and checks that the task
#      requeued itself, resumed from its journal (the units kept before the kill are not rewritten), and that the
#      merge ran;
#   5. runs the same evaluation in one process, outside Slurm, and checks that the merged results.json's
#      "results" equal its "results" (timings differ; results must not);
#   6. stops the daemons (also on failure or Ctrl-C), removes the temporary folder (KEEP=1 keeps it) and prints
#      how long each step took.
# Settings: ADVKIT_ARGS (the evaluation; default below: a few defenses and tiny limits), KILL_TASK (which task to
# kill, default 0), KILL_AFTER (kill once it has kept this many units, default 3), SLURM_DELAY=1 (let a requeued
# task wait out Slurm's ~2 minute delay instead of starting it at once), MANUAL_REQUEUE=1 (the task does not
# requeue itself, ADVKIT_REQUEUES=0: it FAILS, and the check does what a user then must: `scontrol requeue` the
# task, and once the array has ended, point the merge, whose afterok on the array can no longer be satisfied,
# at the tasks one by one). The installed packages stay; `apt-get remove --purge slurmctld slurmd slurm-client
# munge` removes them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
say() { printf '%s slurm-check: %s\n' "$(date -u +%T)" "$*"; }
die() { say "FAILED: $*"; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root: it installs Slurm and starts munged, slurmctld and slurmd"

START=$(date +%s)
LAST=$START
DURATIONS=()
lap() {
    local now
    now=$(date +%s)
    DURATIONS+=("$(printf '  %-58s %5d s' "$1" $((now - LAST)))")
    LAST=$now
}

# 1. Packages.
packages=(munge slurmctld slurmd slurm-client jq)
missing=()
for p in "${packages[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" = "ii " ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
lap "install packages (${missing[*]:-none missing})"
say "$(slurmctld -V), $(munged -V 2>&1 | head -1)"

# 2. The cluster, all of it in WORK.
WORK=$(mktemp -d /tmp/advkit-slurm-check.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/munge" "$WORK/run" "$WORK/state" "$WORK/spool" "$WORK/log" "$WORK/submit"
chmod 700 "$WORK/munge"
export SLURM_CONF=$WORK/slurm.conf
JOBS=()
stop() {
    local rc=$? pidfile pid i
    trap - EXIT INT TERM
    if [ ${#JOBS[@]} -gt 0 ] && [ -s "$WORK/run/slurmctld.pid" ]; then
        scancel "${JOBS[@]}" 2>/dev/null || true
        for i in $(seq 1 30); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 1; done
    fi
    for pidfile in slurmd slurmctld munged; do
        pid=$(cat "$WORK/run/$pidfile.pid" 2>/dev/null) || continue
        kill "$pid" 2>/dev/null || continue
        for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        say "kept $WORK (logs in $WORK/log, the jobs' folder $WORK/submit)"
    else
        rm -rf "$WORK"
    fi
    lap "stop the daemons"
    say "durations:"
    printf '%s\n' "${DURATIONS[@]}"
    printf '  %-58s %5d s\n' "total" $(($(date +%s) - START))
    [ "$rc" -eq 0 ] && say "PASSED" || say "FAILED (exit $rc)"
    exit "$rc"
}
trap stop EXIT
trap 'exit 130' INT TERM

PORT=${SLURM_CHECK_PORT:-6817}
for p in "$PORT" $((PORT + 1)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is in use (another Slurm?): set SLURM_CHECK_PORT"; fi
done
mungekey --create --keyfile="$WORK/munge/munge.key"
munged --key-file="$WORK/munge/munge.key" --socket="$WORK/run/munge.socket" --pid-file="$WORK/run/munged.pid" \
    --log-file="$WORK/log/munged.log" --seed-file="$WORK/munge/munged.seed"
HOST=$(hostname -s)
NODE=$(slurmd -C | head -1)   # NodeName=HOST CPUs=.. Boards=.. SocketsPerBoard=.. CoresPerSocket=.. ThreadsPerCore=.. RealMemory=..
cat > "$SLURM_CONF" <<EOF
# One-node cluster of scripts/slurm-check.sh (a temporary folder; nothing under /etc/slurm).
ClusterName=advkit-check
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$WORK/run/munge.socket
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/run/slurmctld.pid
SlurmdPidFile=$WORK/run/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
# No cgroups (a container may not delegate them): processes tracked by /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd, so no sacct: finished jobs stay in scontrol for MinJobAge and are logged to JobCompLoc.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$WORK/log/jobcomp.txt
MinJobAge=3600
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
$NODE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=check Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld
slurmd
for i in $(seq 1 60); do
    [ "$(sinfo -h -n "$HOST" -o %T 2>/dev/null)" = idle ] && break
    [ "$i" -eq 60 ] && die "the node is not idle after 60 s: $(sinfo 2>&1); see $WORK/log"
    sleep 1
done
say "cluster up: $NODE"
sinfo
lap "start munged, slurmctld, slurmd; node idle"

# 3. advkit.
if [ -z "${ADVKIT:-}" ]; then
    SCRATCH=${SCRATCH:-.build-slurm}
    bash scripts/setup.sh
    swift build -c release --product advkit --scratch-path "$SCRATCH" 2>&1 | tail -n 2
    ADVKIT=$ROOT/$SCRATCH/release/advkit
fi
[ -x "$ADVKIT" ] || die "no advkit binary at $ADVKIT"
lap "build advkit (release)"

# 4. The job array and its merge.
export ADVKIT
export ADVKIT_ARGS=${ADVKIT_ARGS:---defenses none,fgsm-at,noise --attacks fgsm,pgd --query-attacks none --limit 100 --train-limit 2000 --epochs 1 --pgd-steps 10}
export ADVKIT_RUNS=runs
K=${KILL_TASK:-0}
MANUAL=${MANUAL_REQUEUE:-0}
[ "$MANUAL" = 1 ] && export ADVKIT_REQUEUES=0
cd "$WORK/submit"
say "ADVKIT_ARGS=$ADVKIT_ARGS"
# One CPU per task (so --threads 1) so that both tasks run at once on a 2-CPU node; memory is not a consumable
# here (CR_Core), and 1G keeps the request under RealMemory on a small machine.
CPUS=1
A=$(sbatch --parsable --array=0-1 --cpus-per-task=$CPUS --mem=1G "$ROOT/deploy/slurm-evaluate.sh")
JOBS+=("$A")
M=$(sbatch --parsable --dependency="afterok:$A" --job-name=advkit-merge --mem=1G --output=merge-%j.out \
    --wrap "\"$ADVKIT\" merge runs/shard-0 runs/shard-1 --out report")
JOBS+=("$M")
say "submitted: sbatch --array=0-1 deploy/slurm-evaluate.sh -> array job $A; merge (afterok:$A) -> job $M"
squeue

# Kill task K's advkit once its journal holds KILL_AFTER finished units (default 3).
progress=runs/shard-$K/progress
units() { compgen -G "$progress/*/*.json" | wc -l; }
KILL_AFTER=${KILL_AFTER:-3}
for i in $(seq 1 1200); do
    [ "$(units)" -ge "$KILL_AFTER" ] && break
    [ -n "$(squeue -h -j "${A}_$K" -t R,PD 2>/dev/null)" ] || die "task $K ended before it kept $KILL_AFTER units (cat $WORK/submit/slurm-${A}_$K.out)"
    sleep 0.5
done
[ "$(units)" -ge "$KILL_AFTER" ] || die "task $K kept fewer than $KILL_AFTER units within 10 minutes"
lap "array running until task $K kept $KILL_AFTER units"
kept_before=$(cd "$progress" && stat -c '%n %y' */*.json | sort)
jid=$(squeue -h -j "${A}_$K" -o %A)
pid=""
for p in $(scontrol listpids "$jid" 2>/dev/null | awk '$1 ~ /^[0-9]+$/ { print $1 }'); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = advkit ] && pid=$p
done
[ -n "$pid" ] || die "no advkit process in job $jid (scontrol listpids $jid)"
say "task $K (job $jid) kept $(echo "$kept_before" | wc -l) unit(s); kill -9 its advkit, pid $pid"
kill -9 "$pid"
jobstate() { scontrol show job "$1" | grep -o 'JobState=[A-Z_]*' | head -1 | cut -d= -f2; }
fields() { scontrol show job "$1" | grep -oE '(JobState|Reason|Dependency|Restarts|ExitCode)=[^ ]*' | tr '\n' ' '; }
if [ "$MANUAL" = 1 ]; then
    # ADVKIT_REQUEUES=0: the task fails, and the user requeues it by hand.
    for i in $(seq 1 60); do [ "$(jobstate "${A}_$K")" = FAILED ] && break; sleep 0.5; done
    say "task $K after the kill: $(fields "${A}_$K")"
    [ "$(jobstate "${A}_$K")" = FAILED ] || die "task $K did not fail"
    say "by hand: scontrol requeue ${A}_$K"
    scontrol requeue "${A}_$K"
else
    for i in $(seq 1 60); do [ "$(jobstate "${A}_$K")" = PENDING ] && break; sleep 0.5; done
    say "task $K after the kill: $(fields "${A}_$K")"
fi
squeue
[ "$(jobstate "${A}_$K")" = PENDING ] || die "task $K was not requeued: $(fields "${A}_$K")"
if [ "${SLURM_DELAY:-0}" != 1 ]; then
    # Not at once: slurmd refuses to launch a job id it has just killed ("Job N already killed, do not launch batch
    # job", and the task FAILS), seen on an idle machine when this update came 0.7 s after the kill's cleanup.
    sleep 15
    say "scontrol update jobid=${A}_$K StartTime=now (skips the rest of Slurm's ~2 minute delay before a requeued job starts)"
    scontrol update jobid="${A}_$K" StartTime=now
fi
lap "kill task $K, requeue"

if [ "$MANUAL" = 1 ]; then
    for i in $(seq 1 3600); do [ -z "$(squeue -h -j "$A" 2>/dev/null)" ] && break; sleep 1; done
    for i in $(seq 1 60); do scontrol show job "$M" | grep -q 'Reason=DependencyNeverSatisfied' && break; sleep 1; done
    say "the array has ended, every task COMPLETED; the merge: $(fields "$M")"
    say "by hand: scontrol update jobid=$M dependency=afterok:${A}_0:${A}_1 (the tasks one by one)"
    scontrol update jobid="$M" dependency="afterok:${A}_0:${A}_1"
    lap "array finished; merge re-pointed by hand"
fi
for i in $(seq 1 3600); do
    [ -z "$(squeue -h -j "$A,$M" 2>/dev/null)" ] && break
    # A FAILED task leaves the merge's afterok unsatisfiable for good (Slurm 22.05): stop here, not after an hour.
    if scontrol show job "$M" 2>/dev/null | grep -q 'Reason=DependencyNeverSatisfied'; then
        for j in "${A}_0" "${A}_1" "$M"; do say "  $j: $(fields "$j")"; done
        die "the merge can never start: a task failed (the logs: slurm-${A}_0.out, slurm-${A}_1.out)"
    fi
    sleep 1
done
[ -z "$(squeue -h -j "$A,$M")" ] || die "jobs still queued after an hour: $(squeue)"
lap "array and merge finished"
say "finished jobs (scontrol show job):"
for j in "${A}_0" "${A}_1" "$M"; do
    echo "  $j: $(scontrol show job "$j" | grep -oE '(JobName|JobState|Restarts|ExitCode|RunTime)=[^ ]*' | tr '\n' ' ')"
done
for j in "${A}_0" "${A}_1" "$M"; do
    scontrol show job "$j" | grep -q 'JobState=COMPLETED' || die "job $j did not complete"
done
say "slurm-${A}_$K.out (the killed task's log, both attempts):"
sed 's/^/  | /' "slurm-${A}_$K.out"
[ "$MANUAL" = 1 ] || grep -q 'requeueing share' "slurm-${A}_$K.out" || die "task $K's log does not say it requeued"
grep -q 'resumed: reused' "slurm-${A}_$K.out" || die "task $K's rerun did not resume from its journal"
kept_after=$(cd "$progress" && stat -c '%n %y' */*.json | sort)
while read -r line; do
    grep -qxF "$line" <<<"$kept_after" || die "a unit kept before the kill was rewritten: $line"
done <<<"$kept_before"
say "the $(echo "$kept_before" | wc -l) unit(s) kept before the kill are unchanged; the journal now holds $(echo "$kept_after" | wc -l)"
say "merge-$M.out: $(cat "merge-$M.out")"
[ -s report/results.json ] || die "the merge wrote no report/results.json"

# 5. The same evaluation in one process.
# The same thread count as the tasks': training sums gradients per thread, so the same seed gives the same
# weights at the same thread count only (docs/ARCHITECTURE.md); at 2 threads this run's numbers differ.
say "one process: advkit evaluate \$ADVKIT_ARGS --seed 0 --threads $CPUS --out reference"
# shellcheck disable=SC2086
"$ADVKIT" evaluate $ADVKIT_ARGS --seed 0 --threads "$CPUS" --quiet --out reference | sed 's/^/  | /'
lap "one-process evaluation (reference)"
if ! diff <(jq -S .results report/results.json) <(jq -S .results reference/results.json) > results.diff; then
    head -40 results.diff
    die "the merged results differ from the one-process run's (diff above)"
fi
say "merged results.json \"results\" == one-process results.json \"results\" ($(jq -S -c .results reference/results.json | wc -c) bytes of JSON;" \
    "$(jq '.results.models | length' reference/results.json) defenses, $(jq '.results.whiteBox | length' reference/results.json) white-box cells)"
jq -r '.results.models[].name as $d | "  \($d): clean \(.results.cleanAccuracy[$d]), worst case \(.results.worstCase[$d])"' report/results.json 2>/dev/null || true
cd "$ROOT"
