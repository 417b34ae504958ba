# The two commands of the README: `make demo` (the main job on the built-in dataset,
# offline) and `make test` (the test suite). Both install into .venv on first use.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install demo test bench
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh

demo: install
	$(VENV)/bin/crossmodal demo --out runs/demo

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider
