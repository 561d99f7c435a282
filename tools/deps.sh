#!/usr/bin/env bash
# Installs what `make test` and `make demo` need on a fresh Debian machine, skipping what is
# already there: Erlang headers and EUnit (Debian), pytest and hypothesis (PyPI).
set -euo pipefail

need_apt=()
command -v erlc >/dev/null 2>&1 || need_apt+=(erlang-base)
erl_inc=$(ls -d /usr/lib/erlang/usr/include 2>/dev/null || true)
[ -n "$erl_inc" ] && [ -f "$erl_inc/erl_nif.h" ] || need_apt+=(erlang-dev)
ls /usr/lib/erlang/lib/eunit-* >/dev/null 2>&1 || need_apt+=(erlang-eunit)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
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
if [ ${#missing_py[@]} -gt 0 ]; then
  echo "deps: installing ${missing_py[*]} (pip)"
  $PY -m pip install -q "${missing_py[@]}" || $PY -m pip install -q --break-system-packages "${missing_py[@]}"
fi
echo "deps: ok"
