#!/usr/bin/env bash
# The "legacy" mail stack that lemonade-gateway is tested, demonstrated and benchmarked
# against: a real Dovecot (IMAP + LMTP) and a real Postfix from Debian's packages, each
# sandboxed in one directory, listening on 127.0.0.1 only, on ports chosen here.
#
#   legacy-stack.sh install
#       Installs the Debian packages that are missing (as root), creates the mail user and
#       makes /etc/postfix/main.cf usable. Quick and silent when everything is there.
#   legacy-stack.sh missing
#       Prints the Debian packages install would install, one a line (nothing when none).
#   legacy-stack.sh uninstall
#       Undoes install (as root): purges the packages install adds (not python3 and curl,
#       which CI installs for itself), removes the mail user and the generated
#       /etc/postfix/main.cf. CI runs it first, so that every run proves a fresh machine.
#   legacy-stack.sh start --dir DIR [--mode legacy|full] [--imap-port N] [--lmtp-port N]
#                         [--smtp-port N] [--no-postfix] [--owner-pid PID]
#       Starts a sandbox in DIR and prints DIR/stack.json as the last (and only) line of
#       stdout. --mode legacy (default) advertises only
#       "IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID IDLE NAMESPACE"; --mode full keeps
#       Dovecot's own list (UIDPLUS, CATENATE, URLAUTH, CONDSTORE, QRESYNC, ...). In full
#       mode GENURLAUTH and URLFETCH of one's own URLs work; URLFETCH of another user's
#       URL does not: Dovecot 2.3.19's imap-urlauth-login asserts and dies (its auth server
#       announces DOVECOT-TOKEN without the "private" flag), the client gets NO.
#       --owner-pid: a watcher stops the sandbox when that process is gone (test helpers
#       pass their own PID so a crashed or killed test leaves nothing running).
#       Without --no-postfix, smtpPort is Postfix's port; with it, smtpPort is 0.
#   legacy-stack.sh stop --dir DIR
#       Stops this sandbox's processes (by the PIDs it recorded) and waits for them. Keeps
#       DIR (a later start in it keeps the mail). Succeeds when nothing runs or DIR is gone.
#   legacy-stack.sh stop-dovecot --dir DIR | start-dovecot --dir DIR
#       Stops / starts only the sandbox's Dovecot, on the same ports and with the same mail.
#   legacy-stack.sh stop-postfix --dir DIR | start-postfix --dir DIR
#       Stops / starts only the sandbox's Postfix, on the same port and with its queue.
#
# start waits up to LEGACY_STACK_WAIT_SECONDS (20) for each daemon's greeting, then fails
# with the tail of its log; whatever it started is stopped again.
#
# Layout of DIR:
#   stack.json                 what start printed
#   dovecot/dovecot.conf       standalone config (no /etc/dovecot involved)
#   dovecot/users, master-users  passwd-files (alice, bob, carol / master user gateway)
#   dovecot/run/               base_dir (sockets, master.pid)    dovecot/state/  state_dir
#   dovecot/dovecot.log        Dovecot's log                     dovecot/start.log  its stderr
#   mail/USER/Maildir          mail, owned by the mail user
#   postfix/etc/               Postfix config directory (main.cf, master.cf)
#   postfix/queue/, data/      queue_directory, data_directory
#   postfix/postfix.log        maillog (maillog_file = /dev/stdout of "postfix start-fg")
#   watch.pid, watch.log       the owner watcher (with --owner-pid)
#
# Users: alice, bob, carol, submit (a BURL submit identity), password "password"; "alice@example.org" is the same user as
# "alice" (auth_username_format = %Ln). Master user gateway / masterpw with separator "*":
# "LOGIN alice*gateway masterpw" and SASL PLAIN authzid=alice authcid=gateway log in as alice.
# Postfix (no AUTH, no TLS) accepts from loopback mail for those users at example.org and
# example.net (user+tag too), refuses other users there (550 5.1.1) and other domains
# (554 5.7.1 relay access denied): nothing leaves the machine. Mail it accepts while Dovecot
# is stopped is retried every 2 s.
#
# Mail user: mail files belong to a dedicated unprivileged system user, lemonademail, created
# here. Dovecot refuses to run mail processes as root; "dovenull" is meant for the untrusted
# pre-login processes only (giving it the mail would let a compromised login process read it);
# "nobody" is shared with unrelated daemons; "dovecot" is Dovecot's internal user (auth, stats).
# A system user of our own works the same on a fresh CI machine and on a developer's box.
#
# Postfix only accepts "-c DIR" for directories listed in alternate_config_directories of the
# default /etc/postfix/main.cf (exact names, no wildcards, read without $variable expansion).
# start adds DIR/postfix/etc there and stop removes it again, under a lock, and both drop
# entries whose directory no longer exists (sandboxes of crashed runs in a cleaned /tmp).
set -euo pipefail
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
export LC_ALL=C

