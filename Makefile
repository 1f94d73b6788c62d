# The README's commands. `make demo` and `make test` install on first use (into .venv) and
# are quick when nothing changed; CI calls `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt
STAMP := $(VENV)/.installed
# The JupyterLab extension's sources: `pip install -e` builds them (jlpm) into the package and
# installs the result, so a change to any of them reinstalls.
LABEXT := labextension/package.json labextension/yarn.lock labextension/install.json \
	$(wildcard labextension/src/*.ts labextension/style/*)

.PHONY: install demo test bench lab clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt $(LABEXT)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	touch $(STAMP)

demo: install
	$(PY) tutorials/quickstart.py

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest

# KServe's ModelServer, the engine benchmark's reference server, in a venv of its own: kserve
# pins an older psutil and pulls the kubernetes client, neither of which belongs in .venv.
KSERVE_VENV := .venv-kserve
$(KSERVE_VENV)/.installed: constraints.txt
	test -x $(KSERVE_VENV)/bin/python || python3 -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-c constraints.txt kserve onnxruntime tokenizers numpy
	touch $@

bench: install $(KSERVE_VENV)/.installed
	$(PIP) -e '.[dev,bench]'
	$(PY) benchmarks/registry.py --plot benchmarks/results/registry.png
	$(PY) benchmarks/export.py --plot benchmarks/results/export.png
	$(PY) benchmarks/compression.py --plot benchmarks/results/compression.png
	$(PY) benchmarks/launch.py --plot benchmarks/results/launch.png
	$(PY) benchmarks/tuning.py --plot benchmarks/results/tuning.png
	@command -v wrk >/dev/null || { echo "benchmarks/serving.py needs wrk: apt-get install wrk"; exit 1; }
	$(PY) benchmarks/serving.py --plot benchmarks/results/serving.png
	@command -v chromium >/dev/null || { echo "benchmarks/panels.py needs chromium: apt-get install chromium"; exit 1; }
	$(PY) benchmarks/panels.py --plot benchmarks/results/panels.png

lab: install
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf $(VENV) $(KSERVE_VENV) labextension/node_modules labextension/lib maas_lab/lab/labextension
