#!/usr/bin/env bash
# A real PostgreSQL for the PostgreSQL store's tests and benchmarks (issue 18): Debian's
# `postgresql` package, one private server per sandbox directory, listening on 127.0.0.1
# and a socket directory inside the sandbox only, on a port chosen here or by the caller.
# No system cluster is created or started.
#
#   postgres.sh install
#       Installs Debian's postgresql package if it is missing (as root), without the
#       "main" system cluster its postinst would otherwise create and start. Quick and
#       silent when it is there.
#   postgres.sh missing
#       Prints the Debian packages install would install, one a line (nothing when none).
#   postgres.sh uninstall
#       Undoes install (as root): purges the PostgreSQL server and client packages and
#       removes the createcluster.d file install wrote. CI runs it first, so that every
#       run proves a fresh machine.
#   postgres.sh start --dir DIR [--port N] [--owner-pid PID]
#       initdb into DIR (as the postgres user when run as root: initdb refuses root),
#       starts the server on 127.0.0.1:PORT and DIR/pg/run (the socket directory), creates
#       the role "lemonade" (LOGIN CREATEDB, a random password) and its database
#       "lemonade", and prints DIR/postgres.json as the last (and only) line of stdout:
#       {"url": "postgres://lemonade:PASSWORD@127.0.0.1:PORT/lemonade", "host", "port",
#        "socketDir", "database", "user", "password", "passwordFile", "pid", "dir"}.
#       A DIR that already holds a server's data (stopped) is started again with its
#       data, role and password, on its old port unless --port is given.
#       --owner-pid: a watcher stops the server when that process is gone (test helpers
#       pass their own PID so a crashed or killed test leaves nothing running).
#   postgres.sh stop --dir DIR
#       Stops the server (fast shutdown: clients are disconnected) by the PID it recorded
#       and waits for it. Keeps DIR (start again keeps the data). Succeeds when nothing
#       runs or DIR is gone.
#
# start waits up to POSTGRES_WAIT_SECONDS (30) for the server to accept connections, then
# fails with the tail of its log; whatever it started is stopped again.
#
# Layout of DIR:
#   postgres.json       what start printed          password   the role's password (0600)
#   pg/data/            PGDATA (owned by the server's user, 0700)
#   pg/run/             unix_socket_directories     pg/postgres.log   the server's log
#   watch.pid, watch.log  the owner watcher (with --owner-pid)
set -euo pipefail
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
export LC_ALL=C

readonly PACKAGES=(postgresql)
readonly ROLE=lemonade
readonly DATABASE=lemonade
readonly WAIT_SECONDS=${POSTGRES_WAIT_SECONDS:-30}
readonly LOCK_DIR=/run/lock
# Read by postgresql-common's pg_createcluster (run by the package's postinst): no "main"
# cluster, so installing starts no system server listening on *:5432.
readonly CREATECLUSTER_CONF=/etc/postgresql-common/createcluster.d/50-lemonade-gateway.conf
SELF=$(readlink -f "$0")
readonly SELF

log() { echo "postgres: $*" >&2; }
die() { echo "postgres: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------- install

# The PACKAGES not installed, one a line (dpkg-query's status is ignored: it fails as
# soon as one named package is unknown, which is the case that matters).
missing_packages() {
  local installed p
  installed=" $({ dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${PACKAGES[@]}" 2>/dev/null || true; } |
    awk '$1 == "ii" { printf "%s ", $2 }') "
  for p in "${PACKAGES[@]}"; do
    case "$installed" in *" $p "*) ;; *) echo "$p" ;; esac
  done
}

# The newest installed server's bin directory (initdb, pg_ctl, postgres, psql).
pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && echo "$d"
}

