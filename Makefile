# NormLab: `make test` and `make demo` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup data browser test test-slow test-all demo clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

# Fashion-MNIST from Debian's package where apt and root are available; otherwise
# torchvision downloads it on first use.
data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else echo "note: $(FMNIST_DIR) not found and apt-get unavailable; torchvision will download Fashion-MNIST"; fi

setup: $(STAMP) data

# Debian's Chromium and its driver, for the report's browser test.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else echo "note: chromium/chromedriver not found; the browser test will be skipped"; fi

test: setup
	$(PY) -m pytest -m "not slow"

test-slow: setup browser
	$(PY) -m pytest -m slow

test-all: setup browser
	$(PY) -m pytest

# The quick study (bn/ln/in/gn x batch 2/8/32 x 3 seeds on Fashion-MNIST, CPU scale), then its
# report, with every cell's configuration timed in turns. Relaunching skips completed runs.
demo: setup
	$(PY) train.py -m experiment=quick
	$(PY) report.py runs/quick timing=true

clean:
	rm -rf $(VENV) .pytest_cache
