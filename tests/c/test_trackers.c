/*
 * tests/c/test_trackers.c: trackers. Every built-in feature (streams, snapshots, contexts,
 * keys by prefix) and a user feature notify their lifecycle; replay from revision 1; members;
 * a callback that notifies and untracks itself; COMPACTED and CLOSED as the last call, then
 * the drop; and bad input (NULLs, empty names, unknown actions, bad JSON, built-in names):
 * a clear status, out-parameters untouched, the drop called exactly once.
 */
#include "harness.h"

typedef struct note {
  uint32_t action;
  uint64_t revision;
  char id[32], data[96];
} note;

typedef struct notes {
  pthread_mutex_t mu;
  note n[64];
  size_t count, drops, after_terminal, bad;
  bool ended;
  const char *feature;         /* what every notification must name */
  tidemark_store *reenter;     /* if set: notify "echo" on the first call, untrack at "stop" */
  uint64_t self;
} notes;

static void notes_init(notes *t, const char *feature) {
  memset(t, 0, sizeof *t);
  pthread_mutex_init(&t->mu, NULL);
  t->feature = feature;
}

static void copy(char *dst, size_t cap, tidemark_bytes b) {
  size_t n = b.len < cap - 1 ? b.len : cap - 1;
  memcpy(dst, b.ptr, n);
  dst[n] = '\0';
}

static void note_cb(void *userdata, const tidemark_notification *n) {
  notes *t = userdata;
  pthread_mutex_lock(&t->mu);
  if (t->ended || t->drops) t->after_terminal++;
  if (!bytes_is(n->feature, t->feature)) t->bad++;
  if (t->count < 64) {
    note *r = &t->n[t->count];
    r->action = n->action;
    r->revision = n->revision;
    copy(r->id, sizeof r->id, n->id);
    copy(r->data, sizeof r->data, n->data);
  }
  t->count++;
  t->ended = n->action == TIDEMARK_ACTION_COMPACTED || n->action == TIDEMARK_ACTION_CLOSED;
  size_t count = t->count;
  pthread_mutex_unlock(&t->mu);
  if (t->reenter != NULL && count == 1) {
    CHECK_OK(tidemark_store_notify(t->reenter, "echo", TIDEMARK_ACTION_CREATED, S("from-callback"), "1", NULL));
  }
  if (t->reenter != NULL && bytes_is(n->id, "stop")) {
    CHECK_OK(tidemark_store_untrack(t->reenter, t->self));
  }
}

static void note_drop(void *userdata) {
  notes *t = userdata;
  pthread_mutex_lock(&t->mu);
  t->drops++;
  pthread_mutex_unlock(&t->mu);
}

static size_t counted(notes *t, bool drops) {
  pthread_mutex_lock(&t->mu);
  size_t n = drops ? t->drops : t->count;
  pthread_mutex_unlock(&t->mu);
  return n;
}

static bool wait_notes(notes *t, size_t n, bool drops) {
  double until = now_s() + WAIT_S;
  while (counted(t, drops) < n) {
    if (now_s() > until) return false;
    sleep_ms(1);
  }
  return true;
}

static bool is(const notes *t, size_t i, uint32_t action, const char *id, const char *data) {
  const note *r = &t->n[i];
  bool ok = r->action == action && strcmp(r->id, id) == 0 && strcmp(r->data, data) == 0;
  if (!ok) fprintf(stderr, "  notification %zu: %u %s %s\n", i, r->action, r->id, r->data);
  return ok;
}

static void check_ended(notes *t, uint32_t action, uint64_t revision) {
  CHECK(wait_notes(t, 1, true));
  CHECK(t->drops == 1 && t->after_terminal == 0 && t->bad == 0 && t->count > 0);
  CHECK(t->n[t->count - 1].action == action && t->n[t->count - 1].revision == revision);
  CHECK(strcmp(t->n[t->count - 1].data, "null") == 0 && t->n[t->count - 1].id[0] == '\0');
}

static uint64_t track(tidemark_store *s, const char *feature, uint64_t start, notes *t) {
  tidemark_watch_options o = tidemark_watch_options_default();
  o.start_revision = start;
  uint64_t id = 0;
  CHECK_OK(tidemark_store_track(s, feature, &o, note_cb, t, note_drop, &id));
  return id;
}

static void append(tidemark_store *s, const char *stream, size_t n) {
  tidemark_stream_event ev[2];
  memset(ev, 0, sizeof ev);
  for (size_t i = 0; i < n; i++) ev[i].data = (tidemark_bytes){B("d"), 1};
  CHECK_OK(tidemark_store_append(s, S(stream), ev, n, TIDEMARK_EXPECT_ANY, NULL));
}

