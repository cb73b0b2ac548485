# minimesh. Everything a fresh machine with only Go needs is installed here,
# pinned, into .bin/ (no remote buf plugins: this network reaches only the Go
# module proxy, Debian's packages and npm).
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/.bin
export PATH := $(BIN):$(PATH)

BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
STATICCHECK_VERSION := v0.8.2
# The S3-compatible store the log shipping tests run (dataplane/logship/s3test).
VERSITYGW_VERSION := v1.8.0

# -race where it fits; RACE= turns it off.
RACE ?= -race
TESTFLAGS ?=
PKGS := ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show the targets.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# The commit the binaries say they are (meshctl version, meshd --version);
# without it they fall back to the commit go build stamps (internal/version).
VERSION ?= $(shell git describe --always --dirty 2>/dev/null)

.PHONY: build
build: ## Build meshd, mesh-proxy and meshctl into bin/ (carrying the commit: VERSION).
	$(GO) build -ldflags "-X minimesh/internal/version.Version=$(VERSION)" -o bin/ ./cmd/...

.PHONY: demo
demo: build ## The whole mesh on this machine; Ctrl-C stops it.
	deploy/local/demo.sh

.PHONY: demo-check
demo-check: build ## Run the demo once, non-interactively, and exit.
	DEMO_ONCE=1 deploy/local/demo.sh

.PHONY: readme-check
readme-check: ## Run the README's "By hand" walk from its own code blocks (make build, fixed ports; stops what it started).
	deploy/local/readme-walk.sh

.PHONY: demo-ha
demo-ha: build ## Three meshd on one etcd, two apps; the leader is SIGKILLed under traffic (installs etcd-server).
	deploy/local/demo-ha.sh

.PHONY: demo-ha-check
demo-ha-check: build ## Run demo-ha once, non-interactively, and exit.
	DEMO_ONCE=1 deploy/local/demo-ha.sh

.PHONY: demo-roles
demo-roles: build ## The sidecar's other roles: web's app calls an HTTPS service outside the mesh as plain HTTP on localhost (ambassador); the partner app's log as JSON records and its metrics on its proxy's /metrics (adapter); its logs in an S3-compatible store (log shipping).
	deploy/local/demo-roles.sh

.PHONY: demo-roles-check
demo-roles-check: build ## Run demo-roles once, non-interactively, and exit.
	DEMO_ONCE=1 deploy/local/demo-roles.sh

.PHONY: test
test: chromium $(BIN)/versitygw ## Run every test (with -race unless RACE= is given; installs chromium for the dashboard's browser test, versitygw for log shipping's).
	$(GO) vet $(PKGS)
	$(GO) test $(RACE) -count=1 -timeout 15m $(TESTFLAGS) $(PKGS)

.PHONY: lint
lint: $(BIN)/staticcheck $(BIN)/buf ## go vet, gofmt, staticcheck and buf lint.
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(BIN)/staticcheck $(PKGS)
	$(BIN)/buf lint

.PHONY: cross-check
cross-check: ## The binaries build for macOS and FreeBSD too (Linux-only code keeps a fallback there).
	for os in darwin freebsd; do for c in meshd mesh-proxy meshctl; do GOOS=$$os $(GO) build -o /dev/null ./cmd/$$c || exit 1; done; done

.PHONY: generate
generate: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc ## Regenerate the protobuf code.
	$(BIN)/buf lint
	$(BIN)/buf generate

.PHONY: generate-check
generate-check: generate ## Fail when the committed generated code is stale.
	@if [ -n "$$(git status --porcelain -- proto)" ]; then \
		echo "generated code is stale: run 'make generate' and commit"; git status --porcelain -- proto; exit 1; fi

# The dashboard (meshctl dashboard): its front-end in ui/ is bundled by
# esbuild into internal/dashboard/assets, committed and embedded, so that
# go build needs no Node.
.PHONY: ui
ui: ## Rebuild the dashboard's bundle (ui/: npm ci, esbuild) into internal/dashboard/assets.
	cd ui && npm ci --no-audit --no-fund && npm run build

.PHONY: ui-check
ui-check: ui ## Fail when the committed dashboard bundle is stale.
	@if [ -n "$$(git status --porcelain -- internal/dashboard/assets)" ]; then \
		echo "the dashboard bundle is stale: run 'make ui' and commit"; git status --porcelain -- internal/dashboard/assets; exit 1; fi

.PHONY: chromium
chromium: ## Install Debian's chromium where it is missing (the dashboard's browser test, e2e TestDashboardInChromium).
	@command -v chromium >/dev/null 2>&1 || { s=; [ "$$(id -u)" = 0 ] || s=sudo; $$s apt-get install -y chromium || { $$s apt-get update && $$s apt-get install -y chromium; }; }

.PHONY: docs
docs: ## Regenerate docs/reference.md from resources.proto's comments and examples/.
	$(GO) run ./internal/docgen

