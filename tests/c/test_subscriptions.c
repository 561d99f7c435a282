/*
 * tests/c/test_subscriptions.c: transient subscriptions, push (tidemark_store_subscribe) and
 * pull (tidemark_store_subscribe_pull): selectors, replay from the past, credit, the
 * terminal items, and every bad input (NULLs, unknown kind, empty and oversize names).
 */
#include "harness.h"

typedef struct sub_log {
  pthread_mutex_t mu;
  size_t n, calls, drops, terminals, after_terminal;
  uint32_t terminal_kind;
  uint64_t last_rev;
  size_t out_of_order;
  char seen[64][40]; /* "stream:version:type" of the first 64 events */
} sub_log;

static void sub_log_init(sub_log *l) {
  memset(l, 0, sizeof *l);
  pthread_mutex_init(&l->mu, NULL);
}

static void sub_cb(void *userdata, const tidemark_sub_event *events, size_t count) {
  sub_log *l = userdata;
  pthread_mutex_lock(&l->mu);
  l->calls++;
  if (l->terminals) l->after_terminal++;
  for (size_t i = 0; i < count; i++) {
    const tidemark_sub_event *e = &events[i];
    if (e->kind == TIDEMARK_EVENT_PUT) {
      if (e->revision <= l->last_rev || e->revision != e->event.revision) l->out_of_order++;
      l->last_rev = e->revision;
      if (l->n < 64) {
        snprintf(l->seen[l->n], sizeof l->seen[0], "%.*s:%" PRIu64 ":%.*s", (int)e->event.stream.len,
                 (const char *)e->event.stream.ptr, e->event.version, (int)e->event.event_type.len,
                 (const char *)e->event.event_type.ptr);
      }
      l->n++;
    } else if (e->kind == TIDEMARK_EVENT_COMPACTED || e->kind == TIDEMARK_EVENT_CLOSED) {
      l->terminals++;
      l->terminal_kind = e->kind;
    }
  }
  pthread_mutex_unlock(&l->mu);
}

static void sub_drop(void *userdata) {
  sub_log *l = userdata;
  pthread_mutex_lock(&l->mu);
  l->drops++;
  pthread_mutex_unlock(&l->mu);
}

/* Waits (at most WAIT_S, a hang guard) until `*field` of the log reaches `want`. */
static bool sub_wait(sub_log *l, const size_t *field, size_t want) {
  double until = now_s() + WAIT_S;
  for (;;) {
    pthread_mutex_lock(&l->mu);
    size_t got = *field;
    pthread_mutex_unlock(&l->mu);
    if (got >= want) return true;
    if (now_s() > until) return false;
    sleep_ms(1);
  }
}

static void append1(tidemark_store *s, const char *stream, const char *type, const char *data) {
  tidemark_stream_event e;
  memset(&e, 0, sizeof e);
  e.event_type = (tidemark_bytes){B(type), strlen(type)};
  e.data = (tidemark_bytes){B(data), strlen(data)};
  CHECK_OK(tidemark_store_append(s, S(stream), &e, 1, TIDEMARK_EXPECT_ANY, NULL));
}

static tidemark_stream_selector streams_sel(uint32_t kind, const char *stream, const char *type) {
  tidemark_stream_selector sel = {kind, {NULL, 0}, {NULL, 0}};
  if (stream) sel.stream = (tidemark_bytes){B(stream), strlen(stream)};
  if (type) sel.event_type = (tidemark_bytes){B(type), strlen(type)};
  return sel;
}

/* The next delivery of a pull subscription as "stream:version:type" lines joined by ' ',
 * or the notice's name; returns the status of tidemark_sub_feed_next. */
