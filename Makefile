# tidemark: `make demo` shows it working, `make test` runs every test. See README.md.
CARGO  ?= cargo
PYTHON ?= python3
export TIDEMARK_LIBRARY := $(CURDIR)/target/release/libtidemark.so

.PHONY: all build deps demo test lint test-rust test-c test-python test-erlang check-header bench clean

all: build

build:
	$(CARGO) build --release

deps:
	./tools/deps.sh

demo: deps build
	$(MAKE) -C examples/c run
	$(MAKE) -C examples/cpp run
	PYTHONPATH=$(CURDIR)/bindings/python $(PYTHON) examples/python/quickstart.py
	$(MAKE) -C bindings/erlang
	escript examples/erlang/quickstart.escript

test: deps build check-header lint test-rust test-c test-python test-erlang
	@echo "make test: all suites passed"

# Formatting and lints are part of the test: a warning fails `make test`.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings

test-rust:
	$(CARGO) test --release

test-c: build
	$(MAKE) -C tests/c test

test-python: build
	$(MAKE) -C bindings/python test PYTHON=$(PYTHON)

test-erlang: build
	$(MAKE) -C bindings/erlang test

# The committed header must be what cbindgen generates from the current source.
check-header: build
	@git diff --quiet -- include/tidemark.h || { echo "include/tidemark.h is stale: commit the regenerated header"; git --no-pager diff --stat -- include/tidemark.h; exit 1; }
	@echo "check-header: include/tidemark.h is up to date"

bench: build
	$(CARGO) bench --bench core
	$(CARGO) bench --bench durable
	$(CARGO) bench --bench lockstep
	$(MAKE) -C bindings/python bench PYTHON=$(PYTHON)
	$(MAKE) -C bindings/erlang bench

clean:
	$(CARGO) clean
	-$(MAKE) -C tests/c clean
	-$(MAKE) -C bindings/erlang clean
