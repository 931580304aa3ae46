#!/usr/bin/env bash
# Installs every tool the local stack and the tests need; idempotent, quick when cached.
# Built binaries go to a per-user cache keyed by version, so a fresh clone reuses them.
#
#   bash tools/install.sh            # everything (apt, kube, livekit, helm, python, node, go-sdk)
#   bash tools/install.sh python     # one step: apt kube livekit helm python node go-sdk
#   bash tools/install.sh path       # print the bin dirs, PATH-style (venv first)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
# shellcheck source=versions.env
. "$here/versions.env"
CACHE=${LKI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/livekit-ingress-k8s}
BIN=$CACHE/bin
mkdir -p "$BIN"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
have() { [ -x "$1" ] && return 0 || return 1; }
hash_files() { cat "$@" | sha256sum | cut -c1-12; }
# Run a long command, printing a line a minute so a cold build never looks hung.
with_progress() {
  local what=$1 pid t=0; shift
  "$@" & pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5; t=$((t + 5))
    if (( t % 60 == 0 )); then printf '    ... %s: %d min\n' "$what" $((t / 60)) >&2; fi
  done
  wait "$pid"
}

apt_packages() {
  local missing=()
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v ffmpeg >/dev/null || missing+=(ffmpeg)
  command -v srt-live-transmit >/dev/null || missing+=(srt-tools)  # the media pod's SRT input
  command -v openssl >/dev/null || missing+=(openssl)
  command -v ss >/dev/null || missing+=(iproute2)
  command -v lua5.1 >/dev/null || missing+=(lua5.1)  # runs the Argo CD health check in tests
  command -v chromium >/dev/null || missing+=(chromium)  # a WHIP client (WebRTC + fetch) in tests
  if [ ${#missing[@]} -gt 0 ]; then
    step "apt: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    systemctl disable --now etcd >/dev/null 2>&1 || true
  fi
}

kube() {
  local out=$BIN/kubernetes-$KUBERNETES_VERSION
  if have "$out/kube-apiserver" && have "$out/kube-controller-manager" && have "$out/kubectl"; then return; fi
  step "kubernetes $KUBERNETES_VERSION: kube-apiserver, kube-controller-manager, kubectl (about 10 min cold)"
  local work=$CACHE/src/kubernetes-$KUBERNETES_VERSION
  mkdir -p "$work"
  local gomod
  gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module lkik8s"
    echo "go 1.26.0"
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    awk '/^require \(/{r=1;next} r&&/^\)/{r=0} r&&$2=="v0.0.0"{print "replace " $1 " => " $1 " '"$KUBE_STAGING_VERSION"'"}' "$gomod"
  } >"$work/go.mod"
  cat >"$work/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  (cd "$work" && go mod tidy -e >/dev/null 2>&1 || true
   go mod download
   mkdir -p "$out.tmp"
   with_progress "building kubernetes" go build -o "$out.tmp/" -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
     k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl)
  rm -rf "$out"; mv "$out.tmp" "$out"
}

go_install() { # name version package
  local out=$BIN/$1-$2
  have "$out/$(basename "$3" | sed 's/@.*//')" && return
  step "$1 $2 (go install, a few minutes cold)"
  GOBIN="$out.tmp" GOFLAGS= with_progress "building $1" go install -ldflags "-s -w" "$3@$2"
  rm -rf "$out"; mv "$out.tmp" "$out"
}

livekit() {
  go_install livekit-server "$LIVEKIT_SERVER_VERSION" github.com/livekit/livekit-server/cmd/server
  # `go install` names it after its package dir; give it its usual name
  local out=$BIN/livekit-server-$LIVEKIT_SERVER_VERSION
  [ -L "$out/livekit-server" ] || ln -sfn server "$out/livekit-server"
}

helm() { go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm; }

python_env() {
  local uv=$CACHE/uv-$UV_VERSION/bin/uv
  if ! have "$uv"; then
    step "uv $UV_VERSION (pip, into $CACHE/uv-$UV_VERSION)"
    rm -rf "$CACHE/uv-$UV_VERSION"
    python3 -m venv "$CACHE/uv-$UV_VERSION"
    "$CACHE/uv-$UV_VERSION/bin/pip" install -q "uv==$UV_VERSION"
  fi
  local venv=$root/.venv
  if ! have "$venv/bin/python"; then
    step "python venv: $venv"
    "$uv" venv -q --python "${PYTHON:-python3}" "$venv"
  fi
  # reinstall only when the project's metadata changed
  local stamp=$venv/.lki-install-stamp want
  want=$(hash_files "$root/pyproject.toml")
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! have "$venv/bin/lki-stack"; then
    step "python deps: uv pip install -e '.[dev,media]'"
    "$uv" pip install -q --python "$venv/bin/python" -e "$root[dev,media]"
    echo "$want" >"$stamp"
  fi
}

node_deps() {
  local dir=$root/tests/node_sdk
  [ -f "$dir/package.json" ] || return 0
  local stamp=$dir/node_modules/.lki-install-stamp want files=("$dir/package.json")
  [ -f "$dir/package-lock.json" ] && files+=("$dir/package-lock.json")
  want=$(hash_files "${files[@]}")
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  if [ -f "$dir/package-lock.json" ]; then
    step "node: npm ci in tests/node_sdk"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  else
    step "node: npm install in tests/node_sdk (no package-lock.json)"
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error)
  fi
  echo "$want" >"$stamp"
}

# The Go SDK check program: cached by a hash of its sources (same hash as local_stack/tools.py).
go_sdk_hash() {
  local dir=$root/tests/go_sdk files=("$root/tests/go_sdk/go.mod")
  [ -f "$dir/go.sum" ] && files+=("$dir/go.sum")
  while IFS= read -r f; do files+=("$dir/$f"); done < <(cd "$dir" && find . -maxdepth 1 -name '*.go' -printf '%f\n' | LC_ALL=C sort)
  hash_files "${files[@]}"
}

go_sdk() {
  local dir=$root/tests/go_sdk
  [ -f "$dir/go.mod" ] || return 0
  local out
  out=$BIN/go-sdk-check-$(go_sdk_hash)
  have "$out/go-sdk-check" && return 0
  step "go-sdk-check: go build in tests/go_sdk"
  mkdir -p "$out.tmp"
  (cd "$dir" && GOFLAGS=-mod=readonly with_progress "building go-sdk-check" go build -o "$out.tmp/go-sdk-check" .)
  rm -rf "$out"; mv "$out.tmp" "$out"
}

print_path() {
  local dirs=("$root/.venv/bin" "$BIN/kubernetes-$KUBERNETES_VERSION" "$BIN/livekit-server-$LIVEKIT_SERVER_VERSION" "$BIN/helm-$HELM_VERSION")
  [ -f "$root/tests/go_sdk/go.mod" ] && dirs+=("$BIN/go-sdk-check-$(go_sdk_hash)")
  (IFS=:; echo "${dirs[*]}")
}

if [ $# -eq 0 ]; then set -- all; fi
for what in "$@"; do
  case "$what" in
    apt) apt_packages ;;
    kube) kube ;;
    livekit) livekit ;;
    helm) helm ;;
    python) python_env ;;
    node) node_deps ;;
    go-sdk) go_sdk ;;
    path) print_path ;;
    all)
      apt_packages
      kube
      livekit
      helm
      python_env
      node_deps
      go_sdk
      ;;
    *) echo "usage: $0 [apt|kube|livekit|helm|python|node|go-sdk|path|all]..." >&2; exit 2 ;;
  esac
done