# swaks' STARTTLS needs Net::SSLeay and IO::Socket::SSL, which are only Recommends of swaks
# (skipped by --no-install-recommends): named here so a fresh machine gets them.
# dovecot-submissiond: the peer bench/smtp-bench.ts compares the submission front with.
readonly PACKAGES=(dovecot-imapd dovecot-lmtpd dovecot-submissiond postfix swaks libnet-ssleay-perl libio-socket-ssl-perl socat python3 curl)
readonly MAIL_USER=lemonademail
readonly LEGACY_CAPS="IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID IDLE NAMESPACE"
readonly DOMAINS="example.org example.net"
readonly USERS=(alice bob carol submit)
readonly USER_PASSWORD=password
readonly MASTER_USER=gateway
readonly MASTER_PASSWORD=masterpw
readonly WAIT_SECONDS=${LEGACY_STACK_WAIT_SECONDS:-20}
readonly LOCK_DIR=/run/lock
readonly PY=/usr/bin/python3
SELF=$(readlink -f "$0")
readonly SELF

log() { echo "legacy-stack: $*" >&2; }
die() { echo "legacy-stack: error: $*" >&2; exit 1; }

# Prints the last lines of each existing file, labelled, to stderr.
tail_logs() {
  local f
  for f in "$@"; do
    [ -s "$f" ] || continue
    echo "----- last lines of $f -----" >&2
    tail -n 25 "$f" >&2 || true
  done
}

# ---------------------------------------------------------------------------- install

# Prints, one a line, the PACKAGES that are not installed. dpkg-query -W exits 1 as soon as
# one named package is unknown, which is exactly the case that matters: its status is
# ignored and only its output read (under "set -e -o pipefail" a failing pipeline in an
# assignment would end this function silently and report nothing missing).
# LEGACY_STACK_DPKG_QUERY replaces dpkg-query for the unit test of this decision.
missing_packages() {
  local installed p
  installed=" $({ "${LEGACY_STACK_DPKG_QUERY:-dpkg-query}" -W -f='${db:Status-Abbrev} ${Package}\n' "${PACKAGES[@]}" 2>/dev/null || true; } |
    awk '$1 == "ii" { printf "%s ", $2 }') "
  for p in "${PACKAGES[@]}"; do
    case "$installed" in *" $p "*) ;; *) echo "$p" ;; esac
  done
}

apt_install() { # packages...
  # Keep the packages from starting system instances (a system Dovecot would listen on
  # *:143 and *:993): policy-rc.d answering 101 makes invoke-rc.d / deb-systemd-invoke skip it.
  local policy=/usr/sbin/policy-rc.d made_policy=0 rc=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# temporary, from lemonade-gateway scripts/legacy-stack.sh install\nexit 101\n' > "$policy"
    chmod 0755 "$policy"
    made_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  # No system Postfix: the package then neither configures nor starts one.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  log "installing $*"
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
  } </dev/null >&2 3>&- 8>&- || rc=$?
  if [ "$made_policy" = 1 ]; then rm -f "$policy"; trap - EXIT; fi
  [ "$rc" = 0 ] || die "apt-get install $* failed (exit $rc)"
}

cmd_install() {
  local missing
  mapfile -t missing < <(missing_packages)
  if [ "${#missing[@]}" -gt 0 ] || ! getent passwd "$MAIL_USER" >/dev/null || [ ! -s /etc/postfix/main.cf ]; then
    [ "$(id -u)" = 0 ] || die "needs root to set up ${missing[*]:-the mail user and /etc/postfix/main.cf} (run: sudo bash $SELF install)"
    mkdir -p "$LOCK_DIR"
    # Test files start stacks in parallel: one installer at a time, the others wait and re-check.
    exec 8>"$LOCK_DIR/lemonade-legacy-stack.install.lock"
    flock -w 900 8 || die "timed out waiting for another legacy-stack install"
    mapfile -t missing < <(missing_packages)
    [ "${#missing[@]}" = 0 ] || apt_install "${missing[@]}"
    getent passwd "$MAIL_USER" >/dev/null ||
      useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$MAIL_USER" >&2
    if [ ! -s /etc/postfix/main.cf ]; then
      # "No configuration" leaves no main.cf; Postfix commands need one to read
      # alternate_config_directories from. This one configures nothing else.
      mkdir -p /etc/postfix
      cat > /etc/postfix/main.cf <<'CONF'
# Created by lemonade-gateway scripts/legacy-stack.sh. No system Postfix is configured on
# this machine; this file only lists the private instances' config directories that
# "postfix -c DIR" may use (legacy-stack.sh adds and removes them).
compatibility_level = 3.6
alternate_config_directories =
CONF
      settle /etc/postfix/main.cf
    fi
    exec 8>&-
  fi
  local b
  for b in dovecot doveadm postfix postconf "$PY" swaks socat; do
    command -v "$b" >/dev/null || die "$b is missing although its package is installed"
  done
}

