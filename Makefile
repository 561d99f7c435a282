# tidemark: `make demo` shows it working, `make test` runs every test, `make install PREFIX=...
# DESTDIR=...` installs the library (docs/abi.md). See README.md.
CARGO  ?= cargo
PYTHON ?= python3
export TIDEMARK_LIBRARY := $(CURDIR)/target/release/libtidemark.so

.PHONY: all build deps demo test lint test-rust test-c test-python test-erlang test-elixir test-install check-header bench bench-peers clean
.PHONY: test-redis
.PHONY: dialyzer-elixir
.PHONY: dist dist-files install uninstall

# `make install PREFIX=/usr/local DESTDIR=` (see docs/abi.md for the layout and the versioning).
PREFIX  ?= /usr/local
DESTDIR ?=
VERSION := $(shell sed -n 's/^version = "\([^"]*\)"/\1/p' Cargo.toml | head -n 1)
MAJOR   := $(firstword $(subst ., ,$(VERSION)))
SONAME  := libtidemark.so.$(MAJOR)
REALNAME := libtidemark.so.$(VERSION)
# What the Rust standard library needs from the system when libtidemark.a is linked
# (`rustc --print native-static-libs`): the .pc file's Libs.private and the static CMake target.
NATIVE_LIBS := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
# The C API: every function the header declares, and nothing else, is exported.
lparen  := (
EXPORTS := $(shell grep -o '\btidemark_[a-z0-9_]*$(lparen)' include/tidemark.h | tr -d '$(lparen)' | sort -u)
comma := ,
empty :=
space := $(empty) $(empty)
# What `make install` copies, made from the release build (no other cargo profile).
DIST    := target/dist
DIST_FILES := $(DIST)/$(REALNAME) $(DIST)/$(REALNAME).debug $(DIST)/libtidemark.a $(DIST)/tidemark

all: build

build:
	$(CARGO) build --release

deps:
	./tools/deps.sh

demo: deps build
	$(MAKE) -C examples/c run
	$(MAKE) -C examples/cpp run
	PYTHONPATH=$(CURDIR)/bindings/python $(PYTHON) examples/python/quickstart.py
	PYTHONPATH=$(CURDIR)/bindings/python $(PYTHON) examples/python/streams.py
	PYTHONPATH=$(CURDIR)/bindings/python $(PYTHON) examples/python/contexts.py
	$(MAKE) -C bindings/erlang
	escript examples/erlang/quickstart.escript
	escript examples/erlang/contexts.escript
	escript examples/erlang/persistent.escript
	./tools/with-redis.sh examples/redis/two_processes.sh
	$(MIX) run ../../examples/elixir/quickstart.exs

test: deps build check-header lint test-rust test-c test-python test-erlang test-elixir test-install test-redis
	@echo "make test: all suites passed"

# Formatting and lints are part of the test: a warning fails `make test`.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings


# The power-loss simulation runs on its own so that its tally (cut points, what they hit)
# is printed.
test-rust:
	$(CARGO) test --release -- --skip power_loss_at_every_cut_point
	$(CARGO) test --release --lib power_loss_at_every_cut_point -- --nocapture

test-c: build
	$(MAKE) -C tests/c test

# The conformance suites once more, on the Redis backend: each test's store lives in a
# throw-away redis-server (tools/with-redis.sh sets TIDEMARK_TEST_REDIS).
test-redis: build
	./tools/with-redis.sh $(CARGO) test --release --test core --test watch --test ns_streams --test ns_contexts
	./tools/with-redis.sh $(MAKE) -C tests/c test
	cd bindings/python && ../../tools/with-redis.sh env PYTHONPATH=. $(PYTHON) -m pytest -q tests/test_store.py \
	  tests/test_batch.py tests/test_changes.py tests/test_watch_iter.py tests/test_watch_callback.py \
	  tests/test_streams.py tests/test_contexts.py tests/test_redis.py
	./tools/with-redis.sh sh -c 'cd bindings/erlang && rebar3 eunit --module=tidemark_contexts_tests,tidemark_redis_tests'

test-python: build
	$(MAKE) -C bindings/python test PYTHON=$(PYTHON)

# The Erlang suite through rebar3 (the NIF comes from bindings/erlang/Makefile's `nif` hook).
test-erlang: build
	cd bindings/erlang && rebar3 eunit

# The Elixir package offline: its one dependency is bindings/erlang (a path dependency that the
# apt rebar3 builds), so nothing comes from Hex; Mix's and rebar3's state stays under _build,
# and erl gets a HOME when none is set.
MIX = cd bindings/elixir && HOME="$${HOME:-$(CURDIR)/bindings/elixir/_build/home}" \
	MIX_HOME=$(CURDIR)/bindings/elixir/_build/mix_home REBAR_CACHE_DIR=$(CURDIR)/bindings/elixir/_build/rebar3 \
	MIX_REBAR3="$$(command -v rebar3)" HEX_OFFLINE=1 mix

test-elixir: build
	$(MIX) format --check-formatted
	$(MIX) test --warnings-as-errors

# Dialyzer over the Elixir package and the Erlang application. Not in `make test`: the PLT
# (erts, kernel, stdlib, elixir) takes ~5 min to build on the shared 2-core machine; it is
# kept under _build, and later runs take seconds.
DIALYZER_PLT = $(CURDIR)/bindings/elixir/_build/dialyzer.plt
ELIXIR_EBIN = $$(elixir -e 'IO.puts(:code.lib_dir(:elixir, :ebin))')
dialyzer-elixir: deps build
	$(MIX) compile --warnings-as-errors
	test -f $(DIALYZER_PLT) || dialyzer -pa $(ELIXIR_EBIN) --build_plt --output_plt $(DIALYZER_PLT) \
		--apps erts kernel stdlib $(ELIXIR_EBIN)
	cd bindings/elixir && dialyzer -pa $(ELIXIR_EBIN) --plt $(DIALYZER_PLT) --no_check_plt \
		_build/dev/lib/tidemark_ex/ebin _build/dev/lib/tidemark/ebin

# Installs into a temporary prefix and builds the C and C++ quickstarts against it.
test-install: dist
	./packaging/test-install.sh

# The committed header must be what cbindgen generates from the current source.
check-header: build
	@git diff --quiet -- include/tidemark.h || { echo "include/tidemark.h is stale: commit the regenerated header"; git --no-pager diff --stat -- include/tidemark.h; exit 1; }
	@echo "check-header: include/tidemark.h is up to date"

# The shared library is linked again from libtidemark.a with a soname and the symbol-version
# script (a cdylib cannot take one: rustc passes its own, and a second leaves the exports
# unversioned), then its debug info is split into a .debug file and the shipped copy stripped.
# target/release is untouched.
dist: build
	@$(MAKE) --no-print-directory dist-files

dist-files: $(DIST_FILES)

$(DIST)/$(REALNAME): target/release/libtidemark.a packaging/tidemark.map include/tidemark.h
	@mkdir -p $(DIST)
	$(CC) -shared -o $@.full -Wl,-soname,$(SONAME) -Wl,--version-script=packaging/tidemark.map \
	  -Wl,--gc-sections -Wl,--no-undefined -Wl,-z,relro,-z,now $(addprefix -Wl$(comma)-u$(comma),$(EXPORTS)) \
	  target/release/libtidemark.a $(NATIVE_LIBS)
	objcopy --only-keep-debug $@.full $@.debug
	cd $(DIST) && objcopy --strip-debug --strip-unneeded --add-gnu-debuglink=$(REALNAME).debug $(REALNAME).full $(REALNAME)
	rm $@.full

$(DIST)/$(REALNAME).debug: $(DIST)/$(REALNAME)

target/release/libtidemark.a target/release/tidemark:
	$(CARGO) build --release

$(DIST)/libtidemark.a: target/release/libtidemark.a
	@mkdir -p $(DIST)
	strip --strip-debug -o $@ $<

$(DIST)/tidemark: target/release/tidemark
	@mkdir -p $(DIST)
	strip --strip-unneeded -o $@ $<

LIBDIR     = $(DESTDIR)$(PREFIX)/lib
CMAKEDIR   = $(LIBDIR)/cmake/tidemark
CMAKE_NATIVE_LIBS := $(subst $(space),;,$(patsubst -l%,%,$(NATIVE_LIBS)))
SUBST = sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' -e 's|@MAJOR@|$(MAJOR)|g' \
	-e 's|@NATIVE_LIBS@|$(NATIVE_LIBS)|g' -e 's|@CMAKE_NATIVE_LIBS@|$(CMAKE_NATIVE_LIBS)|g'

# Installs the current release build (`make` first; it is built here only when missing, so
# `make && sudo make install` needs no cargo as root).
install: dist-files
	install -d $(LIBDIR)/pkgconfig $(CMAKEDIR) $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(DIST)/$(REALNAME) $(LIBDIR)/$(REALNAME)
	install -m 644 $(DIST)/$(REALNAME).debug $(LIBDIR)/$(REALNAME).debug
	ln -sfn $(REALNAME) $(LIBDIR)/$(SONAME)
	ln -sfn $(SONAME) $(LIBDIR)/libtidemark.so
	install -m 644 $(DIST)/libtidemark.a $(LIBDIR)/libtidemark.a
	install -m 644 include/tidemark.h include/tidemark.hpp $(DESTDIR)$(PREFIX)/include/
	$(SUBST) packaging/tidemark.pc.in > $(LIBDIR)/pkgconfig/tidemark.pc
	$(SUBST) packaging/tidemarkConfig.cmake.in > $(CMAKEDIR)/tidemarkConfig.cmake
	$(SUBST) packaging/tidemarkConfigVersion.cmake.in > $(CMAKEDIR)/tidemarkConfigVersion.cmake
	install -m 755 $(DIST)/tidemark $(DESTDIR)$(PREFIX)/bin/tidemark

uninstall:
	rm -f $(LIBDIR)/$(REALNAME) $(LIBDIR)/$(REALNAME).debug $(LIBDIR)/$(SONAME) $(LIBDIR)/libtidemark.so \
	  $(LIBDIR)/libtidemark.a $(LIBDIR)/pkgconfig/tidemark.pc \
	  $(CMAKEDIR)/tidemarkConfig.cmake $(CMAKEDIR)/tidemarkConfigVersion.cmake \
	  $(DESTDIR)$(PREFIX)/include/tidemark.h $(DESTDIR)$(PREFIX)/include/tidemark.hpp \
	  $(DESTDIR)$(PREFIX)/bin/tidemark
	rmdir $(CMAKEDIR) 2>/dev/null || true

bench: build
	$(CARGO) bench --bench core
	$(CARGO) bench --bench durable
	$(CARGO) bench --bench lockstep
	$(CARGO) bench --bench lockstep_clients
	$(CARGO) bench --bench streams
	$(MAKE) -C bindings/python bench PYTHON=$(PYTHON)
	$(MAKE) -C bindings/erlang bench

# tidemark side by side with SQLite, Redis and etcd (not part of `make test`); writes its
# table to docs/benchmarks.md. BENCH_PEERS_ARGS=--quick for a smoke run.
bench-peers: build
	tools/peers_deps.sh
	@mkdir -p target/bench-peers
	$(CC) -std=c11 -O2 -Wall -Wextra -Werror -Iinclude benches/peers/tidemark_peers.c \
	  target/release/libtidemark.a -lpthread -ldl -lm -o target/bench-peers/tidemark_peers
	$(PYTHON) tools/bench_peers.py $(BENCH_PEERS_ARGS)

clean:
	$(CARGO) clean
	-$(MAKE) -C tests/c clean
	-$(MAKE) -C bindings/erlang clean
