# make demo: the TCP traffic shifting task on local processes.  make test: the test suite.
# make bench: the benchmark scenarios, one table (bench/results/latest.json too).
# All create .venv on first use (Python >= 3.11 needed) and reinstall when pyproject changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The Node gRPC xDS client that tests/test_proxyless_grpc.py runs (@grpc/grpc-js-xds).
NODE_STAMP := tests/node/node_modules/.installed

.PHONY: demo test bench lint format proto images clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lab]'
	touch $(STAMP)

$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	@command -v npm >/dev/null || { echo "make test needs Node.js and npm for the grpc-js-xds client test (apt install nodejs npm)" >&2; exit 1; }
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

demo: $(STAMP)
	$(BIN)/xds-server demo $(ARGS)

test: $(STAMP) $(NODE_STAMP) lint
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m xds_server.bench $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

# Regenerate the admin API and etcd client code from proto/ (committed; tests/test_proto.py
# checks it).
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=src --pyi_out=src \
		--grpc_python_out=src proto/xds_server/admin/v1/admin.proto
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=src --pyi_out=src \
		--grpc_python_out=src proto/xds_server/config/etcdpb/*.proto

# The images of docker-compose.yml, built with no container registry (debootstrap base,
# wheels from this venv), as CI does; ARGS=--online uses the public base images instead.
images: $(STAMP)
	PYTHON=$(BIN)/python scripts/build-images $(ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
