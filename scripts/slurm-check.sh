#!/usr/bin/env bash
# The job-array check of issue 19 on a real, single-node Slurm cluster on this machine:
#
#   1. (idempotent) installs Debian's slurm-wlm and munge if missing, writes a minimal
#      /etc/slurm/slurm.conf for this one node (its real CPU count and memory, from `slurmd -C`,
#      select/cons_tres, no cgroups), and starts munged, slurmctld and slurmd if they are not
#      running;
#   2. trains (once, cached under $WORK) a tiny oracle and DDPM on the procedural kiki/bouba set;
#   3. submits examples/slurm/explain.sbatch as a 2-task job array (`sbatch --array=0-1`), each
#      task explaining its shard, which foil reads from Slurm's SLURM_ARRAY_TASK_* variables,
#      into ONE results folder, and waits for it;
#   4. runs the same command in one process into another folder;
#   5. asserts the two folders are byte-identical (`diff -r`), leaving out only the run
#      manifest foil-run.json (it records the first writer's not-compared settings, e.g. the
#      shard). No result file holds a timing field (timings are printed, not written).
#
# Needs root (apt, /etc/slurm, the daemons). CI cannot run slurmd, so this is not part of
# `cargo test`; its recorded output is in docs/cluster.md. Usage:
#
#   scripts/slurm-check.sh            # everything
#   scripts/slurm-check.sh --setup    # only step 1 (and a 2-task `hostname` array as a smoke test)
#
# FOIL=path uses a foil binary built before (default: builds target/release/foil).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WORK=${WORK:-/tmp/foil-slurm-check}
SETUP_ONLY=0
[ "${1:-}" = "--setup" ] && SETUP_ONLY=1
say() { printf '== %s\n' "$*"; }

# ---- 1. a single-node cluster on localhost -------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
fi
NODE=$(hostname -s)
NODE_LINE=$(slurmd -C | head -1)   # NodeName=<host> CPUs=.. Boards=.. ... RealMemory=..
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
CONF=/etc/slurm/slurm.conf
NEW_CONF=$(cat <<CONF
# Written by foil's scripts/slurm-check.sh: one node, this machine.
ClusterName=foil-check
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=check Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
)
RESTART=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$NEW_CONF" ]; then
  say "writing $CONF"
  printf '%s\n' "$NEW_CONF" > "$CONF"
  RESTART=1
fi
if ! pgrep -x munged >/dev/null; then
  say "starting munged"
  mkdir -p /run/munge && chown munge:munge /run/munge
  [ -s /etc/munge/munge.key ] || { mungekey --create --force 2>/dev/null || \
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; \
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
  runuser -u munge -- /usr/sbin/munged
fi
munge -n | unmunge >/dev/null
if [ $RESTART = 1 ]; then
  pkill_pid() { [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null || true; }
  pkill_pid /run/slurmd.pid
  pkill_pid /run/slurmctld.pid
  sleep 2
fi
if ! scontrol ping 2>/dev/null | grep -q UP; then
  say "starting slurmctld"
  /usr/sbin/slurmctld
fi
if [ ! -f /run/slurmd.pid ] || ! kill -0 "$(cat /run/slurmd.pid)" 2>/dev/null; then
  say "starting slurmd"
  /usr/sbin/slurmd
fi
for _ in $(seq 60); do
  state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1 || true)
  case "$state" in idle*|mixed*|allocated*) break ;; esac
  sleep 1
done
scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
say "slurm $(sinfo --version | awk '{print $2}'): $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %T')"

wait_job() { # job id: waits until it has left the queue, then prints its tasks' states
  while squeue -h -j "$1" 2>/dev/null | grep -q .; do sleep 2; done
}

if [ $SETUP_ONLY = 1 ]; then
  mkdir -p "$WORK"
  JOB=$(sbatch --parsable --array=0-1 --output="$WORK/hello-%A_%a.out" \
    --wrap 'echo "task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT on $(hostname)"; env | grep ^SLURM_ARRAY | sort')
  wait_job "$JOB"
  cat "$WORK"/hello-"$JOB"_*.out
  exit 0
fi

# ---- 2. tiny networks on the procedural kiki/bouba set ----------------------------------------
if [ -z "${FOIL:-}" ]; then
  cargo build --release --quiet --bin foil
  FOIL=$ROOT/target/release/foil
fi
export FOIL
DATA=kiki-bouba:20:16   # 20 per class, 16 px: 4 test images per class
CLASSES=bouba,kiki
mkdir -p "$WORK"
NETS=$WORK/nets-${DATA//:/_}
if [ ! -f "$NETS/ddpm/model.json" ]; then
  say "training a tiny oracle and DDPM (cached in $NETS)"
  "$FOIL" train oracle --data $DATA --classes $CLASSES --image-size 16 --steps 30 \
    --batch-size 8 --width 0.125 --out "$NETS/oracle" >/dev/null
  "$FOIL" train ddpm --data $DATA --classes $CLASSES --image-size 16 --steps 10 --batch-size 8 \
    --out "$NETS/ddpm" >/dev/null
fi
# The tiny, fast settings both runs share (examples/slurm/explain.sbatch passes "$@" on).
# 4 inputs per direction in batches of 2: 4 batches, dealt round-robin to the 2 shards.
ARGS=(--data $DATA --classes $CLASSES --oracle "$NETS/oracle" --ddpm "$NETS/ddpm"
  --per-direction 4 --batch-size 2 --respaced-steps 10 --tau 4 --scales 4,8 --seed 7)

# ---- 3. a 2-task job array into one folder ---------------------------------------------------
rm -rf "$WORK/array" "$WORK/single" "$WORK"/slurm-*.out
say "sbatch --array=0-1 examples/slurm/explain.sbatch -> $WORK/array"
JOB=$(RESULTS="$WORK/array" sbatch --parsable --array=0-1 --chdir="$ROOT" \
  --output="$WORK/slurm-%A_%a.out" examples/slurm/explain.sbatch "${ARGS[@]}")
wait_job "$JOB"
for f in "$WORK"/slurm-"$JOB"_*.out; do echo "--- $(basename "$f")"; cat "$f"; done
FAILED=0
for f in "$WORK"/slurm-"$JOB"_*.out; do grep -q "explained" "$f" || FAILED=1; done
[ $FAILED = 0 ] || { say "FAIL: an array task did not finish"; exit 1; }

# ---- 4. the same command in one process -------------------------------------------------------
say "one process (no shard) -> $WORK/single"
"$FOIL" maskdime "${ARGS[@]}" --out "$WORK/single"

# ---- 5. the union is byte-identical ----------------------------------------------------------
say "diff -r (leaving out foil-run.json)"
n_array=$(find "$WORK/array" -type f ! -name foil-run.json | wc -l)
n_single=$(find "$WORK/single" -type f ! -name foil-run.json | wc -l)
echo "files: array $n_array, single process $n_single"
echo "the run manifests differ only in settings not compared (the first writer's shard):"
diff "$WORK/array/foil-run.json" "$WORK/single/foil-run.json" || true
if diff -r -x foil-run.json "$WORK/array" "$WORK/single"; then
  say "PASS: the job array's results are byte-identical to the one-process run"
else
  say "FAIL: the results differ"
  exit 1
fi