static void lifecycle(void) {
  tidemark_store *s = open_store(NULL);
  notes streams, snapshots, contexts, keys, jobs;
  notes_init(&streams, "streams");
  notes_init(&snapshots, "snapshots");
  notes_init(&contexts, "contexts");
  notes_init(&keys, "keys/u/");
  notes_init(&jobs, "jobs");
  track(s, "streams", 0, &streams);
  track(s, "snapshots", 0, &snapshots);
  track(s, "contexts", 0, &contexts);
  track(s, "keys/u/", 0, &keys);
  track(s, "jobs", 0, &jobs);

  append(s, "orders", 2);
  append(s, "orders", 1);
  CHECK_OK(tidemark_store_delete_stream(s, S("orders"), NULL));
  CHECK_OK(tidemark_store_snapshot_record(s, S("agg"), S("orders"), 2, S("state"), NULL));
  CHECK_OK(tidemark_store_snapshot_delete(s, S("agg"), S("orders"), 2, NULL));
  CHECK_OK(tidemark_store_context_set(s, S("cart"), "{\"n\":1}", NULL));
  CHECK_OK(tidemark_store_context_update(s, S("cart"), "{\"n\":2}", NULL));
  CHECK_OK(tidemark_store_context_delete(s, S("cart"), NULL));
  put(s, "u/a", "1");
  put(s, "other", "1");
  put(s, "u/a", "2");
  CHECK_OK(tidemark_store_delete(s, S("u/a"), NULL));
  uint64_t rev = UNTOUCHED;
  CHECK_OK(tidemark_store_notify(s, "jobs", TIDEMARK_ACTION_CREATED, S("j1"), "{\"step\":1}", &rev));
  CHECK(rev == tidemark_store_current_revision(s));
  CHECK_OK(tidemark_store_notify(s, "jobs", TIDEMARK_ACTION_DELETED, S("j1"), NULL, NULL));

  CHECK(wait_notes(&streams, 3, false));
  CHECK(is(&streams, 0, TIDEMARK_ACTION_CREATED, "orders", "{\"version\":1}"));
  CHECK(is(&streams, 1, TIDEMARK_ACTION_UPDATED, "orders", "{\"version\":2}"));
  CHECK(is(&streams, 2, TIDEMARK_ACTION_DELETED, "orders", "{}"));
  CHECK(wait_notes(&snapshots, 2, false));
  CHECK(is(&snapshots, 0, TIDEMARK_ACTION_CREATED, "orders", "{\"source\":\"agg\",\"stream\":\"orders\",\"version\":2}"));
  CHECK(is(&snapshots, 1, TIDEMARK_ACTION_DELETED, "orders", "{}"));
  CHECK(wait_notes(&contexts, 3, false));
  CHECK(is(&contexts, 0, TIDEMARK_ACTION_CREATED, "cart", "{\"version\":1}"));
  CHECK(is(&contexts, 1, TIDEMARK_ACTION_UPDATED, "cart", "{\"version\":2}"));
  CHECK(is(&contexts, 2, TIDEMARK_ACTION_DELETED, "cart", "{}"));
  CHECK(wait_notes(&keys, 3, false));
  CHECK(is(&keys, 0, TIDEMARK_ACTION_CREATED, "u/a", "{\"version\":1}"));
  CHECK(is(&keys, 1, TIDEMARK_ACTION_UPDATED, "u/a", "{\"version\":2}"));
  CHECK(is(&keys, 2, TIDEMARK_ACTION_DELETED, "u/a", "{}"));
  CHECK(wait_notes(&jobs, 2, false));
  CHECK(is(&jobs, 0, TIDEMARK_ACTION_CREATED, "j1", "{\"step\":1}"));
  CHECK(is(&jobs, 1, TIDEMARK_ACTION_DELETED, "j1", "null"));
  CHECK(jobs.n[0].revision == rev);

  /* Replay: a tracker from revision 1 sees the whole history of its feature, then live. */
  notes replay;
  notes_init(&replay, "streams");
  track(s, "streams", 1, &replay);
  append(s, "orders", 1);
  CHECK(wait_notes(&replay, 4, false));
  CHECK(is(&replay, 0, TIDEMARK_ACTION_CREATED, "orders", "{\"version\":1}"));
  CHECK(is(&replay, 2, TIDEMARK_ACTION_DELETED, "orders", "{}"));
  CHECK(is(&replay, 3, TIDEMARK_ACTION_CREATED, "orders", "{\"version\":0}"));

  uint64_t last = tidemark_store_current_revision(s);
  tidemark_store_close(s);
  notes *all[] = {&streams, &snapshots, &contexts, &keys, &jobs, &replay};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    check_ended(all[i], TIDEMARK_ACTION_CLOSED, last);
    pthread_mutex_destroy(&all[i]->mu);
  }
}

