# Two commands set up a fresh machine and do the job: `make demo` and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTHON  ?= python3.11
# Debian packages: TTS engines for the embedded corpus, real control speech, audio tools.
# libttspico-utils and mbrola* are the dev/test-only "unseen engines" (no train voice uses them);
# they live in Debian's contrib (mbrola) and non-free (pico, mbrola voices) components.
APT_PKGS := espeak-ng flite festival festvox-us-slt-hts festvox-kdlpc16k festvox-kallpc16k \
            libttspico-utils mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 \
            pocketsphinx-testdata sox libsndfile1 ffmpeg chromium chromium-driver
STAMP   := $(VENV)/.installed

.PHONY: setup system-deps demo test test-fast lint clean

setup: system-deps $(STAMP)

system-deps:
	@PKGS="$(APT_PKGS)" bash scripts/system_deps.sh

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(PY) -m asr_lora.train +recipe=sg_english

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf outputs multirun .pytest_cache
