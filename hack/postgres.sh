#!/usr/bin/env bash
# Debian's PostgreSQL server for the in-house backend's tests and bench, on loopback, its data in a
# folder of the caller's (initdb there; no system service, no root needed beyond installing the
# package when it is missing). As root, the server runs as the `postgres` user the package makes,
# since PostgreSQL refuses to run as root.
#   hack/postgres.sh start DIR   # writes DIR/env: MFA_RECALL_POSTGRES_URL (a superuser on loopback)
#                                # MFA_RECALL_POSTGRES_CA (the authority of its TLS certificate) and
#                                # MFA_RECALL_POSTGRES_DIR (this folder: the bench reads the server's pid)
#   hack/postgres.sh stop DIR
set -euo pipefail
cmd="${1:-}"; dir="${2:-}"
[[ -n "$cmd" && -n "$dir" ]] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

bin_dir() { { ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true; } | sort -V | tail -1; }

install() {
  [[ -n "$(bin_dir)" ]] && return
  local sudo=""; [[ "$(id -u)" == 0 ]] || sudo="sudo"
  echo "postgres: installing Debian's postgresql" >&2
  local log; log="$(mktemp)"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >"$log" 2>&1 || {
    echo "postgres: apt-get install postgresql failed (see $log): the in-house backend's tests need it" >&2; exit 1; }
}

as_owner() {
  if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    install
    bin="$(bin_dir)"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    # As root the server runs as `postgres`, which must reach the folder through its parent.
    if [[ "$(id -u)" == 0 ]]; then chown postgres "$dir"; chmod o+x "$(dirname "$dir")"; fi
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    # A password of its own (other local users may reach loopback too), readable by the owner only.
    if [[ ! -f "$dir/password" ]]; then
      (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$dir/password")
      [[ "$(id -u)" == 0 ]] && chown postgres "$dir/password"
    fi
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
      as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=scram-sha-256 --pwfile="$dir/password" --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    # TLS on, with a certificate from a test authority of its own (DIR/ca.crt), so the reference
    # backend's connection to PostgreSQL is tested as it runs beside a real database.
    # Made again when missing or within a day of its end (a folder reused for weeks).
    if [[ ! -f "$dir/server.crt" ]] || ! openssl x509 -checkend 86400 -noout -in "$dir/server.crt" >/dev/null 2>&1; then
      command -v openssl >/dev/null || { echo "postgres: openssl is missing (Debian's openssl package)" >&2; exit 1; }
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 30 \
        -subj "/CN=mfa-recall test PostgreSQL CA" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/server.key" -out "$dir/server.csr" -subj "/CN=127.0.0.1" 2>/dev/null
      printf 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$dir/server.ext"
      openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -out "$dir/server.crt" -days 30 -extfile "$dir/server.ext" 2>/dev/null
      chmod 600 "$dir/server.key" "$dir/ca.key"
      if [[ "$(id -u)" == 0 ]]; then chown postgres "$dir/server.key" "$dir/server.crt"; fi
    fi
    # Loopback only, its socket in the folder, no fsync (test data).
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key" start >/dev/null 2>&1 || {
      echo "postgres: the server did not start; last lines of $dir/postgres.log:" >&2; tail -20 "$dir/postgres.log" >&2; exit 1; }
    { echo "export MFA_RECALL_POSTGRES_URL='postgres://postgres:$(cat "$dir/password")@127.0.0.1:$port/postgres'"
      echo "export MFA_RECALL_POSTGRES_CA='$dir/ca.crt'"
      echo "export MFA_RECALL_POSTGRES_DIR='$dir'"; } > "$dir/env"
    echo "postgres: serving on 127.0.0.1:$port; source $dir/env" >&2
    ;;
  stop)
    bin="$(bin_dir)"
    [[ -n "$bin" && -f "$dir/data/postmaster.pid" ]] && as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
