# Callrec: `make demo` sets everything up and records the bundled captures; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO_HOME := demo-home
# The demo's compliance key file lives outside the data directory, as it must on an appliance.
DEMO_KEY  := demo-compliance.key
DEMO_PASS := CALLREC_PASSPHRASE=demo-passphrase

# How the package goes into the venv: editable for development (edits take effect at once), a plain
# install in CI (CI=true), so that the suite runs against what `pip install .` really installs.
INSTALL ?= $(if $(CI),dist,editable)
PIP_TARGET = $(if $(filter dist,$(INSTALL)),.,-e .)

.PHONY: demo test install test-install system-deps lint typecheck-tree install-check bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(PIP_TARGET)'[portal]'
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(BIN)/python -m pip install -q $(PIP_TARGET)'[test,portal,fleet]'
	touch $@

install: $(VENV)/.installed

test-install: $(VENV)/.test-installed

# Debian packages the tests need (tshark for the Wireshark cross-checks, chromium and its driver for
# the portal's browser test, the lab's softphones for the live-capture tests, systemd-analyze for the
# unit files), installed when missing and running as root; otherwise those tests say why they are skipped.
LAB_DIR ?= ../shared/lab
system-deps:
	@if command -v tshark >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
			install -y -q --no-install-recommends tshark; \
	else echo "note: tshark is missing and this is not root: tshark cross-checks will be skipped"; fi
	@if [ -x /usr/bin/chromium ] && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
			install -y -q --no-install-recommends chromium chromium-driver; \
	else echo "note: chromium is missing and this is not root: the portal's browser test will be skipped"; fi
	@if command -v baresip >/dev/null 2>&1 && command -v sipp >/dev/null 2>&1 && command -v tcpdump >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && [ -f $(LAB_DIR)/install.sh ]; then bash $(LAB_DIR)/install.sh; \
	else echo "note: the lab's softphones are missing (or no $(LAB_DIR)): live lab tests will be skipped"; fi
	@if command -v systemd-analyze >/dev/null 2>&1 && command -v ip >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
			install -y -q --no-install-recommends systemd iproute2 libpcap0.8; \
	else echo "note: systemd-analyze or iproute2 is missing: unit checks and live tests will be skipped"; fi
	@if command -v ffprobe >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
			install -y -q --no-install-recommends ffmpeg; \
	else echo "note: ffprobe is missing: the MP3 length check against FFmpeg will be skipped"; fi

demo: install
	rm -rf $(DEMO_HOME) $(DEMO_KEY) demo-call-1.wav
	$(DEMO_PASS) $(BIN)/callrec --home $(DEMO_HOME) keys init --private-key $(DEMO_KEY)
	$(BIN)/callrec --home $(DEMO_HOME) import pcaps/demo/*
	$(BIN)/callrec --home $(DEMO_HOME) calls list
	$(BIN)/callrec --home $(DEMO_HOME) calls show 1
	$(BIN)/callrec --home $(DEMO_HOME) calls verify
	$(DEMO_PASS) $(BIN)/callrec --home $(DEMO_HOME) calls export 1 --key $(DEMO_KEY) --out demo-call-1.wav
	$(BIN)/callrec --home $(DEMO_HOME) audit list
	$(BIN)/callrec --home $(DEMO_HOME) audit verify
	@echo "Demo recording: $(CURDIR)/demo-call-1.wav (left: caller, right: callee), unsealed with $(DEMO_KEY)"

# -P: the checkout's folders are not importable as top-level modules; callrec comes from the install.
test: test-install system-deps
	$(BIN)/python -P -m pytest -q -p no:cacheprovider

# mypy sees callrec.* through links under build/typecheck (tools/typecheck_tree.sh).
typecheck-tree:
	sh tools/typecheck_tree.sh

lint: test-install typecheck-tree
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# A plain install into a fresh venv, used from another directory, as a user would (.ci/run runs it).
install-check:
	bash tools/install_check.sh

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build $(DEMO_HOME) $(DEMO_KEY) demo-call-1.wav bench/out .pytest_cache .mypy_cache .ruff_cache *.egg-info
