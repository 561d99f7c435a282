/*
 * tests/c/test_contexts.c: contexts (set, update, get, delete, sync, list, deltas, cleanup)
 * through JSON strings, concurrent updates, and every bad input (NULLs, invalid JSON, a
 * non-object document or patch, oversize documents and ids, unknown order): a clear
 * status, out-parameters untouched, nothing changed.
 */
#include "harness.h"

/* The JSON string `got` contains `want`; frees `got`. */
static bool json_has(char *got, const char *want) {
  bool ok = got != NULL && strstr(got, want) != NULL;
  if (!ok) fprintf(stderr, "  JSON %s lacks %s\n", got ? got : "(null)", want);
  tidemark_string_free(got);
  return ok;
}

static void check_sync(tidemark_store *s, int64_t client, tidemark_sync_kind want_kind, uint64_t want_version,
                       const char *want_json) {
  tidemark_sync_kind kind = 99;
  uint64_t version = UNTOUCHED;
  char *json = SENTINEL;
  CHECK_OK(tidemark_store_context_sync(s, S("c"), client, &kind, &version, &json));
  CHECK(kind == want_kind && version == want_version);
  if (want_json == NULL) {
    CHECK(json == NULL);
  } else {
    CHECK(json_has(json, want_json));
  }
}

static void check_sync_of(tidemark_store *s, const char *id, int64_t client, tidemark_sync_kind want) {
  tidemark_sync_kind kind = 99;
  uint64_t version = 0;
  char *json = NULL;
  CHECK_OK(tidemark_store_context_sync(s, S(id), client, &kind, &version, &json));
  CHECK(kind == want);
  tidemark_string_free(json);
}

typedef struct updater {
  tidemark_store *s;
  int t;
} updater;

static void *update_fields(void *arg) {
  updater *u = arg;
  for (int i = 0; i < 25; i++) {
    char patch[64];
    snprintf(patch, sizeof patch, "{\"f%d_%d\": %d}", u->t, i, i);
    CHECK_OK(tidemark_store_context_update(u->s, S("shared"), patch, NULL));
  }
  return NULL;
}

typedef struct manual_clock {
  uint64_t now; /* atomic */
  int drops;
} manual_clock;

static uint64_t manual_now(void *userdata) {
  return __atomic_load_n(&((manual_clock *)userdata)->now, __ATOMIC_SEQ_CST);
}

static void manual_drop(void *userdata) { ((manual_clock *)userdata)->drops++; }

