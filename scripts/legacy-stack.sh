#!/usr/bin/env bash
# The legacy mail stack the gateway is tested and demonstrated against: a real Dovecot
# (IMAP + LMTP) and a real Postfix from Debian's packages, each sandboxed in its own
# directory, listening on 127.0.0.1 only, on ports chosen here.
#
#   legacy-stack.sh install
#   legacy-stack.sh start --dir DIR [--mode legacy|full] [--imap-port N] [--lmtp-port N] [--smtp-port N] [--no-postfix]
#   legacy-stack.sh stop --dir DIR
#   legacy-stack.sh stop-dovecot --dir DIR | start-dovecot --dir DIR
#
# start prints DIR/stack.json as its last line of stdout.
set -euo pipefail

PACKAGES=(dovecot-imapd dovecot-lmtpd postfix swaks socat python3 curl)
# Mail files belong to this unprivileged user; Dovecot runs mail processes as it.
MAIL_USER=lemonademail
LEGACY_CAPS="IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID IDLE NAMESPACE"

die() { echo "legacy-stack: $*" >&2; exit 1; }

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing packages ${missing[*]}; run as root to install them"
    export DEBIAN_FRONTEND=noninteractive
    # Keep Debian's postfix package from configuring or starting a system instance.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
  # Packages may start system instances on install; the tests use only their own.
  getent passwd "$MAIL_USER" >/dev/null || useradd --system --no-create-home --shell /usr/sbin/nologin "$MAIL_USER"
  if [ ! -f /etc/postfix/main.cf ]; then
    mkdir -p /etc/postfix
    printf 'compatibility_level = 3.6\n' > /etc/postfix/main.cf
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_for_banner() { # host port pattern seconds
  local deadline=$((SECONDS + $4))
  while [ $SECONDS -lt $deadline ]; do
    if python3 - "$1" "$2" "$3" <<'PY' 2>/dev/null; then return 0; fi
import socket, sys, re
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)
s.settimeout(2)
data = s.recv(512).decode('latin1')
s.close()
sys.exit(0 if re.match(sys.argv[3], data) else 1)
PY
    sleep 0.2
  done
  return 1
}

write_dovecot_conf() { # dir mode imap_port lmtp_port
  local dir=$1 mode=$2 imap_port=$3 lmtp_port=$4
  local caps_line=""
  [ "$mode" = legacy ] && caps_line="imap_capability = $LEGACY_CAPS"
  cat > "$dir/dovecot/dovecot.conf" <<CONF
# Sandboxed Dovecot for lemonade-gateway tests ($mode capabilities).
instance_name = lemonade-$(basename "$dir")-$$
base_dir = $dir/dovecot/run
state_dir = $dir/dovecot/state
log_path = $dir/dovecot/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Ln
auth_master_user_separator = *
mail_location = maildir:$dir/mail/%u/Maildir
mail_uid = $MAIL_USER
mail_gid = $MAIL_USER
first_valid_uid = 1
default_internal_user = $MAIL_USER
default_internal_group = $MAIL_USER
default_login_user = $MAIL_USER
$caps_line
mail_plugins =
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
passdb {
  driver = passwd-file
  args = scheme=SHA512-CRYPT $dir/dovecot/master-users
  master = yes
  result_success = continue
}
passdb {
  driver = passwd-file
  args = scheme=SHA512-CRYPT $dir/dovecot/users
}
userdb {
  driver = static
  args = uid=$MAIL_USER gid=$MAIL_USER home=$dir/mail/%u
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
  unix_listener lmtp {
    mode = 0600
  }
}
service auth {
  unix_listener auth-userdb {
    mode = 0600
    user = $MAIL_USER
  }
}
protocol lmtp {
  postmaster_address = postmaster@example.org
}
CONF
}

write_postfix_conf() { # dir smtp_port lmtp_port
  local dir=$1 smtp_port=$2 lmtp_port=$3 pdir="$1/postfix"
  mkdir -p "$pdir/queue" "$pdir/data"
  chown postfix "$pdir/data"
  cat > "$pdir/main.cf" <<CONF
# Sandboxed Postfix for lemonade-gateway tests: accepts from loopback, delivers to Dovecot LMTP.
compatibility_level = 3.6
queue_directory = $pdir/queue
data_directory = $pdir/data
maillog_file = /dev/stdout
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = legacy-mta.example.org
mydestination =
mynetworks = 127.0.0.0/8
virtual_mailbox_domains = example.org example.net
virtual_transport = lmtp:inet:127.0.0.1:$lmtp_port
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
smtp_dns_support_level = disabled
disable_dns_lookups = yes
biff = no
append_dot_mydomain = no
CONF
  # master.cf: Debian's, with the smtpd service on our port and no chroot.
  sed -E "s/^smtp(\s+)inet(\s+)n(\s+)-(\s+)y/127.0.0.1:$smtp_port\1inet\2n\3-\4n/" /etc/postfix/master.cf > "$pdir/master.cf"
  grep -q "^127.0.0.1:$smtp_port" "$pdir/master.cf" || die "could not rewrite master.cf smtp line"
  # Postfix only runs with a config directory that the default main.cf lists.
  local current
  current=$(postconf -h alternate_config_directories 2>/dev/null || true)
  case " $current " in
    *" $pdir "*) ;;
    *) postconf -e "alternate_config_directories = ${current:+$current }$pdir" ;;
  esac
}