cmd_uninstall() {
  [ "$(id -u)" = 0 ] || die "needs root to uninstall"
  local p purge=(dovecot-core)
  for p in "${PACKAGES[@]}"; do
    case "$p" in python3 | curl) ;; *) purge+=("$p") ;; esac
  done
  log "purging ${purge[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get purge -y -q "${purge[@]}" </dev/null >&2 || die "apt-get purge failed"
  if getent passwd "$MAIL_USER" >/dev/null; then userdel "$MAIL_USER" >&2 || die "userdel $MAIL_USER failed"; fi
  if getent group "$MAIL_USER" >/dev/null; then groupdel "$MAIL_USER" >&2 || true; fi
  if grep -q 'Created by lemonade-gateway scripts/legacy-stack.sh' /etc/postfix/main.cf 2>/dev/null; then rm -f /etc/postfix/main.cf; fi
  rmdir /etc/postfix 2>/dev/null || true
}

# ---------------------------------------------------------------------------- helpers

set_layout() { # dir
  D=$1
  DC=$D/dovecot
  DC_CONF=$DC/dovecot.conf
  DC_RUN=$DC/run
  DC_LOG=$DC/dovecot.log
  DC_START_LOG=$DC/start.log
  MAILDIR=$D/mail
  PF=$D/postfix
  PF_CONF=$PF/etc
  PF_QUEUE=$PF/queue
  PF_DATA=$PF/data
  PF_LOG=$PF/postfix.log
  PF_FG_PID=$PF/start-fg.pid
  STACK_JSON=$D/stack.json
  WATCH_PID=$D/watch.pid
}

need_dir() { # dir: validates the value of --dir
  [ -n "$1" ] || die "--dir DIR is required"
  # The path ends up in config files, in JSON and in a space-separated Postfix list.
  [[ $1 =~ ^[A-Za-z0-9._/+-]+$ ]] || die "--dir must consist of [A-Za-z0-9._/+-] only: $1"
}

read_pid() { # file -> pid on stdout, or fail
  local pid
  [ -f "$1" ] || return 1
  pid=$(tr -dc '0-9' < "$1")
  [ -n "$pid" ] && echo "$pid"
}

