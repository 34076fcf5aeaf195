# passkeyd: the two commands a newcomer needs are `make demo` and `make test`.
GO       ?= go
PREFIX   ?= /usr/local
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/passkeyd/passkeyd/internal/buildinfo.Version=$(VERSION)
FUZZTIME ?= 20s
# Tests run the in-process reference TPM simulator, compiled in only with
# the tpmsim tag, and the race detector: both need cgo (gcc; libssl-dev for
# the simulator). Every target that runs tests uses GOTESTFLAGS (exported
# for test/*.sh). make build needs none of it: CGO_ENABLED=0 works.
GOTESTFLAGS := -tags tpmsim
export GOTESTFLAGS
GOTEST   := CGO_ENABLED=1 $(GO) test $(GOTESTFLAGS)

.PHONY: all build test deps bench lint fuzz demo e2e clean deb rpm

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/passkeyd ./cmd/passkeyctl

# deps installs what the tests need (swtpm, python3-fido2, ...) when missing.
deps:
	@test/deps.sh

# -race: the daemon is concurrent (CTAPHID sessions, prompts, the control
# socket); every test runs under the race detector. -timeout: the VM tests
# boot Debian under TCG; go test's default of 10 minutes per package is too
# tight on a loaded 2-core machine (CI's limit is 90 minutes in all).
test: deps build
	$(GOTEST) -race -count=1 -timeout 60m ./...

bench: deps
	@test/bench.sh

lint:
	@test/lint.sh

fuzz:
	@test/fuzz.sh $(FUZZTIME)

# cover: ctap2's Go coverage, total and per handler function (test/cover.sh);
# go test flags such as a build tag come from GOTESTFLAGS.
.PHONY: cover
cover:
	@GOTESTFLAGS='$(GOTESTFLAGS)' test/cover.sh

demo: deps
	@test/demo/demo.sh

# e2e: the kernel HID path in a qemu VM with real clients (also part of make test).
e2e:
	@test/vm/run.sh

clean:
	rm -rf bin build

# --- packages ------------------------------------------------------------------
# make deb / make rpm: passkeyd_VERSION_amd64.deb or passkeyd-VERSION-1.x86_64.rpm
# in the current directory, built with nfpm from packaging/nfpm.yaml
# (packaging/build.sh: static binaries, completions, manual pages). The
# version is derived from git (packaging/version.sh: 0.0~gitYYYYMMDD.HASH,
# or X.Y.Z from a tag vX.Y.Z); `make deb VERSION=1.2.3` overrides it.
PKGVERSION = $(if $(filter command line environment,$(origin VERSION)),$(VERSION),$(shell packaging/version.sh))

deb rpm:
	@VERSION='$(PKGVERSION)' packaging/build.sh $@

# --- install, uninstall --------------------------------------------------------
# `make build` as yourself, then `sudo make install PREFIX=/usr`. install
# does not build: under sudo, go is often not on PATH, and root would take
# over bin/ and the Go cache. Every directory follows PREFIX: systemd, udev,
# sysusers.d and modules-load.d read /usr/local/lib/... as well as /usr/lib/...
# (checked on systemd 252), so the default PREFIX works too; uninstall needs
# the same PREFIX. The installed units' ExecStart= names $(BINDIR).
# Packagers set DESTDIR, and the *DIR variables (named as in systemd.pc and
# udev.pc) where their layout differs. Configuration in /etc (the owner) and
# the state in /var/lib/passkeyd are never touched.
BINDIR               ?= $(PREFIX)/bin
SYSTEMDSYSTEMUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSTEMDUSERUNITDIR   ?= $(PREFIX)/lib/systemd/user
UDEVRULESDIR         ?= $(PREFIX)/lib/udev/rules.d
SYSUSERSDIR          ?= $(PREFIX)/lib/sysusers.d
MODULESLOADDIR       ?= $(PREFIX)/lib/modules-load.d
# polkitd reads actions from one compiled-in directory only (polkitd 122:
# /usr/share/polkit-1/actions), so this one does not follow PREFIX.
POLKITACTIONSDIR     ?= /usr/share/polkit-1/actions
DIST                 := cmd/passkeyd/dist
# The files and the directories of their own that install creates.
INSTALLED_FILES := $(BINDIR)/passkeyd $(BINDIR)/passkeyctl \
	$(SYSTEMDSYSTEMUNITDIR)/passkeyd.service $(SYSTEMDUSERUNITDIR)/passkeyctl-agent.service \
	$(UDEVRULESDIR)/60-passkeyd.rules $(SYSUSERSDIR)/passkeyd.conf $(MODULESLOADDIR)/passkeyd.conf \
	$(POLKITACTIONSDIR)/org.passkeyd.policy

