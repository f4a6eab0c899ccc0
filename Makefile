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

.PHONY: install report test golden benchmark clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(PIP_TORCH_ARGS) "$(TORCH_SPEC)"
	$(PIP) install -q -c constraints.txt -e ".[dev,dp]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	mkdir -p $(VENV)/etc/ipython && echo 'c.IPKernelApp.log_level = "ERROR"  # no start-up warnings from papermill by hand' > $(VENV)/etc/ipython/ipython_kernel_config.py
	touch $@

## Train and write all reports of the default run: reports/$(NAME)/index.html
report: install
	$(BIN)/genlab run --name $(NAME)

## Unit tests + nbval over the committed notebooks (their stored outputs are the golden record)
test: install
	$(BIN)/python -m pytest tests notebooks --nbval-lax $(PYTEST_ARGS)

## Re-execute the committed notebooks with their defaults to refresh their stored outputs
golden: install
	$(BIN)/genlab golden

## Speed benchmarks (each prints JSON; ratios are measured side by side in one process)
benchmark: install
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf reports/*/ reports/.staging .pytest_cache
