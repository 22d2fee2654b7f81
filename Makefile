# roomcast — the two commands a fresh machine needs are `make run` and `make test`.

MODULES   := proto services/gateway services/roomstate services/sync cmd/roomcast
PKGS      := $(MODULES:%=./%/...)
FUZZTIME  ?= 5s
GO        ?= go
NPM       ?= npm

.PHONY: all run build test test-go test-modules fuzz test-e2e e2e-deps lint bench clean

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
test: lint test-go test-modules fuzz test-e2e

test-go:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

# Each module builds and vets without the workspace, through its replace directives.
test-modules:
	@set -e; for m in $(MODULES); do \
		echo "GOWORK=off: $$m"; \
		(cd $$m && GOWORK=off $(GO) build ./... && GOWORK=off $(GO) vet ./...); \
	done

# Every Fuzz target, FUZZTIME each (the seed corpus also runs in test-go).
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
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
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

## bench: Go micro-benchmarks
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

clean:
	rm -rf bin data