cmd_install() {
  local missing
  mapfile -t missing < <(missing_packages)
  if [ "${#missing[@]}" = 0 ] && pg_bin >/dev/null; then return 0; fi
  [ "$(id -u)" = 0 ] || die "needs root to install ${missing[*]:-postgresql} (run: sudo bash $SELF install)"
  mkdir -p "$LOCK_DIR"
  # Test files start servers in parallel: one installer at a time, the others wait and re-check.
  exec 8>"$LOCK_DIR/lemonade-postgres.install.lock"
  flock -w 900 8 || die "timed out waiting for another postgres install"
  mapfile -t missing < <(missing_packages)
  if [ "${#missing[@]}" -gt 0 ]; then
    mkdir -p "$(dirname "$CREATECLUSTER_CONF")"
    printf '# from lemonade-gateway scripts/postgres.sh: no system cluster, the tests run their own\ncreate_main_cluster = false\n' > "$CREATECLUSTER_CONF"
    # policy-rc.d answering 101: invoke-rc.d starts no service while installing.
    local policy=/usr/sbin/policy-rc.d made_policy=0 rc=0
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\n# temporary, from lemonade-gateway scripts/postgres.sh install\nexit 101\n' > "$policy"
      chmod 0755 "$policy"
      made_policy=1
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    log "installing ${missing[*]}"
    {
      DEBIAN_FRONTEND=noninteractive apt-get update -q &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    } </dev/null >&2 3>&- 8>&- || rc=$?
    if [ "$made_policy" = 1 ]; then rm -f "$policy"; trap - EXIT; fi
    [ "$rc" = 0 ] || die "apt-get install ${missing[*]} failed (exit $rc)"
  fi
  exec 8>&-
  pg_bin >/dev/null || die "initdb and pg_ctl are missing although postgresql is installed"
  getent passwd postgres >/dev/null || die "the postgres user is missing although postgresql is installed"
}

cmd_uninstall() {
  [ "$(id -u)" = 0 ] || die "needs root to uninstall"
  local purge
  # The meta package, the versioned server and client packages, and postgresql-common
  # (which owns the cluster tooling); libpq5 stays (other software links it).
  mapfile -t purge < <(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 'postgresql' 'postgresql-[0-9]*' 'postgresql-client-[0-9]*' \
    'postgresql-contrib' 'postgresql-common' 'postgresql-client-common' 2>/dev/null | awk '$1 ~ /^[ir]/ { print $2 }' || true)
  if [ "${#purge[@]}" -gt 0 ]; then
    log "purging ${purge[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -q "${purge[@]}" </dev/null >&2 || die "apt-get purge failed"
  fi
  rm -f "$CREATECLUSTER_CONF"
}

# ---------------------------------------------------------------------------- helpers

set_layout() { # dir
  D=$1
  PG=$D/pg
  PGDATA_DIR=$PG/data
  SOCKET_DIR=$PG/run
  PG_LOG=$PG/postgres.log
  PG_JSON=$D/postgres.json
  PASSWORD_FILE=$D/password
  WATCH_PID=$D/watch.pid
}

need_dir() { # dir: validates the value of --dir
  [ -n "$1" ] || die "--dir DIR is required"
  # The path ends up in postgresql.conf (quoted) and in JSON.
  [[ $1 =~ ^[A-Za-z0-9._/+-]+$ ]] || die "--dir must consist of [A-Za-z0-9._/+-] only: $1"
}

read_pid() { # file -> the first line's PID on stdout, or fail
  local pid
  [ -f "$1" ] || return 1
  pid=$(head -n 1 "$1" | tr -dc '0-9')
  [ -n "$pid" ] && echo "$pid"
}

