#!/usr/bin/env bash
# Installs what `make test` and `make demo` need on a fresh Debian machine, skipping what is
# already there: Erlang headers, EUnit, rebar3, Elixir (with Mix), cmake, pkg-config and
# redis-server (Debian);
# pytest, hypothesis and wheel (PyPI).
set -euo pipefail

need_apt=()
command -v erlc >/dev/null 2>&1 || need_apt+=(erlang-base)
erl_inc=$(ls -d /usr/lib/erlang/usr/include 2>/dev/null || true)
[ -n "$erl_inc" ] && [ -f "$erl_inc/erl_nif.h" ] || need_apt+=(erlang-dev)
ls /usr/lib/erlang/lib/eunit-* >/dev/null 2>&1 || need_apt+=(erlang-eunit)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v rebar3 >/dev/null 2>&1 || need_apt+=(rebar3)
command -v elixir >/dev/null 2>&1 && command -v mix >/dev/null 2>&1 || need_apt+=(elixir)
command -v dialyzer >/dev/null 2>&1 || need_apt+=(erlang-dialyzer)  # make dialyzer-elixir
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v readelf >/dev/null 2>&1 && command -v objcopy >/dev/null 2>&1 || need_apt+=(binutils)
# The Redis backend's tests start their own redis-server (and redis-cli, tools/with-redis.sh).
command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-server)
# The status page's browser test (bindings/python/tests/test_ui.py) drives Debian's Chromium.
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "deps: installing ${need_apt[*]} (apt-get)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
missing_py=()
$PY -c 'import pytest' 2>/dev/null || missing_py+=(pytest)
$PY -c 'import hypothesis' 2>/dev/null || missing_py+=(hypothesis)
# `pip wheel --no-build-isolation` (the wheel test builds offline) needs setuptools and wheel.
$PY -c 'import setuptools' 2>/dev/null || missing_py+=(setuptools)
$PY -c 'import wheel' 2>/dev/null || missing_py+=(wheel)
# The metrics tests parse /metrics with Prometheus's own text parser.
$PY -c 'import prometheus_client' 2>/dev/null || missing_py+=(prometheus-client)
if [ ${#missing_py[@]} -gt 0 ]; then
  echo "deps: installing ${missing_py[*]} (pip)"
  $PY -m pip install -q "${missing_py[@]}" || $PY -m pip install -q --break-system-packages "${missing_py[@]}"
fi
echo "deps: ok"