static void members_and_reentrancy(void) {
  tidemark_store *s = open_store(NULL);
  notes a, b, r;
  notes_init(&a, "jobs");
  notes_init(&b, "jobs");
  notes_init(&r, "jobs");
  uint64_t ia = track(s, "jobs", 0, &a), ib = track(s, "jobs", 0, &b);
  uint64_t ids[4] = {UNTOUCHED, UNTOUCHED, UNTOUCHED, UNTOUCHED};
  size_t count = UNTOUCHED;
  CHECK_OK(tidemark_store_tracker_members(s, "jobs", ids, 1, &count));
  CHECK(count == 2 && ids[0] == ia && ids[1] == UNTOUCHED); /* the count says: ask again */
  CHECK_OK(tidemark_store_tracker_members(s, "jobs", NULL, 0, &count));
  CHECK(count == 2);
  CHECK_OK(tidemark_store_tracker_members(s, "jobs", ids, 4, &count));
  CHECK(count == 2 && ids[0] == ia && ids[1] == ib);
  CHECK_OK(tidemark_store_tracker_members(s, "streams", ids, 4, &count));
  CHECK(count == 0);
  CHECK_OK(tidemark_store_untrack(s, ia));
  CHECK(a.drops == 1); /* untrack returns after the drop */
  CHECK_ST(tidemark_store_untrack(s, ia), TIDEMARK_ERR_NOT_FOUND);
  CHECK_OK(tidemark_store_tracker_members(s, "jobs", ids, 4, &count));
  CHECK(count == 1 && ids[0] == ib);

  /* A callback that notifies another feature, then untracks itself. */
  notes echo;
  notes_init(&echo, "echo");
  track(s, "echo", 0, &echo);
  r.reenter = s;
  r.self = track(s, "jobs", 0, &r);
  CHECK_OK(tidemark_store_notify(s, "jobs", TIDEMARK_ACTION_UPDATED, S("x"), "[1,2]", NULL));
  CHECK_OK(tidemark_store_notify(s, "jobs", TIDEMARK_ACTION_UPDATED, S("stop"), "{}", NULL));
  CHECK(wait_notes(&r, 1, true));
  CHECK(r.count == 2 && r.drops == 1 && r.after_terminal == 0);
  CHECK(is(&r, 0, TIDEMARK_ACTION_UPDATED, "x", "[1,2]"));
  CHECK(wait_notes(&echo, 1, false));
  CHECK(is(&echo, 0, TIDEMARK_ACTION_CREATED, "from-callback", "1"));
  CHECK(wait_notes(&b, 2, false));
  CHECK_ST(tidemark_store_untrack(s, r.self), TIDEMARK_ERR_NOT_FOUND);

  /* A tracker that falls behind compaction ends with COMPACTED, then its drop. */
  CHECK_OK(tidemark_store_untrack(s, ib));
  notes slow;
  notes_init(&slow, "jobs");
  tidemark_watch_options o = tidemark_watch_options_default();
  o.start_revision = 1;
  o.max_queue = 1;
  uint64_t id = 0;
  pthread_mutex_lock(&slow.mu); /* the callback blocks until we let go */
  CHECK_OK(tidemark_store_track(s, "jobs", &o, note_cb, &slow, note_drop, &id));
  for (int i = 0; i < 5; i++) CHECK_OK(tidemark_store_notify(s, "jobs", TIDEMARK_ACTION_UPDATED, S("y"), "0", NULL));
  uint64_t keep = tidemark_store_current_revision(s);
  CHECK_OK(tidemark_store_compact(s, keep, NULL));
  pthread_mutex_unlock(&slow.mu);
  check_ended(&slow, TIDEMARK_ACTION_COMPACTED, keep);
  CHECK_OK(tidemark_store_tracker_members(s, "jobs", ids, 4, &count));
  CHECK(count == 0);
  CHECK_ST(tidemark_store_track(s, "jobs", &o, note_cb, &slow, note_drop, &id), TIDEMARK_ERR_COMPACTED);
  CHECK(slow.drops == 2); /* a failed registration drops before it returns */

  tidemark_store_close(s);
  CHECK(echo.drops == 1 && a.drops == 1 && b.drops == 1);
  notes *all[] = {&a, &b, &r, &echo, &slow};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pthread_mutex_destroy(&all[i]->mu);
}

