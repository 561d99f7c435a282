/* tests/c/test_watch.c: Push and pull watches. */
#include "harness.h"

/* ------------------------------------------------------------------------------------------
 * Push watches.
 * ---------------------------------------------------------------------------------------- */

static pthread_mutex_t g_count_mu = PTHREAD_MUTEX_INITIALIZER;
static size_t g_count_calls;
static void count_cb(void *userdata, const tidemark_event *events, size_t count) {
  (void)events;
  (void)count;
  CHECK(userdata == NULL);
  pthread_mutex_lock(&g_count_mu);
  g_count_calls++;
  pthread_mutex_unlock(&g_count_mu);
}
static size_t count_calls(void) {
  pthread_mutex_lock(&g_count_mu);
  size_t n = g_count_calls;
  pthread_mutex_unlock(&g_count_mu);
  return n;
}

void test_push_basic(void) {
  section("push watch: order, batches in one delivery, unwatch");
  tidemark_store *s = open_store(NULL);
  collector c;
  collector_init(&c, 0);
  uint64_t id = UNTOUCHED;
  CHECK_OK(tidemark_store_watch(s, NULL, NULL, collect_cb, &c, collect_drop, &id));
  CHECK(id != 0 && id != UNTOUCHED);
  CHECK(tidemark_store_watcher_count(s) == 1);

  put(s, "a", "1");
  put(s, "b", "1");
  tidemark_batch *b = tidemark_batch_new();
  CHECK_OK(tidemark_batch_put(b, S("c"), S("1")));
  CHECK_OK(tidemark_batch_put(b, S("d"), S("1")));
  CHECK_OK(tidemark_batch_put(b, S("c"), S("2")));
  CHECK_OK(tidemark_store_commit(s, b, NULL)); /* 3, 4, 5 */
  tidemark_batch_free(b);
  CHECK_OK(tidemark_store_delete(s, S("a"), NULL)); /* 6 */
  put(s, "e", "1");                                 /* 7 */

  WAIT(&c, p_events, 7);
  CHECK(seq_is(&c, 1, 7));
  pthread_mutex_lock(&c.mu);
  CHECK(strcmp(c.ev[0].key, "a") == 0 && strcmp(c.ev[0].value, "1") == 0 && c.ev[0].kind == TIDEMARK_EVENT_PUT);
  CHECK(c.ev[0].version == 1 && c.ev[0].create_revision == 1);
  CHECK(c.ev[2].delivery == c.ev[3].delivery && c.ev[3].delivery == c.ev[4].delivery); /* one commit, one call */
  CHECK(strcmp(c.ev[4].key, "c") == 0 && c.ev[4].version == 2 && c.ev[4].create_revision == 3);
  CHECK(c.ev[5].kind == TIDEMARK_EVENT_DELETE && strcmp(c.ev[5].key, "a") == 0 && c.ev[5].value_len == 0);
  CHECK(c.ev[5].version == 0 && c.ev[5].create_revision == 0);
  pthread_mutex_unlock(&c.mu);
  check_clean(&c);
  CHECK(snap(&c).drops == 0 && snap(&c).terminals == 0);

  /* After unwatch returns: drop has run once, no callback runs or will run. */
  CHECK_OK(tidemark_store_unwatch(s, id));
  cstats after = snap(&c);
  CHECK(after.drops == 1);
  CHECK(after.inside == 0);
  CHECK(tidemark_store_watcher_count(s) == 0);
  put(s, "f", "1");
  sleep_ms(100);
  CHECK(snap(&c).calls == after.calls && snap(&c).n == 7);
  check_clean(&c);
  CHECK_ST(tidemark_store_unwatch(s, id), TIDEMARK_ERR_NOT_FOUND);
  CHECK(tidemark_last_error_message()[0] != '\0');
  CHECK(tidemark_last_error_revision() == 0);
  CHECK_ST(tidemark_store_unwatch(s, 424242), TIDEMARK_ERR_NOT_FOUND);
  collector_destroy(&c);

  /* NULL userdata and NULL drop_userdata are fine. */
  uint64_t id2 = 0;
  size_t before = count_calls();
  CHECK_OK(tidemark_store_watch(s, NULL, NULL, count_cb, NULL, NULL, &id2));
  put(s, "g", "1");
  double deadline = now_s() + WAIT_S;
  while (count_calls() == before && now_s() < deadline) sleep_ms(2);
  CHECK(count_calls() > before);
  CHECK_OK(tidemark_store_unwatch(s, id2));
  tidemark_store_close(s);
}