alive() { # pid: running and not a zombie
  local state
  [ -r "/proc/$1/stat" ] || return 1
  state=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

group_alive() { # pgid: any live member of that process group
  ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

cmdline_has() { # pid word: the process's argv contains word exactly
  local -a argv
  local a
  mapfile -d '' -t argv < "/proc/$1/cmdline" 2>/dev/null || return 1
  for a in "${argv[@]}"; do [ "$a" = "$2" ] && return 0; done
  return 1
}

pgid_of() { ps -o pgid= -p "$1" 2>/dev/null | tr -d ' '; }

# The sandbox's Dovecot master, if it is running: its argv names our config file.
dovecot_pid() {
  local pid
  pid=$(read_pid "$DC_RUN/master.pid") || return 1
  alive "$pid" && cmdline_has "$pid" "$DC_CONF" && echo "$pid"
}

# The sandbox's Postfix master, if it is running: it works in our queue directory.
postfix_master_pid() {
  local pid
  pid=$(read_pid "$PF_QUEUE/pid/master.pid") || return 1
  alive "$pid" && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$PF_QUEUE" ] && echo "$pid"
}

# The "postfix start-fg" wrapper (postfix-script, parent of the master), if running.
postfix_fg_pid() {
  local pid
  pid=$(read_pid "$PF_FG_PID") || return 1
  alive "$pid" && cmdline_has "$pid" start-fg && echo "$pid"
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

wait_group_gone() { # pgid milliseconds
  local end=$(( $(now_ms) + $2 ))
  while group_alive "$1"; do
    [ "$(now_ms)" -lt $end ] || return 1
    sleep 0.05
  done
}

# Stops a daemon that leads its own process group (its PID is the group's ID, so the group
# holds only it and its children) and waits for it and its children to exit. how=leader
# sends SIGTERM to the daemon, which ends its children itself (Postfix's master, as
# "postfix stop" does); how=group sends SIGTERM to the whole group at once (as systemd
# does for Dovecot: its master exits without ending logged-in imap processes, which then
# linger until their client leaves). Children left after that get SIGTERM, then SIGKILL.
terminate() { # pid what how grace_ms
  local pid=$1 what=$2 how=$3 grace=$4 own_group=0
  [ "$(pgid_of "$pid")" = "$pid" ] && own_group=1
  if [ "$how" = group ] && [ "$own_group" = 1 ]; then
    kill -TERM -- "-$pid" 2>/dev/null || true
  else
    kill -TERM "$pid" 2>/dev/null || true
  fi
  if ! wait_gone "$pid" "$grace"; then
    log "$what (pid $pid) still running $((grace / 1000))s after SIGTERM: SIGKILL"
    if [ "$own_group" = 1 ]; then kill -KILL -- "-$pid" 2>/dev/null || true; else kill -KILL "$pid" 2>/dev/null || true; fi
    wait_gone "$pid" 5000 || log "$what (pid $pid) does not die"
  fi
  [ "$own_group" = 1 ] || return 0
  wait_group_gone "$pid" 1000 && return 0
  kill -TERM -- "-$pid" 2>/dev/null || true
  wait_group_gone "$pid" "$grace" && return 0
  log "children of $what (process group $pid) still running after SIGTERM: SIGKILL"
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait_group_gone "$pid" 5000 || log "process group $pid of $what does not die"
}

# Free loopback ports, preferring ones below the kernel's ephemeral range so that the
# outgoing connections of tests running in parallel cannot take them before the daemons bind.
free_ports() { # count
  "$PY" -I - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
try:
    lo = int(open('/proc/sys/net/ipv4/ip_local_port_range').read().split()[0])
except (OSError, ValueError, IndexError):
    lo = 32768
pool = (20000, lo - 1) if lo - 20000 > 2000 else None
held, ports = [], []
for _ in range(2000):
    if len(ports) == n:
        break
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(('127.0.0.1', random.randint(*pool) if pool else 0))
    except OSError:
        s.close()
        continue
    ports.append(s.getsockname()[1])
    held.append(s)
if len(ports) < n:
    sys.exit('no free loopback ports')
print(' '.join(map(str, ports)))
PY
}

# Waits until host:port answers with a first line matching regex; gives up when the
# deadline passes or when pid (if not 0) has exited. Exit 0 ok, 1 timeout, 2 process died.
wait_banner() { # port regex seconds pid
  "$PY" -I - "$@" <<'PY'
import os, re, socket, sys, time
port, pattern, seconds, pid = int(sys.argv[1]), re.compile(sys.argv[2].encode()), float(sys.argv[3]), int(sys.argv[4])
deadline = time.monotonic() + seconds
def dead():
    if not pid:
        return False
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] in 'ZX'
    except OSError:
        return True
while time.monotonic() < deadline:
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=2) as s:
            s.settimeout(max(0.5, deadline - time.monotonic()))
            data = b''
            while b'\n' not in data:
                chunk = s.recv(1024)
                if not chunk:
                    break
                data += chunk
            if pattern.match(data):
                sys.exit(0)
    except OSError:
        pass
    if dead():
        sys.exit(2)
    time.sleep(0.05)
sys.exit(1)
PY
}

# Postfix re-reads a main.cf modified within the last ~2 seconds until it is "settled",
# sleeping 300 ms per round: every Postfix command after an edit would stall. The files
# are complete (written here, or renamed into place by postconf -e), so backdate them.
settle() { # files...
  touch -m -d "@$(($(date +%s) - 60))" "$@"
}

json_get() { # field
  "$PY" -I -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$STACK_JSON" "$1"
}

# ---------------------------------------------------------------------------- dovecot

write_dovecot_conf() { # mode imap_port lmtp_port
  local mode=$1 imap_port=$2 lmtp_port=$3 caps urlauth
  if [ "$mode" = legacy ]; then
    caps="imap_capability = $LEGACY_CAPS"
    urlauth="# (no URLAUTH in legacy mode)"
  else
    caps="# imap_capability: Dovecot's full list"
    # URLAUTH is advertised only with imap_urlauth_host set; URLs must name this server.
    urlauth="imap_urlauth_host = 127.0.0.1
imap_urlauth_port = $imap_port"
  fi
  cat > "$DC_CONF" <<CONF
# Sandboxed Dovecot for lemonade-gateway ($mode capabilities), written by scripts/legacy-stack.sh.
# Standalone: nothing from /etc/dovecot is read.
instance_name = lemonade-$(printf '%s' "$D" | cksum | cut -d' ' -f1)
base_dir = $DC_RUN
state_dir = $DC/state
log_path = $DC_LOG
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
verbose_proctitle = yes
auth_verbose = yes
auth_mechanisms = plain login
auth_username_format = %Ln
auth_master_user_separator = *
# Tests try wrong passwords on purpose: no 2 s delay per failure, and no growing per-IP
# penalty (anvil-auth-penalty below), which would delay every later login from 127.0.0.1.
auth_failure_delay = 0
recipient_delimiter = +
mail_location = maildir:$MAILDIR/%u/Maildir
mail_attribute_dict = file:%h/dovecot-attributes
mail_uid = $MAIL_USER
mail_gid = $MAIL_USER
first_valid_uid = 1
first_valid_gid = 1
# Benchmarks hold a thousand sessions of one user from one address.
default_process_limit = 2048
default_client_limit = 8192
mail_max_userip_connections = 4096
$caps
$urlauth
namespace inbox {
  inbox = yes
  separator = /
  mailbox Sent {
    auto = subscribe
    special_use = \\Sent
  }
  mailbox Drafts {
    auto = subscribe
    special_use = \\Drafts
  }
  mailbox Trash {
    auto = subscribe
    special_use = \\Trash
  }
  mailbox Junk {
    auto = subscribe
    special_use = \\Junk
  }
}
# The master user first: with result_success = continue the next passdb then checks
# that the user logged in as exists.
passdb {
  driver = passwd-file
  args = $DC/master-users
  master = yes
  result_success = continue
}
passdb {
  driver = passwd-file
  args = $DC/users
}
userdb {
  driver = static
  args = uid=$MAIL_USER gid=$MAIL_USER home=$MAILDIR/%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $imap_port
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $lmtp_port
  }
}
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
protocol lmtp {
  postmaster_address = postmaster@example.org
}
CONF
}

