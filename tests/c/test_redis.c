/* tests/c/test_redis.c: the Redis backend through the C API: bad URLs and a missing store= are
 * INVALID_ARGUMENT, an unreachable server is IO with a message naming it; with
 * TIDEMARK_TEST_REDIS set (`make test-redis`), two handles on one store share its log. */
#include "harness.h"

void test_redis(void) {
  section("redis:// stores");
  static const char *const bad[] = {
      "redis://127.0.0.1:1",           /* no store= */
      "redis://127.0.0.1:1?store=",    /* empty name */
      "redis://127.0.0.1:1?store={x}", /* would break the hash tag */
      "redis://127.0.0.1:1?store=a&db=2",
      "rediss://127.0.0.1:1?store=a&ca=/nonexistent/ca.pem", /* an unreadable CA file */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    tidemark_store *s = SENTINEL;
    if (!CHECK_ST(tidemark_store_open(bad[i], NULL, &s), TIDEMARK_ERR_INVALID_ARGUMENT))
      fprintf(stderr, "    url: %s\n", bad[i]);
    CHECK(s == SENTINEL);
    CHECK(strstr(tidemark_last_error_message(), "bad Redis store URL") != NULL);
  }
  /* Port 1 on the loopback: nothing listens there. */
  tidemark_store *s = SENTINEL;
  CHECK_ST(tidemark_store_open("redis://127.0.0.1:1/0?store=a", NULL, &s), TIDEMARK_ERR_IO);
  CHECK(s == SENTINEL);
  CHECK(strstr(tidemark_last_error_message(), "Redis at redis://127.0.0.1:1/0") != NULL);

  const char *server = getenv("TIDEMARK_TEST_REDIS");
  if (server == NULL || server[0] == '\0') return;
  char url[256];
  snprintf(url, sizeof url, "%s/0?store=c-shared-%ld-%ld", server, (long)getpid(), (long)time(NULL));
  tidemark_store *a = NULL, *b = NULL;
  REQUIRE(CHECK_OK(tidemark_store_open(url, NULL, &a)) && CHECK_OK(tidemark_store_open(url, NULL, &b)));
  tidemark_watch_options o = tidemark_watch_options_default();
  o.start_revision = 1;
  tidemark_watch *w = NULL;
  REQUIRE(CHECK_OK(tidemark_watch_open(b, NULL, &o, &w)));
  uint64_t r1 = put(a, "k", "1");
  uint64_t r2 = put(b, "k", "2"); /* b catches up on a's commit, then appends after it */
  CHECK(r1 == 1 && r2 == 2);
  uint64_t rev = 0;
  CHECK_ST(tidemark_store_put_if(a, S("k"), S("3"), r1, &rev), TIDEMARK_ERR_CONFLICT);
  CHECK(rev == 0);
  uint64_t seen = 0;
  for (int tries = 0; seen < r2 && tries < 100; tries++) {
    tidemark_events *ev = NULL;
    if (tidemark_watch_next(w, WAIT_MS, &ev) != TIDEMARK_OK) continue;
    const tidemark_event *d = tidemark_events_data(ev);
    for (size_t i = 0; i < tidemark_events_len(ev); i++) {
      CHECK(d[i].revision == seen + 1);
      seen = d[i].revision;
    }
    tidemark_events_free(ev);
  }
  CHECK(seen == r2);
  tidemark_watch_close(w);
  tidemark_store_close(a);
  tidemark_store_close(b);
}
