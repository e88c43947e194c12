# NormLab: `make test` and `make demo` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup data test test-slow test-all demo clean

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

test: setup
	$(PY) -m pytest -m "not slow"

test-slow: setup
	$(PY) -m pytest -m slow

test-all: setup
	$(PY) -m pytest

# The default configuration (bn, resnet20, Fashion-MNIST) at CPU scale: 4 epochs on a 12k-image subset.
demo: setup
	$(PY) train.py trainer.max_epochs=4 data.train_subset=12000 data.batch_size=64 optim.warmup_epochs=0.25

clean:
	rm -rf $(VENV) .pytest_cache