alive() { # pid: running and not a zombie
  local state
  [ -r "/proc/$1/stat" ] || return 1
  state=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

cmdline_has() { # pid word: the process's argv contains word exactly
  local -a argv
  local a
  mapfile -d '' -t argv < "/proc/$1/cmdline" 2>/dev/null || return 1
  for a in "${argv[@]}"; do [ "$a" = "$2" ] && return 0; done
  return 1
}

# The sandbox's postmaster, if running: its PID is postmaster.pid's first line and its
# argv names our data directory (pg_ctl starts it with -D DIR), so a recycled PID is not taken.
server_pid() {
  local pid
  pid=$(read_pid "$PGDATA_DIR/postmaster.pid") || return 1
  alive "$pid" && cmdline_has "$pid" "$PGDATA_DIR" && echo "$pid"
}

watch_pid() {
  local pid
  pid=$(read_pid "$WATCH_PID") || return 1
  alive "$pid" && cmdline_has "$pid" watch && cmdline_has "$pid" "$D" && echo "$pid"
}

now_ms() { echo $(( ${EPOCHREALTIME/./} / 1000 )); }

wait_gone() { # pid milliseconds
  local end=$(( $(now_ms) + $2 ))
  while alive "$1"; do
    [ "$(now_ms)" -lt $end ] || return 1
    sleep 0.05
  done
}

# Runs a command as the server's owner: the postgres user when we are root (initdb and
# postgres refuse to run as root), ourselves otherwise.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid=postgres --regid="$(id -g postgres)" --clear-groups -- env HOME="$PG" "$@"
  else
    "$@"
  fi
}