# Starts the sandbox's Dovecot; returns 3 when a listener's port was taken, dies otherwise.
launch_dovecot() {
  local port rc=0
  port=$(json_get imapPort)
  if dovecot_pid >/dev/null; then
    log "dovecot of $D is already running"
    return 0
  fi
  : > "$DC_START_LOG"
  # Dovecot daemonizes: no descriptor of ours may stay open in it, or a caller reading
  # our output through a pipe waits for the daemon to exit. Its client limits above want
  # more descriptors than the usual 1024 (raised for Dovecot only).
  (
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    exec dovecot -c "$DC_CONF"
  ) </dev/null >>"$DC_START_LOG" 2>&1 3>&- || rc=$?
  if [ "$rc" != 0 ]; then
    if grep -q 'Address already in use' "$DC_START_LOG"; then return 3; fi
    tail_logs "$DC_START_LOG" "$DC_LOG"
    die "dovecot -c $DC_CONF exited with $rc"
  fi
  local pid
  pid=$(read_pid "$DC_RUN/master.pid") || pid=0
  rc=0
  wait_banner "$port" '\* OK' "$WAIT_SECONDS" "$pid" || rc=$?
  if [ "$rc" != 0 ]; then
    tail_logs "$DC_START_LOG" "$DC_LOG"
    stop_dovecot
    die "dovecot did not greet on 127.0.0.1:$port within ${WAIT_SECONDS}s"
  fi
}

stop_dovecot() {
  local pid
  pid=$(dovecot_pid) || return 0
  terminate "$pid" dovecot group 10000
  rm -f "$DC_RUN/master.pid"
}

# ---------------------------------------------------------------------------- postfix

write_postfix_conf() { # smtp_port lmtp_port
  local smtp_port=$1 lmtp_port=$2 maps="" u d
  for d in $DOMAINS; do for u in "${USERS[@]}"; do maps="$maps $u@$d=$u"; done; done
  mkdir -p "$PF_CONF" "$PF_QUEUE" "$PF_DATA"
  chown postfix "$PF_DATA"
  cat > "$PF_CONF/main.cf" <<CONF
# Sandboxed Postfix for lemonade-gateway, written by scripts/legacy-stack.sh: accepts mail
# from loopback for example.org and example.net and delivers it to the sandbox's Dovecot
# over LMTP. Nothing leaves: other domains are refused (554 5.7.1 Relay access denied).
compatibility_level = 3.6
queue_directory = $PF_QUEUE
data_directory = $PF_DATA
maillog_file = /dev/stdout
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = legacy-mta.example.org
mydomain = example.org
myorigin = example.org
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
local_transport = error:local delivery is disabled
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = reject_unauth_destination
virtual_mailbox_domains = $DOMAINS
virtual_mailbox_maps = inline:{$(echo "$maps" | sed 's/^ //; s/ /, /g')}
virtual_transport = lmtp:inet:127.0.0.1:$lmtp_port
recipient_delimiter = +
smtpd_banner = \$myhostname ESMTP legacy test MTA
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
biff = no
append_dot_mydomain = no
# Clients on loopback are "local" by default and get missing Date/Message-ID headers added
# and addresses rewritten; a relaying gateway's messages must arrive exactly as submitted.
local_header_rewrite_clients =
# Mail accepted while Dovecot is down (tests stop it) is retried within seconds.
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 10s
CONF
  # A master.cf of our own rather than an edited copy of the system's: no chroot, the SMTP
  # server on 127.0.0.1:PORT only, the services delivery needs and nothing else.
  cat > "$PF_CONF/master.cf" <<CONF
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:$smtp_port inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
CONF
  settle "$PF_CONF/main.cf" "$PF_CONF/master.cf"
}

