# Two commands on a fresh machine:  `make run` (the portal)  and  `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ADDRESS ?= 127.0.0.1
PORT   ?= 8501

.PHONY: run test lint bench screenshots chromium prometheus postgresql testenv testenv-stop

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip's own lines (each package as it is fetched, a bar for the large ones): the first install takes minutes.
$(VENV)/.runtime: requirements.txt | $(BIN)/python
	@echo "Installing the portal's Python packages into $(VENV) (the first time takes about two minutes)..."
	$(BIN)/pip install --disable-pip-version-check --progress-bar on -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	@echo "Installing the portal's and its tests' Python packages into $(VENV) (the first time takes minutes)..."
	$(BIN)/pip install --disable-pip-version-check --progress-bar on -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

# The model registry tests' MLflow server, in an environment of its own (requirements-mlflow-server.txt says why).
$(VENV)/mlflow-server/.requirements: requirements-mlflow-server.txt
	@echo "Installing the MLflow server of the model registry tests into $(VENV)/mlflow-server (about a minute)..."
	$(PYTHON) -m venv $(VENV)/mlflow-server
	$(VENV)/mlflow-server/bin/pip install --disable-pip-version-check -q -r requirements-mlflow-server.txt
	cp requirements-mlflow-server.txt $@

## Run the portal on this machine (jobs run as local processes, history in SQLite under portal-data/).
run: $(VENV)/.runtime
	$(BIN)/streamlit run portal_app.py --server.address $(ADDRESS) --server.port $(PORT) \
		--browser.gatherUsageStats false --client.toolbarMode viewer

## Lint and run every test (browser tests need Debian's chromium: installed here when run as root).
test: $(VENV)/.dev $(VENV)/mlflow-server/.requirements chromium prometheus postgresql
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .

bench: $(VENV)/.dev
	$(BIN)/python bench/dashboard_render.py
	$(BIN)/python bench/job_page_log.py
	$(BIN)/python bench/metric_extraction.py
	$(BIN)/python bench/chart_downsampling.py

## Retake README's pictures of the job page and the dashboard from a real portal (docs/screenshots.py).
screenshots: $(VENV)/.dev chromium
	$(BIN)/python docs/screenshots.py

chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "Installing Debian's chromium for the browser tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "chromium is not installed and this is not root: the browser tests will be skipped"; \
		fi; \
	fi

## Debian's prometheus for the GPU telemetry tests (tests/test_gpu_telemetry.py); its own service is not kept running.
prometheus:
	@if [ ! -x /usr/bin/prometheus ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "Installing Debian's prometheus for the GPU telemetry tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				prometheus >/dev/null; \
			if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then \
				systemctl disable --now prometheus >/dev/null 2>&1 || true; \
			fi; \
		else \
			echo "prometheus is not installed and this is not root: the GPU telemetry tests will be skipped"; \
		fi; \
	fi

## Debian's postgresql for the PostgreSQL store tests (tests/pg_env.py starts a throwaway server of its own);
## the cluster the package creates is stopped and set to manual start, so nothing listens on port 5432.
postgresql:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "Installing Debian's postgresql for the PostgreSQL store tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				postgresql >/dev/null; \
			if command -v pg_lsclusters >/dev/null 2>&1; then \
				pg_lsclusters -h 2>/dev/null | while read -r ver name port status rest; do \
					if [ "$${status%%,*}" = online ]; then pg_ctlcluster "$$ver" "$$name" stop || true; fi; \
					echo manual > "/etc/postgresql/$$ver/$$name/start.conf"; \
				done; \
			fi; \
			if command -v systemctl >/dev/null 2>&1; then systemctl disable --now postgresql >/dev/null 2>&1 || true; fi; \
		else \
			echo "postgresql is not installed and this is not root: the PostgreSQL tests will be skipped"; \
		fi; \
	fi

## The Kubernetes test control plane (built from the Go module proxy on first use, then cached).
testenv:
	@kubeconfig=$$(testenv/start.sh) && echo "export KUBECONFIG=$$kubeconfig"

testenv-stop:
	testenv/stop.sh
