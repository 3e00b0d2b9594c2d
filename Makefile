# roadwave developer entry points. `make setup` prepares the machine (see scripts/setup.sh);
# the other targets run it first, so a fresh checkout needs only `make test` or `make demo`.
# Extra arguments: make demo ARGS="--vehicles 3"; make test PYTEST_ARGS="-k services -x".

SHELL := /bin/bash
VENV := .venv
ARGS ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup demo test bench clean distclean

help:
	@echo "make setup      install mosquitto/influxd (apt) and the .venv"
	@echo "make demo       run the end-to-end demo       (ARGS=... passed to 'roadwave demo')"
	@echo "make test       run the tests; missing servers fail instead of skipping (PYTEST_ARGS=...)"
	@echo "make bench      run the benchmarks            (ARGS=... passed to 'python -m benchmarks')"
	@echo "make clean      remove caches and build output; 'make distclean' also removes .venv"

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/roadwave demo $(ARGS)

# ROADWAVE_REQUIRE_SERVERS=1 makes tests/conftest.py fail, not skip, without the servers.
test: setup
	ROADWAVE_REQUIRE_SERVERS=1 $(VENV)/bin/python -m pytest -q -rs -p no:cacheprovider $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/python -m benchmarks $(ARGS)

clean:
	rm -rf build dist .pytest_cache .mypy_cache demo-output ./*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
