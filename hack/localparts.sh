#!/usr/bin/env bash
# Starts the real parts on loopback for the tests and the demo: etcd, kube-apiserver (with its
# own CA, serving cert and an admin client cert), and Keycloak in dev mode with an in-memory DB.
#   hack/localparts.sh start DIR   # writes DIR/env (source it) and DIR/kubeconfig
#   hack/localparts.sh stop DIR
# The binaries come from hack/parts.sh (built once into the cache).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
cmd="${1:-}"; dir="${2:-}"
[[ -n "$cmd" && -n "$dir" ]] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() { # wait_for SECONDS DESCRIPTION PIDFILE LOGFILE COMMAND...
  local deadline=$((SECONDS + $1)) what="$2" pidfile="$3" logfile="$4"; shift 4
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null || ((SECONDS > deadline)); then
      echo "localparts: $what did not become ready; last lines of $logfile:" >&2
      tail -20 "$logfile" >&2
      stop; exit 1
    fi
    sleep 0.5
  done
}

stop() {
  "$HERE/mailserver.sh" stop "$dir/smtp" 2>/dev/null || true
  for p in keycloak apiserver etcd; do
    if [[ -f "$dir/$p.pid" ]]; then
      kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
    fi
  done
  for p in keycloak apiserver etcd; do
    if [[ -f "$dir/$p.pid" ]]; then
      local pid; pid="$(cat "$dir/$p.pid")"
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/$p.pid"
    fi
  done
}

start() {
  "$HERE/parts.sh" all
  eval "$("$HERE/parts.sh" env)"
  mkdir -p "$dir/certs" "$dir/etcd"
  dir="$(cd "$dir" && pwd)"
  local c="$dir/certs"

  # One CA signs the serving cert and the admin client cert; the SA key pair signs tokens.
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$c/ca.key" -out "$c/ca.crt" -days 2 -subj "/CN=mfa-recall-test-ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$c/serving.key" -out "$c/serving.csr" -subj "/CN=kube-apiserver" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$c/serving.ext"
  openssl x509 -req -in "$c/serving.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial -out "$c/serving.crt" -days 2 -extfile "$c/serving.ext" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$c/admin.key" -out "$c/admin.csr" -subj "/O=system:masters/CN=admin" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > "$c/admin.ext"
  openssl x509 -req -in "$c/admin.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial -out "$c/admin.crt" -days 2 -extfile "$c/admin.ext" 2>/dev/null
  openssl genrsa -out "$c/sa.key" 2048 2>/dev/null
  openssl rsa -in "$c/sa.key" -pubout -out "$c/sa.pub" 2>/dev/null

  local etcd_port peer_port api_port kc_port kc_mgmt_port
  etcd_port="$(free_port)"; peer_port="$(free_port)"; api_port="$(free_port)"; kc_port="$(free_port)"; kc_mgmt_port="$(free_port)"

  "$MFA_RECALL_ETCD" --data-dir="$dir/etcd" --listen-client-urls="http://127.0.0.1:$etcd_port" \
    --advertise-client-urls="http://127.0.0.1:$etcd_port" --listen-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" --initial-cluster="default=http://127.0.0.1:$peer_port" \
    --unsafe-no-fsync=true --log-level=warn > "$dir/etcd.log" 2>&1 &
  echo $! > "$dir/etcd.pid"

  (
    export JAVA_HOME="$MFA_RECALL_KEYCLOAK_JAVA_HOME"
    export KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD=admin
    # Proxy headers from loopback only: the window tests sign users in "from" chosen addresses
    # through X-Forwarded-For, and Keycloak's events record those.
    exec "$MFA_RECALL_KEYCLOAK_HOME/bin/kc.sh" start-dev --db=dev-mem --http-host=127.0.0.1 --http-port="$kc_port" \
      --http-management-port="$kc_mgmt_port" --health-enabled=true \
      --proxy-headers=xforwarded --proxy-trusted-addresses=127.0.0.1
  ) > "$dir/keycloak.log" 2>&1 &
  echo $! > "$dir/keycloak.pid"

  wait_for 60 etcd "$dir/etcd.pid" "$dir/etcd.log" curl -sf --max-time 5 "http://127.0.0.1:$etcd_port/health"

  "$MFA_RECALL_KUBE_APISERVER" --etcd-servers="http://127.0.0.1:$etcd_port" --cert-dir="$c" \
    --tls-cert-file="$c/serving.crt" --tls-private-key-file="$c/serving.key" --client-ca-file="$c/ca.crt" \
    --secure-port="$api_port" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --service-cluster-ip-range=10.0.0.0/24 --authorization-mode=RBAC --disable-admission-plugins=ServiceAccount \
    --service-account-issuer="https://127.0.0.1:$api_port/" --service-account-key-file="$c/sa.pub" \
    --service-account-signing-key-file="$c/sa.key" --allow-privileged=true --endpoint-reconciler-type=none > "$dir/apiserver.log" 2>&1 &
  echo $! > "$dir/apiserver.pid"

  cat > "$dir/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $c/ca.crt
users:
- name: admin
  user:
    client-certificate: $c/admin.crt
    client-key: $c/admin.key
contexts:
- name: local
  context: {cluster: local, user: admin, namespace: default}
current-context: local
KUBECONFIG

  wait_for 90 kube-apiserver "$dir/apiserver.pid" "$dir/apiserver.log" curl -sf --max-time 5 --cacert "$c/ca.crt" --cert "$c/admin.crt" --key "$c/admin.key" "https://127.0.0.1:$api_port/readyz"
  wait_for 180 Keycloak "$dir/keycloak.pid" "$dir/keycloak.log" curl -sf --max-time 5 "http://127.0.0.1:$kc_mgmt_port/health/ready"
  local smtp_port; smtp_port="$("$HERE/mailserver.sh" start "$dir/smtp")" || { stop; exit 1; }

  cat > "$dir/env" <<ENV
export KUBECONFIG='$dir/kubeconfig'
export MFA_RECALL_KUBECTL='$MFA_RECALL_KUBECTL'
export MFA_RECALL_HELM='$MFA_RECALL_HELM'
export MFA_RECALL_ALERTMANAGER='$MFA_RECALL_ALERTMANAGER'
export MFA_RECALL_KEYCLOAK_URL='http://127.0.0.1:$kc_port'
export MFA_RECALL_KEYCLOAK_ADMIN_USER=admin
export MFA_RECALL_KEYCLOAK_ADMIN_PASSWORD=admin
export MFA_RECALL_PARTS_DIR='$dir'
export MFA_RECALL_SMTP='127.0.0.1:$smtp_port'
export MFA_RECALL_MAILDIR='$dir/smtp/mail'
ENV
  echo "localparts: apiserver https://127.0.0.1:$api_port, Keycloak http://127.0.0.1:$kc_port; source $dir/env" >&2
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
