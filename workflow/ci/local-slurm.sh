#!/usr/bin/env bash
# A real SLURM cluster on this machine for the project's SLURM tests (Debian 12, root, no systemd):
# one node by default, two (or more) compute nodes with --nodes 2.
#
#   bash workflow/ci/local-slurm.sh start              # install Debian's packages if missing, configure, start, wait idle
#   bash workflow/ci/local-slurm.sh start --nodes 2    # the same with two compute nodes n1, n2 (one slurmd each)
#   bash workflow/ci/local-slurm.sh status             # daemons, partitions, queue
#   bash workflow/ci/local-slurm.sh stop               # cancel jobs, stop the daemons by their PIDs (--purge: delete state)
#
# Daemons: munged, mariadbd + slurmdbd (accounting, so `sacct` answers as on a real cluster: submitit
# polls job states with it), slurmctld, slurmd. No cgroups (proctrack/linuxproc, task/none). Two
# partitions on the one node: `cpu` (default) and `gpu`; the node declares LLARA_SLURM_GPUS fake GPUs
# (gres.conf entries backed by character devices, clones of /dev/null), so a job asking for
# --gpus-per-node/--gres=gpu:N is scheduled and gets CUDA_VISIBLE_DEVICES (torch still sees no CUDA).
# An account `llara-ci` exists beside root's default one; unknown accounts are refused (associations
# enforced), as on most sites.
#
# Two nodes (--nodes 2, or LLARA_SLURM_NODES=2): nodes n1 and n2, each its own slurmd (`slurmd -N n1`,
# `slurmd -N n2`) on this host, its own port (Port= on its NodeName line), spool, PID file and log
# (%n in SlurmdSpoolDir/SlurmdPidFile/SlurmdLogFile), both at NodeAddr 127.0.0.1. Debian's slurmd
# supports this ("multiple slurmd", checked with Slurm 22.05.8: both register, `srun -N2 printenv
# SLURMD_NODENAME` prints n1 and n2), so no network namespaces are needed. Each node declares the
# machine's CPUs and memory and LLARA_SLURM_GPUS fake GPUs (the same character devices). Partitions
# over both nodes: `cpu` (default) and `gpu` as in one-node mode, and `low` and `high` for preemption
# tests (PreemptType=preempt/partition_prio: a job in `high`, PriorityTier 2, requeues the jobs of
# `low`, PriorityTier 1, PreemptMode=REQUEUE, GraceTime LLARA_SLURM_GRACE; jobs of `cpu`, `gpu` and
# `high` are never preempted, PreemptMode=OFF). Jobs see the same filesystem, and the same hostname
# (`hostname` prints this machine's name on both nodes; SLURMD_NODENAME and the node list say n1/n2).
# The node names do not resolve on this machine (no /etc/hosts entry; a lookup would go to DNS), so
# each slurmd runs in a private mount namespace where /etc/hosts is a copy with "127.0.0.1 n1 n2"
# added (bind mount; the machine's /etc/hosts is not changed): jobs, which run below slurmd, resolve
# n1 and n2 (torch's MASTER_ADDR=n1) from that file. The mount namespaces end with the slurmds.
#
# Config, state, logs, sockets and PID files live under $LLARA_SLURM_DIR. /etc/slurm/slurm.conf and
# gres.conf are symlinked to ours (unless /etc/slurm/slurm.conf is someone else's file, or
# LLARA_SLURM_ETC_LINK=0), because Snakemake's job-step plugin drops SLURM_CONF: clients then work
# without it. `source $LLARA_SLURM_DIR/env.sh` exports SLURM_CONF for the case where the link could not
# be made (and for a second cluster beside the default one).
#
# Knobs (environment):
#   LLARA_SLURM_DIR         state folder                                   [/tmp/llara-slurm]
#   LLARA_SLURM_NODES       compute nodes (--nodes N overrides it)          [1]
#   LLARA_SLURM_GPUS        fake GPUs per node (0: none)                    [2]
#   LLARA_SLURM_GRACE       seconds a preempted job of `low` gets (SIGTERM, then SIGKILL)  [10]
#   LLARA_SLURM_TIMEOUT     seconds to wait for the nodes to become idle    [120]
#   LLARA_SLURM_NO_INSTALL  1: never call apt-get                           [0]
#   LLARA_SLURM_PORTS       slurmctld,slurmd,slurmdbd,mariadb TCP ports     [6817,6818,6819,3316]
#                           with several nodes, node i's slurmd listens on slurmd+10*(i-1)
#                           (6818, 6828), or on the 5th, 6th... field of the list (node 2, 3...)
#   LLARA_SLURM_ETC_LINK    0: never touch /etc/slurm (a second cluster)    [1]
#
# A second cluster beside the default one (its own state, ports and munged; /etc/slurm left alone):
#   export LLARA_SLURM_DIR=/tmp/llara-slurm2 LLARA_SLURM_PORTS=7817,7818,7819,4316 LLARA_SLURM_ETC_LINK=0
#   bash workflow/ci/local-slurm.sh start --nodes 2 && source /tmp/llara-slurm2/env.sh
set -euo pipefail