static tidemark_status next_str(tidemark_sub_feed *f, uint32_t timeout_ms, char *out, size_t cap) {
  tidemark_sub_events *ev = SENTINEL;
  tidemark_status st = tidemark_sub_feed_next(f, timeout_ms, &ev);
  out[0] = '\0';
  if (st != TIDEMARK_OK) {
    CHECK(ev == SENTINEL);
    return st;
  }
  size_t n = tidemark_sub_events_len(ev);
  const tidemark_sub_event *e = tidemark_sub_events_data(ev);
  CHECK(n > 0 && e != NULL);
  size_t used = 0;
  for (size_t i = 0; i < n && used < cap; i++) {
    if (e[i].kind == TIDEMARK_EVENT_PUT) {
      used += snprintf(out + used, cap - used, "%s%.*s:%" PRIu64 ":%.*s", i ? " " : "", (int)e[i].event.stream.len,
                       (const char *)e[i].event.stream.ptr, e[i].event.version, (int)e[i].event.event_type.len,
                       (const char *)e[i].event.event_type.ptr);
      CHECK(e[i].event.id.len == 16 && e[i].event.revision == e[i].revision);
    } else {
      CHECK(n == 1 && e[i].event.stream.len == 0);
      used += snprintf(out + used, cap - used, "%s@%" PRIu64,
                       e[i].kind == TIDEMARK_EVENT_CLOSED      ? "CLOSED"
                       : e[i].kind == TIDEMARK_EVENT_COMPACTED ? "COMPACTED"
                                                               : "PROGRESS",
                       e[i].revision);
    }
  }
  tidemark_sub_events_free(ev);
  return st;
}

void test_subscriptions(void) {
  section("transient subscriptions: push, replay, selectors, credit");
  tidemark_store *s = open_store(NULL);
  append1(s, "order-1", "created", "a");
  append1(s, "cart-1", "created", "b");
  append1(s, "order-1", "paid", "c");
  uint64_t rev = 0;
  CHECK_OK(tidemark_store_put(s, S("user"), S("v"), &rev));

  /* start_revision 1 replays history (ExESDB ignores start_from). */
  sub_log all;
  sub_log_init(&all);
  tidemark_watch_options from1 = tidemark_watch_options_default();
  from1.start_revision = 1;
  uint64_t id = UNTOUCHED;
  CHECK_OK(tidemark_store_subscribe(s, NULL, &from1, sub_cb, &all, sub_drop, &id));
  CHECK(id != UNTOUCHED);
  CHECK(sub_wait(&all, &all.n, 3));

  sub_log typed;
  sub_log_init(&typed);
  tidemark_stream_selector order_created = streams_sel(TIDEMARK_STREAMS_PREFIX, "order-", "created");
  uint64_t tid = 0;
  CHECK_OK(tidemark_store_subscribe(s, &order_created, &from1, sub_cb, &typed, sub_drop, &tid));
  append1(s, "order-2", "created", "d");
  append1(s, "order-2", "paid", "e");
  CHECK(sub_wait(&all, &all.n, 5));
  CHECK(sub_wait(&typed, &typed.n, 2));
  pthread_mutex_lock(&all.mu);
  CHECK(strcmp(all.seen[0], "order-1:0:created") == 0 && strcmp(all.seen[1], "cart-1:0:created") == 0);
  CHECK(strcmp(all.seen[4], "order-2:1:paid") == 0 && all.out_of_order == 0);
  pthread_mutex_unlock(&all.mu);
  pthread_mutex_lock(&typed.mu);
  CHECK(typed.n == 2 && strcmp(typed.seen[1], "order-2:0:created") == 0);
  pthread_mutex_unlock(&typed.mu);

  /* Credit counts subscription events; unwatch ends it and drops userdata once. */
  sub_log paced;
  sub_log_init(&paced);
  tidemark_watch_options credit = from1;
  credit.credit = 1;
  tidemark_stream_selector one = streams_sel(TIDEMARK_STREAMS_ONE, "order-1", NULL);
  uint64_t pid = 0;
  CHECK_OK(tidemark_store_subscribe(s, &one, &credit, sub_cb, &paced, sub_drop, &pid));
  CHECK(sub_wait(&paced, &paced.n, 1));
  sleep_ms(20); /* can only hide a failure, never cause one */
  pthread_mutex_lock(&paced.mu);
  CHECK(paced.n == 1);
  pthread_mutex_unlock(&paced.mu);
  CHECK_OK(tidemark_store_watch_credit(s, pid, 5));
  CHECK(sub_wait(&paced, &paced.n, 2));
  pthread_mutex_lock(&paced.mu);
  CHECK(paced.n == 2 && strcmp(paced.seen[1], "order-1:1:paid") == 0);
  pthread_mutex_unlock(&paced.mu);
  CHECK_OK(tidemark_store_unwatch(s, pid));
  CHECK(paced.drops == 1 && paced.terminals == 0);
  CHECK_ST(tidemark_store_unwatch(s, pid), TIDEMARK_ERR_NOT_FOUND);
  CHECK_OK(tidemark_store_unwatch(s, tid));

  /* Closing the store: CLOSED is the last call, then the drop. */
  tidemark_store_close(s);
  CHECK(sub_wait(&all, &all.drops, 1));
  CHECK(all.terminals == 1 && all.terminal_kind == TIDEMARK_EVENT_CLOSED && all.after_terminal == 0);
  CHECK(typed.drops == 1 && typed.terminals == 0);
  pthread_mutex_destroy(&all.mu);
  pthread_mutex_destroy(&typed.mu);
  pthread_mutex_destroy(&paced.mu);
}