# A loopback port nothing listens on, below the kernel's ephemeral range where possible
# so outgoing connections of parallel tests do not take it before the server binds.
pick_port() {
  local lo=32768 range port i
  range=$(cat /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true)
  [ -z "$range" ] || lo=${range%%[[:space:]]*}
  for i in $(seq 1 200); do
    if [ "$lo" -gt 22000 ]; then port=$(( 20000 + RANDOM % (lo - 20000) )); else port=$(( 40000 + RANDOM % 20000 )); fi
    # Nothing answers there (bash's /dev/tcp connect fails at once on a closed loopback port).
    if ! (exec 9<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return 0; fi
  done
  die "no free loopback port"
}

write_json() { # port pid
  local password
  password=$(cat "$PASSWORD_FILE")
  printf '{"url":"postgres://%s:%s@127.0.0.1:%d/%s","host":"127.0.0.1","port":%d,"socketDir":"%s","database":"%s","user":"%s","password":"%s","passwordFile":"%s","pid":%d,"dir":"%s"}\n' \
    "$ROLE" "$password" "$1" "$DATABASE" "$1" "$SOCKET_DIR" "$DATABASE" "$ROLE" "$password" "$PASSWORD_FILE" "$2" "$D" > "$PG_JSON.tmp"
  mv "$PG_JSON.tmp" "$PG_JSON"
}

json_port() { sed -nE 's/.*"port":([0-9]+).*/\1/p' "$PG_JSON" 2>/dev/null; }

# Writes the sandbox's settings into PGDATA (the included file is ours alone, rewritten per start).
write_conf() { # port
  cat > "$PGDATA_DIR/lemonade.conf" <<CONF
# Written by lemonade-gateway scripts/postgres.sh at each start.
listen_addresses = '127.0.0.1'
port = $1
unix_socket_directories = '$SOCKET_DIR'
# Small: several test servers share a 2-core machine with Dovecot, Postfix and gateways.
shared_buffers = 32MB
max_connections = 100
logging_collector = off
log_min_messages = warning
log_connections = off
CONF
  grep -qxF "include = 'lemonade.conf'" "$PGDATA_DIR/postgresql.conf" ||
    echo "include = 'lemonade.conf'" >> "$PGDATA_DIR/postgresql.conf"
}

# Starts the server on port; exit 0 up, 3 the port was taken, 1 anything else.
launch() { # port
  local rc=0
  write_conf "$1"
  # pg_ctl's own complaints go to a file of ours; the server's log (-l) is opened by the
  # server's user. 3>&-: the server must not inherit our stdout (fd 3 here), or a caller
  # reading it through a pipe waits for the server to exit.
  as_owner "$BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PG_LOG" -w -t "$WAIT_SECONDS" -s start </dev/null >/dev/null 2>>"$PG/pg_ctl.log" 3>&- 8>&- || rc=$?
  [ "$rc" = 0 ] && server_pid >/dev/null && return 0
  if tail -n 20 "$PG_LOG" 2>/dev/null | grep -q 'Address already in use'; then return 3; fi
  tail -n 5 "$PG/pg_ctl.log" >&2 2>/dev/null || true
  return 1
}

psql_admin() { # sql: as the bootstrap superuser over the socket (peer authentication)
  as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PORT" -d postgres -c "$1" </dev/null >&2
}

stop_server() {
  local pid
  pid=$(server_pid) || return 0
  # SIGINT is PostgreSQL's fast shutdown: clients are disconnected, then a checkpoint.
  kill -INT "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" 20000; then
    log "postgres (pid $pid) still running 20s after SIGINT: SIGQUIT"
    kill -QUIT "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 5000; then
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" 5000 || log "postgres (pid $pid) does not die"
    fi
  fi
}

stop_all() {
  local w
  if w=$(watch_pid) && [ "$w" != "$$" ]; then
    kill -TERM "$w" 2>/dev/null || true
    wait_gone "$w" 3000 || true
  fi
  rm -f "$WATCH_PID"
  stop_server
}

START_OK=0
on_start_exit() {
  [ "$START_OK" = 1 ] && return 0
  log "start failed; stopping what was started in $D"
  [ -f "$PG_LOG" ] && { echo "----- last lines of $PG_LOG -----" >&2; tail -n 25 "$PG_LOG" >&2 || true; }
  stop_all >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------------------- commands

cmd_start() {
  local dir="" port="" owner=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir=${2:-}; shift 2 ;;
      --port) port=${2:-}; shift 2 ;;
      --owner-pid) owner=${2:-}; shift 2 ;;
      *) die "start: unknown option $1" ;;
    esac
  done
  need_dir "$dir"
  local p
  for p in "$port" "$owner"; do
    [ -z "$p" ] || [[ $p =~ ^[0-9]+$ ]] || die "not a number: $p"
  done
  # Everything but the final JSON goes to stderr.
  exec 3>&1 1>&2
  cmd_install
  BIN=$(pg_bin)
  mkdir -p "$dir"
  set_layout "$(cd "$dir" && pwd -P)"
  need_dir "$D"
  # The socket is SOCKET_DIR/.s.PGSQL.PORT; a sun_path holds 107 bytes.
  [ "${#SOCKET_DIR}" -le 80 ] || die "--dir path too long for the server's socket (${#SOCKET_DIR} > 80 bytes): $D"
  if server_pid >/dev/null; then die "a server is already running in $D (run: bash $SELF stop --dir $D)"; fi
  START_OK=0
  trap on_start_exit EXIT

  local fresh=0
  if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
    fresh=1
    # The server's user must reach DIR (o+x) but only it may enter pg/.
    chmod 0711 "$D"
    mkdir -p "$PG"
    rm -rf "$PGDATA_DIR" "$SOCKET_DIR"
    mkdir -p "$PGDATA_DIR" "$SOCKET_DIR"
    if [ "$(id -u)" = 0 ]; then chown -R postgres:"$(id -gn postgres)" "$PG"; fi
    chmod 0700 "$PG" "$PGDATA_DIR"
    if ! as_owner test -w "$PG"; then
      die "the postgres user cannot write $PG: a directory above $D is not world-searchable (o+x); use a --dir under /tmp"
    fi
    ( umask 077; head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$PASSWORD_FILE" )
    # Local (socket) connections: peer, so only the server's own OS user is the
    # superuser; TCP: SCRAM passwords. --no-sync: a crashed initdb is simply redone.
    as_owner "$BIN/initdb" -D "$PGDATA_DIR" --auth-local=peer --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C --no-sync --no-instructions </dev/null >"$PG/initdb.log" 2>&1 ||
      { tail -n 25 "$PG/initdb.log" >&2; die "initdb failed"; }
  elif [ -z "$port" ]; then
    port=$(json_port)
  fi
  [ -f "$PASSWORD_FILE" ] || die "$PASSWORD_FILE is missing: $D holds a server this script did not set up"

  local auto=0 attempt rc
  [ -n "$port" ] || { port=$(pick_port); auto=1; }
  for attempt in 1 2 3 4; do
    rc=0
    launch "$port" || rc=$?
    [ "$rc" = 3 ] || break
    # Only a port picked here may be replaced; a port the caller chose is an error.
    [ "$auto" = 1 ] && [ "$attempt" != 4 ] || die "port $port on 127.0.0.1 is in use"
    log "port $port was taken meanwhile; picking another"
    port=$(pick_port)
  done
  [ "$rc" = 0 ] || die "the server did not start (log: $PG_LOG)"
  PORT=$port
  if [ "$fresh" = 1 ]; then
    # The password is hex: safe inside the SQL literal.
    psql_admin "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$(cat "$PASSWORD_FILE")'" || die "creating the role failed"
    psql_admin "CREATE DATABASE $DATABASE OWNER $ROLE" || die "creating the database failed"
  fi
  local pid
  pid=$(server_pid) || die "the server answers but its PID is unknown"
  write_json "$port" "$pid"

  if [ -n "$owner" ]; then
    local stat rest
    stat=$(cat "/proc/$owner/stat" 2>/dev/null) || die "--owner-pid $owner: no such process"
    rest=${stat##*) }
    read -r -a rest <<<"$rest"
    # The owner's start time guards against a recycled PID.
    setsid bash "$SELF" watch --dir "$D" --owner-pid "$owner" --owner-start "${rest[19]}" \
      </dev/null >>"$D/watch.log" 2>&1 3>&- &
  fi
  START_OK=1
  trap - EXIT
  cat "$PG_JSON" >&3
}

cmd_stop() {
  local dir=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir=${2:-}; shift 2 ;;
      *) die "stop: unknown option $1" ;;
    esac
  done
  need_dir "$dir"
  # Nothing can run in a directory that is not there: stopping it is done.
  [ -d "$dir" ] || exit 0
  set_layout "$(cd "$dir" && pwd -P)"
  stop_all
}

