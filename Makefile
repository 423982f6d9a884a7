# Training Deep Networks: build the book and test the companion package.
#   make book    set up .venv if needed, execute every chapter with papermill, render _build/html
#   make test    set up .venv if needed, build the book in the quick profile, run the whole test suite
#   make mutate  mutation testing of the core modules against their own unit tests (mutmut; slow, not in CI)
# Overridable: make book PROFILE=full DEVICE=cuda SEED=0   (PROFILE=auto: full with a GPU, quick without)
#              make book JOBS=2    chapters executed at once (default: the number of cores)
#              make book FORCE=1   execute every chapter again, ignoring the build cache
# Every chapter, test process and lab kernel computes with DLTRICKS_THREADS threads (default 1): the same
# numbers everywhere, and no 4x slow-down when another process holds a core (see dltricks/threads.py).

SHELL      := /bin/bash
PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
PROFILE    ?= auto
DEVICE     ?= auto
SEED       ?= 0
JOBS       ?= $(shell nproc 2>/dev/null || echo 1)
FORCE      ?=
DLTRICKS_THREADS ?= 1
export DLTRICKS_THREADS
BUILD_OPTS := --jobs $(JOBS) $(if $(FORCE),--force)
# A published build passes the repository's URL (REPOSITORY_URL=https://github.com/...) for its buttons.
REPOSITORY_URL ?=
export DLTRICKS_REPOSITORY_URL := $(REPOSITORY_URL)
# The CPU wheel of torch, pinned. With a GPU, install your CUDA build of torch into .venv first
# (or pass TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'); see README.
TORCH_SPEC ?= torch==2.13.0
EXTRAS     ?= keras,book,dev
STAMP      := $(VENV)/.installed-$(shell echo '$(EXTRAS)' | tr ',' '-')
TEST_BUILD := _build/test

# MathJax for maths that renders without a network: the official npm package, its integrity checked.
# Without npm the book still builds and loads MathJax from its CDN when read online.
MATHJAX_VERSION   := 3.2.2
MATHJAX_INTEGRITY := Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==
MATHJAX           := $(VENV)/share/mathjax

.PHONY: install book test bench lab notebooks data lint clean mathjax mutate

install: $(STAMP) mathjax

mathjax: $(MATHJAX)/tex-mml-chtml.js

$(MATHJAX)/tex-mml-chtml.js:
	@if command -v npm >/dev/null 2>&1; then \
		tmp=$$(mktemp -d) && (cd $$tmp && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null) && \
		test "$$(openssl dgst -sha512 -binary $$tmp/mathjax-$(MATHJAX_VERSION).tgz | base64 -w0)" = "$(MATHJAX_INTEGRITY)" && \
		mkdir -p $(MATHJAX) && tar -xzf $$tmp/mathjax-$(MATHJAX_VERSION).tgz -C $(MATHJAX) --strip-components=2 package/es5 && \
		rm -rf $$tmp && echo "MathJax $(MATHJAX_VERSION) in $(MATHJAX)" || { rm -rf $$tmp $(MATHJAX); \
		echo "MathJax could not be fetched or failed its integrity check: maths will load from the CDN"; }; \
	else echo "npm not found: the book's maths will load MathJax from its CDN (needs a network to read)"; fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch before the package, so the dependency `torch>=2.2` is already met by the build chosen here.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@# A kernel spec inside the venv, so papermill and JupyterLab run chapters with this environment.
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" >/dev/null
	@touch $@

data: $(STAMP)
	$(PY) -m dltricks.data

book: $(STAMP) mathjax
	$(PY) tools/build_book.py --profile $(PROFILE) --device $(DEVICE) --seed $(SEED) $(BUILD_OPTS)

# The tests check the quick profile's claims, so they build their own copy of the book in $(TEST_BUILD)
# and never overwrite the one `make book` made.
test: $(STAMP) mathjax
	$(PY) tools/build_book.py --profile quick --device $(DEVICE) --seed $(SEED) --build-dir $(TEST_BUILD) $(BUILD_OPTS)
	@# One test process per core, one thread each (pytest-xdist); the slowest tests are listed at the end.
	DLTRICKS_BUILD_DIR=$(TEST_BUILD) $(PY) -m pytest -n $(JOBS) --durations=15
	@$(PY) tools/build_book.py --times --build-dir $(TEST_BUILD)

# Hot paths against the built-ins (pytest-benchmark); timings belong here, not in unit tests.
bench: $(STAMP)
	$(PY) -m pytest benchmarks --benchmark-only -p no:cacheprovider

# Each core module's unit tests against small planted bugs, one module and one process at a time; work dirs
# in _build/mutate; prints killed / counted per module (equivalent mutants listed in tools/mutate.py).
# make mutate MODULES="clip sgd" runs only those; tools/mutate.py --recheck reruns only the last survivors.
mutate: $(STAMP)
	nice -n 19 $(PY) tools/mutate.py $(MODULES)

lint: $(STAMP)
	$(PY) -m ruff check companion tests tools benchmarks
	$(PY) -m ruff format --check companion tests tools benchmarks

lab: $(STAMP)
	@# The kernel the chapters name (a .venv made before its name changed would make the lab rewrite them).
	@$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" >/dev/null
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@# Open the chapters' .md files as notebooks on double-click (Jupytext's viewer).
	@echo '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}}}' \
		> $(VENV)/share/jupyter/lab/settings/overrides.json
	@# Kernels inherit the build's thread budget, so a chapter run here gives the book's numbers.
	cd book && env $$(../$(PY) -c "from dltricks.threads import thread_env; \
		print(' '.join(f'{k}={v}' for k, v in thread_env($(DLTRICKS_THREADS)).items()))") \
		../$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root)

notebooks: $(STAMP)
	@mkdir -p _build/notebooks
	@for f in book/*.md; do \
		if grep -q '```{code-cell}' $$f; then \
			$(PY) -m jupytext --quiet --to ipynb -o _build/notebooks/$$(basename $${f%.md}).ipynb $$f; fi; done
	@echo "notebooks written to _build/notebooks/"

clean:
	rm -rf _build