void test_subscriptions_pull(void) {
  section("transient subscriptions: pull, compaction, close");
  tidemark_store *s = open_store(NULL);
  tidemark_sub_feed *now = NULL, *lag = NULL, *cart = NULL;
  CHECK_OK(tidemark_store_subscribe_pull(s, NULL, NULL, &now));
  CHECK(tidemark_sub_feed_id(now) > 0);
  tidemark_watch_options small = tidemark_watch_options_default();
  small.max_queue = 1;
  tidemark_stream_selector order = streams_sel(TIDEMARK_STREAMS_ONE, "order", NULL);
  tidemark_stream_selector carts = streams_sel(TIDEMARK_STREAMS_ALL, NULL, "added");
  CHECK_OK(tidemark_store_subscribe_pull(s, &order, &small, &lag));
  CHECK_OK(tidemark_store_subscribe_pull(s, &carts, NULL, &cart));
  char got[512];
  CHECK_ST(next_str(now, 0, got, sizeof got), TIDEMARK_ERR_TIMEOUT);
  append1(s, "order", "created", "1");
  append1(s, "order", "paid", "2");
  append1(s, "cart", "added", "3");
  /* A delivery is everything queued: the three appends, in order. */
  CHECK_OK(next_str(now, WAIT_MS, got, sizeof got));
  CHECK(strcmp(got, "order:0:created order:1:paid cart:0:added") == 0);
  CHECK_OK(next_str(cart, WAIT_MS, got, sizeof got));
  CHECK(strcmp(got, "cart:0:added") == 0);

  /* `lag` holds one event and still has to read the second from the log: compaction ends
   * it with COMPACTED naming the earliest retained revision. */
  uint64_t head = tidemark_store_current_revision(s);
  CHECK_OK(tidemark_store_compact(s, head, NULL));
  CHECK_OK(next_str(lag, WAIT_MS, got, sizeof got));
  CHECK(strcmp(got, "order:0:created") == 0);
  CHECK_OK(next_str(lag, WAIT_MS, got, sizeof got));
  char want[64];
  snprintf(want, sizeof want, "COMPACTED@%" PRIu64, head);
  CHECK(strcmp(got, want) == 0);
  CHECK_ST(next_str(lag, 0, got, sizeof got), TIDEMARK_ERR_CLOSED);
  tidemark_sub_feed_close(lag);

  /* Starting below the earliest retained revision, or in the future, is refused. */
  tidemark_watch_options o = tidemark_watch_options_default();
  tidemark_sub_feed *f = SENTINEL;
  o.start_revision = 1;
  CHECK_ST(tidemark_store_subscribe_pull(s, NULL, &o, &f), TIDEMARK_ERR_COMPACTED);
  o.start_revision = head + 2;
  CHECK_ST(tidemark_store_subscribe_pull(s, NULL, &o, &f), TIDEMARK_ERR_FUTURE_REVISION);
  CHECK(f == SENTINEL);

  /* After close: what was appended, then CLOSED, then ERR_CLOSED. */
  append1(s, "cart", "added", "4");
  tidemark_store_close(s);
  CHECK_OK(next_str(cart, WAIT_MS, got, sizeof got));
  CHECK(strcmp(got, "cart:1:added") == 0);
  CHECK_OK(next_str(cart, WAIT_MS, got, sizeof got));
  CHECK(strncmp(got, "CLOSED", 6) == 0);
  CHECK_ST(next_str(cart, 0, got, sizeof got), TIDEMARK_ERR_CLOSED);
  tidemark_sub_feed_close(cart);
  tidemark_sub_feed_close(now);
}

