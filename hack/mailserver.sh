#!/usr/bin/env bash
# A real mail server for the notice tests: Debian's OpenSMTPD on loopback, accepting mail for any
# address and delivering each recipient's messages to a maildir of its own under DIR/mail, where
# the tests read them back.
#   hack/mailserver.sh start DIR   # prints the port; DIR/mail/<recipient>/new holds the messages
#   hack/mailserver.sh stop DIR
# Installs the package when it is missing (root, or sudo, and Debian's package registry).
set -euo pipefail
cmd="${1:-}"; dir="${2:-}"
[[ -n "$cmd" && -n "$dir" ]] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

stop() {
  if [[ -f "$dir/smtpd.pid" ]]; then
    kill "$(cat "$dir/smtpd.pid")" 2>/dev/null || true
    rm -f "$dir/smtpd.pid"
  fi
}

start() {
  if ! command -v smtpd >/dev/null; then
    local sudo=""; [[ "$(id -u)" == 0 ]] || sudo="sudo"
    echo "mailserver: installing Debian's opensmtpd" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q opensmtpd >"$dir.apt.log" 2>&1 || {
      echo "mailserver: apt-get install opensmtpd failed (see $dir.apt.log): the notice tests need it" >&2; exit 1; }
  fi
  mkdir -p "$dir/mail"
  # Delivered as nobody (OpenSMTPD never delivers as root): nobody must reach the maildirs, through
  # folders such as mktemp's, which only their owner may enter.
  chmod 0777 "$dir/mail"
  local up="$dir"
  while [[ "$up" != "/" ]]; do
    [[ -O "$up" ]] && chmod o+x "$up"
    up="$(dirname "$up")"
  done
  local port; port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  cat > "$dir/smtpd.conf" <<CONF
table sink { "@" = nobody }
listen on 127.0.0.1 port $port
action "sink" maildir "$dir/mail/%{rcpt.user}@%{rcpt.domain}" virtual <sink>
match from any for any action "sink"
CONF
  smtpd -n -f "$dir/smtpd.conf" >/dev/null 2>&1 || { smtpd -n -f "$dir/smtpd.conf"; exit 1; }
  smtpd -d -f "$dir/smtpd.conf" >"$dir/smtpd.log" 2>&1 &
  echo $! > "$dir/smtpd.pid"
  for _ in $(seq 1 50); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
      echo "$port"; return
    fi
    sleep 0.2
  done
  echo "mailserver: smtpd did not listen on $port; last lines of $dir/smtpd.log:" >&2
  tail -20 "$dir/smtpd.log" >&2
  stop; exit 1
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
