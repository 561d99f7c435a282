/*
 * tests/c/main.c: the C API test program (its parts are tests/c/test_<area>.c).
 *
 * Calls every function of include/tidemark.h, passes every pointer argument NULL in turn,
 * provokes every error status the API produces from real calls, and checks the semantics
 * the header and DESIGN.md promise: gap-free revisions, versions, batches, paging, selectors,
 * compaction, push and pull watches (ordering, replay, flow control, progress, terminal
 * events), reentrant callbacks, closing a store under live watches, and several threads at
 * once. Built with -fsanitize=address,undefined, so leaks and memory errors fail the run.
 *
 * Nothing here asserts speed: the machine is shared. Waits are generous (WAIT_S) and only
 * ever wait for something to happen; "nothing else happened" checks sleep a little first,
 * which can only make them pass spuriously, never fail spuriously.
 *
 * Output: one line per failed check (file:line, the expression, the last error message),
 * section names, and finally "N passed, M failed". Exit status 0 only if M is 0.
 */
#include "harness.h"

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("tidemark %s: C API tests\n", tidemark_version());
  test_meta(); /* first: it checks that no error was recorded yet on this thread */
  test_open();
  test_redis();
  test_durable();
  test_kv();
  test_reserved_namespace();
  test_put_if();
  test_sizes();
  test_status_json();
  test_metrics();
  test_batch();
  test_changes();
  test_range();
  test_compact();
  test_push_basic();
  test_push_selectors_and_start();
  test_push_errors();
  test_push_slow();
  test_push_credit();
  test_push_progress();
  test_pull();
  test_compaction_overtakes();
  test_compact_during_terminal_callback();
  test_reentrancy();
  test_unwatch_waits_for_drop();
  test_close_with_watches();
  test_close_from_callback();
  test_lockstep();
  test_streams();
  test_snapshots();
  test_subscriptions();
  test_subscriptions_pull();
  test_subscriptions_bad_input();
  test_persistent();
  test_persistent_reset();
  test_contexts();
  test_contexts_clock();
  test_trackers();
  test_threads();
  test_threads_compaction(NULL, "{\"dispatch_threads\": 2}");
  {
    /* The same on disk, with tiny segments and no cache: catching up reads the files. */
    char dir[] = "/tmp/tidemark-c-race-XXXXXX";
    if (CHECK(mkdtemp(dir) != NULL)) {
      test_threads_compaction(dir, "{\"dispatch_threads\": 2, \"sync\": \"none\", \"segment_size\": 4096, \"cache_bytes\": 0}");
      nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
  }
  printf("%lu passed, %lu failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