BASE=${LLARA_SLURM_DIR:-/tmp/llara-slurm}
NODES=${LLARA_SLURM_NODES:-1}
GPUS=${LLARA_SLURM_GPUS:-2}
GRACE=${LLARA_SLURM_GRACE:-10}
TIMEOUT=${LLARA_SLURM_TIMEOUT:-120}
NO_INSTALL=${LLARA_SLURM_NO_INSTALL:-0}
ETC_LINK=${LLARA_SLURM_ETC_LINK:-1}
IFS=, read -r -a PORTS <<<"${LLARA_SLURM_PORTS:-6817,6818,6819,3316}"
CTLD_PORT=${PORTS[0]} SLURMD_PORT=${PORTS[1]} DBD_PORT=${PORTS[2]} DB_PORT=${PORTS[3]}
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

# The compute nodes: one-node mode is this machine's name (as it always was); with NODES > 1, n1..nN.
node_names() {
  local i
  if ((NODES == 1)); then
    echo "$NODE"
    return 0
  fi
  for ((i = 1; i <= NODES; i++)); do echo "n$i"; done
}
node_port() { # node_port I: the slurmd port of node I (1-based)
  local i=$1
  if ((i == 1)); then
    echo "$SLURMD_PORT"
  elif [[ -n ${PORTS[i + 2]:-} ]]; then
    echo "${PORTS[i + 2]}"
  else
    echo $((SLURMD_PORT + 10 * (i - 1)))
  fi
}
slurmd_pidfile() { # slurmd_pidfile NAME
  if ((NODES == 1)); then echo "$RUN/slurmd.pid"; else echo "$RUN/slurmd-$1.pid"; fi
}

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
  local names=() n i
  mapfile -t names < <(node_names)
  mkdir -p "$ETC" "$RUN/munge" "$LOG" "$SPOOL/ctld" "$BASE/mysql"
  if ((NODES == 1)); then
    mkdir -p "$SPOOL/d"
  else
    for n in "${names[@]}"; do mkdir -p "$SPOOL/d-$n"; done
  fi
  chown munge:munge "$RUN/munge"
  chmod 755 "$RUN/munge"
  local hw cpus sockets cores threads mem
  hw=$(slurmd -C | head -1)
  field() { tr ' ' '\n' <<<"$hw" | sed -n "s/^$1=//p"; }
  cpus=$(field CPUs) sockets=$(field SocketsPerBoard) cores=$(field CoresPerSocket)
  threads=$(field ThreadsPerCore) mem=$(($(field RealMemory) * 9 / 10))
  local gres_node="" gres_types="" all
  all=$(IFS=,; echo "${names[*]}")
  : >"$ETC/gres.conf.new"
  if ((GPUS > 0)); then
    gres_node="Gres=gpu:$GPUS" gres_types="GresTypes=gpu"
    # several nodes: each slurmd takes its own line's devices; the same files serve every node
    echo "NodeName=$all Name=gpu File=$(fake_gpu_files)" >"$ETC/gres.conf.new"
  fi
  local what="one node" d_pid=$RUN/slurmd.pid d_log=$LOG/slurmd.log d_spool=$SPOOL/d nodes parts
  nodes="NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem $gres_node State=UNKNOWN"
  parts="PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE DefaultTime=60 State=UP