start_dovecot() { # dir
  local dir=$1
  dovecot -c "$dir/dovecot/dovecot.conf" </dev/null >>"$dir/dovecot/start.log" 2>&1 \
    || { tail -n 20 "$dir/dovecot/start.log" "$dir/dovecot/dovecot.log" >&2 2>/dev/null; die "dovecot did not start"; }
  local port; port=$(json_field "$dir" imapPort)
  wait_for_banner 127.0.0.1 "$port" '^\* OK' 20 \
    || { tail -n 20 "$dir/dovecot/dovecot.log" >&2 2>/dev/null; die "dovecot is not answering on $port"; }
}

stop_dovecot() { # dir
  local dir=$1 pidfile="$1/dovecot/run/master.pid" pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

json_field() { # dir field
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1/stack.json" "$2"
}

cmd_start() {
  local dir="" mode=legacy imap_port="" lmtp_port="" smtp_port="" postfix=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir=$2; shift 2 ;;
      --mode) mode=$2; shift 2 ;;
      --imap-port) imap_port=$2; shift 2 ;;
      --lmtp-port) lmtp_port=$2; shift 2 ;;
      --smtp-port) smtp_port=$2; shift 2 ;;
      --no-postfix) postfix=0; shift ;;
      *) die "unknown option $1" ;;
    esac
  done
  [ -n "$dir" ] || die "start needs --dir"
  case "$mode" in legacy|full) ;; *) die "--mode must be legacy or full" ;; esac
  install_packages >&2
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  mkdir -p "$dir/dovecot/run" "$dir/dovecot/state" "$dir/mail"
  chown "$MAIL_USER:$MAIL_USER" "$dir/mail"
  # Directories above the sandbox must be traversable by the mail user.
  chmod o+x "$dir" "$(dirname "$dir")" 2>/dev/null || true
  imap_port=${imap_port:-$(free_port)}
  lmtp_port=${lmtp_port:-$(free_port)}
  smtp_port=${smtp_port:-$(free_port)}
  local hash master_hash
  hash=$(doveadm pw -s SHA512-CRYPT -p password)
  master_hash=$(doveadm pw -s SHA512-CRYPT -p masterpw)
  : > "$dir/dovecot/users"
  for u in alice bob carol; do echo "$u:$hash" >> "$dir/dovecot/users"; done
  echo "gateway:$master_hash" > "$dir/dovecot/master-users"
  # The auth process runs as the mail user (default_internal_user) and must read them.
  chown "root:$MAIL_USER" "$dir/dovecot/users" "$dir/dovecot/master-users"
  chmod 0640 "$dir/dovecot/users" "$dir/dovecot/master-users"
  write_dovecot_conf "$dir" "$mode" "$imap_port" "$lmtp_port"
  local postfix_pid=0
  cat > "$dir/stack.json" <<JSON
{"imapHost":"127.0.0.1","imapPort":$imap_port,"lmtpPort":$lmtp_port,"smtpPort":$smtp_port,"mode":"$mode","dovecotPidFile":"$dir/dovecot/run/master.pid","postfixPid":0,"users":{"alice":"password","bob":"password","carol":"password"},"master":{"user":"gateway","password":"masterpw"},"dir":"$dir"}
JSON
  start_dovecot "$dir"
  if [ "$postfix" = 1 ]; then
    write_postfix_conf "$dir" "$smtp_port" "$lmtp_port"
    postfix -c "$dir/postfix" check >>"$dir/postfix/postfix.log" 2>&1 || true
    setsid postfix -c "$dir/postfix" start-fg </dev/null >>"$dir/postfix/postfix.log" 2>&1 &
    postfix_pid=$!
    echo "$postfix_pid" > "$dir/postfix/fg.pid"
    wait_for_banner 127.0.0.1 "$smtp_port" '^220' 20 \
      || { tail -n 30 "$dir/postfix/postfix.log" >&2; cmd_stop --dir "$dir"; die "postfix is not answering on $smtp_port"; }
    sed -i "s/\"postfixPid\":0/\"postfixPid\":$postfix_pid/" "$dir/stack.json"
  fi
  tr -d '\n' < "$dir/stack.json"
  echo
}

cmd_stop() {
  local dir=""
  while [ $# -gt 0 ]; do
    case "$1" in --dir) dir=$2; shift 2 ;; *) die "unknown option $1" ;; esac
  done
  [ -n "$dir" ] || die "stop needs --dir"
  [ -d "$dir" ] || return 0
  stop_dovecot "$dir"
  if [ -f "$dir/postfix/fg.pid" ]; then
    local pid; pid=$(cat "$dir/postfix/fg.pid")
    # postfix start-fg runs the master in the foreground: stop it through postfix itself, then by PID.
    postfix -c "$dir/postfix" stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/postfix/fg.pid"
  fi
}

main() {
  local cmd=${1:-}
  [ $# -gt 0 ] && shift
  case "$cmd" in
    install) install_packages ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    stop-dovecot)
      [ "${1:-}" = --dir ] || die "stop-dovecot needs --dir"
      stop_dovecot "$2" ;;
    start-dovecot)
      [ "${1:-}" = --dir ] || die "start-dovecot needs --dir"
      start_dovecot "$2" ;;
    *) sed -n '2,12p' "$0" >&2; exit 64 ;;
  esac
}

main "$@"
