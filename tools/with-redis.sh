#!/usr/bin/env bash
# Runs a command with a throw-away redis-server: on 127.0.0.1, a free port, a temporary
# directory, no persistence (the conformance suites test semantics; the durability tests start
# servers of their own with `appendfsync always`). The command sees TIDEMARK_TEST_REDIS=redis://127.0.0.1:PORT
# (the test suites then run on the Redis backend). The server is stopped when the command ends.
set -euo pipefail
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save "" --appendonly no \
  --protected-mode no --daemonize no >"$dir/log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 300); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.05
done
redis-cli -p "$port" ping >/dev/null || { echo "with-redis: redis-server did not start" >&2; cat "$dir/log" >&2; exit 1; }
TIDEMARK_TEST_REDIS="redis://127.0.0.1:$port" "$@"
