# passkeyd: the two commands a newcomer needs are `make demo` and `make test`.
GO       ?= go
PREFIX   ?= /usr/local
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/passkeyd/passkeyd/cmd/internal/buildinfo.Version=$(VERSION)
FUZZTIME ?= 20s
# The in-process TPM simulator used by unit tests needs cgo.
export CGO_ENABLED := 1

.PHONY: all build test deps bench lint fuzz demo e2e clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/passkeyd ./cmd/passkeyctl

# deps installs what the tests need (swtpm, python3-fido2, ...) when missing.
deps:
	@test/deps.sh

test: deps build
	$(GO) test -count=1 ./...

bench: deps
	@test/bench.sh

lint:
	@test/lint.sh

fuzz:
	@test/fuzz.sh $(FUZZTIME)

demo: deps
	@test/demo/demo.sh

# e2e: the kernel HID path in a qemu VM with real clients (also part of make test).
e2e:
	@test/vm/run.sh

clean:
	rm -rf bin
