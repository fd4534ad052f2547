# OpenTrack. `make run` and `make test` work on a fresh machine with Go.
GO        ?= go
FUZZTIME  ?= 60s
BENCHTIME ?= 1s
BENCHCOUNT ?= 6
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BENCHSTAT   := golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

# Fuzz targets, as package:Target.
FUZZ_TARGETS := \
	./protocol:FuzzStrict \
	./protocol:FuzzDecodeEvent \
	./protocol:FuzzMessages \
	./protocol:FuzzSigned \
	./protocol:FuzzFrames \
	./protocol:FuzzNormalizeAndMatch \
	./node/ingest:FuzzPostEvents

.PHONY: all run test unit interop bench fuzz lint vectors build clean

all: build

build:
	$(GO) build -o bin/opentrack ./cmd/opentrack

## run: show a signed parcel being verified, and a forgery caught.
run:
	$(GO) run ./cmd/opentrack demo

## test: vet, the whole test suite with the race detector, and the
## independent JS check of the test vectors when Node.js is present.
test: interop unit

unit:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

interop:
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		cd spec/interop && npm ci --no-audit --no-fund --loglevel=error && node verify.mjs ../vectors/vectors.json; \
	else \
		echo "interop: Node.js not installed, skipping the JS check of spec/vectors (apt-get install nodejs npm)"; \
	fi

## bench: micro-benchmarks of the hot paths, summarised by benchstat.
bench:
	mkdir -p bench
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=$(BENCHTIME) -count=$(BENCHCOUNT) ./... | tee bench/micro.txt
	$(GO) run $(BENCHSTAT) bench/micro.txt

## fuzz: every fuzz target for FUZZTIME each.
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## vectors: regenerate spec/vectors/vectors.json (deterministic).
vectors:
	$(GO) run ./protocol/vectors/gen -o spec/vectors/vectors.json

clean:
	rm -rf bin
