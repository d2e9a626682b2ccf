#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for testing sweeps through the submitit SLURM launcher.
#
#   slurm/local-cluster.sh up       install (apt-get, if slurmctld is missing), start, wait for an idle node
#   slurm/local-cluster.sh down     scancel every job, stop the daemons this script started (by PID file)
#   slurm/local-cluster.sh status   daemons, sinfo, squeue
#
# Everything lives in a state directory: $XSUB_SLURM_DIR (default /tmp/xsub-slurm): slurm.conf,
# slurmdbd.conf, spool, logs, PID files and the MariaDB data directory. `up` prints the line
#   export SLURM_CONF=<state dir>/etc/slurm.conf
# to point sbatch/squeue/sacct (and submitit) at this cluster. `up` on a running cluster only checks it.
#
# Environment:
#   XSUB_SLURM_DIR          state directory (default /tmp/xsub-slurm)
#   XSUB_SLURM_ACCOUNTING   auto (default: on if slurmdbd + MariaDB are or can be installed) | 1 | 0.
#                           Accounting (slurmdbd + MariaDB) gives sacct and submitit real job states;
#                           without it submitit sees UNKNOWN for every job.
#   XSUB_SLURM_DB_PORT      TCP port of the private MariaDB on 127.0.0.1 (default 3307)
#   XSUB_SLURM_WAIT_S       how long `up` waits for each daemon / the idle node (default 60)
#
# Exit status: 0 ok; 1 failure (the log tail is printed); 69 Slurm is unavailable here (not root, no
# apt-get, or the install failed) -- the test suite skips on 69 only.
#
# Needs root (the daemons run as root, munged as munge, mariadbd as mysql); no systemd is used.
# Daemons are only ever stopped through the PID files this script wrote, never by process name.
set -euo pipefail

STATE=${XSUB_SLURM_DIR:-/tmp/xsub-slurm}
ACCOUNTING=${XSUB_SLURM_ACCOUNTING:-auto}
DB_PORT=${XSUB_SLURM_DB_PORT:-3307}
WAIT_S=${XSUB_SLURM_WAIT_S:-60}
CLUSTER=xsub
DB_NAME=xsub_slurm_acct_db
DB_USER=slurm
DB_PASS=xsub-local

ETC=$STATE/etc
RUN=$STATE/run
LOG=$STATE/log
SPOOL=$STATE/spool
DB_DIR=$STATE/mysql
CONF=$ETC/slurm.conf
DBD_CONF=$ETC/slurmdbd.conf
DB_SOCK=$RUN/mariadb/mysqld.sock
EX_UNAVAILABLE=69

export SLURM_CONF=$CONF

say() { echo "local-cluster: $*" >&2; }
die() { say "error: $*"; exit 1; }
unavailable() { say "unavailable: $*"; exit "$EX_UNAVAILABLE"; }

# ---------------------------------------------------------------------------------------------- processes

pid_of() {  # the PID recorded in a pid file, if that process is alive (a zombie counts as stopped)
  local file=$1 pid stat
  [[ -s $file ]] || return 1
  pid=$( { tr -dc '0-9' <"$file"; } 2>/dev/null) || return 1
  [[ -n $pid ]] || return 1
  stat=$(ps -o stat= -p "$pid" 2>/dev/null | tr -d ' ') || return 1
  [[ -n $stat && $stat != Z* ]] || return 1
  echo "$pid"
}

alive() { pid_of "$1" >/dev/null; }

wait_for() {  # wait_for <seconds> <description> <command...>: poll until the command succeeds
  local limit=$1 what=$2 t0=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS - t0 < limit)) || return 1
    sleep 0.5
  done
}

stop_pidfile() {  # stop_pidfile <name> <pid file>: SIGTERM, wait up to 15 s, then SIGKILL
  local name=$1 file=$2 pid t0
  if ! pid=$(pid_of "$file"); then
    rm -f "$file"
    return 0
  fi
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  t0=$SECONDS
  while alive "$file"; do
    if ((SECONDS - t0 >= 15)); then
      say "$name (pid $pid) ignored SIGTERM for 15 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  rm -f "$file"
}

tail_log() { [[ -f $1 ]] && { say "--- last lines of $1"; tail -n 15 "$1" >&2; } || true; }

# ------------------------------------------------------------------------------------------------ install

want_accounting() { [[ $ACCOUNTING == 1 || $ACCOUNTING == auto ]]; }

