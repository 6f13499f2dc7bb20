#!/usr/bin/env bash
# Builds or fetches the real parts the tests and the demo run on, into one cache folder
# outside the checkout, so a fresh clone on the same machine reuses them:
#   kube-apiserver + kubectl (from k8s.io/kubernetes, staging modules pinned by replace),
#   etcd (go.etcd.io/etcd/server/v3 in its own module), helm, Prometheus Alertmanager (the signal
#   tests fire real alerts through it), and the Keycloak distribution.
# Usage: hack/parts.sh [all|kube|etcd|helm|alertmanager|keycloak|env]
#   env prints the shell variables that point at the parts (eval "$(hack/parts.sh env)").
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
ALERTMANAGER_VERSION="${ALERTMANAGER_VERSION:-v0.35.0}"
KEYCLOAK_VERSION="${KEYCLOAK_VERSION:-26.5.6}"
CACHE="${MFA_RECALL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mfa-recall}"

KUBE_DIR="$CACHE/kubernetes-$K8S_VERSION"
ETCD_DIR="$CACHE/etcd-$ETCD_VERSION"
HELM_DIR="$CACHE/helm-$HELM_VERSION"
ALERTMANAGER_DIR="$CACHE/alertmanager-$ALERTMANAGER_VERSION"
KEYCLOAK_DIR="$CACHE/keycloak-$KEYCLOAK_VERSION"

log() { echo "parts: $*" >&2; }

