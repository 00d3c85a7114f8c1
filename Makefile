# rescue: `make run` starts the listener, `make test` installs everything and runs every test tier.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3333
CAPTURES ?= ./captures

# Debian packages the tests use as real components (busybox nc, klibc ipconfig, qemu, a Debian kernel,
# mkinitramfs, dracut, mkfs.btrfs). `make deps` installs the missing ones.
DEB_PACKAGES := python3-venv busybox-static klibc-utils shellcheck socat iproute2 nftables kmod cpio zstd xz-utils lz4 \
	qemu-system-x86 initramfs-tools dracut-core btrfs-progs xfsprogs linux-image-cloud-amd64 haproxy

# What `make deb` builds the Debian package with (debhelper, dh-python, the generators of the man pages and
# bash completion, lintian), and what its test needs (debootstrap for a bookworm chroot, man-db).
DEB_BUILD_PACKAGES := dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools \
	python3-shtab python3-lz4 python3-zstandard lintian debootstrap man-db
DEB_DIR := build/deb

.PHONY: all run venv deps deb test test-fast lint bench demo clean

all: venv

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

deps:
	sh scripts/install-deps.sh $(DEB_PACKAGES) $(DEB_BUILD_PACKAGES)

# build/deb/rescue_<version>_all.deb, built with Debian's tools from a copy of the tree (dpkg-buildpackage
# writes beside the source: nothing lands in the checkout), then checked with lintian (errors fail).
# Debian's python3, whatever python3 comes first in PATH.
deb:
	sh scripts/install-deps.sh $(DEB_BUILD_PACKAGES)
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/src
	git ls-files -z --cached --others --exclude-standard | \
		tar --null -T - --ignore-failed-read -cf - | tar -C $(DEB_DIR)/src -xf -
	cd $(DEB_DIR)/src && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc --build=binary
	env PATH=/usr/sbin:/usr/bin:/sbin:/bin lintian --fail-on error $(DEB_DIR)/rescue_*_all.deb
	@ls $(DEB_DIR)/rescue_*_all.deb

run: venv
	$(BIN)/rescue listen --bind 0.0.0.0 --port $(PORT) --dir $(CAPTURES)

# Every tier: lint, unit, integration (real busybox nc, sockets, network namespaces), image builds, qemu boots.
# Every tier but the boots first, in order as always (some tests share host-wide state); then the qemu boots
# in parallel (pytest-xdist, one worker per core), sharing kernels, the sid chroot and generator images
# through .cache/rescue under file locks.
PYTEST_WORKERS ?= auto
test: deps venv lint
	$(BIN)/pytest tests -m "not vm"
	$(BIN)/pytest tests -m vm -n $(PYTEST_WORKERS) --dist worksteal

# The quick tiers only, for the edit-test loop.
test-fast: venv
	$(BIN)/pytest tests -m "not vm and not image and not deb"

lint: venv
	$(BIN)/ruff check rescue tests scripts
	$(BIN)/ruff format --check rescue tests scripts
	$(BIN)/mypy
	shellcheck -x -s sh $$(find hooks scripts rescue -name '*.sh' -o -path '*/initramfs-tools/*' -type f | sort -u)

bench: deps venv
	$(BIN)/python -m tests.bench

# A listener, a VM whose btrfs root cannot mount (libcrc32c left out), and the diagnosis; last line: the finding.
demo: deps venv
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