/* TTLs and cleanup with an injected clock: nothing sleeps. */
void test_contexts_clock(void) {
  section("contexts: TTLs and cleanup by an injected store clock");
  tidemark_store *s = open_store("{\"delta_ttl_ms\": 100, \"context_ttl_ms\": 1000, \"context_auto_delete\": true}");
  manual_clock clock = {5000, 0};
  CHECK_OK(tidemark_store_set_clock(s, manual_now, &clock, manual_drop));
  char *out = NULL;
  CHECK_OK(tidemark_store_context_set(s, S("a"), "{\"v\":1}", NULL));
  CHECK_OK(tidemark_store_context_update(s, S("a"), "{\"v\":2}", NULL));
  CHECK_OK(tidemark_store_context_get(s, S("a"), &out));
  CHECK(json_has(out, "\"created_ms\":5000"));
  check_sync_of(s, "a", 1, TIDEMARK_SYNC_DELTA);
  clock.now = 5100; /* delta 2 expired: FULL, then cleanup deletes it */
  check_sync_of(s, "a", 1, TIDEMARK_SYNC_FULL);
  uint64_t contexts = UNTOUCHED, deltas = UNTOUCHED;
  CHECK_OK(tidemark_store_context_cleanup(s, 0, &contexts, &deltas));
  CHECK(contexts == 0 && deltas == 1);
  __atomic_store_n(&clock.now, 6000, __ATOMIC_SEQ_CST);
  CHECK_OK(tidemark_store_context_cleanup(s, 0, &contexts, &deltas));
  CHECK(contexts == 1 && deltas == 0);
  CHECK_ST(tidemark_store_context_get(s, S("a"), &out), TIDEMARK_ERR_NOT_FOUND);
  /* The cleanup thread: it deletes what expires by the clock, until stopped. */
  CHECK_OK(tidemark_store_context_set(s, S("t"), "{}", NULL));
  CHECK_ST(tidemark_store_context_cleaner_set_interval(s, 5), TIDEMARK_ERR_NOT_FOUND);
  CHECK_ST(tidemark_store_context_cleaner_start(s, 0, 0), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_OK(tidemark_store_context_cleaner_start(s, 1, 0));
  CHECK_OK(tidemark_store_context_cleaner_set_interval(s, 2));
  __atomic_store_n(&clock.now, 100000, __ATOMIC_SEQ_CST);
  double until = now_s() + WAIT_S;
  tidemark_status st = TIDEMARK_OK;
  while ((st = tidemark_store_context_get(s, S("t"), &out)) == TIDEMARK_OK && now_s() < until) {
    tidemark_string_free(out);
    sleep_ms(1);
  }
  CHECK(st == TIDEMARK_ERR_NOT_FOUND);
  bool was = false;
  CHECK_OK(tidemark_store_context_cleaner_stop(s, &was));
  CHECK(was);
  CHECK_OK(tidemark_store_context_cleaner_stop(s, NULL));
  CHECK_NULL_ARG(tidemark_store_context_cleaner_start(NULL, 1, 0));
  CHECK_NULL_ARG(tidemark_store_context_cleaner_set_interval(NULL, 1));
  CHECK_NULL_ARG(tidemark_store_context_cleaner_stop(NULL, &was));
  CHECK_OK(tidemark_store_context_cleaner_start(s, 1000, 0)); /* still running at close */
  /* NULL goes back to the system clock and releases the manual one, exactly once. */
  CHECK(clock.drops == 0);
  CHECK_OK(tidemark_store_set_clock(s, NULL, NULL, NULL));
  CHECK(clock.drops == 1);
  CHECK_OK(tidemark_store_context_set(s, S("b"), "{}", NULL));
  CHECK_OK(tidemark_store_context_get(s, S("b"), &out));
  CHECK(json_has(out, "\"created_ms\":17"));  /* 17xxxxxxxxxxx ms: now */
  /* A failed call releases the userdata too; the store frees the last clock on close. */
  manual_clock other = {1, 0};
  CHECK_NULL_ARG(tidemark_store_set_clock(NULL, manual_now, &other, manual_drop));
  CHECK(other.drops == 1);
  CHECK_OK(tidemark_store_set_clock(s, manual_now, &other, manual_drop));
  tidemark_store_close(s);
  CHECK(other.drops == 2);
}

void test_contexts(void) {
  section("contexts: set, update, get, sync, list, deltas, delete, cleanup");
  tidemark_store *s = open_store("{\"delta_threshold\": 3, \"max_value_size\": 4096}");
  char *out = NULL;
  CHECK_OK(tidemark_store_context_set(s, S("c"), "{\"status\": \"ringing\", \"n\": 1}", &out));
  CHECK(json_has(out, "\"version\":1"));
  CHECK_OK(tidemark_store_context_update(s, S("c"), "{\"status\": \"active\", \"n\": null}", &out));
  CHECK(strstr(out, "\"document\":{\"status\":\"active\"}") && strstr(out, "\"version\":2"));
  CHECK(json_has(out, "\"op\":\"remove\""));
  CHECK_OK(tidemark_store_context_update(s, S("c"), "{\"n\": 2}", NULL));
  CHECK_OK(tidemark_store_context_get(s, S("c"), &out));
  CHECK(strstr(out, "\"id\":\"c\"") && strstr(out, "\"id_hex\":\"63\"") && strstr(out, "\"version\":3"));
  CHECK(json_has(out, "\"document\":{\"n\":2,\"status\":\"active\"}"));

  check_sync(s, 3, TIDEMARK_SYNC_NO_CHANGE, 3, NULL);
  check_sync(s, 1, TIDEMARK_SYNC_DELTA, 3, "\"path\":\"/n\"");
  check_sync(s, TIDEMARK_SYNC_NONE, TIDEMARK_SYNC_FULL, 3, "{\"n\":2,\"status\":\"active\"}");
  check_sync(s, 0, TIDEMARK_SYNC_FULL, 3, "\"status\"");
  check_sync(s, 4, TIDEMARK_SYNC_FULL, 3, "\"status\"");
  for (int i = 0; i < 5; i++) CHECK_OK(tidemark_store_context_update(s, S("c"), i % 2 ? "{\"x\":1}" : "{\"x\":2}", NULL));
  check_sync(s, 1, TIDEMARK_SYNC_FULL, 8, "\"x\":2"); /* threshold 3: deltas 6..8 only */
  check_sync(s, 5, TIDEMARK_SYNC_DELTA, 8, "\"op\":\"replace\"");

  CHECK_OK(tidemark_store_context_deltas(s, S("c"), 0, 0, TIDEMARK_ORDER_ASC, &out));
  CHECK(json_has(out, "[{\"patch\":[{\"op\":\"replace\",\"path\":\"/x\",\"value\":2}],\"timestamp_ms\":"));
  CHECK_OK(tidemark_store_context_deltas(s, S("c"), 1, 1, TIDEMARK_ORDER_DESC, &out));
  CHECK(json_has(out, "\"version\":7}]"));
  CHECK_OK(tidemark_store_context_set(s, S("b\xff"), "{}", NULL));
  CHECK_OK(tidemark_store_context_list(s, 0, 0, TIDEMARK_ORDER_ASC, &out));
  CHECK(strstr(out, "[{\"created_ms\":") && strstr(out, "\"id\":null,\"id_hex\":\"62ff\""));
  CHECK(json_has(out, "\"id\":\"c\""));
  CHECK_OK(tidemark_store_context_list(s, 1, 0, TIDEMARK_ORDER_DESC, &out));
  CHECK(json_has(out, "\"id\":\"c\"") );
  uint64_t contexts = UNTOUCHED, deltas = UNTOUCHED;
  CHECK_OK(tidemark_store_context_cleanup(s, 0, &contexts, &deltas));
  CHECK(contexts == 0 && deltas == 0);
  CHECK_OK(tidemark_store_context_cleanup(s, 0, NULL, NULL));
  uint64_t rev = UNTOUCHED;
  CHECK_OK(tidemark_store_context_delete(s, S("b\xff"), &rev));
  CHECK(rev != UNTOUCHED);
  CHECK_ST(tidemark_store_context_delete(s, S("b\xff"), NULL), TIDEMARK_ERR_NOT_FOUND);
  /* Re-created, it goes on from the deleted one's version: a client of that one gets FULL. */
  CHECK_OK(tidemark_store_context_set(s, S("b\xff"), "{\"new\": 1}", &out));
  CHECK(json_has(out, "\"version\":2"));
  CHECK_OK(tidemark_store_context_update(s, S("b\xff"), "{\"new\": 2}", NULL));
  check_sync_of(s, "b\xff", 1, TIDEMARK_SYNC_FULL);
  check_sync_of(s, "b\xff", 2, TIDEMARK_SYNC_DELTA);
  CHECK_OK(tidemark_store_context_delete(s, S("b\xff"), NULL));

  /* Bad input: a clear status, nothing changed, out-parameters untouched. */
  uint64_t before = tidemark_store_current_revision(s);
  const char *bad_json[] = {"{", "[1,2]", "\"s\"", "null", "7", "{\"a\":1} x", "\xff"};
  for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++) {
    out = SENTINEL;
    CHECK_ST(tidemark_store_context_set(s, S("c"), bad_json[i], &out), TIDEMARK_ERR_INVALID_ARGUMENT);
    CHECK_ST(tidemark_store_context_update(s, S("c"), bad_json[i], &out), TIDEMARK_ERR_INVALID_ARGUMENT);
    CHECK(out == SENTINEL);
  }
  CHECK(strstr(tidemark_last_error_message(), "not valid") != NULL);
  char *big = malloc(8192);
  REQUIRE(big != NULL);
  memset(big, 'x', 8191);
  big[0] = '{', big[1] = '"', big[2] = 'k', big[3] = '"', big[4] = ':', big[5] = '"';
  big[8189] = '"', big[8190] = '}', big[8191] = '\0';
  CHECK_ST(tidemark_store_context_set(s, S("c"), big, &out), TIDEMARK_ERR_TOO_LARGE);
  CHECK_ST(tidemark_store_context_update(s, S("c"), big, &out), TIDEMARK_ERR_TOO_LARGE);
  free(big);
  char long_id[1100];
  memset(long_id, 'i', sizeof long_id);
  CHECK_ST(tidemark_store_context_set(s, B(long_id), sizeof long_id, "{}", &out), TIDEMARK_ERR_TOO_LARGE);
  CHECK_ST(tidemark_store_context_set(s, NULL, 0, "{}", &out), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(out == SENTINEL && tidemark_store_current_revision(s) == before);
  CHECK_NULL_ARG(tidemark_store_context_set(NULL, S("c"), "{}", &out));
  CHECK_NULL_ARG(tidemark_store_context_set(s, NULL, 3, "{}", &out));
  CHECK_NULL_ARG(tidemark_store_context_set(s, S("c"), NULL, &out));
  CHECK_NULL_ARG(tidemark_store_context_update(s, S("c"), NULL, &out));
  CHECK_NULL_ARG(tidemark_store_context_update(NULL, S("c"), "{}", &out));
  CHECK_NULL_ARG(tidemark_store_context_get(s, S("c"), NULL));
  CHECK_NULL_ARG(tidemark_store_context_get(NULL, S("c"), &out));
  CHECK_NULL_ARG(tidemark_store_context_delete(NULL, S("c"), NULL));
  tidemark_sync_kind kind = 99;
  uint64_t version = UNTOUCHED;
  CHECK_NULL_ARG(tidemark_store_context_sync(s, S("c"), 1, NULL, &version, &out));
  CHECK_NULL_ARG(tidemark_store_context_sync(s, S("c"), 1, &kind, NULL, &out));
  CHECK_NULL_ARG(tidemark_store_context_sync(NULL, S("c"), 1, &kind, &version, &out));
  CHECK_NULL_ARG(tidemark_store_context_list(s, 0, 0, 0, NULL));
  CHECK_NULL_ARG(tidemark_store_context_list(NULL, 0, 0, 0, &out));
  CHECK_NULL_ARG(tidemark_store_context_deltas(s, S("c"), 0, 0, 0, NULL));
  CHECK_NULL_ARG(tidemark_store_context_deltas(NULL, S("c"), 0, 0, 0, &out));
  CHECK_NULL_ARG(tidemark_store_context_cleanup(NULL, 0, NULL, NULL));
  CHECK_ST(tidemark_store_context_list(s, 0, 0, 2, &out), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_context_deltas(s, S("c"), 0, 0, 7, &out), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_context_get(s, S("nope"), &out), TIDEMARK_ERR_NOT_FOUND);
  CHECK_ST(tidemark_store_context_sync(s, S("nope"), 1, &kind, &version, &out), TIDEMARK_ERR_NOT_FOUND);
  CHECK_ST(tidemark_store_context_deltas(s, S("nope"), 0, 0, 0, &out), TIDEMARK_ERR_NOT_FOUND);
  CHECK(out == SENTINEL && kind == 99 && version == UNTOUCHED);
  CHECK(tidemark_store_current_revision(s) == before);
  CHECK_OK(tidemark_store_context_get(s, S("c"), &out));
  CHECK(json_has(out, "\"version\":8"));

  /* 200 concurrent updates of distinct fields: version 200, every field present. */
  pthread_t threads[8];
  updater us[8];
  for (int t = 0; t < 8; t++) {
    us[t] = (updater){s, t};
    REQUIRE(pthread_create(&threads[t], NULL, update_fields, &us[t]) == 0);
  }
  for (int t = 0; t < 8; t++) pthread_join(threads[t], NULL);
  CHECK_OK(tidemark_store_context_get(s, S("shared"), &out));
  CHECK(strstr(out, "\"f0_0\":0") && strstr(out, "\"f7_24\":24"));
  CHECK(json_has(out, "\"version\":200"));
  tidemark_store_close(s);
}
