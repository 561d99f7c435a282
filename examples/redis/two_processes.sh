#!/usr/bin/env bash
# Two processes share one store in Redis: `tidemark watch` in one prints what `tidemark put`
# in others writes. Run with a server in TIDEMARK_TEST_REDIS (redis://host:port), e.g.
#   tools/with-redis.sh examples/redis/two_processes.sh
set -euo pipefail
cli=${TIDEMARK_CLI:-target/release/tidemark}
url="$TIDEMARK_TEST_REDIS/0?store=demo-$$"
out=$(mktemp)
"$cli" watch --store "$url" --from 1 >"$out" &
watcher=$!
trap 'kill "$watcher" 2>/dev/null || true; rm -f "$out"' EXIT
for i in 1 2 3; do
  echo "put (process $i): revision $("$cli" put --store "$url" "greeting/$i" "hello from process $i")"
done
for _ in $(seq 200); do
  [ "$(wc -l <"$out")" -ge 3 ] && break
  sleep 0.05
done
echo "the watching process saw:"
cat "$out"
[ "$(wc -l <"$out")" -eq 3 ]
