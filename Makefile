# Tessera — two commands: `make run` and `make test` (README's quick start).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha256sum requirements.txt | cut -c1-12)
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

.PHONY: run test venv system-deps system-deps-test lint bench lock clean

venv: $(STAMP)

$(STAMP): requirements.txt
	@scripts/system-deps.sh build || { echo "Cannot build the virtualenv without those packages."; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@rm -f $(VENV)/.installed-*; touch $@

# The embedded default: SQLite, in-memory channel layer, Celery eager. Demo data, then the portal.
run: venv
	DEBUG=1 $(PY) manage.py migrate --no-input -v0
	DEBUG=1 $(PY) manage.py seed_demo
	@echo ""
	@echo "Tessera is starting on http://$(HOST):$(PORT)/  (log in with one of the users above)"
	DEBUG=1 SESSION_COOKIE_SECURE=0 $(PY) manage.py run_demo --host $(HOST) --port $(PORT)

# The whole suite. Tests needing PostgreSQL/Redis/pcscd/SoftHSM/Chromium skip when those are absent,
# unless TESSERA_REQUIRE_SERVICES=1 (CI sets it), which turns every such skip into a failure.
test: venv
	@scripts/system-deps.sh test || true
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check portal tenants devices audit

bench: venv
	@for b in bench/*.py; do m=$$(basename $$b .py); [ "$$m" = __init__ ] || $(PY) -m bench.$$m; done

# Re-pin the dependency tree from requirements.in.
lock:
	rm -rf /tmp/tessera-lock && $(PYTHON) -m venv /tmp/tessera-lock
	/tmp/tessera-lock/bin/pip install -q -r requirements.in
	/tmp/tessera-lock/bin/pip freeze > requirements.txt

clean:
	rm -rf $(VENV) var artifacts .pytest_cache
