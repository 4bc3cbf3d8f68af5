# Build and install mcsd the way the packages do.
#   make                      release build of mcsd and mcsctl
#   make install DESTDIR=/tmp/root PREFIX=/usr
#   make install-files BIN=target/debug DESTDIR=...   (no build; tests use it)
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

.PHONY: all build install install-files policy
SELINUX_DEVEL ?= /usr/share/selinux/devel/Makefile
all: build

build:
	$(CARGO) build --release --locked -p mcsd -p mcs-client

install: build install-files

install-files:
	install -D -m 0755 $(BIN)/mcsd $(DESTDIR)$(BINDIR)/mcsd
	install -D -m 0755 $(BIN)/mcsctl $(DESTDIR)$(BINDIR)/mcsctl
	install -D -m 0644 deploy/systemd/mcsd.service $(DESTDIR)$(UNITDIR)/mcsd.service
	install -D -m 0644 deploy/systemd/mcsd.socket $(DESTDIR)$(UNITDIR)/mcsd.socket
	sed -i 's|/usr/bin/mcsd|$(BINDIR)/mcsd|' $(DESTDIR)$(UNITDIR)/mcsd.service
	install -D -m 0644 deploy/sysusers.d/mcsd.conf $(DESTDIR)$(SYSUSERSDIR)/mcsd.conf
	install -D -m 0644 deploy/tmpfiles.d/mcsd.conf $(DESTDIR)$(TMPFILESDIR)/mcsd.conf
	install -D -m 0640 deploy/mcsd.toml $(DESTDIR)$(SYSCONFDIR)/mcsd/mcsd.toml
	install -D -m 0644 deploy/oci-hooks/mcsd-release.json $(DESTDIR)$(HOOKSDIR)/mcsd-release.json
	sed -i 's|/usr/bin/mcsctl|$(BINDIR)/mcsctl|' $(DESTDIR)$(HOOKSDIR)/mcsd-release.json
	install -d $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man1
	$(BIN)/mcsd --man > $(DESTDIR)$(MANDIR)/man8/mcsd.8
	$(BIN)/mcsctl man > $(DESTDIR)$(MANDIR)/man1/mcsctl.1
	install -d $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	$(BIN)/mcsctl completions bash > $(DESTDIR)$(BASHCOMPDIR)/mcsctl
	$(BIN)/mcsctl completions zsh > $(DESTDIR)$(ZSHCOMPDIR)/_mcsctl
	$(BIN)/mcsctl completions fish > $(DESTDIR)$(FISHCOMPDIR)/mcsctl.fish

# mcsd's SELinux policy module (needs selinux-policy-dev / -devel).
policy:
	$(MAKE) -C policy -f $(SELINUX_DEVEL) mcsd.pp
