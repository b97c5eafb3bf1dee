# stsroller: build, check and test.
#
#   make demo        a local cluster, stsroller, and a rollout drawn in the terminal
#   make test        vet, gofmt check, unit tests, e2e tests on a local cluster
#   make test-e2e    e2e tests only; builds the control plane first (cached)
#   make soak        the fault suite's long variants and every policy fuzz target, then a table
#   make bench-e2e   100-pod rollout, built-in vs stsroller, side by side
#   make bench       every rollout mode side by side with the built-in controller, 3 runs
#                    each (the long ones once), on one local cluster: writes
#                    bench/results/<stamp>.md, .json, .png and -bars.png (~40 min on 2 cores)
#   make bench-scale the footprint at scale alone (10,000 StatefulSet pods, one of 5,000, 20k other pods)
#   make bench-smoke the same harness at tiny sizes: checks it writes its tables, JSON and plots
#   make tools       build kube-apiserver & co., etcd, kwok, external-dns and helm into ~/.cache/stsroller
#   make build       bin/stsroller and bin/kubectl-stsroller
#   make image       the controller image (needs Docker): IMG=registry/stsroller:tag
#   make image-tar   the same image without Docker, as an OCI tarball: bin/stsroller-image.tar
#   make e2e-deployed  the e2e suite with stsroller deployed from deploy/ on a real node of the local cluster
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
# A -run pattern for e2e-deployed and e2e-kind.
E2E_RUN ?=

IMG ?= stsroller:latest
KIND ?= kind
KIND_CLUSTER ?= stsroller-e2e
KIND_IMG ?= stsroller:e2e
KIND_KUBECONFIG ?= $(CURDIR)/.kind-kubeconfig
IMAGE_TAR ?= bin/stsroller-image.tar
# The tests that make test runs in the deployed mode: the deployed install
# itself, the rollout scenarios that kill or restart the controller, the
# Prometheus scrape of the metrics Service's endpoints and a DNS-gated rollout.
E2E_DEPLOYED_RUN ?= ^(TestDeployed|TestControllerRestartMidRollout|TestOnDeleteRollout|TestDeployAdmittedByRestrictedNamespace|TestPrometheusScrapesARollout|TestDNSGateRollout)

.PHONY: soak test vet fmt-check test-unit test-e2e test-e2e-deployed tools clean-cluster tools-cluster demo bench-e2e bench bench-scale bench-smoke build image image-tar e2e-kind e2e-deployed

test: vet fmt-check test-unit test-e2e test-e2e-deployed bench-smoke

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

# make bench: STSROLLER_BENCH_RUNS (default 3) and STSROLLER_BENCH_LONG_RUNS
# (default 1, for the modes over ~30 s) set the runs of each mode,
# STSROLLER_BENCH_CAP (default 3m, or 3x a mode's ideal) bounds a stuck mode,
# STSROLLER_BENCH_SCALE=1 adds the footprint at scale (make bench-scale alone:
# ~30k pods take long to create on 2 cores), STSROLLER_BENCH_ONLY (a regexp on
# the mode names) runs a subset; see e2e/bench_test.go and bench/README.md.
BENCH_ENV = KUBECONFIG= STSROLLER_BIN_DIR=$$(hack/tools.sh bindir)
BENCH_TEST = $(GO) test -tags e2e -count=1 -run '^TestBench$$' -v

bench: tools
	set -o pipefail; $(BENCH_ENV) STSROLLER_BENCH=full STSROLLER_BENCH_SCALE=$${STSROLLER_BENCH_SCALE:-0} $(BENCH_TEST) -timeout 90m ./e2e/ 2>&1 | tee $${TMPDIR:-/tmp}/stsroller-bench.log

bench-scale: tools
	$(BENCH_ENV) STSROLLER_BENCH=full STSROLLER_BENCH_ONLY='^$$' STSROLLER_BENCH_DNS=0 STSROLLER_BENCH_SCALE=1 $(BENCH_TEST) -timeout 90m ./e2e/

# Part of make test: tiny sizes, outputs into a temporary directory; it checks
# that the table, JSON and plots are written and readable, not how fast.
bench-smoke: tools
	@out=$$(mktemp -d); trap 'rm -rf "$$out"' EXIT; \
	$(BENCH_ENV) STSROLLER_BENCH=smoke STSROLLER_BENCH_SCALE=1 STSROLLER_BENCH_OUT=$$out $(BENCH_TEST) -timeout 10m ./e2e/

image:
	docker build -t $(IMG) .

