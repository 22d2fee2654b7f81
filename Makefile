# roomcast — the two commands a fresh machine needs are `make run` and `make test`.

MODULES   := proto process services/gateway services/roomstate services/sync cmd/roomcast examples/demo
PKGS      := $(MODULES:%=./%/...)
# Modules of their own under deploy/, outside go.work (k8s.io stays out of
# the product's modules): the load balancer, the health probe, the
# Kubernetes validator.
DEPLOY_MODULES := deploy/lb deploy/probe deploy/k8s/validate
FUZZTIME  ?= 5s
GO        ?= go
NPM       ?= npm

.PHONY: all run build test test-go test-modules fuzz test-e2e e2e-deps peer-deps lint bench test-centrifugo clean deploy-up deploy-down test-deploy

all: build

## run: the whole system in one process (embedded NATS, every service), on 127.0.0.1
run: build
	./bin/roomcast serve

## build: every program into ./bin
build:
	$(GO) build -o bin/roomcast ./cmd/roomcast
	$(GO) build -o bin/gateway ./services/gateway/cmd/gateway
	$(GO) build -o bin/roomstate ./services/roomstate/cmd/roomstate
	$(GO) build -o bin/sync ./services/sync/cmd/sync

## test: every Go test with -race, each module on its own, bounded fuzzing, and the end-to-end tests
test: lint peer-deps test-go test-modules fuzz test-e2e test-js test-browser test-deploy

test-go:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

# Each module builds and vets without the workspace, through its replace directives.
test-modules:
	@set -e; for m in $(MODULES); do \
		echo "GOWORK=off: $$m"; \
		(cd $$m && GOWORK=off $(GO) build ./... && GOWORK=off $(GO) vet ./...); \
	done

# Every Fuzz target, FUZZTIME each (the seed corpus also runs in test-go).
# Go 1.26's fuzz coordinator can end a run at the FUZZTIME deadline with a
# bare "context deadline exceeded" when the machine is busy (Go issue 75804,
# fixed in 1.27): such a run, with no failing input written, runs once more.
fuzz:
	@set -e; out=$$(mktemp); trap 'rm -f "$$out"' EXIT; \
	for pkg in $$($(GO) list $(PKGS)); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
			if ! $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg > "$$out" 2>&1; then \
				cat "$$out"; \
				grep -q 'context deadline exceeded' "$$out" && ! grep -q 'Failing input written' "$$out" || exit 1; \
				echo "fuzz $$f: stopped at the deadline with no failing input (Go issue 75804): once more"; \
				$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg > "$$out" 2>&1 || { cat "$$out"; exit 1; }; \
			fi; \
			tail -n 2 "$$out"; \
		done; \
	done

e2e-deps:
	@if [ ! -d e2e/node_modules ] || [ e2e/package-lock.json -nt e2e/node_modules ]; then \
		cd e2e && $(NPM) ci --no-audit --no-fund; \
	fi

test-e2e: build e2e-deps
	cd e2e && node --test --test-concurrency=1 --test-timeout=180000

## lint: go vet and gofmt
lint:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $(MODULES) $(DEPLOY_MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

## bench: Go micro-benchmarks, the Centrifugo client's tests, then a short side-by-side run against Socket.IO and Centrifugo into docs/performance.md
bench: build peer-deps
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
	$(MAKE) test-centrifugo
	./bench/run.sh

# The load tool's Centrifugo tests build Centrifugo v6.9.1 from its Go module
# (about 9 minutes with a cold module cache on 2 cores, reused afterwards from
# the user cache folder): too slow for `make test`, so they run here.
test-centrifugo:
	ROOMCAST_BENCH_CENTRIFUGO=1 $(GO) test -count=1 -run 'TestCentrifugo' ./cmd/roomcast/internal/bench/

# The Socket.IO reference peer of the load tool (and of its tests).
peer-deps:
	@if [ ! -d bench/peer/node_modules ] || [ bench/peer/package-lock.json -nt bench/peer/node_modules ]; then \
		cd bench/peer && $(NPM) ci --no-audit --no-fund; \
	fi

clean:
	rm -rf bin data

# --- the TypeScript client (clients/js), the demo, the browser tests ---

JS := clients/js

.PHONY: demo js-deps js-build chromium test-js test-browser

## demo: the stack plus a demo domain service and its board page on http://127.0.0.1:8090
demo: js-build
	$(GO) run ./examples/demo

js-deps:
	@if [ ! -d $(JS)/node_modules ] || [ $(JS)/package-lock.json -nt $(JS)/node_modules ]; then \
		cd $(JS) && $(NPM) ci --no-audit --no-fund; \
	fi

js-build: js-deps
	cd $(JS) && $(NPM) run build

# Debian's chromium for the browser tests (never a downloaded browser build).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; fi

## test-js: the client's unit tests, and its integration tests against bin/roomcast serve
test-js: build e2e-deps js-build
	cd $(JS) && node --test --test-concurrency=1 --test-timeout=180000 test/unit/ test/integration/

## test-browser: the demo board in headless Chromium (a drag on one screen moves the card on the other; offline, then caught up); writes docs/demo-board.png
test-browser: build e2e-deps js-build chromium
	$(GO) build -o bin/demo ./examples/demo
	cd $(JS) && node --test --test-concurrency=1 --test-timeout=300000 test/browser/

# --- deployment: images built here, the compose stack under podman, Kubernetes manifests ---

## deploy-up: build the images and run the compose stack under podman (docs/operations.md)
deploy-up:
	deploy/compose/stack.sh up

## deploy-down: remove the stack's containers, network and volumes
deploy-down:
	deploy/compose/stack.sh down

## test-deploy: the deploy modules' tests, the Kubernetes manifests validated offline, and the compose stack run end to end (installs podman if missing, as root)
test-deploy: e2e-deps
	@set -e; for m in $(DEPLOY_MODULES); do \
		echo "GOWORK=off: $$m"; \
		(cd $$m && GOWORK=off $(GO) vet ./... && GOWORK=off $(GO) test -count=1 ./...); \
	done
	@command -v kubectl >/dev/null || { echo "test-deploy: kubectl is needed (kubectl kustomize, offline)"; exit 1; }
	kubectl kustomize deploy/k8s | (cd deploy/k8s/validate && GOWORK=off $(GO) run .)
	deploy/compose/test.sh