# Rewrites alternate_config_directories in /etc/postfix/main.cf under a lock: keeps the
# entries that still exist (minus $2), adds $1. Either argument may be empty.
update_alternate_dirs() { # add remove
  local add=$1 remove=$2 current entry changed=0
  local -a keep=()
  mkdir -p "$LOCK_DIR"
  exec 9>"$LOCK_DIR/lemonade-legacy-stack.postfix.lock"
  flock -w 60 9 || die "timed out waiting for the lock on /etc/postfix/main.cf"
  current=$(postconf -c /etc/postfix -h alternate_config_directories 2>/dev/null) || current=""
  for entry in ${current//,/ }; do
    if [ "$entry" = "$remove" ] || [ ! -d "$entry" ]; then changed=1; continue; fi
    case " ${keep[*]} " in *" $entry "*) changed=1; continue ;; esac
    keep+=("$entry")
  done
  if [ -n "$add" ]; then
    case " ${keep[*]} " in *" $add "*) ;; *) keep+=("$add"); changed=1 ;; esac
  fi
  if [ "$changed" = 1 ]; then
    postconf -c /etc/postfix -e "alternate_config_directories = ${keep[*]}" >&2
    settle /etc/postfix/main.cf
  fi
  exec 9>&-
}

# Creates the queue and data directories as Postfix's own postfix-files lists them (owner,
# group, mode), so that start-fg can skip its integrity check ("quick-start"): that check
# (post-install create-missing, postsuper, several finds) takes seconds on a busy machine.
prepare_postfix_dirs() {
  local files owner group name type user grp mode rest path
  files="$(postconf -h meta_directory 2>/dev/null || echo /etc/postfix)/postfix-files"
  [ -r "$files" ] || return 0
  owner=$(postconf -h mail_owner)
  group=$(postconf -h setgid_group)
  while IFS=: read -r name type user grp mode rest; do
    [ "$type" = d ] || continue
    case "$name" in
      '$queue_directory'*) path=$PF_QUEUE${name#'$queue_directory'} ;;
      '$data_directory') path=$PF_DATA ;;
      *) continue ;;
    esac
    user=${user//'$mail_owner'/$owner}
    grp=${grp//'$setgid_group'/$group}
    [ "$grp" != - ] || grp=$(id -gn "$user")
    mkdir -p "$path"
    chown "$user:$grp" "$path"
    chmod "$mode" "$path"
  done < "$files"
  touch "$PF_QUEUE/quick-start"
}

launch_postfix() { # -> returns 3 when the SMTP port was taken
  local port rc=0 wrapper
  port=$(json_get smtpPort)
  prepare_postfix_dirs
  : > "$PF_LOG"
  # start-fg keeps Postfix under our supervision and logs to its stdout (our log file);
  # "postfix start" would need postlogd to write a log file and fails silently here.
  # setsid: a signal to the caller's process group (a test runner's timeout) does not reach it.
  setsid postfix -c "$PF_CONF" start-fg </dev/null >>"$PF_LOG" 2>&1 3>&- &
  wrapper=$!
  echo "$wrapper" > "$PF_FG_PID"
  wait_banner "$port" '220 ' "$WAIT_SECONDS" "$wrapper" || rc=$?
  if [ "$rc" != 0 ]; then
    if grep -q 'Address already in use' "$PF_LOG"; then stop_postfix; return 3; fi
    tail_logs "$PF_LOG"
    stop_postfix
    if [ "$rc" = 2 ]; then die "postfix -c $PF_CONF start-fg exited before answering on 127.0.0.1:$port"; fi
    die "postfix did not answer 220 on 127.0.0.1:$port within ${WAIT_SECONDS}s"
  fi
}

stop_postfix() {
  local master fg
  master=$(postfix_master_pid) || master=""
  fg=$(postfix_fg_pid) || fg=""
  # SIGTERM to the master is what "postfix stop" does; it ends its children and the
  # start-fg wrapper then returns.
  [ -z "$master" ] || terminate "$master" "postfix master" leader 10000
  if [ -n "$fg" ]; then
    wait_gone "$fg" 5000 || { kill -TERM "$fg" 2>/dev/null || true; wait_gone "$fg" 5000 || kill -KILL "$fg" 2>/dev/null || true; }
  fi
  rm -f "$PF_FG_PID"
}

# ---------------------------------------------------------------------------- commands

write_stack_json() { # mode imap lmtp smtp postfix_pid
  local users="" u
  for u in "${USERS[@]}"; do users="$users${users:+,}\"$u\":\"$USER_PASSWORD\""; done
  printf '{"imapHost":"127.0.0.1","imapPort":%d,"lmtpPort":%d,"smtpPort":%d,"mode":"%s","dovecotPidFile":"%s","postfixPid":%d,"users":{%s},"master":{"user":"%s","password":"%s"},"domains":["example.org","example.net"],"dir":"%s"}\n' \
    "$2" "$3" "$4" "$1" "$DC_RUN/master.pid" "$5" "$users" "$MASTER_USER" "$MASTER_PASSWORD" "$D" > "$STACK_JSON.tmp"
  mv "$STACK_JSON.tmp" "$STACK_JSON"
}

write_users() {
  local u
  # PLAIN scheme: these are public test credentials (they are in stack.json next to this
  # file), and a crypt hash on every login would dominate login-heavy benchmarks.
  : > "$DC/users"
  for u in "${USERS[@]}"; do echo "$u:{PLAIN}$USER_PASSWORD" >> "$DC/users"; done
  echo "$MASTER_USER:{PLAIN}$MASTER_PASSWORD" > "$DC/master-users"
  # Read by the auth process, which runs as Dovecot's internal user.
  chown "root:$(id -gn dovecot)" "$DC/users" "$DC/master-users"
  chmod 0640 "$DC/users" "$DC/master-users"
}

START_OK=0
on_start_exit() {
  [ "$START_OK" = 1 ] && return 0
  log "start failed; stopping what was started in $D"
  stop_all >/dev/null 2>&1 || true
}

cmd_start() {
  local dir="" mode=legacy imap_port="" lmtp_port="" smtp_port="" postfix=1 owner=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir=${2:-}; shift 2 ;;
      --mode) mode=${2:-}; shift 2 ;;
      --imap-port) imap_port=${2:-}; shift 2 ;;
      --lmtp-port) lmtp_port=${2:-}; shift 2 ;;
      --smtp-port) smtp_port=${2:-}; shift 2 ;;
      --no-postfix) postfix=0; shift ;;
      --owner-pid) owner=${2:-}; shift 2 ;;
      *) die "start: unknown option $1" ;;
    esac
  done
  need_dir "$dir"
  case "$mode" in legacy|full) ;; *) die "--mode must be legacy or full, not $mode" ;; esac
  local p
  for p in "$imap_port" "$lmtp_port" "$smtp_port" "$owner"; do
    [ -z "$p" ] || [[ $p =~ ^[0-9]+$ ]] || die "not a number: $p"
  done
  [ "$(id -u)" = 0 ] || die "start needs root (Postfix's master, and mail owned by $MAIL_USER)"
  # Everything but the final JSON goes to stderr.
  exec 3>&1 1>&2
  cmd_install
  mkdir -p "$dir"
  set_layout "$(cd "$dir" && pwd -P)"
  need_dir "$D"
  # Unix sockets live in base_dir; their paths must stay under 108 bytes.
  [ "${#DC_RUN}" -le 60 ] || die "--dir path too long for Dovecot's sockets (${#DC_RUN} > 60 bytes): $D"
  if dovecot_pid >/dev/null || postfix_master_pid >/dev/null; then
    die "a stack is already running in $D (run: bash $SELF stop --dir $D)"
  fi
  START_OK=0
  trap on_start_exit EXIT

  mkdir -p "$DC_RUN" "$DC/state" "$MAILDIR"
  chmod 0711 "$D" "$DC"
  chown "$MAIL_USER:$MAIL_USER" "$MAILDIR"
  chmod 0700 "$MAILDIR"
  if ! setpriv --reuid="$MAIL_USER" --regid="$MAIL_USER" --clear-groups -- test -w "$MAILDIR"; then
    die "user $MAIL_USER cannot write $MAILDIR: a directory above $D is not world-searchable (o+x); use a --dir under /tmp"
  fi
  write_users
  if ! setpriv --reuid=dovecot --regid="$(id -g dovecot)" --clear-groups -- test -r "$DC/users"; then
    die "user dovecot cannot read $DC/users: a directory above $D is not world-searchable (o+x)"
  fi

  local auto_imap=0 auto_lmtp=0 auto_smtp=0 ports attempt rc
  if [ -z "$imap_port" ] || [ -z "$lmtp_port" ] || [ -z "$smtp_port" ]; then
    read -r -a ports <<<"$(free_ports 3)"
    [ -n "$imap_port" ] || { imap_port=${ports[0]}; auto_imap=1; }
    [ -n "$lmtp_port" ] || { lmtp_port=${ports[1]}; auto_lmtp=1; }
    [ -n "$smtp_port" ] || { smtp_port=${ports[2]}; auto_smtp=1; }
  fi
  [ "$postfix" = 1 ] || { smtp_port=0; auto_smtp=0; }

  for attempt in 1 2 3 4; do
    write_dovecot_conf "$mode" "$imap_port" "$lmtp_port"
    write_stack_json "$mode" "$imap_port" "$lmtp_port" "$smtp_port" 0
    rc=0
    launch_dovecot || rc=$?
    [ "$rc" = 3 ] || break
    # Only ports picked here may be replaced; a port the caller chose is an error.
    local taken="" p
    for p in "$imap_port:$auto_imap" "$lmtp_port:$auto_lmtp"; do
      if grep -qF "127.0.0.1, ${p%:*}) failed: Address already in use" "$DC_START_LOG" && { [ "${p#*:}" = 0 ] || [ "$attempt" = 4 ]; }; then
        taken="$taken ${p%:*}"
      fi
    done
    if [ -n "$taken" ]; then
      tail_logs "$DC_START_LOG"
      die "dovecot: port$taken on 127.0.0.1 is in use"
    fi
    log "dovecot: a port was taken meanwhile; picking others"
    read -r -a ports <<<"$(free_ports 2)"
    [ "$auto_imap" = 0 ] || imap_port=${ports[0]}
    [ "$auto_lmtp" = 0 ] || lmtp_port=${ports[1]}
  done

  local postfix_pid=0
  if [ "$postfix" = 1 ]; then
    # The directory must exist first: a sandbox starting in parallel drops missing ones.
    mkdir -p "$PF_CONF"
    update_alternate_dirs "$PF_CONF" ""
    for attempt in 1 2 3 4; do
      write_postfix_conf "$smtp_port" "$lmtp_port"
      write_stack_json "$mode" "$imap_port" "$lmtp_port" "$smtp_port" 0
      rc=0
      launch_postfix || rc=$?
      [ "$rc" = 3 ] || break
      if [ "$attempt" = 4 ] || [ "$auto_smtp" = 0 ]; then
        tail_logs "$PF_LOG"
        die "postfix: port $smtp_port on 127.0.0.1 is in use"
      fi
      log "postfix: port $smtp_port was taken meanwhile; picking another"
      smtp_port=$(free_ports 1)
    done
    postfix_pid=$(postfix_master_pid) || { tail_logs "$PF_LOG"; die "postfix answers but its master PID is unknown"; }
  fi
  write_stack_json "$mode" "$imap_port" "$lmtp_port" "$smtp_port" "$postfix_pid"

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
  cat "$STACK_JSON" >&3
}

