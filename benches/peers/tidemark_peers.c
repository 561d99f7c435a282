/* The C side of `make bench-peers`: the same workloads as tools/bench_peers.py, through the
 * C ABI, printed as one JSON object (the driver runs it several times and takes medians).
 *
 *   tidemark_peers <scratch dir> <seconds per durable point>
 *
 * Workloads: 16-byte keys over 100 k distinct keys, 100-byte values, one put per commit.
 * Durable puts use sync "always" from 1, 8 and 64 threads; the in-memory put is one thread;
 * "changes" reads 200 k events back in pages of 10 000; latency is put -> push-watch
 * callback, measured with CLOCK_MONOTONIC on both threads. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tidemark.h"

#define DISTINCT 100000u
#define EVENTS 200000u
#define LAT_SAMPLES 2000u

static uint8_t VALUE[100]; /* 'v' bytes, filled in main */

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void key(uint64_t i, uint8_t out[16]) {
  char buf[17];
  snprintf(buf, sizeof buf, "key-%012llu", (unsigned long long)(i % DISTINCT));
  memcpy(out, buf, 16);
}

static void check(tidemark_status st, const char *what) {
  if (st != TIDEMARK_OK) {
    fprintf(stderr, "tidemark_peers: %s failed with status %d\n", what, (int)st);
    exit(1);
  }
}

/* ---- durable puts from W threads for a fixed time ---- */

struct durable {
  tidemark_store *store;
  atomic_bool stop;
  atomic_ullong total;
};

struct writer {
  struct durable *d;
  unsigned id;
};

static void *durable_writer(void *arg) {
  struct writer *w = arg;
  uint8_t k[16];
  uint64_t rev, i = 0;
  while (!atomic_load_explicit(&w->d->stop, memory_order_relaxed)) {
    key((uint64_t)w->id * 7919u + i * 2654435761u, k);
    check(tidemark_store_put(w->d->store, k, 16, VALUE, sizeof VALUE, &rev), "durable put");
    i++;
  }
  atomic_fetch_add(&w->d->total, i);
  return NULL;
}

static double durable_puts(const char *scratch, unsigned threads, double secs) {
  char path[4096];
  snprintf(path, sizeof path, "%s/c-durable-%u", scratch, threads);
  struct durable d = {.stop = false, .total = 0};
  check(tidemark_store_open(path, "{\"sync\":\"always\"}", &d.store), "open durable");
  pthread_t tids[64];
  struct writer ws[64];
  double t0 = now();
  for (unsigned i = 0; i < threads; i++) {
    ws[i] = (struct writer){&d, i};
    pthread_create(&tids[i], NULL, durable_writer, &ws[i]);
  }
  struct timespec nap = {(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)};
  nanosleep(&nap, NULL);
  atomic_store(&d.stop, true);
  for (unsigned i = 0; i < threads; i++) pthread_join(tids[i], NULL);
  double rate = (double)atomic_load(&d.total) / (now() - t0);
  tidemark_store_close(d.store);
  return rate;
}

/* ---- in memory: puts, then reading the changes back ---- */

static double memory_puts(tidemark_store *s, unsigned n) {
  uint8_t k[16];
  uint64_t rev;
  double t0 = now();
  for (unsigned i = 0; i < n; i++) {
    key(i * 2654435761u, k);
    check(tidemark_store_put(s, k, 16, VALUE, sizeof VALUE, &rev), "put");
  }
  return n / (now() - t0);
}

static double read_changes(tidemark_store *s) {
  uint64_t from = 1, n = 0, sum = 0;
  double t0 = now();
  for (;;) {
    tidemark_events *page;
    check(tidemark_store_changes(s, NULL, from, 0, 10000, &page), "changes");
    size_t len = tidemark_events_len(page);
    const tidemark_event *e = tidemark_events_data(page);
    for (size_t i = 0; i < len; i++) sum += e[i].key.len + e[i].value.len; /* touch each */
    n += len;
    bool more = tidemark_events_has_more(page);
    from = tidemark_events_next_revision(page);
    tidemark_events_free(page);
    if (!more) break;
  }
  double dt = now() - t0;
  if (n != EVENTS || sum == 0) {
    fprintf(stderr, "tidemark_peers: read %llu changes\n", (unsigned long long)n);
    exit(1);
  }
  return n / dt;
}

/* ---- put -> callback latency ---- */

struct latency {
  pthread_mutex_t mu;
  pthread_cond_t cond;
  uint64_t seen; /* the last revision the callback got */
  double at;
};

static void on_events(void *userdata, const tidemark_event *events, size_t count) {
  struct latency *l = userdata;
  double t = now();
  pthread_mutex_lock(&l->mu);
  l->seen = events[count - 1].revision;
  l->at = t;
  pthread_cond_signal(&l->cond);
  pthread_mutex_unlock(&l->mu);
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void watch_latency(double *p50, double *p99) {
  tidemark_store *s;
  check(tidemark_store_open(NULL, NULL, &s), "open memory");
  struct latency l = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
  uint64_t id;
  check(tidemark_store_watch(s, NULL, NULL, on_events, &l, NULL, &id), "watch");
  static double lat[LAT_SAMPLES];
  uint8_t k[16];
  for (unsigned i = 0; i < LAT_SAMPLES; i++) {
    uint64_t rev;
    key(i, k);
    double t0 = now();
    check(tidemark_store_put(s, k, 16, VALUE, sizeof VALUE, &rev), "put");
    pthread_mutex_lock(&l.mu);
    while (l.seen < rev) pthread_cond_wait(&l.cond, &l.mu);
    lat[i] = l.at - t0;
    pthread_mutex_unlock(&l.mu);
  }
  check(tidemark_store_unwatch(s, id), "unwatch");
  tidemark_store_close(s);
  qsort(lat, LAT_SAMPLES, sizeof lat[0], by_value);
  *p50 = lat[LAT_SAMPLES / 2];
  *p99 = lat[LAT_SAMPLES * 99 / 100];
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: tidemark_peers <scratch dir> <seconds per durable point>\n");
    return 2;
  }
  memset(VALUE, 'v', sizeof VALUE);
  double secs = atof(argv[2]);
  double d1 = durable_puts(argv[1], 1, secs);
  double d8 = durable_puts(argv[1], 8, secs);
  double d64 = durable_puts(argv[1], 64, secs);
  tidemark_store *s;
  check(tidemark_store_open(NULL, NULL, &s), "open memory");
  double mem = memory_puts(s, EVENTS);
  double changes = read_changes(s);
  tidemark_store_close(s);
  double p50, p99;
  watch_latency(&p50, &p99);
  printf("{\"durable_1\": %.1f, \"durable_8\": %.1f, \"durable_64\": %.1f, \"memory_put\": %.1f, "
         "\"changes\": %.1f, \"latency_p50\": %.9f, \"latency_p99\": %.9f}\n",
         d1, d8, d64, mem, changes, p50, p99);
  return 0;
}
