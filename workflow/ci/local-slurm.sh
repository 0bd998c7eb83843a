#!/usr/bin/env bash
# A real one-node SLURM cluster for the project's SLURM tests (Debian 12, root, no systemd).
#
#   bash workflow/ci/local-slurm.sh start    # install Debian's packages if missing, configure, start, wait idle
#   bash workflow/ci/local-slurm.sh status   # daemons, partitions, queue
#   bash workflow/ci/local-slurm.sh stop     # cancel jobs, stop the daemons by their PIDs (--purge: delete state)
#
# Daemons: munged, mariadbd + slurmdbd (accounting, so `sacct` answers as on a real cluster: submitit
# polls job states with it), slurmctld, slurmd. No cgroups (proctrack/linuxproc, task/none). Two
# partitions on the one node: `cpu` (default) and `gpu`; the node declares LLARA_SLURM_GPUS fake GPUs
# (gres.conf entries backed by character devices, clones of /dev/null), so a job asking for
# --gpus-per-node/--gres=gpu:N is scheduled and gets CUDA_VISIBLE_DEVICES (torch still sees no CUDA).
# An account `llara-ci` exists beside root's default one; unknown accounts are refused (associations
# enforced), as on most sites.
#
# Config, state, logs, sockets and PID files live under $LLARA_SLURM_DIR. /etc/slurm/slurm.conf and
# gres.conf are symlinked to ours (unless /etc/slurm/slurm.conf is someone else's file), because
# Snakemake's job-step plugin drops SLURM_CONF: clients then work without it. `source
# $LLARA_SLURM_DIR/env.sh` exports SLURM_CONF for the case where the link could not be made.
#
# Knobs (environment):
#   LLARA_SLURM_DIR         state folder                                   [/tmp/llara-slurm]
#   LLARA_SLURM_GPUS        fake GPUs on the node (0: none)                 [2]
#   LLARA_SLURM_TIMEOUT     seconds to wait for the node to become idle     [120]
#   LLARA_SLURM_NO_INSTALL  1: never call apt-get                           [0]
#   LLARA_SLURM_PORTS       slurmctld,slurmd,slurmdbd,mariadb TCP ports     [6817,6818,6819,3316]
set -euo pipefail

BASE=${LLARA_SLURM_DIR:-/tmp/llara-slurm}
GPUS=${LLARA_SLURM_GPUS:-2}
TIMEOUT=${LLARA_SLURM_TIMEOUT:-120}
NO_INSTALL=${LLARA_SLURM_NO_INSTALL:-0}
IFS=, read -r CTLD_PORT SLURMD_PORT DBD_PORT DB_PORT <<<"${LLARA_SLURM_PORTS:-6817,6818,6819,3316}"
NODE=$(hostname -s)
ETC=$BASE/etc RUN=$BASE/run LOG=$BASE/log SPOOL=$BASE/spool
MUNGE_SOCK=$RUN/munge/munge.socket.2
ACCOUNT=llara-ci
export SLURM_CONF=$ETC/slurm.conf

T0=$(date +%s%N)
say() {
  local ms=$((($(date +%s%N) - T0) / 1000000))
  printf '[local-slurm %d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"
}
die() { say "ERROR: $*" >&2; exit 1; }

# pid_of PIDFILE COMM: print the PID recorded in PIDFILE if that process runs COMM (else fail)
pid_of() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ -n $pid ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] && echo "$pid"
}
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { # wait_for SECONDS COMMAND...: retry every 0.2 s
  local end=$(($(date +%s) + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    (($(date +%s) < end)) || return 1
    sleep 0.2
  done
}

install_packages() {
  local pkgs=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server) missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  [[ $NO_INSTALL == 1 ]] && die "missing packages: ${missing[*]} (LLARA_SLURM_NO_INSTALL=1)"
  say "installing ${missing[*]}"
  # No systemd here: keep the packages' init scripts from starting daemons with default configs.
  local own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  } >"${TMPDIR:-/tmp}/llara-slurm-apt.log" 2>&1 || rc=$?
  ((own_policy)) && rm -f /usr/sbin/policy-rc.d
  ((rc == 0)) || die "apt-get failed (see ${TMPDIR:-/tmp}/llara-slurm-apt.log)"
  say "packages installed"
}

