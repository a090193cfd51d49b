# healgym: two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
export RAY_AUTH_MODE ?= disabled

.PHONY: install run test bench zoo lint clean strip-notebooks

install: $(STAMP)

# Reinstall only when the project's dependency files change: a second `make install` is a no-op.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

run: install
	$(PY) experiments/random_chaos.py
	$(PY) experiments/evaluate.py telemetry.dataset=data/sample/dataset \
	  'eval_scenarios=[null,configs/scenarios/bad_deploy_then_surge.yaml,configs/scenarios/leak_cascade.yaml,configs/scenarios/data_incidents.yaml]' \
	  episodes=200 qlearning_zoo=zoo/qlearning \
	  'policies=[qlearning,ppo,ppo_history,specialists,expert,runbook,oracle,random,noop]' \
	  ppo_zoo=zoo/ppo ppo_history_zoo=zoo/ppo_history specialists_zoo=zoo/specialists

# the notebooks run top to bottom too (nbmake), on their own small data
test: install
	bash scripts/system-deps.sh
	$(PY) -m pytest -n 2 --dist loadgroup -q --nbmake tests notebooks

# the reference policies under zoo/ (trained, evaluated, with their cards)
zoo: install
	$(PY) experiments/zoo.py

bench: install
	$(PY) benchmarks/bench.py --out results/bench.json

lint: install
	$(VENV)/bin/ruff check healgym agents experiments tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports  # the layer contracts in pyproject.toml (also a test)

# notebooks are kept in git without outputs (tests/test_notebooks.py checks)
strip-notebooks: install
	$(VENV)/bin/nbstripout --keep-id notebooks/*.ipynb

clean:
	rm -rf $(VENV) results data/sample .pytest_cache