void test_push_selectors_and_start(void) {
  section("push watch: selectors, start_revision in the past, current + 1");
  tidemark_store *s = open_store(NULL);
  put(s, "p/1", "a"); /* 1 */
  put(s, "q/1", "a"); /* 2 */
  put(s, "p/2", "a"); /* 3 */

  collector cp, ck, cr, cn, cs;
  collector_init(&cp, 0);
  collector_init(&ck, 0);
  collector_init(&cr, 0);
  collector_init(&cn, 0);
  collector_init(&cs, 0);
  tidemark_watch_options o = tidemark_watch_options_default();
  uint64_t idp = 0, idk = 0, idr = 0, idn = 0, ids = 0;

  tidemark_selector sp = sel_prefix("p/");
  o.start_revision = 1; /* replay p/1 (1), p/2 (3), then live */
  CHECK_OK(tidemark_store_watch(s, &sp, &o, collect_cb, &cp, collect_drop, &idp));
  tidemark_selector sk = sel_key("q/1");
  o.start_revision = 0; /* only the future */
  CHECK_OK(tidemark_store_watch(s, &sk, &o, collect_cb, &ck, collect_drop, &idk));
  tidemark_selector sr = sel_range("p/2", "q/"); /* p/2 .. p/zzz */
  o.start_revision = 2;
  CHECK_OK(tidemark_store_watch(s, &sr, &o, collect_cb, &cr, collect_drop, &idr));
  o.start_revision = tidemark_store_current_revision(s) + 1; /* = the future, explicitly */
  CHECK_OK(tidemark_store_watch(s, NULL, &o, collect_cb, &cn, collect_drop, &idn));
  tidemark_selector sa = sel_all();
  o.start_revision = 3;
  CHECK_OK(tidemark_store_watch(s, &sa, &o, collect_cb, &cs, collect_drop, &ids));
  CHECK(tidemark_store_watcher_count(s) == 5);
  CHECK(idp != idk && idk != idr && idr != idn && idn != ids);

  put(s, "q/2", "b"); /* 4 */
  put(s, "p/3", "b"); /* 5 */
  put(s, "q/1", "b"); /* 6 */
  put(s, "p/22", "b"); /* 7 */

  WAIT(&cp, p_events, 4);
  WAIT(&ck, p_events, 1);
  WAIT(&cr, p_events, 3);
  WAIT(&cn, p_events, 4);
  WAIT(&cs, p_events, 5);
  sleep_ms(50); /* anything extra would show now */
  pthread_mutex_lock(&cp.mu);
  CHECK(cp.st.n == 4 && cp.ev[0].revision == 1 && cp.ev[1].revision == 3 && cp.ev[2].revision == 5 && cp.ev[3].revision == 7);
  pthread_mutex_unlock(&cp.mu);
  pthread_mutex_lock(&ck.mu);
  CHECK(ck.st.n == 1 && ck.ev[0].revision == 6 && ck.ev[0].version == 2 && strcmp(ck.ev[0].value, "b") == 0);
  pthread_mutex_unlock(&ck.mu);
  pthread_mutex_lock(&cr.mu);
  CHECK(cr.st.n == 3 && cr.ev[0].revision == 3 && cr.ev[1].revision == 5 && cr.ev[2].revision == 7);
  pthread_mutex_unlock(&cr.mu);
  CHECK(seq_is(&cn, 4, 4));
  CHECK(seq_is(&cs, 3, 5));

  collector *all[] = {&cp, &ck, &cr, &cn, &cs};
  uint64_t ids_all[] = {idp, idk, idr, idn, ids};
  for (int i = 0; i < 5; i++) {
    CHECK_OK(tidemark_store_unwatch(s, ids_all[i]));
    CHECK(snap(all[i]).drops == 1);
    check_clean(all[i]);
    collector_destroy(all[i]);
  }
  CHECK(tidemark_store_watcher_count(s) == 0);
  tidemark_store_close(s);
}

