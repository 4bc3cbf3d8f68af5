# Build and install mcsd the way the packages do.
#   make                      release build of mcsd and mcsctl, and their man pages
#   make install DESTDIR=/tmp/root PREFIX=/usr
#   make install-files BIN=target/debug DESTDIR=...   (builds only the man pages; tests use it)
PREFIX      ?= /usr
BINDIR      ?= $(PREFIX)/bin
SYSCONFDIR  ?= /etc
DATADIR     ?= $(PREFIX)/share
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
HOOKSDIR    ?= $(DATADIR)/containers/oci/hooks.d
MANDIR      ?= $(DATADIR)/man
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
ZSHCOMPDIR  ?= $(DATADIR)/zsh/site-functions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d
CARGO       ?= cargo
BIN         ?= target/release
# The man pages are rendered from the binaries' clap definitions by two
# examples (server/examples/mcsd-man.rs, client/examples/mcsctl-man.rs),
# never installed, so neither shipped binary links clap_mangen. `make man`
# writes them into MANBUILD; cargo builds the generators with the profile
# of BIN (dev for a .../debug directory, else release), whose dependencies
# are already built.
MANBUILD    ?= target/man
MANPROFILE  ?= $(if $(filter debug,$(notdir $(patsubst %/,%,$(BIN)))),dev,release)

.PHONY: all build man install install-files policy install-policy dist
SELINUX_DEVEL ?= /usr/share/selinux/devel/Makefile
SELINUXTYPE ?= targeted
VERSION     := $(shell sed -n 's/^Version: *//p' deploy/mcsd.spec)
DISTDIR     ?= .
all: build

build:
	$(CARGO) build --release --locked -p mcsd -p mcs-client
	$(MAKE) man MANPROFILE=release

man:
	$(CARGO) run --profile $(MANPROFILE) --locked -q -p mcsd --example mcsd-man -- $(MANBUILD)
	$(CARGO) run --profile $(MANPROFILE) --locked -q -p mcs-client --example mcsctl-man -- $(MANBUILD)

install: build install-files

install-files: man
	install -D -m 0755 $(BIN)/mcsd $(DESTDIR)$(BINDIR)/mcsd
	install -D -m 0755 $(BIN)/mcsctl $(DESTDIR)$(BINDIR)/mcsctl
	install -D -m 0644 deploy/systemd/mcsd.service $(DESTDIR)$(UNITDIR)/mcsd.service
	install -D -m 0644 deploy/systemd/mcsd.socket $(DESTDIR)$(UNITDIR)/mcsd.socket
	install -D -m 0644 deploy/systemd/mcsd-follow@.service $(DESTDIR)$(UNITDIR)/mcsd-follow@.service
	sed -i 's|/usr/bin/mcsctl|$(BINDIR)/mcsctl|' $(DESTDIR)$(UNITDIR)/mcsd-follow@.service
	sed -i 's|/usr/bin/mcsd|$(BINDIR)/mcsd|' $(DESTDIR)$(UNITDIR)/mcsd.service
	install -D -m 0644 deploy/sysusers.d/mcsd.conf $(DESTDIR)$(SYSUSERSDIR)/mcsd.conf
	install -D -m 0644 deploy/tmpfiles.d/mcsd.conf $(DESTDIR)$(TMPFILESDIR)/mcsd.conf
	install -D -m 0640 deploy/mcsd.toml $(DESTDIR)$(SYSCONFDIR)/mcsd/mcsd.toml
	install -D -m 0644 deploy/oci-hooks/mcsd-record.json $(DESTDIR)$(HOOKSDIR)/mcsd-record.json
	sed -i 's|/usr/bin/mcsctl|$(BINDIR)/mcsctl|' $(DESTDIR)$(HOOKSDIR)/mcsd-record.json
	install -D -m 0644 $(MANBUILD)/mcsd.8 $(DESTDIR)$(MANDIR)/man8/mcsd.8
	install -D -m 0644 $(MANBUILD)/mcsctl.1 $(DESTDIR)$(MANDIR)/man1/mcsctl.1
	install -d $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	$(BIN)/mcsctl completions bash > $(DESTDIR)$(BASHCOMPDIR)/mcsctl
	$(BIN)/mcsctl completions zsh > $(DESTDIR)$(ZSHCOMPDIR)/_mcsctl
	$(BIN)/mcsctl completions fish > $(DESTDIR)$(FISHCOMPDIR)/mcsctl.fish

# mcsd's SELinux policy module (needs selinux-policy-dev / -devel).
policy:
	$(MAKE) -C policy -f $(SELINUX_DEVEL) mcsd.pp

# The module as the mcsd-selinux RPM ships it: bzip2-compressed (semodule
# reads it so), with the interface file for policies that use mcsd's.
install-policy: policy
	install -d $(DESTDIR)$(DATADIR)/selinux/packages/$(SELINUXTYPE)
	bzip2 -9 -c policy/mcsd.pp > $(DESTDIR)$(DATADIR)/selinux/packages/$(SELINUXTYPE)/mcsd.pp.bz2
	install -D -m 0644 policy/mcsd.if $(DESTDIR)$(DATADIR)/selinux/devel/include/services/mcsd.if

# The source tarball the RPM spec names (Source0): the committed tree (git
# archive of HEAD), or outside a git checkout (an unpacked tarball, the
# fresh-machine test's root) the tree as it is, without build output.
dist:
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		git archive --format=tar.gz --prefix=mcsd-$(VERSION)/ -o $(DISTDIR)/mcsd-$(VERSION).tar.gz HEAD; \
	else \
		tmp=$$(mktemp) && tar -czf $$tmp --exclude=./target --exclude=./.mcsd-dev \
			--exclude=./policy/tmp --exclude='./policy/*.pp' --exclude='./mcsd-*.tar.gz' \
			--transform 's,^\.,mcsd-$(VERSION),' . && \
		chmod 0644 $$tmp && mv $$tmp $(DISTDIR)/mcsd-$(VERSION).tar.gz; \
	fi
