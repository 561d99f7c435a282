/*
 * tests/c/test_persistent.c: persistent subscriptions through the C API: create from the
 * beginning (history replays), ack / nack retry, park, skip, parked list and replay, a
 * timeout redelivery by an injected clock, two competing consumers, list JSON, delete, reset
 * (backwards redelivers, forwards skips, a connected consumer gets CONFLICT), and
 * every bad input (NULLs, unknown names, duplicate, bad options, ack of an event not
 * delivered to the consumer).
 */
#include "harness.h"

static uint64_t g_now = 1000;
static uint64_t test_clock(void *userdata) {
  (void)userdata;
  return __atomic_load_n(&g_now, __ATOMIC_SEQ_CST);
}

static void append_n(tidemark_store *s, const char *stream, size_t n) {
  for (size_t i = 0; i < n; i++) {
    tidemark_stream_event ev = {0};
    ev.event_type = (tidemark_bytes){B("t"), 1};
    ev.data = (tidemark_bytes){B("x"), 1};
    tidemark_append_result r;
    CHECK_OK(tidemark_store_append(s, S(stream), &ev, 1, TIDEMARK_EXPECT_ANY, &r));
  }
}

/* Takes exactly n deliveries' revisions into revs (and their counts into counts). */
static size_t take(tidemark_subscription *c, size_t n, uint64_t *revs, uint32_t *counts) {
  size_t got = 0;
  while (got < n) {
    tidemark_deliveries *d = NULL;
    if (!CHECK_OK(tidemark_subscription_next(c, WAIT_MS, &d))) break;
    const tidemark_delivery *v = tidemark_deliveries_data(d);
    for (size_t i = 0; i < tidemark_deliveries_len(d) && got < n; i++, got++) {
      revs[got] = v[i].event.revision;
      if (counts) counts[got] = v[i].delivery_count;
    }
    tidemark_deliveries_free(d);
  }
  return got;
}

