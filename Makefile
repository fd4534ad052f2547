# OpenTrack. `make run` and `make test` work on a fresh machine with Go.
GO        ?= go
FUZZTIME  ?= 60s
BENCHTIME ?= 1s
BENCHCOUNT ?= 6
BENCH     ?= .
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
	./node/admin:FuzzPostEvents \
	./node/ingest:FuzzDecodeFlat \
	./node/gateway:FuzzParseWatch \
	./node/gateway:FuzzParseBatch \
	./node/gateway:FuzzPickLang \
	./node/store/seal:FuzzOpen

.PHONY: all run testnet-large scenarios demo test arch unit npm-deps interop e2e bench bench-harness bench-micro fuzz lint vectors build clean

all: build

build:
	$(GO) build -o bin/opentrack ./cmd/opentrack

## run: a local testnet, 3 carriers and 2 platforms for 30 s, with a
## live display, then the summary; it fails if an invariant does. The
## repos stay in .testnet (replaced by the next run), so the parcel it
## followed can be looked up afterwards with the commands it prints.
run: build
	rm -rf .testnet
	bin/opentrack testnet --carriers 3 --platforms 2 --parcels 300 --duration 30s --dir .testnet

## testnet-large: the acceptance run, 50 carriers and 20 platforms in one
## process for 60 s; the report goes to testnet-report.json.
testnet-large:
	$(GO) run ./cmd/opentrack testnet --carriers 50 --platforms 20 --duration 60s --json testnet-report.json

## scenarios: every scenario at the default size, in process and, for
## crash and partition, with carriers as processes.
scenarios: build
	@set -e; for s in crash partition rogue cutoff; do bin/opentrack testnet --duration 30s --scenario $$s; done
	bin/opentrack testnet --duration 30s --scenario crash --procs
	bin/opentrack testnet --duration 30s --scenario partition --procs

## demo: sign one parcel, verify it, and catch a forgery, in one process.
demo:
	$(GO) run ./cmd/opentrack demo

## test: the import rules (arch), vet, the whole test suite with the race detector, and the
## independent JS check of the test vectors when Node.js is present. The
## suite runs through scripts/testprogress: a line per package as it
## finishes, every 20 s what still runs, the slowest at the end, and the
## raw go test -json events in bin/test-events.json.
test: arch interop unit

## arch: fails when a package imports one its layer forbids (the rules
## and today's known violations are in scripts/archcheck).
arch:
	$(GO) run ./scripts/archcheck

# TESTP is how many test binaries run at once. Most of the slow tests
# wait on timers, fsync, PostgreSQL and loopback streams rather than the
# CPU, so on 2 cores more than go test's default of GOMAXPROCS overlaps
# their waits.
TESTP ?= 4

## unit runs the PostgreSQL store's tests too, against a throwaway
## PostgreSQL 15 cluster (scripts/testpg.sh installs and starts it, or
## uses OPENTRACK_TEST_POSTGRES when set).
unit: npm-deps
	@echo "== go vet ./..."
	$(GO) vet ./...
	@mkdir -p bin
	scripts/testpg.sh run $(GO) run ./scripts/testprogress -json bin/test-events.json -- \
		$(GO) test -race -count=1 -p $(TESTP) ./...

# The npm packages the tests use, each locked. npm ci runs only when a
# package-lock.json is newer than the install it made (npm records that
# in node_modules/.package-lock.json), not on every make test.
NPM_DIRS := spec/interop node/gateway/testdata/redocly
# In CI (CI=true) a JS check that cannot run fails, so Node.js is
# installed from Debian's packages first when it is missing.
ifeq ($(CI),true)
ifeq ($(shell command -v npm),)
$(info CI=true and Node.js missing: apt-get install nodejs npm)
$(shell apt-get update >&2 && apt-get install -y nodejs npm >&2)
endif
endif
HAVE_NODE := $(shell command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && echo yes)
npm-deps: $(if $(HAVE_NODE),$(NPM_DIRS:%=%/node_modules/.package-lock.json))
	@$(if $(HAVE_NODE),:,echo "npm-deps: Node.js not installed; the JS checks will say they are SKIPPED (apt-get install nodejs npm)")

%/node_modules/.package-lock.json: %/package-lock.json
	@echo "== npm ci in $*"
	cd $* && npm ci --no-audit --no-fund --loglevel=error

## interop: the JS check of spec/vectors. Without Node.js it is skipped,
## loudly; in CI (CI=true) Debian's nodejs and npm are installed first,
## and the JS tests of `unit` fail rather than skip.
interop: npm-deps
	@if [ -n "$(HAVE_NODE)" ]; then \
		echo "== interop: the JS check of spec/vectors"; \
		cd spec/interop && node verify.mjs ../vectors/vectors.json; \
	else \
		echo "interop: SKIPPED: Node.js not installed, no JS check of spec/vectors (apt-get install nodejs npm)"; \
	fi

## e2e: the gateway's tracking page in headless Chromium against a small
## testnet (installs Debian's chromium when it is missing; CHROMIUM=path
## picks another). SCREENSHOT=1 rewrites docs/gateway.png,
## gateway-phone.png, gateway-handoff.png and gateway-zh.png (the Chinese
## one needs a CJK font, e.g. fonts-wqy-microhei).
CHROMIUM ?= /usr/bin/chromium
e2e:
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "e2e: $(CHROMIUM) missing, installing chromium"; \
		apt-get update && apt-get install -y chromium; \
	fi
	CHROMIUM=$(CHROMIUM) UPDATE_SCREENSHOT=$(SCREENSHOT) $(GO) test -tags e2e -race -count=1 ./node/gateway/...

## bench: the harness against DESIGN section 8 (a table and
## bench/results.json; about 6 minutes), then the micro-benchmarks.
## bench/README.md explains every figure.
bench: bench-harness bench-micro

bench-harness: build
	bin/opentrack bench --out bench/results.json $(BENCHFLAGS)

## bench-micro: Go micro-benchmarks of the hot paths (codec, chain
## verification, store append and get, the track handler, ingest, watch),
## BENCHCOUNT runs each into bench/micro.txt, summarised by benchstat.
## BENCH=regexp picks some.
bench-micro:
	mkdir -p bench
	$(GO) test -run='^$$' -bench='$(BENCH)' -benchmem -benchtime=$(BENCHTIME) -count=$(BENCHCOUNT) ./... | tee bench/micro.txt
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
