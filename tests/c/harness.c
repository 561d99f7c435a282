/* tests/c/harness.c: see harness.h. */
#include "harness.h"

/* ------------------------------------------------------------------------------------------
 * A tiny harness. CHECK may be used from any thread (callbacks run on the store's threads).
 * ---------------------------------------------------------------------------------------- */

static pthread_mutex_t g_check_mu = PTHREAD_MUTEX_INITIALIZER;
unsigned long g_passed, g_failed;

bool check_impl(bool ok, const char *file, int line, const char *expr) {
  const char *err = ok ? "" : tidemark_last_error_message(); /* thread-local: read it here */
  pthread_mutex_lock(&g_check_mu);
  if (ok) {
    g_passed++;
  } else {
    g_failed++;
    fprintf(stderr, "%s:%d: CHECK failed: %s\n    last error: %s\n", file, line, expr, err ? err : "(NULL)");
  }
  pthread_mutex_unlock(&g_check_mu);
  return ok;
}

bool check_status_impl(tidemark_status got, tidemark_status want, const char *file, int line,
                              const char *expr) {
  if (got == want) return check_impl(true, file, line, expr);
  const char *err = tidemark_last_error_message();
  pthread_mutex_lock(&g_check_mu);
  g_failed++;
  fprintf(stderr, "%s:%d: CHECK failed: %s\n    returned %s, expected %s\n    last error: %s\n", file, line, expr,
          tidemark_status_name(got), tidemark_status_name(want), err ? err : "(NULL)");
  pthread_mutex_unlock(&g_check_mu);
  return false;
}

/* A NULL argument: the status, and a message saying so. */
bool check_null_arg_impl(tidemark_status got, const char *file, int line, const char *expr) {
  if (!check_status_impl(got, TIDEMARK_ERR_NULL_ARGUMENT, file, line, expr)) return false;
  return check_impl(tidemark_last_error_message()[0] != '\0', file, line, "last error message is set");
}

void section(const char *name) {
  printf("-- %s\n", name);
  fflush(stdout);
}