void test_subscriptions_bad_input(void) {
  section("transient subscriptions: bad input");
  tidemark_store *s = open_store(NULL);
  sub_log l;
  sub_log_init(&l);
  uint64_t id = UNTOUCHED;
  tidemark_sub_feed *f = SENTINEL;
  tidemark_sub_events *ev = SENTINEL;
  CHECK_NULL_ARG(tidemark_store_subscribe(NULL, NULL, NULL, sub_cb, &l, sub_drop, &id));
  CHECK_NULL_ARG(tidemark_store_subscribe(s, NULL, NULL, NULL, &l, sub_drop, &id));
  CHECK_NULL_ARG(tidemark_store_subscribe(s, NULL, NULL, sub_cb, &l, sub_drop, NULL));
  CHECK(l.drops == 0 && id == UNTOUCHED); /* nothing was taken over */
  CHECK_NULL_ARG(tidemark_store_subscribe_pull(NULL, NULL, NULL, &f));
  CHECK_NULL_ARG(tidemark_store_subscribe_pull(s, NULL, NULL, NULL));
  CHECK_NULL_ARG(tidemark_sub_feed_next(NULL, 0, &ev));
  CHECK(f == SENTINEL && ev == SENTINEL);

  char long_name[TIDEMARK_MAX_NAME + 2];
  memset(long_name, 'x', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  struct {
    tidemark_stream_selector sel;
    tidemark_status want;
  } bad[] = {
      {streams_sel(TIDEMARK_STREAMS_ONE, "", NULL), TIDEMARK_ERR_INVALID_ARGUMENT},
      {streams_sel(TIDEMARK_STREAMS_PREFIX, "", "t"), TIDEMARK_ERR_INVALID_ARGUMENT},
      {streams_sel(TIDEMARK_STREAMS_ONE, long_name, NULL), TIDEMARK_ERR_TOO_LARGE},
      {streams_sel(TIDEMARK_STREAMS_PREFIX, long_name, NULL), TIDEMARK_ERR_TOO_LARGE},
      {streams_sel(7, "x", NULL), TIDEMARK_ERR_INVALID_ARGUMENT},
      {{TIDEMARK_STREAMS_ONE, {NULL, 3}, {NULL, 0}}, TIDEMARK_ERR_NULL_ARGUMENT},
      {{TIDEMARK_STREAMS_ALL, {NULL, 0}, {NULL, 2}}, TIDEMARK_ERR_NULL_ARGUMENT},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    size_t drops = l.drops;
    CHECK_ST(tidemark_store_subscribe(s, &bad[i].sel, NULL, sub_cb, &l, sub_drop, &id), bad[i].want);
    CHECK(l.drops == drops + 1); /* a refused registration drops the userdata at once */
    CHECK_ST(tidemark_store_subscribe_pull(s, &bad[i].sel, NULL, &f), bad[i].want);
  }
  CHECK(id == UNTOUCHED && f == SENTINEL && l.calls == 0);
  CHECK(tidemark_store_watcher_count(s) == 0);

  /* A feed: NULL out, then the NULL no-ops. */
  tidemark_sub_feed *ok = NULL;
  CHECK_OK(tidemark_store_subscribe_pull(s, NULL, NULL, &ok));
  CHECK_NULL_ARG(tidemark_sub_feed_next(ok, 0, NULL));
  tidemark_sub_feed_close(ok);
  CHECK(tidemark_sub_feed_id(NULL) == 0);
  CHECK(tidemark_sub_events_len(NULL) == 0);
  CHECK(tidemark_sub_events_data(NULL) == NULL);
  tidemark_sub_events_free(NULL);
  tidemark_sub_feed_close(NULL);
  tidemark_store_close(s);
  pthread_mutex_destroy(&l.mu);
}