void test_push_errors(void) {
  section("push watch: errors, drop_userdata on failed registration, NULL arguments");
  tidemark_store *s = open_store(NULL);
  for (int i = 0; i < 5; i++) put(s, "k", "v");
  CHECK_OK(tidemark_store_compact(s, 4, NULL));

  collector c;
  collector_init(&c, 0);
  tidemark_watch_options o = tidemark_watch_options_default();
  uint64_t id = UNTOUCHED;

  o.start_revision = 2; /* compacted */
  CHECK_ST(tidemark_store_watch(s, NULL, &o, collect_cb, &c, collect_drop, &id), TIDEMARK_ERR_COMPACTED);
  CHECK(tidemark_last_error_revision() == 4);
  CHECK(tidemark_last_error_revision() == tidemark_store_earliest_revision(s));
  CHECK(strstr(tidemark_last_error_message(), "4") != NULL);
  CHECK(id == UNTOUCHED);
  CHECK(snap(&c).drops == 1); /* called before the failed call returned */

  o.start_revision = 7; /* current is 5: 6 is fine, 7 is the future */
  CHECK_ST(tidemark_store_watch(s, NULL, &o, collect_cb, &c, collect_drop, &id), TIDEMARK_ERR_FUTURE_REVISION);
  CHECK(tidemark_last_error_revision() == 5);
  CHECK(snap(&c).drops == 2);

  o.start_revision = 0;
  tidemark_selector bad_kind = {99, {B("k"), 1}, {NULL, 0}};
  CHECK_ST(tidemark_store_watch(s, &bad_kind, &o, collect_cb, &c, collect_drop, &id), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(snap(&c).drops == 3);
  tidemark_selector backwards = sel_range("b", "a");
  CHECK_ST(tidemark_store_watch(s, &backwards, &o, collect_cb, &c, collect_drop, &id), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(snap(&c).drops == 4);
  tidemark_selector empty_key = sel_key("");
  CHECK_ST(tidemark_store_watch(s, &empty_key, &o, collect_cb, &c, collect_drop, &id), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(snap(&c).drops == 5);
  /* Selector bytes NULL with a length: the registration failed after taking userdata over. */
  tidemark_selector null_start = {TIDEMARK_SELECT_PREFIX, {NULL, 2}, {NULL, 0}};
  CHECK_NULL_ARG(tidemark_store_watch(s, &null_start, &o, collect_cb, &c, collect_drop, &id));
  CHECK(snap(&c).drops == 6);

  /* NULL store, callback or watch_id_out: nothing taken over, drop not called. */
  CHECK_NULL_ARG(tidemark_store_watch(NULL, NULL, &o, collect_cb, &c, collect_drop, &id));
  CHECK_NULL_ARG(tidemark_store_watch(s, NULL, &o, NULL, &c, collect_drop, &id));
  CHECK_NULL_ARG(tidemark_store_watch(s, NULL, &o, collect_cb, &c, collect_drop, NULL));
  CHECK(snap(&c).drops == 6);
  CHECK(id == UNTOUCHED);
  CHECK(snap(&c).calls == 0);
  CHECK(tidemark_store_watcher_count(s) == 0);

  CHECK_NULL_ARG(tidemark_store_unwatch(NULL, 1));
  CHECK_NULL_ARG(tidemark_store_watch_credit(NULL, 1, 1));
  CHECK_ST(tidemark_store_watch_credit(s, 4242, 1), TIDEMARK_ERR_NOT_FOUND);
  CHECK_ST(tidemark_store_unwatch(s, 0), TIDEMARK_ERR_NOT_FOUND);
  collector_destroy(&c);
  tidemark_store_close(s);
}

void test_push_slow(void) {
  section("push watch: slow consumer with a small max_queue loses nothing");
  tidemark_store *s = open_store(NULL);
  collector live, past;
  collector_init(&live, 1000); /* 1 ms per delivery */
  collector_init(&past, 500);
  tidemark_watch_options o = tidemark_watch_options_default();
  o.max_queue = 4;
  uint64_t id_live = 0, id_past = 0;
  CHECK_OK(tidemark_store_watch(s, NULL, &o, collect_cb, &live, collect_drop, &id_live));

  char key[32];
  tidemark_batch *b = tidemark_batch_new();
  size_t total = 0;
  for (int i = 0; i < 300; i++) {
    snprintf(key, sizeof key, "slow/%03d", i % 50);
    put(s, key, "v");
    total++;
    if (i % 60 == 0) { /* a commit of 10, bigger than max_queue: still one delivery */
      tidemark_batch_clear(b);
      for (int j = 0; j < 10; j++) {
        snprintf(key, sizeof key, "batch/%d/%d", i, j);
        CHECK_OK(tidemark_batch_put(b, S(key), S("b")));
      }
      CHECK_OK(tidemark_store_commit(s, b, NULL));
      total += 10;
    }
    if (i == 150) { /* a slow watch replaying from the past while writes go on */
      o.start_revision = 1;
      CHECK_OK(tidemark_store_watch(s, NULL, &o, collect_cb, &past, collect_drop, &id_past));
    }
  }
  tidemark_batch_free(b);
  CHECK(total == tidemark_store_current_revision(s));

  collector *cs[] = {&live, &past};
  uint64_t ids[] = {id_live, id_past};
  for (int k = 0; k < 2; k++) {
    collector *c = cs[k];
    WAIT(c, p_events, total);
    CHECK(seq_is(c, 1, total));
    /* Every batch arrived whole in one delivery. */
    pthread_mutex_lock(&c->mu);
    size_t split = 0;
    for (size_t i = 0; i + 1 < c->st.n; i++) {
      if (strncmp(c->ev[i].key, "batch/", 6) == 0 && strncmp(c->ev[i + 1].key, "batch/", 6) == 0 &&
          c->ev[i].delivery != c->ev[i + 1].delivery)
        split++;
    }
    pthread_mutex_unlock(&c->mu);
    CHECK(split == 0);
    CHECK_OK(tidemark_store_unwatch(s, ids[k]));
    CHECK(snap(c).drops == 1);
    check_clean(c);
    collector_destroy(c);
  }
  tidemark_store_close(s);
}

void test_push_credit(void) {
  section("push watch: credit flow control");
  tidemark_store *s = open_store(NULL);
  collector c;
  collector_init(&c, 0);
  tidemark_watch_options o = tidemark_watch_options_default();
  o.credit = 3;
  uint64_t id = 0;
  CHECK_OK(tidemark_store_watch(s, NULL, &o, collect_cb, &c, collect_drop, &id));
  char key[16];
  for (int i = 0; i < 10; i++) {
    snprintf(key, sizeof key, "c%d", i);
    put(s, key, "v");
  }
  WAIT(&c, p_events, 3);
  sleep_ms(150);
  CHECK(snap(&c).n == 3); /* the credit is spent: nothing more */
  CHECK_OK(tidemark_store_watch_credit(s, id, 4));
  WAIT(&c, p_events, 7);
  sleep_ms(100);
  CHECK(snap(&c).n == 7);
  CHECK_OK(tidemark_store_watch_credit(s, id, 100));
  WAIT(&c, p_events, 10);
  CHECK(seq_is(&c, 1, 10));
  check_clean(&c);
  CHECK_OK(tidemark_store_unwatch(s, id));
  CHECK(snap(&c).drops == 1);
  CHECK_ST(tidemark_store_watch_credit(s, id, 1), TIDEMARK_ERR_NOT_FOUND); /* ended */
  collector_destroy(&c);

  /* A commit bigger than the credit is not split; the credit then stays at zero. */
  collector_init(&c, 0);
  o.credit = 2;
  CHECK_OK(tidemark_store_watch(s, NULL, &o, collect_cb, &c, collect_drop, &id));
  tidemark_batch *b = tidemark_batch_new();
  for (int i = 0; i < 5; i++) {
    snprintf(key, sizeof key, "b%d", i);
    CHECK_OK(tidemark_batch_put(b, S(key), S("v")));
  }
  uint64_t first = 0;
  CHECK_OK(tidemark_store_commit(s, b, &first));
  tidemark_batch_free(b);
  WAIT(&c, p_events, 5);
  CHECK(snap(&c).calls == 1);
  put(s, "after", "v");
  sleep_ms(150);
  CHECK(snap(&c).n == 5);
  CHECK_OK(tidemark_store_watch_credit(s, id, 1));
  WAIT(&c, p_events, 6);
  CHECK(seq_is(&c, first, 6));
  check_clean(&c);
  CHECK_OK(tidemark_store_unwatch(s, id));
  collector_destroy(&c);

  /* Paused with a tiny queue: what does not fit waits in the log and comes later, in order. */
  collector_init(&c, 0);
  o = tidemark_watch_options_default();
  o.credit = 1;
  o.max_queue = 2;
  CHECK_OK(tidemark_store_watch(s, NULL, &o, collect_cb, &c, collect_drop, &id));
  first = put(s, "p", "0");
  WAIT(&c, p_events, 1);
  for (int i = 1; i < 30; i++) put(s, "p", "i");
  sleep_ms(50);
  CHECK(snap(&c).n == 1);
  for (int granted = 1; granted < 30; granted += 7) { /* credit in small steps */
    CHECK_OK(tidemark_store_watch_credit(s, id, 7));
    WAIT(&c, p_events, granted + 7 < 30 ? (size_t)granted + 7 : 30);
  }
  CHECK(seq_is(&c, first, 30));
  check_clean(&c);
  CHECK_OK(tidemark_store_unwatch(s, id));
  collector_destroy(&c);

  /* Credit on a watch without a credit limit is accepted and changes nothing. */
  collector_init(&c, 0);
  CHECK_OK(tidemark_store_watch(s, NULL, NULL, collect_cb, &c, collect_drop, &id));
  CHECK_OK(tidemark_store_watch_credit(s, id, 5));
  put(s, "x", "1");
  put(s, "y", "1");
  WAIT(&c, p_events, 2);
  CHECK_OK(tidemark_store_unwatch(s, id));
  check_clean(&c);
  collector_destroy(&c);
  tidemark_store_close(s);
}

void test_push_progress(void) {
  section("push watch: progress events");
  tidemark_store *s = open_store(NULL);
  put(s, "a", "1");
  put(s, "b", "1");
  collector c;
  collector_init(&c, 0);
  tidemark_watch_options o = tidemark_watch_options_default();
  o.start_revision = 1;
  o.progress_interval_ms = 20;
  uint64_t id = 0;
  CHECK_OK(tidemark_store_watch(s, NULL, &o, collect_cb, &c, collect_drop, &id));
  WAIT(&c, p_events, 2);
  WAIT(&c, p_progress, 2);
  cstats st = snap(&c);
  CHECK(st.progress_rev == 2); /* the revision the watch has caught up to */
  put(s, "c", "1");
  WAIT(&c, p_events, 3);
  size_t progress_then = snap(&c).progress;
  WAIT(&c, p_progress, progress_then + 1);
  CHECK(snap(&c).progress_rev == 3);
  CHECK(seq_is(&c, 1, 3));
  check_clean(&c);
  CHECK_OK(tidemark_store_unwatch(s, id));
  CHECK(snap(&c).drops == 1);
  collector_destroy(&c);
  tidemark_store_close(s);
}

/* ------------------------------------------------------------------------------------------
 * Pull watches.
 * ---------------------------------------------------------------------------------------- */

void test_pull(void) {
  section("pull watch: next, timeout, batches, replay, progress");
  tidemark_store *s = open_store(NULL);
  tidemark_watch *w = SENTINEL;
  tidemark_watch_options o = tidemark_watch_options_default();

  CHECK_NULL_ARG(tidemark_watch_open(NULL, NULL, NULL, &w));
  CHECK_NULL_ARG(tidemark_watch_open(s, NULL, NULL, NULL));
  tidemark_selector null_start = {TIDEMARK_SELECT_KEY, {NULL, 1}, {NULL, 0}};
  CHECK_NULL_ARG(tidemark_watch_open(s, &null_start, NULL, &w));
  tidemark_selector bad_kind = {5, {NULL, 0}, {NULL, 0}};
  CHECK_ST(tidemark_watch_open(s, &bad_kind, NULL, &w), TIDEMARK_ERR_INVALID_ARGUMENT);
  tidemark_selector backwards = sel_range("b", "a");
  CHECK_ST(tidemark_watch_open(s, &backwards, NULL, &w), TIDEMARK_ERR_INVALID_ARGUMENT);
  o.start_revision = 2; /* current is 0: 1 is fine, 2 is the future */
  CHECK_ST(tidemark_watch_open(s, NULL, &o, &w), TIDEMARK_ERR_FUTURE_REVISION);
  CHECK(tidemark_last_error_revision() == 0);
  CHECK(w == SENTINEL);
  CHECK(tidemark_store_watcher_count(s) == 0);

  w = NULL;
  CHECK_OK(tidemark_watch_open(s, NULL, NULL, &w));
  REQUIRE(w != NULL);
  uint64_t wid = tidemark_watch_id(w);
  CHECK(wid != 0);
  CHECK(tidemark_watch_id(NULL) == 0);
  CHECK(tidemark_store_watcher_count(s) == 1);

  tidemark_events *ev = SENTINEL;
  CHECK_ST(tidemark_watch_next(w, 0, &ev), TIDEMARK_ERR_TIMEOUT);
  CHECK(ev == SENTINEL);
  CHECK_ST(tidemark_watch_next(w, 30, &ev), TIDEMARK_ERR_TIMEOUT);
  CHECK(ev == SENTINEL);
  CHECK_NULL_ARG(tidemark_watch_next(NULL, 0, &ev));
  CHECK_NULL_ARG(tidemark_watch_next(w, 0, NULL));
  CHECK(ev == SENTINEL);

  uint64_t r = put(s, "a", "1");
  ev = NULL;
  CHECK_OK(tidemark_watch_next(w, WAIT_MS, &ev));
  REQUIRE(ev != NULL && tidemark_events_len(ev) == 1);
  const tidemark_event *d = tidemark_events_data(ev);
  CHECK(d[0].revision == r && bytes_is(d[0].key, "a") && bytes_is(d[0].value, "1") && d[0].version == 1);
  CHECK(tidemark_events_next_revision(ev) == r + 1);
  CHECK(!tidemark_events_has_more(ev));
  CHECK(arena_holds(ev));
  tidemark_events_free(ev);

  /* A batch comes in one next. */
  tidemark_batch *b = tidemark_batch_new();
  CHECK_OK(tidemark_batch_put(b, S("b"), S("1")));
  CHECK_OK(tidemark_batch_delete(b, S("a")));
  CHECK_OK(tidemark_batch_put(b, S("c"), S("1")));
  uint64_t first = 0;
  CHECK_OK(tidemark_store_commit(s, b, &first));
  tidemark_batch_free(b);
  ev = NULL;
  CHECK_OK(tidemark_watch_next(w, WAIT_MS, &ev));
  REQUIRE(ev != NULL && tidemark_events_len(ev) == 3);
  d = tidemark_events_data(ev);
  CHECK(d[0].revision == first && d[1].revision == first + 1 && d[2].revision == first + 2);
  CHECK(d[1].kind == TIDEMARK_EVENT_DELETE && bytes_is(d[1].key, "a"));
  CHECK(tidemark_events_next_revision(ev) == first + 3);
  CHECK(arena_holds(ev));
  tidemark_events_free(ev);

  /* Several commits queued: whole commits, in order, nothing twice. */
  collector c;
  collector_init(&c, 0);
  for (int i = 0; i < 20; i++) put(s, "many", "v");
  CHECK_OK(pull_into(w, &c, 20));
  CHECK(seq_is(&c, first + 3, 20));
  check_clean(&c);
  collector_destroy(&c);
  ev = SENTINEL;
  CHECK_ST(tidemark_watch_next(w, 0, &ev), TIDEMARK_ERR_TIMEOUT);
  CHECK(ev == SENTINEL);

  tidemark_watch_close(w);
  CHECK(tidemark_store_watcher_count(s) == 0);
  tidemark_watch_close(NULL);
  uint64_t current = tidemark_store_current_revision(s);

  /* Replay from the past with a small queue and a credit (ignored for pull watches). */
  collector_init(&c, 0);
  o = tidemark_watch_options_default();
  o.start_revision = 1;
  o.max_queue = 3;
  o.credit = 1;
  tidemark_selector sel = sel_all();
  w = NULL;
  CHECK_OK(tidemark_watch_open(s, &sel, &o, &w));
  put(s, "live", "v");
  CHECK_OK(pull_into(w, &c, current + 1));
  CHECK(seq_is(&c, 1, current + 1));
  check_clean(&c);
  collector_destroy(&c);
  tidemark_watch_close(w);

  /* A selector. */
  collector_init(&c, 0);
  sel = sel_key("many");
  o = tidemark_watch_options_default();
  o.start_revision = 1;
  w = NULL;
  CHECK_OK(tidemark_watch_open(s, &sel, &o, &w));
  CHECK_OK(pull_into(w, &c, 20));
  cstats cs = snap(&c);
  CHECK(cs.n == 20);
  pthread_mutex_lock(&c.mu);
  CHECK(c.ev[19].version == 20 && strcmp(c.ev[19].key, "many") == 0);
  pthread_mutex_unlock(&c.mu);
  collector_destroy(&c);
  tidemark_watch_close(w);

  /* Progress on an idle pull watch: one PROGRESS event at the current revision. */
  o = tidemark_watch_options_default();
  o.progress_interval_ms = 20;
  w = NULL;
  CHECK_OK(tidemark_watch_open(s, NULL, &o, &w));
  ev = NULL;
  CHECK_OK(tidemark_watch_next(w, WAIT_MS, &ev));
  REQUIRE(ev != NULL && tidemark_events_len(ev) == 1);
  d = tidemark_events_data(ev);
  CHECK(d[0].kind == TIDEMARK_EVENT_PROGRESS);
  CHECK(d[0].revision == tidemark_store_current_revision(s));
  CHECK(d[0].key.len == 0 && d[0].value.len == 0 && d[0].version == 0 && d[0].create_revision == 0);
  tidemark_events_free(ev);
  r = put(s, "after-progress", "v");
  /* Now the put (a progress event may come first if the interval elapsed meanwhile). */
  bool got_put = false;
  for (int i = 0; i < 1000 && !got_put; i++) {
    ev = NULL;
    if (!CHECK_OK(tidemark_watch_next(w, WAIT_MS, &ev))) break;
    d = tidemark_events_data(ev);
    if (d[0].kind == TIDEMARK_EVENT_PUT) {
      got_put = true;
      CHECK(tidemark_events_len(ev) == 1 && d[0].revision == r);
    } else {
      CHECK(d[0].kind == TIDEMARK_EVENT_PROGRESS && tidemark_events_len(ev) == 1);
    }
    tidemark_events_free(ev);
  }
  CHECK(got_put);
  tidemark_watch_close(w);

  /* A compacted start: COMPACTED with the earliest retained revision. */
  CHECK_OK(tidemark_store_compact(s, 5, NULL));
  o = tidemark_watch_options_default();
  o.start_revision = 3;
  w = SENTINEL;
  CHECK_ST(tidemark_watch_open(s, NULL, &o, &w), TIDEMARK_ERR_COMPACTED);
  CHECK(tidemark_last_error_revision() == 5);
  CHECK(strstr(tidemark_last_error_message(), "5") != NULL);
  CHECK(w == SENTINEL);
  o.start_revision = 5;
  w = NULL;
  CHECK_OK(tidemark_watch_open(s, NULL, &o, &w));
  collector_init(&c, 0);
  current = tidemark_store_current_revision(s);
  CHECK_OK(pull_into(w, &c, current - 4));
  CHECK(seq_is(&c, 5, current - 4));
  collector_destroy(&c);
  tidemark_watch_close(w);
  CHECK(tidemark_store_watcher_count(s) == 0);
  tidemark_store_close(s);
}
