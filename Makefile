# Two commands on a fresh machine:  `make run` (main job)  and  `make test` (test suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
WORKDIR ?= workdirs/digits_mlp

.PHONY: run test theory bench venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

# Main job: an MLP on the offline scikit-learn digits set; metrics, checkpoint and plots land in $(WORKDIR).
run: venv
	$(PY) -m experiments.main --config=experiments/configs/erm.py --workdir=$(WORKDIR)

test: venv
	$(PY) -m pytest -q -n 2 --dist loadfile

theory: venv
	$(PY) -m theory_checks.run_all

bench: venv
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) workdirs
