/*
 * examples/c/quickstart.c: tidemark from C in five minutes.
 *
 *   make -C examples/c run        (builds against target/release/libtidemark.a)
 *
 * A store keeps one revision log: every write gets the next revision (1, 2, 3, ...), and
 * anyone can ask "what changed since revision N?" (changes), be told as it happens (a push
 * watch, with a callback), or ask for it when ready (a pull watch). This program walks
 * through each, then compacts the log and shows what a reader behind the compaction gets.
 *
 * Error handling: every fallible call returns a tidemark_status; on failure
 * tidemark_last_error_message() says why. OK() below prints that and exits.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidemark.h"

/* Keys and values are bytes: (pointer, length). S("text") spells both for a C string. */
#define S(text) (const uint8_t *)(text), strlen(text)

static void ok_or_exit(tidemark_status status, const char *what) {
  if (status != TIDEMARK_OK) {
    fprintf(stderr, "%s failed: %s: %s\n", what, tidemark_status_name(status), tidemark_last_error_message());
    exit(1);
  }
}
#define OK(call) ok_or_exit((call), #call)

static const char *kind_name(uint32_t kind) {
  switch (kind) {
    case TIDEMARK_EVENT_PUT: return "PUT";
    case TIDEMARK_EVENT_DELETE: return "DELETE";
    case TIDEMARK_EVENT_PROGRESS: return "PROGRESS";
    case TIDEMARK_EVENT_COMPACTED: return "COMPACTED";
    case TIDEMARK_EVENT_CLOSED: return "CLOSED";
    default: return "?";
  }
}

static void print_event(const char *who, const tidemark_event *e) {
  /* Keys and values are not NUL-terminated: print them with their length. */
  printf("  %s rev %-3" PRIu64 " %-6s %.*s", who, e->revision, kind_name(e->kind), (int)e->key.len,
         (const char *)e->key.ptr);
  if (e->kind == TIDEMARK_EVENT_PUT) printf(" = %.*s (version %" PRIu64 ")", (int)e->value.len, (const char *)e->value.ptr, e->version);
  printf("\n");
}

static void print_events(const char *who, const tidemark_events *events) {
  const tidemark_event *e = tidemark_events_data(events);
  for (size_t i = 0; i < tidemark_events_len(events); i++) print_event(who, &e[i]);
}

/* ---- A push watch's state: the callback runs on a thread the store owns. ---- */
typedef struct inbox {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint64_t last_revision; /* the last revision the callback saw */
  int dropped;
} inbox;

static void on_events(void *userdata, const tidemark_event *events, size_t count) {
  inbox *in = userdata;
  pthread_mutex_lock(&in->mu);
  for (size_t i = 0; i < count; i++) {
    print_event("push:", &events[i]);
    in->last_revision = events[i].revision;
  }
  pthread_cond_broadcast(&in->cv);
  pthread_mutex_unlock(&in->mu);
}

/* Called exactly once, after the last callback: the place to free userdata. */
static void on_drop(void *userdata) {
  inbox *in = userdata;
  pthread_mutex_lock(&in->mu);
  in->dropped = 1;
  pthread_mutex_unlock(&in->mu);
  printf("  push: watch ended, drop_userdata called\n");
}

static void wait_for_revision(inbox *in, uint64_t revision) {
  pthread_mutex_lock(&in->mu);
  while (in->last_revision < revision) pthread_cond_wait(&in->cv, &in->mu);
  pthread_mutex_unlock(&in->mu);
}