double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void sleep_us(unsigned us) {
  struct timespec ts = {(time_t)(us / 1000000u), (long)(us % 1000000u) * 1000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

void sleep_ms(unsigned ms) { sleep_us(ms * 1000u); }


bool bytes_eq(tidemark_bytes b, const void *p, size_t n) {
  if (b.len != n) return false;
  if (n == 0) return true;
  return b.ptr != NULL && memcmp(b.ptr, p, n) == 0;
}
bool bytes_is(tidemark_bytes b, const char *s) { return bytes_eq(b, s, strlen(s)); }

/* An address no library object ever has: out-parameters start here and must stay here on failure. */
int g_sentinel_object;

/* In memory, or with TIDEMARK_TEST_REDIS=redis://host:port set (`make test-redis`), a store of
 * its own in that Redis: the same tests then run on the Redis backend. */
tidemark_store *open_store(const char *options) {
  static unsigned n;
  char url[256];
  const char *server = getenv("TIDEMARK_TEST_REDIS");
  const char *path = NULL;
  if (server != NULL && server[0] != '\0') {
    snprintf(url, sizeof url, "%s/0?store=c-%ld-%u-%ld", server, (long)getpid(), n++, (long)time(NULL));
    path = url;
  }
  tidemark_store *s = NULL;
  REQUIRE(tidemark_store_open(path, options, &s) == TIDEMARK_OK && s != NULL);
  return s;
}

uint64_t put(tidemark_store *s, const char *key, const char *value) {
  uint64_t rev = 0;
  REQUIRE(CHECK_OK(tidemark_store_put(s, S(key), S(value), &rev)));
  return rev;
}

/* True when every non-empty key and value of the batch lies inside its arena. */
bool arena_holds(const tidemark_events *e) {
  tidemark_bytes a = tidemark_events_arena(e);
  const tidemark_event *d = tidemark_events_data(e);
  size_t n = tidemark_events_len(e), total = 0;
  uintptr_t lo = (uintptr_t)a.ptr, hi = lo + a.len;
  if (n > 0 && d == NULL) return false;
  for (size_t i = 0; i < n; i++) {
    const tidemark_bytes parts[2] = {d[i].key, d[i].value};
    for (int j = 0; j < 2; j++) {
      if (parts[j].len == 0) continue;
      uintptr_t p = (uintptr_t)parts[j].ptr;
      if (p < lo || p + parts[j].len > hi) return false;
      total += parts[j].len;
    }
  }
  return total <= a.len;
}

/* ------------------------------------------------------------------------------------------
 * A collector records what a watch delivers: for push watches through collect_cb /
 * collect_drop, for pull watches through pull_into. It checks the shape of each delivery as
 * it arrives and keeps copies of the key events for the checks afterwards.
 * ---------------------------------------------------------------------------------------- */




void collector_init(collector *c, unsigned slow_us) {
  memset(c, 0, sizeof *c);
  pthread_mutex_init(&c->mu, NULL);
  c->sleep_us = slow_us;
}

void collector_destroy(collector *c) {
  free(c->ev);
  pthread_mutex_destroy(&c->mu);
}

cstats snap(collector *c) {
  pthread_mutex_lock(&c->mu);
  cstats s = c->st;
  pthread_mutex_unlock(&c->mu);
  return s;
}

static void copy_bytes(char *dst, size_t cap, size_t *len_out, tidemark_bytes b, size_t *too_long) {
  *len_out = b.len;
  size_t n = b.len < cap - 1 ? b.len : cap - 1;
  if (b.len >= cap) (*too_long)++;
  if (n > 0) memcpy(dst, b.ptr, n);
  dst[n] = '\0';
}

/* Records one delivery; the caller holds c->mu. */
static void record(collector *c, const tidemark_event *evs, size_t count) {
  cstats *s = &c->st;
  if (s->drops) s->calls_after_drop++;
  if (s->terminals) s->after_terminal++;
  size_t delivery = s->calls++;
  if (count == 0 || evs == NULL) {
    s->bad_shape++;
    return;
  }
  for (size_t i = 0; i < count; i++) {
    const tidemark_event *e = &evs[i];
    switch (e->kind) {
      case TIDEMARK_EVENT_PROGRESS:
        if (count != 1 || e->key.len != 0 || e->value.len != 0 || e->version != 0 || e->create_revision != 0)
          s->bad_shape++;
        s->progress++;
        s->progress_rev = e->revision;
        break;
      case TIDEMARK_EVENT_COMPACTED:
      case TIDEMARK_EVENT_CLOSED:
        if (count != 1 || e->key.len != 0) s->bad_shape++;
        s->terminals++;
        s->terminal_kind = e->kind;
        s->terminal_rev = e->revision;
        break;
      case TIDEMARK_EVENT_PUT:
      case TIDEMARK_EVENT_DELETE: {
        if (e->revision <= s->last_rev) s->out_of_order++;
        s->last_rev = e->revision;
        if (s->n == c->cap) {
          c->cap = c->cap ? c->cap * 2 : 64;
          c->ev = realloc(c->ev, c->cap * sizeof *c->ev);
          if (c->ev == NULL) abort();
        }
        rec *r = &c->ev[s->n++];
        r->revision = e->revision;
        r->create_revision = e->create_revision;
        r->version = e->version;
        r->kind = e->kind;
        r->delivery = delivery;
        copy_bytes(r->key, sizeof r->key, &r->key_len, e->key, &s->too_long);
        copy_bytes(r->value, sizeof r->value, &r->value_len, e->value, &s->too_long);
        break;
      }
      default:
        s->bad_shape++;
    }
  }
}

void collect_cb(void *userdata, const tidemark_event *events, size_t count) {
  collector *c = userdata;
  pthread_mutex_lock(&c->mu);
  if (c->st.inside) c->st.overlap++;
  c->st.inside = 1;
  record(c, events, count);
  unsigned slow = c->sleep_us;
  pthread_mutex_unlock(&c->mu);
  if (slow) sleep_us(slow);
  pthread_mutex_lock(&c->mu);
  c->st.inside = 0;
  pthread_mutex_unlock(&c->mu);
}

void collect_drop(void *userdata) {
  collector *c = userdata;
  pthread_mutex_lock(&c->mu);
  c->st.drops++;
  pthread_mutex_unlock(&c->mu);
}

bool p_events(const cstats *s, size_t n) { return s->n >= n; }
bool p_calls(const cstats *s, size_t n) { return s->calls >= n; }
bool p_drops(const cstats *s, size_t n) { return s->drops >= n; }
bool p_progress(const cstats *s, size_t n) { return s->progress >= n; }
bool p_done(const cstats *s, size_t n) { return s->n >= n || s->terminals > 0; }

bool wait_for(collector *c, cpred p, size_t arg) {
  double deadline = now_s() + WAIT_S;
  for (;;) {
    cstats s = snap(c);
    if (p(&s, arg)) return true;
    if (now_s() > deadline) return false;
    sleep_ms(2);
  }
}

bool wait_watchers(tidemark_store *s, size_t n) {
  double deadline = now_s() + WAIT_S;
  while (tidemark_store_watcher_count(s) != n) {
    if (now_s() > deadline) return false;
    sleep_ms(2);
  }
  return true;
}

/* Every recorded key event, in order, has revision first, first+1, ... (count of them). */
bool seq_is(collector *c, uint64_t first, size_t count) {
  pthread_mutex_lock(&c->mu);
  bool ok = c->st.n == count;
  for (size_t i = 0; ok && i < count; i++) ok = c->ev[i].revision == first + i;
  pthread_mutex_unlock(&c->mu);
  return ok;
}

/* The collector's health: what must hold for any watch at any time. */
void check_clean(collector *c) {
  cstats s = snap(c);
  CHECK(s.bad_shape == 0);
  CHECK(s.overlap == 0);
  CHECK(s.out_of_order == 0);
  CHECK(s.after_terminal == 0);
  CHECK(s.calls_after_drop == 0);
  CHECK(s.too_long == 0);
  CHECK(s.terminals <= 1);
  CHECK(s.drops <= 1);
}

/* Reads pull watch `w` into `c` until it holds `want` key events or the terminal event,
 * an error, or WAIT_S. Returns TIDEMARK_OK, the error, or TIDEMARK_ERR_TIMEOUT. */
tidemark_status pull_into(tidemark_watch *w, collector *c, size_t want) {
  double deadline = now_s() + WAIT_S;
  for (;;) {
    cstats s = snap(c);
    if (s.n >= want || s.terminals > 0) return TIDEMARK_OK;
    if (now_s() > deadline) return TIDEMARK_ERR_TIMEOUT;
    tidemark_events *e = NULL;
    tidemark_status st = tidemark_watch_next(w, 100, &e);
    if (st == TIDEMARK_ERR_TIMEOUT) continue;
    if (st != TIDEMARK_OK) return st;
    pthread_mutex_lock(&c->mu);
    if (!arena_holds(e) || tidemark_events_has_more(e)) c->st.bad_shape++;
    size_t n = tidemark_events_len(e);
    const tidemark_event *d = tidemark_events_data(e);
    if (n > 0 && d[n - 1].kind <= TIDEMARK_EVENT_DELETE && tidemark_events_next_revision(e) != d[n - 1].revision + 1)
      c->st.bad_shape++;
    record(c, d, n);
    unsigned slow = c->sleep_us;
    pthread_mutex_unlock(&c->mu);
    tidemark_events_free(e);
    if (slow) sleep_us(slow);
  }
}


int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

tidemark_selector sel_key(const char *k) {
  tidemark_selector s = {TIDEMARK_SELECT_KEY, {B(k), strlen(k)}, {NULL, 0}};
  return s;
}
tidemark_selector sel_prefix(const char *p) {
  tidemark_selector s = {TIDEMARK_SELECT_PREFIX, {B(p), strlen(p)}, {NULL, 0}};
  return s;
}
tidemark_selector sel_range(const char *a, const char *b) {
  tidemark_selector s = {TIDEMARK_SELECT_RANGE, {B(a), strlen(a)}, {B(b), strlen(b)}};
  return s;
}
tidemark_selector sel_all(void) {
  tidemark_selector s = {TIDEMARK_SELECT_ALL, {NULL, 0}, {NULL, 0}};
  return s;
}

/* Reads changes and compares their revisions with `want` (terminated by 0). */
bool changes_are(tidemark_store *s, const tidemark_selector *sel, uint64_t from, uint64_t to, const uint64_t *want) {
  tidemark_events *ev = NULL;
  if (!CHECK_OK(tidemark_store_changes(s, sel, from, to, 0, &ev))) return false;
  size_t n = 0;
  while (want[n]) n++;
  bool ok = tidemark_events_len(ev) == n && arena_holds(ev) && !tidemark_events_has_more(ev);
  const tidemark_event *d = tidemark_events_data(ev);
  for (size_t i = 0; ok && i < n; i++) ok = d[i].revision == want[i];
  if (!ok) {
    fprintf(stderr, "    got revisions:");
    for (size_t i = 0; i < tidemark_events_len(ev); i++) fprintf(stderr, " %" PRIu64, d[i].revision);
    fprintf(stderr, "\n");
  }
  tidemark_events_free(ev);
  return ok;
}