stop_all() {
  local w
  if w=$(watch_pid) && [ "$w" != "$$" ]; then
    terminate "$w" "owner watcher" group 2000
  fi
  rm -f "$WATCH_PID"
  stop_postfix
  stop_dovecot
  if [ -d "$PF_CONF" ]; then update_alternate_dirs "" "$PF_CONF"; fi
}

parse_dir_only() { # cmd args... -> sets layout
  local cmd=$1 dir=""
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir=${2:-}; shift 2 ;;
      *) die "$cmd: unknown option $1" ;;
    esac
  done
  need_dir "$dir"
  if [ ! -d "$dir" ]; then
    # Nothing can run in a directory that is not there: stopping it is done.
    [ "$cmd" = stop ] && exit 0
    die "$cmd: no such directory: $dir"
  fi
  set_layout "$(cd "$dir" && pwd -P)"
}

cmd_stop() {
  parse_dir_only stop "$@"
  stop_all
}

cmd_stop_dovecot() {
  parse_dir_only stop-dovecot "$@"
  stop_dovecot
}

cmd_start_dovecot() {
  parse_dir_only start-dovecot "$@"
  [ -f "$STACK_JSON" ] && [ -f "$DC_CONF" ] || die "start-dovecot: $D holds no stack (run start first)"
  local rc=0
  launch_dovecot || rc=$?
  if [ "$rc" = 3 ]; then
    tail_logs "$DC_START_LOG" "$DC_LOG"
    die "dovecot: its port is now in use by another process"
  fi
}

