# stsroller: build, check and test.
#
#   make demo        a local cluster, stsroller, and a rollout drawn in the terminal
#   make test        vet, gofmt check, unit tests, e2e tests on a local cluster
#   make test-e2e    e2e tests only; builds the control plane first (cached)
#   make bench-e2e   100-pod rollout, built-in vs stsroller, side by side
#   make tools       build kube-apiserver & co., etcd, kwok, external-dns and helm into ~/.cache/stsroller
#   make build       bin/stsroller and bin/kubectl-stsroller
#   make image       the controller image (needs Docker): IMG=registry/stsroller:tag
#   make e2e-kind    the e2e suite on a kind cluster with stsroller deployed from deploy/ (needs Docker and kind)
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

IMG ?= stsroller:latest
KIND ?= kind
KIND_CLUSTER ?= stsroller-e2e
KIND_IMG ?= stsroller:e2e
KIND_KUBECONFIG ?= $(CURDIR)/.kind-kubeconfig

.PHONY: test vet fmt-check test-unit test-e2e tools clean-cluster tools-cluster demo bench-e2e build image e2e-kind

test: vet fmt-check test-unit test-e2e

tools: tools-cluster
	hack/tools.sh build external-dns helm

# What a cluster needs; the demo needs no more.
tools-cluster:
	hack/tools.sh build kubernetes etcd kwok

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/stsroller ./cmd/kubectl-stsroller

demo: tools-cluster
	STSROLLER_BIN_DIR=$$(hack/tools.sh bindir) $(GO) run ./hack/demo

bench-e2e: tools-cluster
	KUBECONFIG= STSROLLER_BIN_DIR=$$(hack/tools.sh bindir) $(GO) test -tags e2e -count=1 -run '^$$' -bench Rollout100 -benchtime 1x -timeout 60m ./e2e/

image:
	docker build -t $(IMG) .

# The same e2e tests on kind: stsroller runs in the cluster from deploy/ (the
# tests' "kill" deletes its pods), KUBECONFIG points at kind. Untested on the
# development machines, which have no Docker. BIND and external-dns run on the
# host, where the in-cluster controller cannot reach them: the DNS-gate tests
# skip themselves in this mode.
e2e-kind:
	$(MAKE) image IMG=$(KIND_IMG)
	$(KIND) get clusters | grep -qx '$(KIND_CLUSTER)' || $(KIND) create cluster --name $(KIND_CLUSTER) --kubeconfig $(KIND_KUBECONFIG)
	$(KIND) export kubeconfig --name $(KIND_CLUSTER) --kubeconfig $(KIND_KUBECONFIG)
	$(KIND) load docker-image $(KIND_IMG) --name $(KIND_CLUSTER)
	$(GO) run ./hack/render-deploy -image $(KIND_IMG) | kubectl --kubeconfig $(KIND_KUBECONFIG) apply -f -
	kubectl --kubeconfig $(KIND_KUBECONFIG) -n stsroller-system rollout status deployment/stsroller --timeout 5m
	KUBECONFIG=$(KIND_KUBECONFIG) STSROLLER_E2E_CONTROLLER=deployed $(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) $(E2E_FLAGS) ./e2e/

vet:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./...

# hack/tools holds separate modules that only pin and build the tools.
fmt-check:
	@out=$$(find . -name '*.go' -not -path './.git/*' -not -path './hack/tools/*' -print0 | xargs -0 gofmt -l); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# deploy/helm_test.go renders the chart with the pinned helm.
test-unit:
	hack/tools.sh build helm
	STSROLLER_BIN_DIR=$$(hack/tools.sh bindir) $(GO) test ./...

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
	    if tr '\0' ' ' 2>/dev/null < "/proc/$$pid/cmdline" | grep -qF "$$d"; then \
	      echo "killing $$(basename "$$f" .pid) (pid $$pid)"; kill -KILL "$$pid" 2>/dev/null || true; \
	    fi; \
	  done; \
	  echo "removing $$d"; rm -rf "$$d"; \
	done