.PHONY: install uninstall

install:
	@for b in passkeyd passkeyctl; do \
		[ -x bin/$$b ] || { echo "install: no bin/$$b: run 'make build' first (as yourself, not with sudo)" >&2; exit 1; }; \
	done
	install -D -m 0755 bin/passkeyd '$(DESTDIR)$(BINDIR)/passkeyd'
	install -D -m 0755 bin/passkeyctl '$(DESTDIR)$(BINDIR)/passkeyctl'
	install -D -m 0644 /dev/null '$(DESTDIR)$(SYSTEMDSYSTEMUNITDIR)/passkeyd.service'
	sed 's|^ExecStart=/usr/bin/|ExecStart=$(BINDIR)/|' $(DIST)/passkeyd.service >'$(DESTDIR)$(SYSTEMDSYSTEMUNITDIR)/passkeyd.service'
	install -D -m 0644 /dev/null '$(DESTDIR)$(SYSTEMDUSERUNITDIR)/passkeyctl-agent.service'
	sed 's|^ExecStart=/usr/bin/|ExecStart=$(BINDIR)/|' cmd/passkeyctl/systemd/passkeyctl-agent.service >'$(DESTDIR)$(SYSTEMDUSERUNITDIR)/passkeyctl-agent.service'
	install -D -m 0644 $(DIST)/60-passkeyd.rules '$(DESTDIR)$(UDEVRULESDIR)/60-passkeyd.rules'
	install -D -m 0644 $(DIST)/passkeyd.sysusers '$(DESTDIR)$(SYSUSERSDIR)/passkeyd.conf'
	install -D -m 0644 $(DIST)/modules-load.conf '$(DESTDIR)$(MODULESLOADDIR)/passkeyd.conf'
	install -D -m 0644 $(DIST)/org.passkeyd.policy '$(DESTDIR)$(POLKITACTIONSDIR)/org.passkeyd.policy'
	@echo
	@echo "Installed. To start passkeyd, as root:"
	@echo "  systemd-sysusers passkeyd.conf     # the passkeyd user and group"
	@echo "  udevadm control --reload"
	@echo "  modprobe uhid"
	@echo "  udevadm trigger --settle --subsystem-match=misc --sysname-match=uhid"
	@echo "  udevadm trigger --settle --subsystem-match=tpmrm"
	@echo "  install -D -m 0644 cmd/passkeyd/dist/passkeyd.conf /etc/passkeyd/passkeyd.conf   # no edit on a desktop (seat mode)"
	@echo "  systemctl daemon-reload"
	@echo "  systemctl enable --now passkeyd"
	@echo "  passkeyctl info                    # Users: seat (each user at the seat has their own passkeys);"
	@echo "                                     # owner (no logind): set owner = \"NAME\" in passkeyd.conf, restart"
	@echo "then as yourself, in your desktop session:"
	@echo "  systemctl --user daemon-reload"
	@echo "  systemctl --user enable --now passkeyctl-agent"

# uninstall removes exactly the files install put there. Stop the service
# first (systemctl disable --now passkeyd); the passkeyd user, the owner
# setting and the passkeys in /var/lib/passkeyd stay.
uninstall:
	rm -f $(foreach f,$(INSTALLED_FILES),'$(DESTDIR)$(f)')
	@echo "Removed. The passkeyd user, /etc/passkeyd/passkeyd.conf and the passkeys in /var/lib/passkeyd are kept."