static void bad_input(void) {
  tidemark_store *s = open_store(NULL);
  notes t;
  notes_init(&t, "x");
  uint64_t id = UNTOUCHED, rev = UNTOUCHED;
  size_t count = UNTOUCHED;
  uint64_t ids[2];
  /* NULLs where nothing is taken over: no drop. */
  CHECK_NULL_ARG(tidemark_store_track(NULL, "jobs", NULL, note_cb, &t, note_drop, &id));
  CHECK_NULL_ARG(tidemark_store_track(s, "jobs", NULL, NULL, &t, note_drop, &id));
  CHECK_NULL_ARG(tidemark_store_track(s, "jobs", NULL, note_cb, &t, note_drop, NULL));
  CHECK(t.drops == 0 && id == UNTOUCHED);
  /* Refused after taking over the userdata: dropped once each. */
  CHECK_NULL_ARG(tidemark_store_track(s, NULL, NULL, note_cb, &t, note_drop, &id));
  CHECK_ST(tidemark_store_track(s, "", NULL, note_cb, &t, note_drop, &id), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_track(s, "keys/\x01\xff", NULL, note_cb, &t, note_drop, &id), TIDEMARK_ERR_INVALID_ARGUMENT);
  tidemark_watch_options o = tidemark_watch_options_default();
  o.start_revision = 5;
  CHECK_ST(tidemark_store_track(s, "jobs", &o, note_cb, &t, note_drop, &id), TIDEMARK_ERR_FUTURE_REVISION);
  CHECK(t.drops == 4 && id == UNTOUCHED);

  CHECK_NULL_ARG(tidemark_store_untrack(NULL, 1));
  CHECK_ST(tidemark_store_untrack(s, 12345), TIDEMARK_ERR_NOT_FOUND);

  CHECK_NULL_ARG(tidemark_store_tracker_members(NULL, "jobs", ids, 2, &count));
  CHECK_NULL_ARG(tidemark_store_tracker_members(s, NULL, ids, 2, &count));
  CHECK_NULL_ARG(tidemark_store_tracker_members(s, "jobs", NULL, 2, &count));
  CHECK_NULL_ARG(tidemark_store_tracker_members(s, "jobs", ids, 2, NULL));
  CHECK_ST(tidemark_store_tracker_members(s, "", ids, 2, &count), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(count == UNTOUCHED);

  CHECK_NULL_ARG(tidemark_store_notify(NULL, "jobs", TIDEMARK_ACTION_CREATED, S("x"), "{}", &rev));
  CHECK_NULL_ARG(tidemark_store_notify(s, NULL, TIDEMARK_ACTION_CREATED, S("x"), "{}", &rev));
  CHECK_NULL_ARG(tidemark_store_notify(s, "jobs", TIDEMARK_ACTION_CREATED, NULL, 1, "{}", &rev));
  CHECK_ST(tidemark_store_notify(s, "", TIDEMARK_ACTION_CREATED, S("x"), "{}", &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_notify(s, "jobs", 0, S("x"), "{}", &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(strstr(tidemark_last_error_message(), "unknown action") != NULL);
  CHECK_ST(tidemark_store_notify(s, "jobs", TIDEMARK_ACTION_COMPACTED, S("x"), "{}", &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_notify(s, "jobs", 99, S("x"), "{}", &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_notify(s, "jobs", TIDEMARK_ACTION_CREATED, S("x"), "{bad", &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_notify(s, "jobs", TIDEMARK_ACTION_CREATED, NULL, 0, "{}", &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_notify(s, "streams", TIDEMARK_ACTION_CREATED, S("x"), "{}", &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_notify(s, "keys/a", TIDEMARK_ACTION_CREATED, S("x"), "{}", &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_notify(s, "\xff", TIDEMARK_ACTION_CREATED, S("x"), "{}", &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(rev == UNTOUCHED && tidemark_store_current_revision(s) == 0);
  tidemark_store_close(s);
  CHECK(t.count == 0 && t.drops == 4);
  pthread_mutex_destroy(&t.mu);
}

void test_trackers(void) {
  section("trackers: every feature's lifecycle, replay, members, reentrancy, terminal, bad input");
  lifecycle();
  members_and_reentrancy();
  bad_input();
}