# A JDK that Keycloak 26 supports (21 or newer); the machine's default is 17.
find_java_home() {
  if [[ -n "${KEYCLOAK_JAVA_HOME:-}" ]]; then echo "$KEYCLOAK_JAVA_HOME"; return; fi
  local candidate version
  for candidate in /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/*; do
    [[ -x "$candidate/bin/java" ]] || continue
    version="$("$candidate/bin/java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
    if [[ -n "$version" && "$version" -ge 21 ]]; then echo "$candidate"; return; fi
  done
  log "no JDK 21+ found under /usr/lib/jvm; Keycloak $KEYCLOAK_VERSION needs one (set KEYCLOAK_JAVA_HOME)"
  return 1
}

build_kube() {
  if [[ -x "$KUBE_DIR/kube-apiserver" && -x "$KUBE_DIR/kubectl" ]]; then return; fi
  log "building kube-apiserver and kubectl $K8S_VERSION (cold: 5-15 min)"
  local mod="$CACHE/build/kube-$K8S_VERSION"
  mkdir -p "$mod" "$KUBE_DIR"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local staging="v0.${K8S_VERSION#v1.}"
  (
    cd "$mod"
    export GOFLAGS=-mod=mod
    [[ -f go.mod ]] || go mod init mfarecall.local/kubeparts >/dev/null 2>&1
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    # Every staging module k8s.io/kubernetes replaces with ./staging/... is pinned to its published v0.Y.Z.
    {
      echo "module mfarecall.local/kubeparts"
      echo "go $(go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1/')"
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo "replace ("
      grep -oE 'k8s.io/[a-z0-9-]+ => ./staging' "$gomod" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
      echo ")"
    } > go.mod
    printf 'package kubeparts\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n\t_ "k8s.io/kubectl/pkg/cmd"\n)\n' > tools.go
    go mod tidy >&2
    local ld="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
    CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$KUBE_DIR/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl >&2
  )
}

build_etcd() {
  if [[ -x "$ETCD_DIR/etcd" ]]; then return; fi
  log "building etcd $ETCD_VERSION"
  local mod="$CACHE/build/etcd-$ETCD_VERSION"
  mkdir -p "$mod" "$ETCD_DIR"
  (
    cd "$mod"
    export GOFLAGS=-mod=mod
    [[ -f go.mod ]] || go mod init mfarecall.local/etcdparts >/dev/null 2>&1
    printf 'package etcdparts\n\nimport _ "go.etcd.io/etcd/server/v3/etcdmain"\n' > tools.go
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
    go mod tidy >&2
    CGO_ENABLED=0 go build -trimpath -o "$ETCD_DIR/etcd" go.etcd.io/etcd/server/v3 >&2
  )
}

build_helm() {
  if [[ -x "$HELM_DIR/helm" ]]; then return; fi
  log "building helm $HELM_VERSION"
  mkdir -p "$HELM_DIR"
  CGO_ENABLED=0 GOBIN="$HELM_DIR" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
}

build_alertmanager() {
  if [[ -x "$ALERTMANAGER_DIR/alertmanager" ]]; then return; fi
  log "building alertmanager $ALERTMANAGER_VERSION"
  # The module embeds its web UI from ui/app/dist, which is built by npm and not published with
  # it: the source is copied and given an empty UI (the tests use only the API and the webhooks).
  local mod="$CACHE/build/alertmanager-$ALERTMANAGER_VERSION"
  mkdir -p "$mod" "$ALERTMANAGER_DIR"
  (
    cd "$mod"
    local src
    src="$(go mod download -json "github.com/prometheus/alertmanager@$ALERTMANAGER_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
    rm -rf source && cp -r "$src" source && chmod -R u+w source
    mkdir -p source/ui/app/dist/elm source/ui/app/dist/mantine
    echo '<!doctype html><title>Alertmanager (built without its UI)</title>' > source/ui/app/dist/elm/index.html
    cp source/ui/app/dist/elm/index.html source/ui/app/dist/mantine/index.html
    cd source && CGO_ENABLED=0 go build -trimpath -o "$ALERTMANAGER_DIR/alertmanager" ./cmd/alertmanager >&2
  )
}

fetch_keycloak() {
  if [[ -x "$KEYCLOAK_DIR/bin/kc.sh" ]]; then return; fi
  log "fetching Keycloak $KEYCLOAK_VERSION from Maven Central"
  local dl="$CACHE/build/keycloak-download"
  mkdir -p "$dl"
  mvn -q -B dependency:copy -Dartifact="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:zip" \
    -DoutputDirectory="$dl" >&2
  rm -rf "$CACHE/build/keycloak-unpack" && mkdir -p "$CACHE/build/keycloak-unpack"
  (cd "$CACHE/build/keycloak-unpack" && unzip -q "$dl/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip")
  mv "$CACHE/build/keycloak-unpack/keycloak-$KEYCLOAK_VERSION" "$KEYCLOAK_DIR"
  # Build the optimized server once, so each test run starts in seconds instead of re-augmenting.
  JAVA_HOME="$(find_java_home)" "$KEYCLOAK_DIR/bin/kc.sh" build --db=dev-file >&2 || true
}

print_env() {
  echo "export MFA_RECALL_CACHE='$CACHE'"
  echo "export MFA_RECALL_KUBE_APISERVER='$KUBE_DIR/kube-apiserver'"
  echo "export MFA_RECALL_KUBECTL='$KUBE_DIR/kubectl'"
  echo "export MFA_RECALL_ETCD='$ETCD_DIR/etcd'"
  echo "export MFA_RECALL_HELM='$HELM_DIR/helm'"
  echo "export MFA_RECALL_ALERTMANAGER='$ALERTMANAGER_DIR/alertmanager'"
  echo "export MFA_RECALL_KEYCLOAK_HOME='$KEYCLOAK_DIR'"
  echo "export MFA_RECALL_KEYCLOAK_JAVA_HOME='$(find_java_home)'"
}

case "${1:-all}" in
  kube) build_kube ;;
  etcd) build_etcd ;;
  helm) build_helm ;;
  alertmanager) build_alertmanager ;;
  keycloak) fetch_keycloak ;;
  env) print_env ;;
  all) build_etcd; fetch_keycloak; build_kube; build_alertmanager ;;
  *) echo "usage: $0 [all|kube|etcd|helm|alertmanager|keycloak|env]" >&2; exit 2 ;;
esac
