# The two commands of the README: `make demo` (the main job on the built-in dataset,
# offline) and `make test` (the test suite, the same checks as CI). Both install into .venv
# on first use.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider --durations=10

.PHONY: install demo test test-no-browser bench
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh

demo: install
	$(VENV)/bin/crossmodal demo --out runs/demo

# Chromium is part of the checks: found, installed (root + apt), or a one-line stop. With
# ../shared/data present `make test` is CI's run: a skipped test fails it (CROSSMODAL_NO_SKIPS);
# without it the tests that need the real data skip and say what is missing.
NO_SKIPS := $(if $(wildcard ../shared/data),1,0)
test: install
	bash scripts/ensure_chromium.sh
	CROSSMODAL_NO_SKIPS=$${CROSSMODAL_NO_SKIPS:-$(NO_SKIPS)} CROSSMODAL_REQUIRE_BROWSER=1 CROSSMODAL_REQUIRE_MILVUS=1 $(PYTEST)

# Everything but the browser test, for a machine without Chromium (it says so when it skips).
test-no-browser: install
	$(PYTEST)