int main(void) {
  printf("tidemark %s\n", tidemark_version());

  /* 1. Open an in-memory store (a NULL path; a directory path would be a durable store). */
  tidemark_store *store = NULL;
  OK(tidemark_store_open(NULL, NULL, &store));

  /* 2. Put: each write returns its revision. */
  printf("\n1. put\n");
  uint64_t rev = 0;
  OK(tidemark_store_put(store, S("users/alice"), S("admin"), &rev));
  printf("  users/alice = admin   -> revision %" PRIu64 "\n", rev);
  OK(tidemark_store_put(store, S("users/bob"), S("reader"), &rev));
  printf("  users/bob   = reader  -> revision %" PRIu64 "\n", rev);
  OK(tidemark_store_put(store, S("users/alice"), S("owner"), &rev));
  printf("  users/alice = owner   -> revision %" PRIu64 "\n", rev);

  /* 3. Get: the value and its history in three numbers. The entry is ours to free. */
  printf("\n2. get\n");
  tidemark_entry *entry = NULL;
  OK(tidemark_store_get(store, S("users/alice"), &entry));
  tidemark_bytes value = tidemark_entry_value(entry);
  printf("  users/alice = %.*s (created at %" PRIu64 ", modified at %" PRIu64 ", version %" PRIu64 ")\n",
         (int)value.len, (const char *)value.ptr, tidemark_entry_create_revision(entry),
         tidemark_entry_mod_revision(entry), tidemark_entry_version(entry));
  tidemark_entry_free(entry);
  tidemark_status st = tidemark_store_get(store, S("users/nobody"), &entry);
  printf("  users/nobody -> %s\n", tidemark_status_name(st));

  /* 4. A batch: several writes, all or nothing, at consecutive revisions. The `require`
   *    makes it conditional: alice must still be at the revision we read (3). */
  printf("\n3. batch\n");
  tidemark_batch *batch = tidemark_batch_new();
  OK(tidemark_batch_require(batch, S("users/alice"), 3));
  OK(tidemark_batch_put(batch, S("users/carol"), S("writer")));
  OK(tidemark_batch_delete(batch, S("users/bob")));
  uint64_t first = 0;
  OK(tidemark_store_commit(store, batch, &first));
  printf("  committed %zu operations: writes at revisions %" PRIu64 "..%" PRIu64 "\n", tidemark_batch_len(batch),
         first, tidemark_store_current_revision(store));
  /* Committing the same batch again fails: alice's revision still matches, but bob is gone. */
  st = tidemark_store_commit(store, batch, &first);
  printf("  the same batch again -> %s (%s); nothing applied\n", tidemark_status_name(st), tidemark_last_error_message());
  tidemark_batch_free(batch);
  /* A conditional put with a stale revision: CONFLICT, and the current mod_revision. */
  st = tidemark_store_put_if(store, S("users/alice"), S("guest"), 1, &rev);
  printf("  put_if(users/alice, expected 1) -> %s, its mod_revision is %" PRIu64 "\n", tidemark_status_name(st),
         tidemark_last_error_revision());

  /* 5. changes: everything since revision 1, two events per page. */
  printf("\n4. changes since revision 1, 2 per page\n");
  uint64_t from = 1;
  for (int page = 1;; page++) {
    tidemark_events *events = NULL;
    OK(tidemark_store_changes(store, NULL, from, 0, 2, &events));
    printf(" page %d:\n", page);
    print_events("", events);
    bool more = tidemark_events_has_more(events);
    from = tidemark_events_next_revision(events); /* where the next page starts */
    tidemark_events_free(events);
    if (!more) break;
  }
  printf("  next time, ask for changes from revision %" PRIu64 "\n", from);

  /* 6. A push watch on the prefix "users/": the callback gets every change as it happens. */
  printf("\n5. push watch on users/\n");
  inbox in = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
  tidemark_selector users = {TIDEMARK_SELECT_PREFIX, {S("users/")}, {NULL, 0}};
  uint64_t watch_id = 0;
  OK(tidemark_store_watch(store, &users, NULL /* defaults: from now on */, on_events, &in, on_drop, &watch_id));
  OK(tidemark_store_put(store, S("config/theme"), S("dark"), &rev)); /* not under users/: not delivered */
  OK(tidemark_store_put(store, S("users/dave"), S("reader"), &rev));
  wait_for_revision(&in, rev);
  OK(tidemark_store_unwatch(store, watch_id)); /* when it returns, no more callbacks */

  /* 7. A pull watch, replaying from revision 1 and then live: the consumer asks when ready. */
  printf("\n6. pull watch from revision 1\n");
  tidemark_watch_options options = tidemark_watch_options_default();
  options.start_revision = 1;
  tidemark_watch *watch = NULL;
  OK(tidemark_watch_open(store, NULL, &options, &watch));
  OK(tidemark_store_put(store, S("users/erin"), S("writer"), &rev));
  for (;;) {
    tidemark_events *events = NULL;
    st = tidemark_watch_next(watch, 100 /* ms */, &events);
    if (st == TIDEMARK_ERR_TIMEOUT) {
      printf("  pull: nothing new for 100 ms (TIMEOUT): caught up\n");
      break;
    }
    OK(st);
    print_events("pull:", events);
    tidemark_events_free(events);
  }
  tidemark_watch_close(watch);

  /* 8. Compaction: drop the log below a revision. Keys keep their current values, but a
   *    reader asking for older revisions gets COMPACTED and the earliest revision left. */
  printf("\n7. compaction\n");
  uint64_t removed = 0;
  OK(tidemark_store_compact(store, 6, &removed));
  printf("  compact(6): %" PRIu64 " log entries removed, earliest revision now %" PRIu64 "\n", removed,
         tidemark_store_earliest_revision(store));
  tidemark_events *events = NULL;
  st = tidemark_store_changes(store, NULL, 1, 0, 0, &events);
  printf("  changes from 1 -> %s: %s\n", tidemark_status_name(st), tidemark_last_error_message());
  uint64_t earliest = tidemark_last_error_revision();
  printf("  resync: read the current state with range, then follow changes from %" PRIu64 "\n", earliest);
  OK(tidemark_store_range(store, NULL, 0, &events));
  print_events("range:", events);
  tidemark_events_free(events);
  OK(tidemark_store_changes(store, NULL, earliest, 0, 0, &events));
  print_events("changes:", events);
  tidemark_events_free(events);
  options = tidemark_watch_options_default();
  options.start_revision = 2;
  st = tidemark_store_watch(store, NULL, &options, on_events, &in, NULL, &watch_id);
  printf("  a watch starting at 2 -> %s (earliest %" PRIu64 ")\n", tidemark_status_name(st), tidemark_last_error_revision());

  /* 9. Close: any watch still open would get a CLOSED event first. */
  tidemark_store_close(store);
  printf("\ndone\n");
  return 0;
}