.PHONY: docs-check
docs-check: ## Fail when docs/reference.md is stale.
	$(GO) run ./internal/docgen -check

.PHONY: crds
crds: ## Regenerate deploy/k8s/crds (one CRD per kind) from resources.proto and api.Kinds().
	$(GO) run ./internal/crdgen

.PHONY: crds-check
crds-check: ## Fail when deploy/k8s/crds is stale.
	$(GO) run ./internal/crdgen -check

$(BIN)/buf:
	GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(BIN)/staticcheck:
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
$(BIN)/versitygw:
	GOBIN=$(BIN) $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)

.PHONY: bench
bench: bench-fanout bench-fanout-ha bench-sidebyside bench-go bench-store bench-adapter ## Every benchmark; prints tables (see bench/RESULTS.md).

.PHONY: bench-issue22
bench-issue22: build ## Issue 22's protocol: the full side-by-side run up to three times, stopping at the first that misses a bar (~35 min each).
	bench/sidebyside/issue22.sh $(BENCHFLAGS)

.PHONY: bench-sidebyside
bench-sidebyside: build ## One and two hops vs nginx, haproxy, Caddy and the starting commit under wrk and an open-loop generator (~35 min; installs wrk, nginx, haproxy, caddy, vegeta; builds bench/openloop).
	bench/sidebyside/run.sh $(BENCHFLAGS)

.PHONY: bench-go
bench-go: ## Hot-path Go benchmarks with allocations (route, authz, ratelimit, accesslog, pathnorm, balancer, proxy forwarding).
	$(GO) run ./bench/gobench

.PHONY: bench-adapter
bench-adapter: ## The log adapter: records/s and CPU per 100k records, single- and multi-line, per format.
	$(GO) run ./bench/adapter

.PHONY: bench-store
bench-store: ## meshd's stores: Apply latency p50/p99 and Bootstrap rate, bbolt vs etcd (embedded, and Debian's etcd when installed).
	$(GO) run ./bench/store

.PHONY: bench-fanout
bench-fanout: ## Config push fan-out: 100, 1000 and 2000 proxies.
	$(GO) run ./bench/fanout -n 100,1000,2000

.PHONY: bench-fanout-ha
bench-fanout-ha: ## Fan-out over three meshd replicas on etcd, a replica SIGKILLed, RSS per replica: 2000 proxies (~10 min on 2 shared cores; installs etcd-server; rewrites its block in bench/RESULTS.md).
	@[ -x /usr/bin/etcd ] || command -v etcd >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ]; then apt-get install -y etcd-server; else sudo apt-get install -y etcd-server; fi; }
	$(GO) run ./bench/fanout -replicas 3 -n 2000 $(BENCHFLAGS)

# Kubernetes: manifests checked offline, the redirect proven in network
# namespaces (root, iproute2 and iptables), the image.
IMAGE ?= minimesh/minimesh:dev

.PHONY: manifests-check
manifests-check: ## Decode every manifest, kustomize build and inject output strictly (offline).
	$(GO) test -count=1 ./deploy/k8s
	$(GO) test -count=1 -run 'Inject' ./internal/inject ./internal/meshctl

.PHONY: manifests-golden
manifests-golden: ## Rewrite the injected example and inject's golden files after a change.
	UPDATE_GOLDEN=1 $(GO) test -count=1 -run 'Example' ./deploy/k8s
	UPDATE_GOLDEN=1 $(GO) test -count=1 -run 'InjectGolden' ./internal/inject

.PHONY: test-kube
test-kube: ## Tests against a real kube-apiserver in this process (own module test/kube; no -race; slow to build cold).
	cd test/kube && $(GO) vet ./... && $(GO) test -count=1 -timeout 15m $(TESTFLAGS) ./...

.PHONY: observability-check
observability-check: ## The alerts' promtool tests, PodMonitors decoded strictly, a real prometheus scraping a mesh (~30 s; installs Debian's prometheus for promtool).
	@{ [ -x /usr/bin/promtool ] && [ -x /usr/bin/prometheus ]; } || { if [ "$$(id -u)" = 0 ]; then apt-get install -y prometheus; else sudo apt-get install -y prometheus; fi; }
	CI=true $(GO) test $(RACE) -count=1 -v ./deploy/observability

.PHONY: test-netns
test-netns: ## The iptables redirect in two network namespaces (needs root; CI=true fails instead of skipping).
	$(GO) test $(RACE) -count=1 -v -run 'TestRedirectInNetworkNamespaces' ./dataplane/redirect

.PHONY: image
image: ## Build the one image (meshd, mesh-proxy with iptables, meshctl, demo-app) with docker.
	docker build -f deploy/k8s/Dockerfile --build-arg VERSION=$$(git describe --always --dirty) -t $(IMAGE) .

.PHONY: soak
soak: ## The resilience suite in its long form and every Fuzz target (FUZZTIME=30s each).
	bench/soak/run.sh

.PHONY: clean
clean: ## Remove built binaries.
	rm -rf bin