cmd_stop_postfix() {
  parse_dir_only stop-postfix "$@"
  stop_postfix
}

cmd_start_postfix() {
  parse_dir_only start-postfix "$@"
  [ -f "$STACK_JSON" ] && [ -f "$PF_CONF/main.cf" ] || die "start-postfix: $D holds no stack with Postfix"
  local rc=0 pid
  launch_postfix || rc=$?
  if [ "$rc" = 3 ]; then
    tail_logs "$PF_LOG"
    die "postfix: its port is now in use by another process"
  fi
  pid=$(postfix_master_pid) || die "postfix answers but its master PID is unknown"
  write_stack_json "$(json_get mode)" "$(json_get imapPort)" "$(json_get lmtpPort)" "$(json_get smtpPort)" "$pid"
}

# Internal: started by "start --owner-pid"; stops the sandbox once the owner is gone.
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
  while owner_alive && [ -f "$STACK_JSON" ]; do sleep 1; done
  if [ -f "$STACK_JSON" ] && [ "$(read_pid "$WATCH_PID" || true)" = "$$" ]; then
    log "$(date '+%F %T') owner $owner is gone: stopping the stack in $D"
    stop_all
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
    stop-dovecot) cmd_stop_dovecot "$@" ;;
    start-dovecot) cmd_start_dovecot "$@" ;;
    stop-postfix) cmd_stop_postfix "$@" ;;
    start-postfix) cmd_start_postfix "$@" ;;
    watch) cmd_watch "$@" ;;
    *) sed -n '2,37p' "$SELF" >&2; exit 64 ;;
  esac
}

main "$@"