# Internal: started by "start --owner-pid"; stops the server once the owner is gone.
cmd_watch() {
  local dir="" owner="" owner_start=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir=$2; shift 2 ;;
      --owner-pid) owner=$2; shift 2 ;;
      --owner-start) owner_start=$2; shift 2 ;;
      *) die "watch: unknown option $1" ;;
    esac
  done
  set_layout "$dir"
  echo $$ > "$WATCH_PID"
  owner_alive() {
    local stat rest
    stat=$(cat "/proc/$owner/stat" 2>/dev/null) || return 1
    rest=${stat##*) }
    read -r -a rest <<<"$rest"
    [ "${rest[19]}" = "$owner_start" ] && [ "${rest[0]}" != Z ]
  }
  # A stop removes watch.pid (and ends this watcher); a stopped server also ends it.
  while owner_alive && [ "$(read_pid "$WATCH_PID" || true)" = "$$" ]; do sleep 1; done
  if [ "$(read_pid "$WATCH_PID" || true)" = "$$" ]; then
    log "$(date '+%F %T') owner $owner is gone: stopping the server in $D"
    rm -f "$WATCH_PID"
    stop_server
  fi
}

main() {
  local cmd=${1:-}
  [ $# -gt 0 ] && shift
  case "$cmd" in
    install) cmd_install "$@" ;;
    missing) missing_packages ;;
    uninstall) cmd_uninstall "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    watch) cmd_watch "$@" ;;
    *) sed -n '2,41p' "$SELF" >&2; exit 64 ;;
  esac
}

main "$@"
