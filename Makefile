# The two commands: `make run` and `make test`. Both create the environment first if it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/default.yaml
PYTEST_ARGS ?=

.PHONY: install run test test-fast bench docs clean

$(VENV)/.installed: pyproject.toml scripts/install.sh
	VENV=$(VENV) bash scripts/install.sh
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/curate run $(CONFIG)

# pytest exit 5 means no tests were collected: that is a broken suite, not a pass.
test: install
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5) - failing"; exit 1; fi; \
	exit $$rc

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	EXTRAS=bench VENV=$(VENV) bash scripts/install.sh
	for b in filters dedup score cluster proxy mixture; do $(PY) bench/$$b.py || exit 1; done

docs: install
	$(PY) scripts/update_readme.py

clean:
	rm -rf runs .pytest_cache
