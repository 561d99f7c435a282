/* tests/c/harness.h: the check macros, time and byte helpers, and the watch collector
 * shared by every C test file (tests/c/test_*.c), and the test functions main.c runs. */
#ifndef TIDEMARK_TEST_HARNESS_H
#define TIDEMARK_TEST_HARNESS_H

#define _XOPEN_SOURCE 700

#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tidemark.h"

/* Checks count and report; CHECK may be used from any thread (callbacks run on the
 * store's threads). Each returns whether the check held. */
#define CHECK(cond) check_impl((cond) ? true : false, __FILE__, __LINE__, #cond)
#define CHECK_ST(call, want) check_status_impl((call), (want), __FILE__, __LINE__, #call)
#define CHECK_OK(call) CHECK_ST(call, TIDEMARK_OK)
#define CHECK_NULL_ARG(call) check_null_arg_impl((call), __FILE__, __LINE__, #call)
/* Stops the run when continuing could only crash (e.g. a store that did not open). */
#define REQUIRE(cond)                                                             \
  do {                                                                            \
    if (!CHECK(cond)) {                                                           \
      fprintf(stderr, "cannot continue after this failure\n");                    \
      fprintf(stdout, "%lu passed, %lu failed\n", g_passed, g_failed);            \
      exit(1);                                                                    \
    }                                                                             \
  } while (0)
/* Generous: waits end as soon as the awaited thing happens. */
#define WAIT_S 60.0
#define WAIT_MS 60000u
/* Byte helpers: S("abc") expands to the (pointer, length) pair the API takes. */
#define B(s) ((const uint8_t *)(s))
#define S(s) B(s), strlen(s)
/* An address no library object ever has: out-parameters start here and must stay here on
 * failure. */
#define SENTINEL ((void *)&g_sentinel_object)
#define UNTOUCHED 0xDEADBEEFCAFEull
typedef struct rec {
  uint64_t revision, create_revision, version;
  uint32_t kind;
  size_t delivery; /* which delivery (callback call / watch_next) brought it */
  size_t key_len, value_len;
  char key[48], value[48]; /* NUL-terminated copies */
} rec;

typedef struct cstats {
  size_t n;            /* key events (PUT/DELETE) recorded */
  size_t calls;        /* deliveries */
  size_t progress;     /* PROGRESS events */
  uint64_t progress_rev;
  size_t terminals;    /* terminal events: must end at most 1 */
  uint32_t terminal_kind;
  uint64_t terminal_rev;
  size_t after_terminal;   /* deliveries after the terminal one: must stay 0 */
  size_t drops;            /* drop_userdata calls: must end at exactly 1 */
  size_t calls_after_drop; /* must stay 0 */
  size_t bad_shape;        /* empty delivery, notice mixed with others, unknown kind, bad arena */
  size_t overlap;          /* the callback running on two threads at once */
  size_t out_of_order;     /* key event revision not above the previous one */
  size_t too_long;         /* key/value longer than the record buffers */
  uint64_t last_rev;
  int inside;
} cstats;

typedef struct collector {
  pthread_mutex_t mu;
  rec *ev;
  size_t cap;
  cstats st;
  unsigned sleep_us; /* > 0: a slow consumer, sleeping this long per delivery */
} collector;

typedef bool (*cpred)(const cstats *, size_t);

#define WAIT(c, p, arg) CHECK(wait_for((c), (p), (arg)))

/* Helpers, defined in harness.c. */
extern unsigned long g_passed, g_failed;
bool check_impl(bool ok, const char *file, int line, const char *expr);
bool check_status_impl(tidemark_status got, tidemark_status want, const char *file, int line, const char *expr);
bool check_null_arg_impl(tidemark_status got, const char *file, int line, const char *expr);
void section(const char *name);
double now_s(void);
void sleep_us(unsigned us);
void sleep_ms(unsigned ms);
bool bytes_eq(tidemark_bytes b, const void *p, size_t n);
bool bytes_is(tidemark_bytes b, const char *s);
extern int g_sentinel_object;
tidemark_store *open_store(const char *options);
uint64_t put(tidemark_store *s, const char *key, const char *value);
bool arena_holds(const tidemark_events *e);
void collector_init(collector *c, unsigned slow_us);
void collector_destroy(collector *c);
cstats snap(collector *c);
void collect_cb(void *userdata, const tidemark_event *events, size_t count);
void collect_drop(void *userdata);
bool p_events(const cstats *s, size_t n);
bool p_calls(const cstats *s, size_t n);
bool p_drops(const cstats *s, size_t n);
bool p_progress(const cstats *s, size_t n);
bool p_done(const cstats *s, size_t n);
bool wait_for(collector *c, cpred p, size_t arg);
bool wait_watchers(tidemark_store *s, size_t n);
bool seq_is(collector *c, uint64_t first, size_t count);
void check_clean(collector *c);
tidemark_status pull_into(tidemark_watch *w, collector *c, size_t want);
int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw);
tidemark_selector sel_key(const char *k);
tidemark_selector sel_prefix(const char *p);
tidemark_selector sel_range(const char *a, const char *b);
tidemark_selector sel_all(void);
bool changes_are(tidemark_store *s, const tidemark_selector *sel, uint64_t from, uint64_t to, const uint64_t *want);

/* The tests, one file per area; main.c runs them in order. */
/* test_errors.c */
void test_meta(void);
/* test_store.c */
void test_open(void);
void test_redis(void);
void test_durable(void);
void test_kv(void);
void test_put_if(void);
void test_sizes(void);
void test_status_json(void);
void test_metrics(void);
/* test_batch.c */
void test_batch(void);
/* test_changes.c */
void test_changes(void);
void test_range(void);
void test_compact(void);
/* test_watch.c */
void test_push_basic(void);
void test_push_selectors_and_start(void);
void test_push_errors(void);
void test_push_slow(void);
void test_push_credit(void);
void test_push_progress(void);
void test_pull(void);
/* test_watch_end.c */
void test_compaction_overtakes(void);
void test_compact_during_terminal_callback(void);
void test_reentrancy(void);
void test_unwatch_waits_for_drop(void);
void test_close_with_watches(void);
void test_close_from_callback(void);
/* test_threads.c */
void test_threads(void);
void test_threads_compaction(const char *path, const char *options);
/* test_lockstep.c */
void test_lockstep(void);

/* test_streams.c */
void test_reserved_namespace(void);
void test_streams(void);
void test_snapshots(void);
/* test_subscriptions.c */
void test_subscriptions(void);
void test_subscriptions_pull(void);
void test_subscriptions_bad_input(void);
/* test_persistent.c */
void test_persistent(void);
void test_persistent_reset(void);
/* test_contexts.c */
void test_contexts(void);
void test_contexts_clock(void);
/* test_trackers.c */
void test_trackers(void);

#endif
