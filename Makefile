# The two commands: `make run` and `make test`. Both create the environment first if it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/default.yaml
PYTEST_ARGS ?=

.PHONY: install test-deps run test test-fast bench docs clean image image-test image-clean

$(VENV)/.installed: pyproject.toml scripts/install.sh
	VENV=$(VENV) bash scripts/install.sh
	touch $@

install: $(VENV)/.installed

# What the tests need beyond the project (test extra, headless Chromium); what cannot install here
# is reported in one line and recorded in $(VENV)/test-skips.txt (see scripts/install_test_deps.sh).
test-deps: install
	VENV=$(VENV) bash scripts/install_test_deps.sh

run: install
	$(VENV)/bin/curate run $(CONFIG)

# pytest exit 5 means no tests were collected: that is a broken suite, not a pass.
test: test-deps
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5) - failing"; exit 1; fi; \
	exit $$rc

test-fast: test-deps
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	EXTRAS=bench VENV=$(VENV) bash scripts/install.sh
	for b in filters dedup score cluster proxy mixture pii; do $(PY) bench/$$b.py || exit 1; done

docs: install
	$(PY) scripts/update_readme.py

clean:
	rm -rf runs .pytest_cache

# The Docker image (curate:cpu): docker build where an engine answers, else buildah (apt-installed
# as root when missing), on a debootstrap base when the base image cannot be pulled. Settings:
# IMAGE, BASE, TORCH_WHEELS, TORCH_INDEX, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, CA_BUNDLE, ENGINE
# (scripts/image.sh). image-test runs it as uid 1000 with the CronJob's command and compares its
# Parquet bytes with this venv's run (scripts/image_test.py); image-clean removes what they made.
image:
	bash scripts/image.sh

image-test: image install
	$(PY) scripts/image_test.py

image-clean:
	bash scripts/image_clean.sh
