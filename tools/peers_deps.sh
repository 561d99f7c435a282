#!/usr/bin/env bash
# Installs the peers `make bench-peers` compares with (redis-server and etcd-server from apt),
# skipping what is present. A peer that cannot be installed is reported in the table, so
# this never fails the run. SQLite is Python's stdlib sqlite3.
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
if [ ${#need[@]} -gt 0 ]; then
  echo "peers: installing ${need[*]} (apt-get)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null; } ||
    echo "peers: could not install ${need[*]}; the table will say so"
fi
echo "peers: ok"