PartitionName=gpu Nodes=$NODE Default=NO MaxTime=INFINITE DefaultTime=60 State=UP"
  if ((NODES > 1)); then
    # Several slurmd on this host ("multiple slurmd"): %n is each one's node name; each listens on the
    # Port= of its NodeName line; NodeHostname is the real host, NodeAddr the loopback address.
    what="$NODES nodes (one slurmd each on this host)"
    d_pid=$RUN/slurmd-%n.pid d_log=$LOG/slurmd-%n.log d_spool=$SPOOL/d-%n
    # preempt/partition_prio: a pending job of a partition with a higher PriorityTier preempts the
    # jobs of lower tiers on the same nodes, with the preemptee partition's PreemptMode; REQUEUE needs
    # JobRequeue=1 (set above) or --requeue. GraceTime: the job's tasks (not its batch script) get
    # SIGTERM at once, the rest is killed GraceTime s later and requeued; a job that ends by itself
    # within the grace time is not requeued (it keeps its own end state, e.g. COMPLETED).
    nodes="PreemptType=preempt/partition_prio
PreemptMode=REQUEUE"
    for i in "${!names[@]}"; do
      nodes+="
NodeName=${names[i]} NodeHostname=$NODE NodeAddr=127.0.0.1 Port=$(node_port $((i + 1))) CPUs=$cpus SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem $gres_node State=UNKNOWN"
    done
    parts="PartitionName=cpu Nodes=$all Default=YES MaxTime=INFINITE DefaultTime=60 State=UP PreemptMode=OFF
PartitionName=gpu Nodes=$all Default=NO MaxTime=INFINITE DefaultTime=60 State=UP PreemptMode=OFF
PartitionName=low Nodes=$all Default=NO MaxTime=INFINITE DefaultTime=60 State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=$GRACE
PartitionName=high Nodes=$all Default=NO MaxTime=INFINITE DefaultTime=60 State=UP PriorityTier=2 PreemptMode=OFF"
  fi
  cat >"$ETC/slurm.conf.new" <<EOF
# Written by workflow/ci/local-slurm.sh: $what, no cgroups, accounting through slurmdbd.
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
SlurmdSpoolDir=$d_spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$d_pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$d_log
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
$nodes
$parts
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
  if ((NODES > 1)); then
    # what jobs see as /etc/hosts (bind-mounted in the slurmds' mount namespaces): the node names resolve
    { cat /etc/hosts; echo "127.0.0.1 ${names[*]}  # local-slurm.sh: the nodes of $BASE"; } >"$ETC/hosts"
  fi
  echo "$NODES" >"$BASE/nodes"
  cat >"$BASE/env.sh" <<EOF
