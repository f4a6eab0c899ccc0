# genlab — set-up and main jobs. `make report` and `make test` install into .venv when needed.
PYTHON      ?= $(shell command -v python3.11 || command -v python3)
VENV        := .venv
BIN         := $(VENV)/bin
# The CPU build of torch goes in first, so nothing pulls a multi-GB CUDA build. Elsewhere add
# PIP_TORCH_ARGS="--index-url <PyTorch's CPU wheel index>".
TORCH_SPEC  ?= torch==2.13.0
PIP_TORCH_ARGS ?=
PIP         := $(BIN)/python -m pip --disable-pip-version-check
STAMP       := $(VENV)/.installed
NAME        ?= default
PYTEST_ARGS ?=

.PHONY: install report test test-fast test-other-machine golden benchmark clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(PIP_TORCH_ARGS) "$(TORCH_SPEC)"
	$(PIP) install -q -c constraints.txt -e ".[dev,dp,serve,cost,ops,security]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	mkdir -p $(VENV)/etc/ipython && echo 'c.IPKernelApp.log_level = "ERROR"  # no start-up warnings from papermill by hand' > $(VENV)/etc/ipython/ipython_kernel_config.py
	touch $@

## Train and write all reports of the default run: reports/$(NAME)/index.html
report: install
	$(BIN)/genlab run --name $(NAME)

## Every test: unit tests, the default run against tests/golden/, nbval over the notebooks
test: install
	$(BIN)/python -m pytest tests notebooks --nbval-lax $(PYTEST_ARGS)

## Unit tests only: no notebook execution, no real training run (marked slow)
test-fast: install
	$(BIN)/python -m pytest tests -m "not slow" $(PYTEST_ARGS)

## What another machine computes must pass too: the fast lane with AVX2 kernels and MKL's own
## code path, then the default run against tests/golden/ with two threads as well
OTHER_ISA := ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AUTO
test-other-machine: install
	$(OTHER_ISA) $(BIN)/python -m pytest tests -m "not slow" $(PYTEST_ARGS)
	$(OTHER_ISA) GENLAB_THREADS=2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 \
	    $(BIN)/python -m pytest tests -m golden $(PYTEST_ARGS)

## Refresh the committed notebooks' stored outputs and the golden headline numbers
## (tests/golden/: the default run over 5 seeds sets each number's tolerance)
golden: install
	$(BIN)/genlab golden

## Speed benchmarks (each prints JSON; ratios are measured side by side in one process)
benchmark: install
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf reports/*/ reports/.staging .pytest_cache
