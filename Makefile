# stsroller: build, check and test.
#
#   make test        vet, gofmt check, unit tests, e2e tests on a local cluster
#   make test-e2e    e2e tests only; builds the control plane first (cached)
#   make tools       build kube-apiserver & co., etcd and kwok into ~/.cache/stsroller
#
# The e2e tests run against a local cluster that e2e/cluster starts (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kwok) on free
# loopback ports; KUBECONFIG is cleared so that they never touch another
# cluster by accident.

SHELL := /usr/bin/env bash
GO ?= go
E2E_TIMEOUT ?= 40m
# Extra flags for the e2e go test, e.g. E2E_FLAGS='-v -run TestOnDelete'.
E2E_FLAGS ?=

.PHONY: test vet fmt-check test-unit test-e2e tools clean-cluster

test: vet fmt-check test-unit test-e2e

tools:
	hack/tools.sh build kubernetes etcd kwok

vet:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./...

# hack/tools holds separate modules that only pin and build the tools.
fmt-check:
	@out=$$(find . -name '*.go' -not -path './.git/*' -not -path './hack/tools/*' -print0 | xargs -0 gofmt -l); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

test-unit:
	$(GO) test ./...

test-e2e: tools
	KUBECONFIG= STSROLLER_BIN_DIR=$$(hack/tools.sh bindir) $(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) $(E2E_FLAGS) ./e2e/...

# Kill what an interrupted e2e run left behind and remove its work directory
# (also the ones kept after a failed run, with their logs). Runs whose test
# binary is still alive are left alone.
clean-cluster:
	@for d in "$${TMPDIR:-/tmp}"/stsroller-e2e-*; do \
	  [ -d "$$d" ] || continue; \
	  if [ -f "$$d/owner.pid" ] && kill -0 "$$(cut -d' ' -f1 "$$d/owner.pid")" 2>/dev/null; then \
	    echo "skipping $$d: its test binary still runs"; continue; \
	  fi; \
	  for f in "$$d"/pids/*.pid; do \
	    [ -f "$$f" ] || continue; pid=$$(cat "$$f"); \
	    if tr '\0' ' ' < "/proc/$$pid/cmdline" 2>/dev/null | grep -qF "$$d"; then \
	      echo "killing $$(basename "$$f" .pid) (pid $$pid)"; kill -KILL "$$pid" 2>/dev/null || true; \
	    fi; \
	  done; \
	  echo "removing $$d"; rm -rf "$$d"; \
	done