fake_gpu_files() { # character devices for the fake GPUs: mknod clones of /dev/null, else existing ones
  local i files=()
  mkdir -p "$BASE/dev"
  for ((i = 0; i < GPUS; i++)); do
    [[ -c $BASE/dev/nvidia$i ]] || mknod "$BASE/dev/nvidia$i" c 1 3 2>/dev/null || break
    files+=("$BASE/dev/nvidia$i")
  done
  if ((${#files[@]} < GPUS)); then # mknod not permitted (unprivileged container)
    files=()
    for i in /dev/null /dev/zero /dev/full /dev/random /dev/urandom; do
      ((${#files[@]} < GPUS)) && [[ -c $i ]] && files+=("$i")
    done
    ((${#files[@]} == GPUS)) || die "not enough character devices for $GPUS fake GPUs"
  fi
  (IFS=,; echo "${files[*]}")
}

write_configs() {
  mkdir -p "$ETC" "$RUN/munge" "$LOG" "$SPOOL/ctld" "$SPOOL/d" "$BASE/mysql"
  chown munge:munge "$RUN/munge"
  chmod 755 "$RUN/munge"
  local hw cpus sockets cores threads mem
  hw=$(slurmd -C | head -1)
  field() { tr ' ' '\n' <<<"$hw" | sed -n "s/^$1=//p"; }
  cpus=$(field CPUs) sockets=$(field SocketsPerBoard) cores=$(field CoresPerSocket)
  threads=$(field ThreadsPerCore) mem=$(($(field RealMemory) * 9 / 10))
  local gres_node="" gres_types=""
  : >"$ETC/gres.conf.new"
  if ((GPUS > 0)); then
    gres_node="Gres=gpu:$GPUS" gres_types="GresTypes=gpu"
    echo "NodeName=$NODE Name=gpu File=$(fake_gpu_files)" >"$ETC/gres.conf.new"
  fi
  cat >"$ETC/slurm.conf.new" <<EOF
# Written by workflow/ci/local-slurm.sh: one node, no cgroups, accounting through slurmdbd.
ClusterName=llaraci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job may restart after 30 s instead of 120 s
AuthInfo=socket=$MUNGE_SOCK,cred_expire=30
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
# a job asking for more than a partition has is refused at submission instead of pending forever
EnforcePartLimits=ALL
JobRequeue=1
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# the munge socket for connections to slurmdbd (it is not at the default /run/munge)
AccountingStoragePass=$MUNGE_SOCK
AccountingStorageTRES=gres/gpu
AccountingStorageEnforce=associations
JobCompType=jobcomp/none
$gres_types
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=5
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem $gres_node State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE DefaultTime=60 State=UP
PartitionName=gpu Nodes=$NODE Default=NO MaxTime=INFINITE DefaultTime=60 State=UP
EOF
  cat >"$ETC/slurmdbd.conf.new" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=llara-ci
StorageLoc=slurm_acct_db
EOF
  cat >"$ETC/db-init.sql.new" <<'EOF'
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'llara-ci';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'llara-ci';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
  local f
  for f in slurm.conf gres.conf slurmdbd.conf db-init.sql; do
    if cmp -s "$ETC/$f.new" "$ETC/$f"; then
      rm -f "$ETC/$f.new"
    else
      [[ -f $ETC/$f ]] && pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null &&
        say "WARNING: $f changed while the cluster runs: stop and start again to apply it"
      mv -f "$ETC/$f.new" "$ETC/$f"
    fi
  done
  chmod 600 "$ETC/slurmdbd.conf"
  cat >"$BASE/env.sh" <<EOF
export SLURM_CONF=$ETC/slurm.conf
EOF
  link_etc
}

link_etc() { # clients (and jobs whose environment lost SLURM_CONF) find the config at the default place
  mkdir -p /etc/slurm
  local f
  for f in slurm.conf gres.conf; do
    if [[ -L /etc/slurm/$f || ! -e /etc/slurm/$f ]]; then
      ln -sfn "$ETC/$f" "/etc/slurm/$f"
    else
      say "WARNING: /etc/slurm/$f is not ours: left alone; source $BASE/env.sh (SLURM_CONF) to use this cluster"
    fi
  done
}

start_munge() {
  pid_of "$RUN/munge/munged.pid" munged >/dev/null && return 0
  [[ -s $RUN/munge/munge.key ]] || runuser -u munge -- mungekey --create --keyfile="$RUN/munge/munge.key"
  rm -f "$MUNGE_SOCK"
  runuser -u munge -- munged --key-file="$RUN/munge/munge.key" --socket="$MUNGE_SOCK" \
    --pid-file="$RUN/munge/munged.pid" --log-file="$RUN/munge/munged.log" --seed-file="$RUN/munge/munged.seed"
  wait_for 10 sh -c "munge -n -S '$MUNGE_SOCK' | unmunge -S '$MUNGE_SOCK'" || die "munge does not answer (see $RUN/munge/munged.log)"
  say "munged up (pid $(cat "$RUN/munge/munged.pid"))"
}

start_db() {
  if ! pid_of "$RUN/mariadbd.pid" mariadbd >/dev/null; then
    port_busy "$DB_PORT" && die "port $DB_PORT is taken by another process (set LLARA_SLURM_PORTS)"
    if [[ ! -d $BASE/mysql/data/mysql ]]; then
      mariadb-install-db --no-defaults --user=root --datadir="$BASE/mysql/data" --skip-test-db \
        --auth-root-authentication-method=socket >"$LOG/mariadb-install-db.log" 2>&1 ||
        die "mariadb-install-db failed (see $LOG/mariadb-install-db.log)"
    fi
    setsid mariadbd --no-defaults --user=root --datadir="$BASE/mysql/data" --socket="$RUN/mysqld.sock" \
      --pid-file="$RUN/mariadbd.pid" --bind-address=127.0.0.1 --port="$DB_PORT" --skip-log-bin \
      --log-error="$LOG/mariadbd.log" --init-file="$ETC/db-init.sql" --innodb-buffer-pool-size=64M \
      </dev/null >/dev/null 2>&1 &
    wait_for 60 mariadb-admin --no-defaults -S "$RUN/mysqld.sock" -uroot ping || die "mariadbd did not start (see $LOG/mariadbd.log)"
    wait_for 10 pid_of "$RUN/mariadbd.pid" mariadbd || die "mariadbd wrote no PID file"
    say "mariadbd up (pid $(cat "$RUN/mariadbd.pid"))"
  fi
  if ! pid_of "$RUN/slurmdbd.pid" slurmdbd >/dev/null; then
    port_busy "$DBD_PORT" && die "port $DBD_PORT is taken by another process (set LLARA_SLURM_PORTS)"
    slurmdbd
    wait_for 30 port_busy "$DBD_PORT" || die "slurmdbd does not listen (see $LOG/slurmdbd.log)"
    say "slurmdbd up (pid $(cat "$RUN/slurmdbd.pid"))"
  fi
}

start_slurm() {
  if ! pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
    port_busy "$CTLD_PORT" && die "port $CTLD_PORT is taken by another process (set LLARA_SLURM_PORTS)"
    slurmctld
    wait_for 30 scontrol ping || die "slurmctld does not answer (see $LOG/slurmctld.log)"
    say "slurmctld up (pid $(cat "$RUN/slurmctld.pid"))"
  fi
  if ! pid_of "$RUN/slurmd.pid" slurmd >/dev/null; then
    port_busy "$SLURMD_PORT" && die "port $SLURMD_PORT is taken by another process (set LLARA_SLURM_PORTS)"
    slurmd -N "$NODE"
    wait_for 10 pid_of "$RUN/slurmd.pid" slurmd || die "slurmd did not start (see $LOG/slurmd.log)"
    say "slurmd up (pid $(cat "$RUN/slurmd.pid"))"
  fi
}

ensure_account() { # the cluster registers itself with slurmdbd when slurmctld starts
  wait_for 30 sh -c "sacctmgr -n -P list cluster format=cluster | grep -qx llaraci" ||
    die "the cluster did not register with slurmdbd (see $LOG/slurmctld.log)"
  if ! sacctmgr -n -P list account "$ACCOUNT" format=account | grep -qx "$ACCOUNT"; then
    sacctmgr -i add account "$ACCOUNT" cluster=llaraci description="llara CI" >/dev/null
    sacctmgr -i add user root account="$ACCOUNT" cluster=llaraci >/dev/null
    say "account $ACCOUNT added (root's default account stays root)"
  fi
}

wait_idle() {
  local end=$(($(date +%s) + TIMEOUT)) state="" resumed=0
  while (($(date +%s) < end)); do
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1 || true)
    case $state in
      idle | mixed | allocated | completing) say "ready: node $NODE $state; partitions cpu (default), gpu; $GPUS fake GPUs"; return 0 ;;
      down* | drain* | fail* | inval*)
        ((resumed)) || scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
        resumed=1
        ;;
    esac
    sleep 0.2
  done
  tail -n 20 "$LOG/slurmctld.log" "$LOG/slurmd.log" >&2 || true
  die "node $NODE not ready after ${TIMEOUT}s (state: '${state:-none}')"
}

start() {
  [[ $(id -u) == 0 ]] || die "run as root (the daemons run as root here)"
  install_packages
  write_configs
  start_munge
  start_db
  start_slurm
  ensure_account
  wait_idle
}

descendants() { # PIDs below $1
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

stop_daemon() { # stop_daemon PIDFILE COMM: TERM, then KILL after 15 s
  local pid
  if ! pid=$(pid_of "$1" "$2"); then
    rm -f "$1"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 75); do
    [[ -d /proc/$pid && $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || break
    sleep 0.2
  done
  if [[ -d /proc/$pid && $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
    say "$2 ($pid) ignored SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
  say "$2 ($pid) stopped"
}

stop() {
  if pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
    local jobs
    jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)
    if [[ -n ${jobs// /} ]]; then
      say "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      pid_of "$RUN/slurmd.pid" slurmd >/dev/null && wait_for 15 test -z "$(squeue -h -o %A 2>/dev/null)" || true
    fi
  fi
  stop_daemon "$RUN/slurmd.pid" slurmd
  stop_daemon "$RUN/slurmctld.pid" slurmctld
  stop_daemon "$RUN/slurmdbd.pid" slurmdbd
  stop_daemon "$RUN/mariadbd.pid" mariadbd
  stop_daemon "$RUN/munge/munged.pid" munged
  # Without cgroups nothing contains a job: kill step daemons of this cluster (their working folder
  # is our spool) and every process below them.
  local p pid
  for p in /proc/[0-9]*; do
    [[ $(cat "$p/comm" 2>/dev/null) == slurmstepd ]] || continue
    [[ $(readlink "$p/cwd" 2>/dev/null) == "$BASE"/* ]] || continue
    pid=${p#/proc/}
    # shellcheck disable=SC2046
    kill -KILL "$pid" $(descendants "$pid") 2>/dev/null || true
    say "killed leftover slurmstepd $pid and its processes"
  done
  for p in slurm.conf gres.conf; do
    [[ -L /etc/slurm/$p && $(readlink "/etc/slurm/$p") == "$ETC/$p" ]] && rm -f "/etc/slurm/$p"
  done
  if [[ ${1:-} == --purge ]]; then
    rm -rf "$BASE"
    say "removed $BASE"
  fi
  say "stopped"
}

status() {
  local d rc=0 pid
  for d in munge/munged:munged mariadbd:mariadbd slurmdbd:slurmdbd slurmctld:slurmctld slurmd:slurmd; do
    if pid=$(pid_of "$RUN/${d%%:*}.pid" "${d##*:}"); then
      echo "${d##*:}: running (pid $pid)"
    else
      echo "${d##*:}: not running"
      rc=1
    fi
  done
  if ((rc == 0)); then
    sinfo -o '%P %a %l %D %T %G %N' || rc=1
    squeue || rc=1
  fi
  return $rc
}

case ${1:-} in
  start) start ;;
  stop) stop "${2:-}" ;;
  status) status ;;
  *)
    echo "usage: $0 start|stop [--purge]|status   (state under $BASE)" >&2
    exit 2
    ;;
esac