export SLURM_CONF=$ETC/slurm.conf
EOF
  [[ $ETC_LINK == 1 ]] && link_etc
  return 0
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
  if ((NODES == 1)); then
    if ! pid_of "$RUN/slurmd.pid" slurmd >/dev/null; then
      port_busy "$SLURMD_PORT" && die "port $SLURMD_PORT is taken by another process (set LLARA_SLURM_PORTS)"
      slurmd -N "$NODE"
      wait_for 10 pid_of "$RUN/slurmd.pid" slurmd || die "slurmd did not start (see $LOG/slurmd.log)"
      say "slurmd up (pid $(cat "$RUN/slurmd.pid"))"
    fi
    return 0
  fi
  # Several nodes: one slurmd per node name, each in a mount namespace of its own whose /etc/hosts
  # names the nodes (jobs inherit it), where the kernel allows one.
  local names=() i n port pf hosts_ns=1
  mapfile -t names < <(node_names)
  unshare --mount --propagation slave mount --bind "$ETC/hosts" /etc/hosts 2>/dev/null || {
    hosts_ns=0
    say "WARNING: no mount namespace here (unshare --mount failed): the node names do not resolve in jobs"
  }
  for i in "${!names[@]}"; do
    n=${names[i]} port=$(node_port $((i + 1))) pf=$(slurmd_pidfile "${names[i]}")
    pid_of "$pf" slurmd >/dev/null && continue
    port_busy "$port" && die "port $port (node $n) is taken by another process (set LLARA_SLURM_PORTS)"
    if ((hosts_ns)); then
      # slurmd forks into the background and leaves; the namespace lives as long as its processes
      unshare --mount --propagation slave sh -c 'mount --bind "$0" /etc/hosts && exec slurmd -N "$1"' "$ETC/hosts" "$n"
    else
      slurmd -N "$n"
    fi
    wait_for 10 pid_of "$pf" slurmd || die "slurmd $n did not start (see $LOG/slurmd-$n.log)"
    say "slurmd $n up (pid $(cat "$pf"), port $port)"
  done
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
  local end=$(($(date +%s) + TIMEOUT)) state="" names=() n ready states
  local -A resumed=()
  mapfile -t names < <(node_names)
  while (($(date +%s) < end)); do
    ready=0 states=""
    for n in "${names[@]}"; do
      state=$(sinfo -h -n "$n" -o %T 2>/dev/null | head -1 || true)
      states+="${states:+, }$n ${state:-none}"
      case $state in
        idle | mixed | allocated | completing) ready=$((ready + 1)) ;;
        down* | drain* | fail* | inval*)
          [[ -n ${resumed[$n]:-} ]] || scontrol update nodename="$n" state=resume >/dev/null 2>&1 || true
          resumed[$n]=1
          ;;
      esac
    done
    if ((ready == ${#names[@]})); then
      if ((NODES == 1)); then
        say "ready: node $NODE $state; partitions cpu (default), gpu; $GPUS fake GPUs"
      else
        say "ready: nodes $states; partitions cpu (default), gpu, low, high (preempts low); $GPUS fake GPUs per node"
      fi
      return 0
    fi
    sleep 0.2
  done
  tail -n 20 "$LOG/slurmctld.log" "$LOG"/slurmd*.log >&2 || true
  die "nodes not ready after ${TIMEOUT}s (${states:-no answer})"
}

start() {
  [[ $(id -u) == 0 ]] || die "run as root (the daemons run as root here)"
  [[ $NODES =~ ^[1-9][0-9]*$ ]] || die "--nodes wants a positive number, not '$NODES'"
  local running i ports=("$CTLD_PORT" "$DBD_PORT" "$DB_PORT")
  for ((i = 1; i <= NODES; i++)); do ports+=("$(node_port "$i")"); done
  [[ $(printf '%s\n' "${ports[@]}" | sort -u | wc -l) == "${#ports[@]}" ]] ||
    die "two daemons would share a port (${ports[*]}): set LLARA_SLURM_PORTS"
  if pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
    running=$(cat "$BASE/nodes" 2>/dev/null || echo 1)
    ((running == NODES)) || die "the cluster under $BASE runs with $running node(s): stop it first to start it with $NODES"
  fi
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

slurmd_running() {
  local pf
  for pf in "$RUN"/slurmd.pid "$RUN"/slurmd-*.pid; do
    pid_of "$pf" slurmd >/dev/null && return 0
  done
  return 1
}

stop() {
  local pf
  if pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
    local jobs
    jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)
    if [[ -n ${jobs// /} ]]; then
      say "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      slurmd_running && wait_for 15 test -z "$(squeue -h -o %A 2>/dev/null)" || true
    fi
  fi
  for pf in "$RUN"/slurmd.pid "$RUN"/slurmd-*.pid; do
    [[ -e $pf ]] && stop_daemon "$pf" slurmd
  done
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
  if [[ $ETC_LINK == 1 ]]; then
    for p in slurm.conf gres.conf; do
      [[ -L /etc/slurm/$p && $(readlink "/etc/slurm/$p") == "$ETC/$p" ]] && rm -f "/etc/slurm/$p"
    done
  fi
  if [[ ${1:-} == --purge ]]; then
    rm -rf "$BASE"
    say "removed $BASE"
  fi
  say "stopped"
}

status() {
  local d rc=0 pid n label daemons=(munge/munged:munged mariadbd:mariadbd slurmdbd:slurmdbd slurmctld:slurmctld)
  NODES=$(cat "$BASE/nodes" 2>/dev/null || echo 1)
  if ((NODES == 1)); then
    daemons+=(slurmd:slurmd)
  else
    for n in $(node_names); do daemons+=("slurmd-$n:slurmd"); done
  fi
  for d in "${daemons[@]}"; do
    label=${d##*:}
    [[ $d == slurmd-* ]] && label=${d%%:*}
    if pid=$(pid_of "$RUN/${d%%:*}.pid" "${d##*:}"); then
      echo "$label: running (pid $pid)"
    else
      echo "$label: not running"
      rc=1
    fi
  done
  if ((rc == 0)); then
    sinfo -o '%P %a %l %D %T %G %N' || rc=1
    squeue || rc=1
  fi
  return $rc
}

usage() {
  echo "usage: $0 start [--nodes N]|stop [--purge]|status   (state under $BASE)" >&2
  exit 2
}

case ${1:-} in
  start)
    shift
    while (($#)); do
      case $1 in
        --nodes) (($# >= 2)) || usage; NODES=$2; shift 2 ;;
        --nodes=*) NODES=${1#--nodes=}; shift ;;
        *) usage ;;
      esac
    done
    start
    ;;
  stop) stop "${2:-}" ;;
  status) status ;;
  *) usage ;;
esac