# The Dockerfile's build, without Docker: the same static binary (same flags),
# then hack/image puts it alone in one layer (user 65532:65532, entrypoint
# /stsroller, fixed timestamps: the same binary always gives the same digest).
image-tar:
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags='-s -w' -o bin/image/stsroller ./cmd/stsroller
	cd hack/image && $(GO) run . -binary $(CURDIR)/bin/image/stsroller -name $(IMG) -o $(CURDIR)/$(IMAGE_TAR) -digest-file $(CURDIR)/$(IMAGE_TAR).digest

# The e2e suite against stsroller installed from deploy/ with image
# $(KIND_IMG): TestMain applies deploy/ with only the image replaced and waits
# for it to be Available; the tests' "kill" kills its containers (or deletes
# its pods). Shared by e2e-deployed and e2e-kind.
E2E_DEPLOYED = STSROLLER_E2E_CONTROLLER=deployed STSROLLER_E2E_IMAGE=$(KIND_IMG) $(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) $(if $(E2E_RUN),-run '$(E2E_RUN)')

# On the local cluster, with a real node (kubelet, containerd, runc: needs
# root; see docs/install.md) that runs the image imported from image-tar.
e2e-deployed: tools
	$(MAKE) image-tar IMG=$(KIND_IMG)
	KUBECONFIG= STSROLLER_BIN_DIR=$$(hack/tools.sh bindir) STSROLLER_E2E_IMAGE_TAR=$(CURDIR)/$(IMAGE_TAR) $(E2E_DEPLOYED) $(E2E_FLAGS) ./e2e/

# What make test runs of it: E2E_DEPLOYED_RUN only.
test-e2e-deployed: tools
	$(MAKE) e2e-deployed E2E_RUN='$(E2E_DEPLOYED_RUN)'

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
	KUBECONFIG=$(KIND_KUBECONFIG) $(E2E_DEPLOYED) $(E2E_FLAGS) ./e2e/

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
	cd hack/image && $(GO) vet ./... && $(GO) test ./...

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
	  for cg in /sys/fs/cgroup/*/"$$(basename "$$d")" /sys/fs/cgroup/"$$(basename "$$d")"; do \
	    [ -d "$$cg" ] || continue; \
	    echo "killing the real node's processes in $$cg"; \
	    find "$$cg" -name cgroup.procs -exec cat {} + | xargs -r kill -KILL 2>/dev/null || true; \
	  done; \
	  sleep 1; \
	  for cg in /sys/fs/cgroup/*/"$$(basename "$$d")" /sys/fs/cgroup/"$$(basename "$$d")"; do \
	    [ -d "$$cg" ] && find "$$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true; \
	  done; \
	  echo "removing $$d"; rm -rf "$$d"; \
	done

# The fault suite's long variants (STSROLLER_SOAK=1: 20 restarts, 20% API
# faults, 50 StatefulSets at once, ...), then every Fuzz target of ./policy/
# for SOAK_FUZZTIME each, then the table (e2e/soaktable). Each command runs
# even when one before failed, and appends "NAME EXIT" to status.txt;
# soaktable then fails the soak on a non-zero exit (a failed test, a build
# failure, a timeout panic), on a fault test of its expected list that wrote
# no stats (skipped, not run), on a test that completed no rollout, on a
# violated invariant, on an empty stats file, and on fuzz targets that could
# not be listed, did not run or failed. It cannot pass empty.
SOAK_FUZZTIME ?= 60s
SOAK_TIMEOUT ?= 40m
SOAK_DIR ?= $(or $(TMPDIR),/tmp)/stsroller-soak
soak: tools
	@rm -rf $(SOAK_DIR); mkdir -p $(SOAK_DIR)
	{ KUBECONFIG= STSROLLER_SOAK=1 STSROLLER_SOAK_STATS=$(SOAK_DIR)/stats.jsonl STSROLLER_BIN_DIR=$$(hack/tools.sh bindir) \
	  $(GO) test -tags e2e -count=1 -timeout $(SOAK_TIMEOUT) -run 'TestFault' $(E2E_FLAGS) ./e2e/; \
	  echo "e2e $$?" >> $(SOAK_DIR)/status.txt; } 2>&1 | tee $(SOAK_DIR)/e2e.log
	$(GO) test -list '^Fuzz' ./policy/ > $(SOAK_DIR)/fuzz-list.txt 2>&1; echo "fuzz-list $$?" >> $(SOAK_DIR)/status.txt
	@for f in $$(grep '^Fuzz' $(SOAK_DIR)/fuzz-list.txt); do \
	  echo "fuzz $$f for $(SOAK_FUZZTIME) (log: $(SOAK_DIR)/$$f.log)"; \
	  $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(SOAK_FUZZTIME) ./policy/ > $(SOAK_DIR)/$$f.log 2>&1; \
	  echo "fuzz $$f $$?" >> $(SOAK_DIR)/status.txt; \
	done
	$(GO) run ./e2e/soaktable -fuzztime $(SOAK_FUZZTIME) $(SOAK_DIR)
