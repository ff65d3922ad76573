# Build, test and run mom. Every target sets up what it needs and is safe to
# run again: Debian packages are installed only when missing, the virtualenv
# is (re)built only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
VENV_PY := $(VENV)/bin/python
# Written after a successful `pip install -e .[test]`; older than
# pyproject.toml means the install is stale.
STAMP  := $(VENV)/.installed

PYTEST_ARGS ?=

export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: all deps venv test run bench clean install runtime-deps deb

all: test

# Debian packages (build headers, dbus, polkit, libvirt, qemu, busybox).
deps:
	@bash scripts/install-deps.sh $(PYTHON)

$(VENV_PY):
	$(PYTHON) -m venv --clear $(VENV)

# Order-only on deps: packages must be present to build the C extensions,
# but checking them must not force a reinstall.
$(STAMP): pyproject.toml | deps $(VENV_PY)
	$(VENV_PY) -m pip install -e '.[test]'
	@touch $@

venv: $(STAMP)

# pytest exits 5 when it collected no test: that is a failure here too, but
# say so plainly since make only reports "Error 5".
test: venv
	@echo "$(VENV_PY) -m pytest $(PYTEST_ARGS)"
	@rc=0; $(VENV_PY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no test was collected (pytest exit 5)" >&2; fi; \
	exit $$rc

# momd on a simulated host (sim://), a private bus and momctl monitor in the
# foreground; Ctrl-C or RUN_SECONDS=N stops it.  No root needed.
run: venv
	@$(VENV_PY) scripts/run_demo.py

# Each prints its figures; the last line of each is JSON.  bus_bench needs root.
bench: venv
	$(VENV_PY) benchmarks/policy_bench.py
	$(VENV_PY) benchmarks/cycle_bench.py
	$(VENV_PY) benchmarks/bus_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .cache build dist *.egg-info
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

# --- make install -----------------------------------------------------------
# Installs the Python package (momd, momctl) under PREFIX, and the files the
# system bus, polkit and systemd look for in their fixed places (DATADIR,
# UNITDIR).  DESTDIR stages everything under another root, for packaging:
#   make install DESTDIR=/tmp/stage PREFIX=/usr
#
# momd's own dependencies (dbus-next, libvirt-python, pyudev, systemd-python)
# are not installed by pip: on Debian they are the python3-* packages, which
# `make install` first installs when missing, with the rest of the Depends:
# of debian/control (scripts/install-deps.sh --runtime; as non-root it prints
# the apt-get command and stops).  With DESTDIR nothing is installed on this
# machine: the packages belong on the machine the staged tree goes to.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
# momd looks for its shipped policies in <sys.prefix>/share/mom/policies:
# PREFIX must be the prefix of INSTALL_PYTHON for it to find them.
POLICYDIR  ?= $(PREFIX)/share/mom/policies
# dbus-daemon and polkitd only search /usr/share (and /etc), whatever PREFIX.
DATADIR    ?= /usr/share
UNITDIR    ?= $(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo /usr/lib/systemd/system)
# The Python momd runs with, named in momd's and momctl's first line.  Not
# $(PYTHON), the one `make test` builds .venv from: `python3` on PATH may be
# a pyenv or self-built Python, which does not see the python3-* packages in
# Debian's dist-packages, and momd would fail at its first import.  So
# Debian's /usr/bin/python3 wherever it exists, and on Debian even before it
# does (runtime-deps installs it).  Another Python (a venv) is fine if it
# can import the RUNTIME_MODULES: `make install` checks it can.
INSTALL_PYTHON ?= $(if $(wildcard /usr/bin/python3 /etc/debian_version),/usr/bin/python3,$(PYTHON))
# What momd imports from outside the standard library (tests check this
# against momservice's imports and debian/control).
RUNTIME_MODULES := dbus_next libvirt libvirt_qemu libvirtaio pyudev systemd.daemon systemd.journal
# --ignore-installed: never uninstall a mom installed in INSTALL_PYTHON's
# own environment (with DESTDIR, that one is not the one being installed).
PIP_INSTALL_ARGS ?= --no-deps --ignore-installed --no-warn-script-location
INSTALL    ?= install
# The Cockpit page: a manifest, its HTML, scripts and styles (no build step).
COCKPIT_FILES := $(sort $(wildcard cockpit/*.json cockpit/*.html cockpit/*.js cockpit/*.css))

# Debian's own Python installs with its "posix_local" layout, which puts a
# --prefix under <prefix>/local: for it, PREFIX=/usr/local means --prefix=/usr
# (-> /usr/local/bin, /usr/local/lib/python3.X/dist-packages, both on its
# path) and any other PREFIX uses the Debian system layout (<prefix>/bin,
# <prefix>/lib/python3/dist-packages).  Other Pythons get --prefix=$(PREFIX)
# as is; the package is importable when PREFIX is that Python's prefix (e.g.
# a venv: INSTALL_PYTHON=/opt/mom/bin/python PREFIX=/opt/mom).
# Debian's Python also builds the package with Debian's setuptools and wheel
# (python3-pip depends on both) instead of fetching them from PyPI.
DEBIAN_PYTHON = $(shell $(INSTALL_PYTHON) -c 'import sysconfig; print("yes" if "deb_system" in sysconfig.get_scheme_names() else "")' 2>/dev/null)
PIP_PREFIX_ARGS = $(if $(DEBIAN_PYTHON),$(if $(filter /usr/local /usr/local/,$(PREFIX)),--prefix=/usr,--prefix=$(PREFIX)),--prefix=$(PREFIX))
PIP_ENV = $(if $(DEBIAN_PYTHON),$(if $(filter /usr/local /usr/local/,$(PREFIX)),,DEB_PYTHON_INSTALL_LAYOUT=deb))
PIP_BUILD_ARGS = $(if $(DEBIAN_PYTHON),--no-build-isolation)

# Debian packages momd needs at run time, when installing for this machine.
# DEBIAN_PYTHON is worked out again for the install recipe, after this has
# installed python3 if it was missing.
runtime-deps:
	@if [ -n "$(DEBIAN_PYTHON)" ] || [ "$(INSTALL_PYTHON)" = /usr/bin/python3 ]; then \
		bash scripts/install-deps.sh --runtime; \
	else \
		echo "make install: $(INSTALL_PYTHON) is not Debian's python3: it must be able to import $(RUNTIME_MODULES) (pip install dbus-next libvirt-python pyudev systemd-python)"; \
	fi

# pip builds in the source directory (build/, *.egg-info): build from a copy
# instead, so that installing leaves the tree as it was.
install: $(if $(DESTDIR),,runtime-deps)
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	tar -cf - --exclude=__pycache__ pyproject.toml README.md momservice | tar -xf - -C "$$tmp" && \
	$(PIP_ENV) $(INSTALL_PYTHON) -m pip install $(PIP_INSTALL_ARGS) $(PIP_BUILD_ARGS) $(PIP_PREFIX_ARGS) $(if $(DESTDIR),--root=$(DESTDIR)) "$$tmp"
	test -x $(DESTDIR)$(BINDIR)/momd || { echo "make install: momd is not in $(DESTDIR)$(BINDIR): check PREFIX/INSTALL_PYTHON" >&2; exit 1; }
	$(INSTALL) -d $(DESTDIR)$(DATADIR)/dbus-1/system.d $(DESTDIR)$(DATADIR)/dbus-1/system-services \
		$(DESTDIR)$(DATADIR)/polkit-1/actions $(DESTDIR)$(UNITDIR) $(DESTDIR)$(POLICYDIR)
	$(INSTALL) -m 0644 dbus/org.ovirt.mom1.conf $(DESTDIR)$(DATADIR)/dbus-1/system.d/org.ovirt.mom1.conf
	$(INSTALL) -m 0644 dbus/org.ovirt.mom1.service $(DESTDIR)$(DATADIR)/dbus-1/system-services/org.ovirt.mom1.service
	$(INSTALL) -m 0644 polkit/org.ovirt.mom1.policy $(DESTDIR)$(DATADIR)/polkit-1/actions/org.ovirt.mom1.policy
	$(INSTALL) -D -m 0644 polkit/50-org.ovirt.mom1-manage.rules.example $(DESTDIR)$(PREFIX)/share/doc/mom/examples/50-org.ovirt.mom1-manage.rules.example
	$(INSTALL) -D -m 0644 contrib/grafana/mom-dashboard.json $(DESTDIR)$(PREFIX)/share/doc/mom/examples/mom-dashboard.json
	sed 's|^ExecStart=/usr/bin/momd\b|ExecStart=$(BINDIR)/momd|' systemd/momd.service > $(DESTDIR)$(UNITDIR)/momd.service.tmp
	grep -q '^ExecStart=$(BINDIR)/momd$$' $(DESTDIR)$(UNITDIR)/momd.service.tmp
	chmod 0644 $(DESTDIR)$(UNITDIR)/momd.service.tmp
	mv -f $(DESTDIR)$(UNITDIR)/momd.service.tmp $(DESTDIR)$(UNITDIR)/momd.service
	$(INSTALL) -m 0644 policies/*.policy $(DESTDIR)$(POLICYDIR)/
# MoM's algorithm, optional (policy-dir = $(POLICYDIR)/mom); the files it
# shares with the defaults stay links to them, as in the source tree.
	$(INSTALL) -d $(DESTDIR)$(POLICYDIR)/mom
	for f in policies/mom/*.policy; do \
		if [ -L "$$f" ]; then ln -sfn "$$(readlink "$$f")" $(DESTDIR)$(POLICYDIR)/mom/"$${f##*/}"; \
		else $(INSTALL) -m 0644 "$$f" $(DESTDIR)$(POLICYDIR)/mom/; fi; \
	done
# The Cockpit page ("Memory" in Cockpit's menu): Cockpit's bridge looks for
# packages in <XDG data dir>/cockpit/, /usr/share among them.
	$(INSTALL) -d $(DESTDIR)$(DATADIR)/cockpit/mom
	$(INSTALL) -m 0644 $(COCKPIT_FILES) $(DESTDIR)$(DATADIR)/cockpit/mom/
# Installed for this machine: momd must start, not die at its first import
# (a pyenv INSTALL_PYTHON, a PREFIX outside its path).
	@if [ -z "$(DESTDIR)" ]; then \
		missing=; for m in momservice $(RUNTIME_MODULES); do \
			(cd / && $(INSTALL_PYTHON) -c "import $$m") >/dev/null 2>&1 || missing="$$missing $$m"; \
		done; \
		if [ -n "$$missing" ]; then \
			echo "make install: $(INSTALL_PYTHON) cannot import:$$missing; momd would not start" >&2; exit 1; \
		fi; \
		$(BINDIR)/momd --help >/dev/null || { echo "make install: $(BINDIR)/momd --help failed" >&2; exit 1; }; \
		echo "make install: done; start it with: systemctl daemon-reload && systemctl enable --now momd"; \
	fi

# --- make deb ---------------------------------------------------------------
# dist/mom_<version>_all.deb, built by debhelper and dh-python (pybuild's
# pyproject plugin) from a copy of the tree in a temporary directory, so that
# the tree stays as it was; checked by lintian.  The build dependencies are
# installed first when missing (scripts/install-deps.sh --deb: the
# Build-Depends: of debian/control, and lintian).  Rebuilt only when a file
# it is made from changes, or is added or removed.
#
# The version is momservice.__version__ alone; debian/changelog must have
# an entry for it (a native package: no Debian revision).
VERSION   := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' momservice/__init__.py)
DIST      ?= dist
DEB       := $(DIST)/mom_$(VERSION)_all.deb
DEB_TREE  := pyproject.toml README.md momservice debian dbus polkit systemd policies cockpit contrib
# The directories too: adding or removing a file changes its directory.
DEB_FILES := $(shell find $(DEB_TREE) -name __pycache__ -prune -o -print)
# Debian's own tools, whatever comes first on PATH here (pybuild runs
# `python3.11`, which a pyenv shim would otherwise answer).
DEB_ENV   := env -u PYTHONPATH -u VIRTUAL_ENV -u PYTHONHOME PATH=/usr/sbin:/usr/bin:/sbin:/bin

deb: $(DEB)

$(DEB): $(DEB_FILES)
	@bash scripts/install-deps.sh --deb
	@test -n "$(VERSION)" || { echo "make deb: no __version__ in momservice/__init__.py" >&2; exit 1; }
	@changelog=$$(sed -n '1s/^mom (\([^)]*\)).*/\1/p' debian/changelog); \
	if [ "$$changelog" != "$(VERSION)" ]; then \
		echo "make deb: debian/changelog is at '$$changelog' but momservice.__version__ is $(VERSION): add an entry (dch -v $(VERSION))" >&2; \
		exit 1; \
	fi
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	mkdir "$$tmp/mom-$(VERSION)" && \
	tar -cf - --exclude=__pycache__ $(DEB_TREE) | tar -xf - -C "$$tmp/mom-$(VERSION)" && \
	(cd "$$tmp/mom-$(VERSION)" && $(DEB_ENV) dpkg-buildpackage --build=binary --no-sign) && \
	$(DEB_ENV) lintian --fail-on error "$$tmp/mom_$(VERSION)_all.deb" && \
	mkdir -p $(DIST) && cp "$$tmp/mom_$(VERSION)_all.deb" $(DEB).tmp && mv -f $(DEB).tmp $(DEB)
	@echo "make deb: $(DEB)"
