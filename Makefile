# Two entry points: `make demo` and `make test`. Both create .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.plmkit-installed

.PHONY: demo test install chromium bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU wheel first, so nothing below pulls a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# the playground test drives Debian's chromium through Playwright (whose own browser download needs
# the internet); installed once, quietly, when missing
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
	  || echo "make: could not install chromium (apt-get install chromium, as root): the playground test needs it"; }

install: $(STAMP) chromium

demo: $(STAMP)
	$(PY) -m plmkit.demo

test: $(STAMP) chromium
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/encoder_inference.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
