#!/usr/bin/env bash
# Builds the binaries the local e2e cluster runs, from the Go module proxy, into a
# cache outside the checkout, keyed by tool and version. Each tool has its own
# module under hack/tools/<tool>; its go.mod is the one place that pins the version.
# A binary that is already in the cache is never rebuilt.
#
#   hack/tools.sh build [tool...]   build what is missing (kubernetes etcd kwok external-dns helm)
#   hack/tools.sh bindir            print a directory with every binary (after build)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/hack/tools"
cache=${STSROLLER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stsroller}
all=(kubernetes etcd kwok external-dns helm)
export CGO_ENABLED=0

# module and binaries of each tool.
module() {
  case $1 in
    kubernetes) echo k8s.io/kubernetes ;;
    etcd) echo go.etcd.io/etcd/server/v3 ;;
    kwok) echo sigs.k8s.io/kwok ;;
    external-dns) echo sigs.k8s.io/external-dns ;;
    helm) echo helm.sh/helm/v4 ;;
  esac
}
binaries() {
  case $1 in
    kubernetes) echo kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy ;;
    *) echo "$1" ;;
  esac
}
package() {
  case $1 in
    etcd) echo . ;;
    kwok) echo sigs.k8s.io/kwok/cmd/kwok ;;
    external-dns) echo sigs.k8s.io/external-dns ;;
    helm) echo helm.sh/helm/v4/cmd/helm ;;
    kube-*|kubectl|kubelet) echo "k8s.io/kubernetes/cmd/$1" ;;
  esac
}
version() { (cd "$tools/$1" && go list -m -f '{{.Version}}' "$(module "$1")"); }
tooldir() { echo "$cache/$1-$(version "$1")"; }

ldflags() {
  local ld="-s -w" v major minor p
  if [ "$1" = kubernetes ]; then
    v=$(version kubernetes)
    major=$(echo "${v#v}" | cut -d. -f1)
    minor=$(echo "${v#v}" | cut -d. -f2)
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor"
      ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
  fi
  echo "$ld"
}

build() {
  local t=$1 dir want=() b tmp
  dir=$(tooldir "$t")
  for b in $(binaries "$t"); do
    [ -x "$dir/$b" ] || want+=("$b")
  done
  [ ${#want[@]} -eq 0 ] && return 0
  echo "building $t $(version "$t"): ${want[*]} (cached in $dir)" >&2
  mkdir -p "$dir"
  # Build into a temporary directory, then move into place: an interrupted
  # build never leaves a half-written binary in the cache.
  tmp=$(mktemp -d "$dir/.build.XXXXXX")
  local pkgs=()
  for b in "${want[@]}"; do pkgs+=("$(package "$b")"); done
  if [ ${#want[@]} -eq 1 ]; then
    (cd "$tools/$t" && go build -trimpath -ldflags="$(ldflags "$t")" -o "$tmp/${want[0]}" "${pkgs[@]}")
  else
    (cd "$tools/$t" && go build -trimpath -ldflags="$(ldflags "$t")" -o "$tmp/" "${pkgs[@]}")
  fi
  for b in "${want[@]}"; do mv "$tmp/$b" "$dir/$b"; done
  rm -rf "$tmp"
}

# bindir: one directory of links to every tool's binaries, named by the versions.
bindir() {
  local key t b dir
  key=$(for t in "${all[@]}"; do echo "$t-$(version "$t")"; done | sha256sum | cut -c1-12)
  dir="$cache/bin-$key"
  mkdir -p "$dir"
  for t in "${all[@]}"; do
    for b in $(binaries "$t"); do ln -sfn "$(tooldir "$t")/$b" "$dir/$b"; done
  done
  echo "$dir"
}

cmd=${1:-build}
shift || true
case "$cmd" in
  build)
    [ $# -gt 0 ] || set -- "${all[@]}"
    for t in "$@"; do build "$t"; done
    ;;
  bindir) bindir ;;
  *) echo "usage: $0 build [tool...] | bindir" >&2; exit 2 ;;
esac