void test_persistent(void) {
  section("persistent subscriptions");
  tidemark_store *s = open_store(NULL);
  CHECK_OK(tidemark_store_set_clock(s, test_clock, NULL, NULL));
  append_n(s, "orders", 5);
  tidemark_subscription_options o = tidemark_subscription_options_default();
  CHECK(o.max_in_flight == 100 && o.message_timeout_ms == 30000 && o.max_retry == 10 && !o.pinned);
  o.max_retry = 2;
  o.message_timeout_ms = 1000;
  tidemark_stream_selector one = {TIDEMARK_STREAMS_ONE, {B("orders"), 6}, {NULL, 0}};
  uint64_t rev = UNTOUCHED;
  CHECK_OK(tidemark_store_subscription_create(s, S("sub"), &one, TIDEMARK_START_BEGINNING, 0, &o, &rev));
  const uint64_t created = rev;
  CHECK(rev + 1 == tidemark_store_current_revision(s)); /* definition and checkpoint */
  /* Bad input: duplicate, unknown start, bad options, bad names and NULLs. */
  CHECK_ST(tidemark_store_subscription_create(s, S("sub"), NULL, TIDEMARK_START_END, 0, NULL, &rev), TIDEMARK_ERR_CONFLICT);
  CHECK_ST(tidemark_store_subscription_create(s, S("x"), NULL, 7, 0, NULL, &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_subscription_create(s, S("x"), NULL, TIDEMARK_START_REVISION, 0, NULL, &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_subscription_create(s, S("x"), NULL, TIDEMARK_START_REVISION, 99, NULL, &rev), TIDEMARK_ERR_FUTURE_REVISION);
  tidemark_subscription_options zero = o;
  zero.max_in_flight = 0;
  CHECK_ST(tidemark_store_subscription_create(s, S("x"), NULL, TIDEMARK_START_END, 0, &zero, &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_subscription_create(s, NULL, 0, NULL, TIDEMARK_START_END, 0, NULL, &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  static uint8_t longname[TIDEMARK_MAX_NAME + 1];
  memset(longname, 'n', sizeof longname);
  CHECK_ST(tidemark_store_subscription_create(s, longname, sizeof longname, NULL, TIDEMARK_START_END, 0, NULL, &rev), TIDEMARK_ERR_TOO_LARGE);
  CHECK_NULL_ARG(tidemark_store_subscription_create(NULL, S("x"), NULL, TIDEMARK_START_END, 0, NULL, &rev));
  CHECK_NULL_ARG(tidemark_store_subscription_create(s, NULL, 3, NULL, TIDEMARK_START_END, 0, NULL, &rev));
  CHECK_NULL_ARG(tidemark_store_subscription_create(s, S("x"), NULL, TIDEMARK_START_END, 0, NULL, NULL));
  CHECK(rev == created);
  tidemark_subscription *c = SENTINEL;
  CHECK_ST(tidemark_subscription_connect(s, S("nope"), &c), TIDEMARK_ERR_NOT_FOUND);
  CHECK_NULL_ARG(tidemark_subscription_connect(NULL, S("sub"), &c));
  CHECK_NULL_ARG(tidemark_subscription_connect(s, S("sub"), NULL));
  CHECK(c == SENTINEL);
  CHECK_OK(tidemark_subscription_connect(s, S("sub"), &c));
  tidemark_subscription *c2 = NULL;
  CHECK_OK(tidemark_subscription_connect(s, S("sub"), &c2));

  /* History replays; each event carries its delivery count. */
  uint64_t revs[8], r[5];
  uint32_t counts[8];
  REQUIRE(take(c, 5, r, counts) == 5);
  CHECK(r[0] < r[1] && r[4] < created && counts[0] == 1);
  tidemark_deliveries *d = SENTINEL;
  CHECK_ST(tidemark_subscription_next(c2, 0, &d), TIDEMARK_ERR_TIMEOUT);
  CHECK(d == SENTINEL);
  CHECK_NULL_ARG(tidemark_subscription_next(NULL, 0, &d));
  CHECK_NULL_ARG(tidemark_subscription_next(c, 0, NULL));
  /* Ack: only what was delivered to this consumer; a failed ack acks nothing. */
  uint64_t two[] = {r[0], r[1]};
  CHECK_ST(tidemark_subscription_ack(c2, two, 2), TIDEMARK_ERR_INVALID_ARGUMENT);
  uint64_t bogus[] = {r[0], 7777};
  CHECK_ST(tidemark_subscription_ack(c, bogus, 2), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_NULL_ARG(tidemark_subscription_ack(c, NULL, 1));
  CHECK_NULL_ARG(tidemark_subscription_ack(NULL, two, 2));
  CHECK_OK(tidemark_subscription_ack(c, NULL, 0));
  CHECK_OK(tidemark_subscription_ack(c, two, 2));
  CHECK_ST(tidemark_subscription_ack(c, two, 1), TIDEMARK_ERR_INVALID_ARGUMENT);
  /* Nack: 3 retry (redelivered with count 2), 4 park, 5 skip. */
  CHECK_ST(tidemark_subscription_nack(c, r[2], 9), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_subscription_nack(c2, r[2], TIDEMARK_NACK_RETRY), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_NULL_ARG(tidemark_subscription_nack(NULL, r[2], TIDEMARK_NACK_RETRY));
  CHECK_OK(tidemark_subscription_nack(c, r[2], TIDEMARK_NACK_RETRY));
  CHECK_OK(tidemark_subscription_nack(c, r[3], TIDEMARK_NACK_PARK));
  CHECK_OK(tidemark_subscription_nack(c, r[4], TIDEMARK_NACK_SKIP));
  REQUIRE(take(c2, 1, revs, counts) == 1);
  CHECK(revs[0] == r[2] && counts[0] == 2);
  /* Not acked in time (injected clock): parked after max_retry = 2 deliveries. */
  __atomic_add_fetch(&g_now, 1000, __ATOMIC_SEQ_CST);
  CHECK_ST(tidemark_subscription_next(c, 0, &d), TIDEMARK_ERR_TIMEOUT);
  tidemark_deliveries *parked = NULL;
  CHECK_OK(tidemark_store_subscription_parked(s, S("sub"), 0, &parked));
  REQUIRE(tidemark_deliveries_len(parked) == 2);
  const tidemark_delivery *p = tidemark_deliveries_data(parked);
  CHECK(p[0].event.revision == r[2] && p[0].delivery_count == 2 && p[1].event.revision == r[3]);
  CHECK(bytes_is(p[0].event.stream, "orders") && bytes_is(p[0].event.data, "x"));
  tidemark_deliveries_free(parked);
  char *json = NULL;
  CHECK_OK(tidemark_store_subscription_list(s, &json));
  CHECK(json && strstr(json, "\"checkpoint\":") && strstr(json, "\"lag\":0") && strstr(json, "\"parked\":2") && strstr(json, "\"consumers\":2"));
  tidemark_string_free(json);
  /* Replay: delivered again; acked, they leave the parked list. */
  size_t n = UNTOUCHED;
  CHECK_OK(tidemark_store_subscription_replay_parked(s, S("sub"), &n));
  CHECK(n == 2);
  REQUIRE(take(c, 2, revs, counts) == 2);
  CHECK(revs[0] == r[2] && counts[0] == 1);
  CHECK_OK(tidemark_subscription_ack(c, revs, 2));
  CHECK_OK(tidemark_store_subscription_parked(s, S("sub"), 0, &parked));
  CHECK(tidemark_deliveries_len(parked) == 0);
  tidemark_deliveries_free(parked);
  /* A closed consumer's events go to the other. */
  append_n(s, "orders", 1);
  REQUIRE(take(c, 1, revs, NULL) == 1);
  tidemark_subscription_close(c);
  tidemark_subscription_close(NULL);
  uint64_t handed[1];
  REQUIRE(take(c2, 1, handed, counts) == 1);
  CHECK(handed[0] == revs[0] && counts[0] == 2);
  CHECK_OK(tidemark_subscription_ack(c2, handed, 1));
  /* NULLs and unknown names elsewhere. */
  CHECK_NULL_ARG(tidemark_store_subscription_list(NULL, &json));
  CHECK_NULL_ARG(tidemark_store_subscription_list(s, NULL));
  CHECK_NULL_ARG(tidemark_store_subscription_parked(NULL, S("sub"), 0, &parked));
  CHECK_NULL_ARG(tidemark_store_subscription_parked(s, S("sub"), 0, NULL));
  CHECK_ST(tidemark_store_subscription_parked(s, S("nope"), 0, &parked), TIDEMARK_ERR_NOT_FOUND);
  CHECK_NULL_ARG(tidemark_store_subscription_replay_parked(NULL, S("sub"), &n));
  CHECK_NULL_ARG(tidemark_store_subscription_replay_parked(s, S("sub"), NULL));
  CHECK_ST(tidemark_store_subscription_replay_parked(s, S("nope"), &n), TIDEMARK_ERR_NOT_FOUND);
  CHECK(tidemark_deliveries_len(NULL) == 0 && tidemark_deliveries_data(NULL) == NULL);
  tidemark_deliveries_free(NULL);
  /* Delete: the consumer learns it; the name is free again. */
  CHECK_NULL_ARG(tidemark_store_subscription_delete(NULL, S("sub"), &rev));
  CHECK_NULL_ARG(tidemark_store_subscription_delete(s, S("sub"), NULL));
  CHECK_ST(tidemark_store_subscription_delete(s, S("nope"), &rev), TIDEMARK_ERR_NOT_FOUND);
  CHECK_OK(tidemark_store_subscription_delete(s, S("sub"), &rev));
  CHECK_ST(tidemark_subscription_next(c2, 0, &d), TIDEMARK_ERR_NOT_FOUND);
  CHECK_OK(tidemark_store_subscription_list(s, &json));
  CHECK(json && strcmp(json, "[]") == 0);
  tidemark_string_free(json);
  CHECK_OK(tidemark_store_subscription_create(s, S("sub"), NULL, TIDEMARK_START_END, 0, NULL, &rev));
  tidemark_subscription_close(c2);
  tidemark_store_close(s);
}

/* Reset: backwards delivers acked events again, forwards skips; a connected consumer gets
 * CONFLICT and connects again at the new checkpoint. */
void test_persistent_reset(void) {
  section("persistent subscription reset");
  tidemark_store *s = open_store(NULL);
  append_n(s, "orders", 4);
  uint64_t rev = UNTOUCHED, revs[8];
  CHECK_OK(tidemark_store_subscription_create(s, S("sub"), NULL, TIDEMARK_START_BEGINNING, 0, NULL, &rev));
  tidemark_subscription *c = NULL;
  CHECK_OK(tidemark_subscription_connect(s, S("sub"), &c));
  REQUIRE(take(c, 4, revs, NULL) == 4);
  CHECK_OK(tidemark_subscription_ack(c, revs, 4));
  const uint64_t first = revs[0], third = revs[2];
  /* Bad input changes nothing. */
  const uint64_t before = tidemark_store_current_revision(s);
  rev = UNTOUCHED;
  CHECK_ST(tidemark_store_subscription_reset(s, S("sub"), 0, &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_subscription_reset(s, S("sub"), before + 2, &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_subscription_reset(s, S("nope"), 1, &rev), TIDEMARK_ERR_NOT_FOUND);
  CHECK_NULL_ARG(tidemark_store_subscription_reset(NULL, S("sub"), 1, &rev));
  CHECK_NULL_ARG(tidemark_store_subscription_reset(s, NULL, 3, 1, &rev));
  CHECK_NULL_ARG(tidemark_store_subscription_reset(s, S("sub"), 1, NULL));
  CHECK(rev == UNTOUCHED && tidemark_store_current_revision(s) == before);
  /* Backwards: the open consumer is told, a new one gets every event again. */
  CHECK_OK(tidemark_store_subscription_reset(s, S("sub"), first, &rev));
  CHECK(rev == before + 1 && tidemark_store_current_revision(s) == rev);
  tidemark_deliveries *d = NULL;
  CHECK_ST(tidemark_subscription_next(c, 0, &d), TIDEMARK_ERR_CONFLICT);
  tidemark_subscription_close(c);
  CHECK_OK(tidemark_subscription_connect(s, S("sub"), &c));
  REQUIRE(take(c, 4, revs, NULL) == 4);
  CHECK(revs[0] == first && revs[2] == third);
  CHECK_OK(tidemark_subscription_ack(c, revs, 4));
  tidemark_subscription_close(c);
  /* Forwards: delivery starts at the third event. */
  CHECK_OK(tidemark_store_subscription_reset(s, S("sub"), third, &rev));
  CHECK_OK(tidemark_subscription_connect(s, S("sub"), &c));
  REQUIRE(take(c, 2, revs, NULL) == 2);
  CHECK(revs[0] == third);
  tidemark_subscription_close(c);
  tidemark_store_close(s);
}