install_packages() {
  local pkgs=()
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null || pkgs+=(slurm-wlm)
  command -v munged >/dev/null || pkgs+=(munge)
  if want_accounting; then
    command -v slurmdbd >/dev/null || pkgs+=(slurmdbd)
    command -v mariadbd >/dev/null || pkgs+=(mariadb-server)
  fi
  ((${#pkgs[@]})) || return 0
  [[ $(id -u) == 0 ]] || unavailable "not root: cannot install ${pkgs[*]}"
  command -v apt-get >/dev/null || unavailable "no apt-get to install ${pkgs[*]}"
  say "installing ${pkgs[*]} (apt-get)"
  local log=$STATE/apt-get.log
  if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" \
      || { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
           apt-get install -y -q --no-install-recommends "${pkgs[@]}"; }; } >"$log" 2>&1; then
    tail_log "$log"
    command -v slurmctld >/dev/null && command -v munged >/dev/null && [[ $ACCOUNTING == auto ]] \
      && { say "accounting packages not installable: running without accounting"; ACCOUNTING=0; return 0; }
    unavailable "apt-get install ${pkgs[*]} failed (see $log)"
  fi
}

resolve_accounting() {
  if want_accounting && command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null; then
    ACCOUNTING=1
  elif [[ $ACCOUNTING == 1 ]]; then
    die "XSUB_SLURM_ACCOUNTING=1 but slurmdbd or mariadbd is missing"
  else
    ACCOUNTING=0
  fi
}

# ------------------------------------------------------------------------------------------------- config

ensure_hostname() {
  HOST=$(hostname -s)
  if ! getent hosts "$HOST" >/dev/null; then
    say "hostname $HOST does not resolve: adding it to /etc/hosts"
    echo "127.0.0.1 $HOST" >>/etc/hosts
  fi
}

write_if_changed() {  # write_if_changed <file> <mode>  (content on stdin)
  local file=$1 mode=$2 tmp
  tmp=$(mktemp "$file.XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
  else
    mv -f "$tmp" "$file"
  fi
}

write_configs() {
  local node
  node=$(slurmd -C | head -n 1)
  [[ $node == NodeName=* ]] || die "unexpected 'slurmd -C' output: $node"
  {
    cat <<EOF
# Generated by slurm/local-cluster.sh: single-node cluster without cgroups, root as SlurmUser.
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# credentials expire after 10 s (default 120 s delays the restart of a requeued job)
AuthInfo=cred_expire=10
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1,sched_min_interval=0
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
Waittime=0
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
EOF
    if ((ACCOUNTING)); then
      cat <<EOF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$HOST
AccountingStoragePort=6819
EOF
    else
      echo "AccountingStorageType=accounting_storage/none"
    fi
    cat <<EOF
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  } | write_if_changed "$CONF" 644
  if ((ACCOUNTING)); then
    write_if_changed "$DBD_CONF" 600 <<EOF
# Generated by slurm/local-cluster.sh
AuthType=auth/munge
DbdHost=$HOST
DbdPort=6819
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
  fi
}

# ------------------------------------------------------------------------------------------------ daemons

start_munge() {
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 "$RUN/munge" "$LOG/munge"
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    alive "$RUN/munge/munged.pid" || say "munged already running (not started by this script: left alone)"
    return 0
  fi
  [[ -f /etc/munge/munge.key ]] || { say "creating /etc/munge/munge.key"; mungekey -c -k /etc/munge/munge.key \
    && chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key; }
  say "starting munged"
  runuser -u munge -- /usr/sbin/munged --pid-file="$RUN/munge/munged.pid" \
    --log-file="$LOG/munge/munged.log" --seed-file="$RUN/munge/munged.seed" --force
  wait_for "$WAIT_S" munge bash -c 'munge -n | unmunge' \
    || { tail_log "$LOG/munge/munged.log"; die "munged does not answer"; }
}

db_client() { mariadb --no-defaults --socket="$DB_SOCK" -uroot "$@"; }

start_mariadb() {
  local fresh=$1
  install -d -o mysql -g mysql -m 0750 "$DB_DIR" "$RUN/mariadb" "$LOG/mariadb"
  if ! alive "$RUN/mariadb/mariadbd.pid"; then
    if [[ ! -d $DB_DIR/mysql ]]; then
      say "initialising MariaDB in $DB_DIR"
      mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR" --auth-root-authentication-method=socket \
        --skip-test-db >"$LOG/mariadb-install.log" 2>&1 || { tail_log "$LOG/mariadb-install.log"; die "mariadb-install-db failed"; }
    fi
    say "starting mariadbd (127.0.0.1:$DB_PORT)"
    setsid mariadbd --no-defaults --user=mysql --datadir="$DB_DIR" --socket="$DB_SOCK" --port="$DB_PORT" \
      --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$RUN/mariadb/mariadbd.pid" \
      --log-error="$LOG/mariadb/mariadb.err" --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
      </dev/null >>"$LOG/mariadb/mariadbd.out" 2>&1 &
    wait_for "$WAIT_S" mariadb db_client -e 'SELECT 1' \
      || { tail_log "$LOG/mariadb/mariadb.err"; die "mariadbd does not answer"; }
  fi
  local sql="CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';"
  # a fresh cluster (slurmctld -c) forgets its jobs: drop the old accounting too, so job ids cannot collide
  ((fresh)) && sql="DROP DATABASE IF EXISTS $DB_NAME; $sql"
  db_client -e "$sql" || die "cannot set up the accounting database"
}

start_slurmdbd() {
  alive "$RUN/slurmdbd.pid" && return 0
  say "starting slurmdbd"  # reads slurmdbd.conf next to $SLURM_CONF
  slurmdbd || { tail_log "$LOG/slurmdbd.log"; die "slurmdbd failed to start"; }
  wait_for "$WAIT_S" slurmdbd sacctmgr -n list cluster \
    || { tail_log "$LOG/slurmdbd.log"; die "slurmdbd does not answer"; }
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster $CLUSTER failed"
  fi
}

start_slurmctld() {
  local fresh=$1
  alive "$RUN/slurmctld.pid" && return 0
  say "starting slurmctld"
  # -c: a fresh cluster, no jobs or node states from an earlier run of this state directory
  if ((fresh)); then slurmctld -c -f "$CONF"; else slurmctld -f "$CONF"; fi \
    || { tail_log "$LOG/slurmctld.log"; die "slurmctld failed to start"; }
  wait_for "$WAIT_S" slurmctld scontrol ping \
    || { tail_log "$LOG/slurmctld.log"; die "slurmctld does not answer"; }
}

start_slurmd() {
  alive "$RUN/slurmd.pid" && return 0
  say "starting slurmd"
  slurmd -f "$CONF" || { tail_log "$LOG/slurmd.log"; die "slurmd failed to start"; }
}

node_idle() { sinfo -h -N -o '%t' | grep -Eq '^(idle|mix|alloc)'; }

up() {
  mkdir -p "$STATE"
  install_packages
  resolve_accounting
  ensure_hostname
  mkdir -p "$ETC" "$RUN" "$LOG" "$SPOOL/ctld" "$SPOOL/d"
  local fresh=0
  alive "$RUN/slurmctld.pid" || fresh=1
  write_configs
  start_munge
  if ((ACCOUNTING)); then
    start_mariadb "$fresh"
    start_slurmdbd
  fi
  start_slurmctld "$fresh"
  start_slurmd
  if ! wait_for "$WAIT_S" node node_idle; then
    sinfo -N >&2 || true
    tail_log "$LOG/slurmctld.log"
    tail_log "$LOG/slurmd.log"
    die "the node did not become idle within ${WAIT_S}s"
  fi
  say "up: $(sinfo -h -N -o '%N %t %c CPUs %m MB') (accounting: $( ((ACCOUNTING)) && echo on || echo off))"
  echo "export SLURM_CONF=$CONF"
}

down() {
  if [[ ! -d $STATE ]]; then
    say "nothing to stop ($STATE does not exist)"
    return 0
  fi
  if alive "$RUN/slurmctld.pid"; then
    local jobs
    jobs=$(squeue -h -o '%i' 2>/dev/null || true)
    if [[ -n $jobs ]]; then
      say "cancelling jobs: $(echo $jobs)"
      scancel --full $jobs 2>/dev/null || true
      wait_for 20 "jobs to end" bash -c '[[ -z $(squeue -h -o %i) ]]' || say "some jobs still listed; stopping anyway"
    fi
  fi
  stop_pidfile slurmd "$RUN/slurmd.pid"
  stop_pidfile slurmctld "$RUN/slurmctld.pid"
  stop_pidfile slurmdbd "$RUN/slurmdbd.pid"
  stop_pidfile mariadbd "$RUN/mariadb/mariadbd.pid"
  stop_pidfile munged "$RUN/munge/munged.pid"
  say "down"
}

status() {
  local name file rc=0
  for name in munged mariadbd slurmdbd slurmctld slurmd; do
    case $name in
      munged) file=$RUN/munge/munged.pid ;;
      mariadbd) file=$RUN/mariadb/mariadbd.pid ;;
      *) file=$RUN/$name.pid ;;
    esac
    if pid=$(pid_of "$file"); then echo "$name: running (pid $pid)"; else echo "$name: stopped"; fi
  done
  echo "SLURM_CONF=$CONF"
  if alive "$RUN/slurmctld.pid"; then
    sinfo || rc=1
    squeue || rc=1
  else
    rc=3
  fi
  return $rc
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status   (state dir: $STATE)" >&2; exit 2 ;;
esac
