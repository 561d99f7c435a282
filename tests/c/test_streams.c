/*
 * tests/c/test_streams.c: the reserved namespace, streams (append with expected versions,
 * idempotent retry, reads both ways, versions, listing, deletion) and snapshots, with every
 * bad input (NULL, empty and oversize names, unknown direction, expected version below -4).
 */
#include "harness.h"

/* The reserved namespace: keys starting with 0x00 belong to tidemark's features; the user key
 * API refuses them and ALL never shows them. */
void test_reserved_namespace(void) {
  section("reserved 0x00 namespace");
  tidemark_store *s = open_store(NULL);
  uint64_t rev = UNTOUCHED;
  const uint8_t reserved[] = {0x00, 's', '/', 'x'};
  CHECK_ST(tidemark_store_put(s, reserved, sizeof reserved, S("v"), &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_put(s, reserved, 1, S("v"), &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(rev == UNTOUCHED && strstr(tidemark_last_error_message(), "reserved") != NULL);
  CHECK_ST(tidemark_store_put_if(s, reserved, sizeof reserved, S("v"), 0, &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_delete(s, reserved, sizeof reserved, &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  tidemark_entry *e = SENTINEL;
  CHECK_ST(tidemark_store_get(s, reserved, sizeof reserved, &e), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(e == SENTINEL);
  tidemark_batch *b = tidemark_batch_new();
  CHECK_OK(tidemark_batch_put(b, S("ok"), S("1")));
  CHECK_OK(tidemark_batch_require(b, reserved, sizeof reserved, 0));
  CHECK_ST(tidemark_store_commit(s, b, &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  tidemark_batch_free(b);
  CHECK(tidemark_store_current_revision(s) == 0);
  /* Selectors into the namespace are refused; ALL, the empty prefix and a RANGE from "" are
   * confined to user keys. */
  tidemark_selector bad[] = {
      {TIDEMARK_SELECT_KEY, {reserved, 2}, {NULL, 0}},
      {TIDEMARK_SELECT_PREFIX, {reserved, 1}, {NULL, 0}},
      {TIDEMARK_SELECT_RANGE, {reserved, 2}, {B("z"), 1}},
      {TIDEMARK_SELECT_RANGE, {NULL, 0}, {reserved, 3}},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    tidemark_events *ev = SENTINEL;
    CHECK_ST(tidemark_store_changes(s, &bad[i], 0, 0, 0, &ev), TIDEMARK_ERR_INVALID_ARGUMENT);
    CHECK_ST(tidemark_store_range(s, &bad[i], 0, &ev), TIDEMARK_ERR_INVALID_ARGUMENT);
    CHECK(ev == SENTINEL);
    tidemark_watch *w = SENTINEL;
    CHECK_ST(tidemark_watch_open(s, &bad[i], NULL, &w), TIDEMARK_ERR_INVALID_ARGUMENT);
    CHECK(w == SENTINEL);
  }
  CHECK_OK(tidemark_store_put(s, S("\x01k"), S("v"), &rev));
  tidemark_selector from_empty = {TIDEMARK_SELECT_RANGE, {NULL, 0}, {B("z"), 1}};
  tidemark_selector empty_prefix = {TIDEMARK_SELECT_PREFIX, {NULL, 0}, {NULL, 0}};
  tidemark_events *ev = NULL;
  CHECK_OK(tidemark_store_range(s, &from_empty, 0, &ev));
  CHECK(tidemark_events_len(ev) == 1);
  tidemark_events_free(ev);
  CHECK_OK(tidemark_store_changes(s, &empty_prefix, 0, 0, 0, &ev));
  CHECK(tidemark_events_len(ev) == 1);
  tidemark_events_free(ev);
  tidemark_store_close(s);
}

static tidemark_stream_event new_event(const char *type, const char *data) {
  tidemark_stream_event e;
  memset(&e, 0, sizeof e);
  e.event_type = (tidemark_bytes){B(type), strlen(type)};
  e.data = (tidemark_bytes){B(data), strlen(data)};
  return e;
}

void test_streams(void) {
  section("streams: append, read, versions, list, delete");
  tidemark_store *s = open_store(NULL);
  tidemark_append_result r = {UNTOUCHED, UNTOUCHED, UNTOUCHED};
  tidemark_stream_event evs[3] = {new_event("created", "1"), new_event("paid", "2"), new_event("shipped", "3")};
  static const uint8_t meta[] = {0x00, 0x01};
  evs[1].metadata = (tidemark_bytes){meta, sizeof meta};
  int64_t v = 99;
  CHECK_OK(tidemark_store_stream_version(s, S("orders"), &v));
  CHECK(v == -1);

  /* Expected versions: a wrong one is CONFLICT with the current version, nothing written. */
  CHECK_ST(tidemark_store_append(s, S("orders"), evs, 2, TIDEMARK_EXPECT_EXISTS, &r), TIDEMARK_ERR_CONFLICT);
  CHECK(tidemark_last_error_current_version() == -1 && r.version == UNTOUCHED);
  CHECK(strstr(tidemark_last_error_message(), "orders") != NULL);
  CHECK_ST(tidemark_store_append(s, S("orders"), evs, 2, 0, &r), TIDEMARK_ERR_CONFLICT);
  CHECK_OK(tidemark_store_append(s, S("orders"), evs, 2, TIDEMARK_EXPECT_NO_STREAM, &r));
  CHECK(r.first_version == 0 && r.version == 1 && r.first_revision == 1);
  CHECK_ST(tidemark_store_append(s, S("orders"), evs, 1, TIDEMARK_EXPECT_NO_STREAM, &r), TIDEMARK_ERR_CONFLICT);
  CHECK(tidemark_last_error_current_version() == 1);
  CHECK_ST(tidemark_store_append(s, S("orders"), evs, 1, 0, NULL), TIDEMARK_ERR_CONFLICT);
  CHECK_OK(tidemark_store_append(s, S("orders"), evs + 2, 1, 1, &r));
  CHECK(r.first_version == 2 && r.version == 2);
  CHECK_OK(tidemark_store_append(s, S("orders"), evs, 1, TIDEMARK_EXPECT_EXISTS, NULL));
  CHECK_OK(tidemark_store_append(s, S("orders"), evs, 1, TIDEMARK_EXPECT_ANY, NULL));
  CHECK_OK(tidemark_store_stream_version(s, S("orders"), &v));
  CHECK(v == 4);
  /* A user ALL read never shows stream events. */
  tidemark_events *ch = NULL;
  CHECK_OK(tidemark_store_changes(s, NULL, 0, 0, 0, &ch));
  CHECK(tidemark_events_len(ch) == 0);
  tidemark_events_free(ch);

  /* Forward and backward reads. */
  tidemark_stream_events *out = NULL;
  CHECK_OK(tidemark_store_read_stream(s, S("orders"), 0, 0, TIDEMARK_FORWARD, &out));
  REQUIRE(tidemark_stream_events_len(out) == 5);
  const tidemark_stream_event *d = tidemark_stream_events_data(out);
  CHECK(d[0].version == 0 && d[4].version == 4 && d[0].revision == 1 && d[1].revision == 2);
  CHECK(bytes_is(d[0].stream, "orders") && bytes_is(d[1].event_type, "paid") && bytes_is(d[1].data, "2"));
  CHECK(bytes_eq(d[1].metadata, meta, sizeof meta) && d[0].metadata.len == 0);
  CHECK(d[0].id.len == 16 && memcmp(d[0].id.ptr, d[1].id.ptr, 16) != 0);
  CHECK(d[0].timestamp_ms > 1600000000000ull);
  tidemark_stream_events_free(out);
  CHECK_OK(tidemark_store_read_stream(s, S("orders"), TIDEMARK_READ_FROM_END, 2, TIDEMARK_BACKWARD, &out));
  d = tidemark_stream_events_data(out);
  CHECK(tidemark_stream_events_len(out) == 2 && d[0].version == 4 && d[1].version == 3);
  tidemark_stream_events_free(out);
  CHECK_OK(tidemark_store_read_stream(s, S("orders"), 1, 0, TIDEMARK_BACKWARD, &out));
  d = tidemark_stream_events_data(out);
  CHECK(tidemark_stream_events_len(out) == 2 && d[0].version == 1 && d[1].version == 0);
  tidemark_stream_events_free(out);
  CHECK_OK(tidemark_store_read_stream(s, S("orders"), 9, 0, TIDEMARK_FORWARD, &out));
  CHECK(tidemark_stream_events_len(out) == 0);
  tidemark_stream_events_free(out);

  /* Idempotent retry: the same ids as the last append return its result, write nothing. */
  tidemark_stream_event with_ids[2] = {new_event("a", "x"), new_event("b", "y")};
  static const uint8_t id1[16] = {1}, id2[16] = {2};
  with_ids[0].id = (tidemark_bytes){id1, 16};
  with_ids[1].id = (tidemark_bytes){id2, 16};
  tidemark_append_result first, again;
  CHECK_OK(tidemark_store_append(s, S("idem"), with_ids, 2, TIDEMARK_EXPECT_NO_STREAM, &first));
  uint64_t rev = tidemark_store_current_revision(s);
  CHECK_OK(tidemark_store_append(s, S("idem"), with_ids, 2, TIDEMARK_EXPECT_NO_STREAM, &again));
  CHECK(again.first_version == first.first_version && again.version == first.version &&
        again.first_revision == first.first_revision);
  CHECK(tidemark_store_current_revision(s) == rev);

  /* Listing, paged, by prefix. */
  CHECK_OK(tidemark_store_append(s, S("order-2"), evs, 1, TIDEMARK_EXPECT_ANY, NULL));
  tidemark_stream_list *l = NULL;
  CHECK_OK(tidemark_store_list_streams(s, S("order"), NULL, 0, 1, &l));
  CHECK(tidemark_stream_list_len(l) == 1 && tidemark_stream_list_has_more(l));
  const tidemark_stream_info *info = tidemark_stream_list_data(l);
  CHECK(bytes_is(info[0].name, "order-2") && info[0].version == 0);
  tidemark_stream_list_free(l);
  CHECK_OK(tidemark_store_list_streams(s, S("order"), S("order-2"), 0, &l));
  info = tidemark_stream_list_data(l);
  CHECK(tidemark_stream_list_len(l) == 1 && !tidemark_stream_list_has_more(l));
  CHECK(bytes_is(info[0].name, "orders") && info[0].version == 4);
  tidemark_stream_list_free(l);
  CHECK_OK(tidemark_store_list_streams(s, NULL, 0, NULL, 0, 0, &l));
  CHECK(tidemark_stream_list_len(l) == 3);
  tidemark_stream_list_free(l);
  char *json = NULL;
  CHECK_OK(tidemark_store_status_json(s, &json));
  CHECK(json != NULL && strstr(json, "\"streams\":3") != NULL);
  tidemark_string_free(json);

  /* Deletion frees the name: a new life from version 0, with NO_STREAM or ANY only. */
  rev = UNTOUCHED;
  CHECK_OK(tidemark_store_delete_stream(s, S("orders"), &rev));
  CHECK(rev != UNTOUCHED && rev > first.first_revision);
  CHECK_OK(tidemark_store_stream_version(s, S("orders"), &v));
  CHECK(v == -1);
  out = SENTINEL;
  CHECK_ST(tidemark_store_read_stream(s, S("orders"), 0, 0, TIDEMARK_FORWARD, &out), TIDEMARK_ERR_NOT_FOUND);
  CHECK(out == SENTINEL);
  CHECK_ST(tidemark_store_delete_stream(s, S("orders"), NULL), TIDEMARK_ERR_NOT_FOUND);
  CHECK_ST(tidemark_store_append(s, S("orders"), evs, 1, 4, NULL), TIDEMARK_ERR_CONFLICT);
  CHECK(tidemark_last_error_current_version() == -1);
  CHECK_OK(tidemark_store_append(s, S("orders"), evs, 1, TIDEMARK_EXPECT_NO_STREAM, &r));
  CHECK(r.first_version == 0);

  /* Bad inputs: every one a clear status, nothing written, out-parameters untouched. */
  rev = tidemark_store_current_revision(s);
  r.version = UNTOUCHED;
  CHECK_NULL_ARG(tidemark_store_append(NULL, S("x"), evs, 1, TIDEMARK_EXPECT_ANY, &r));
  CHECK_NULL_ARG(tidemark_store_append(s, NULL, 1, evs, 1, TIDEMARK_EXPECT_ANY, &r));
  CHECK_NULL_ARG(tidemark_store_append(s, S("x"), NULL, 1, TIDEMARK_EXPECT_ANY, &r));
  CHECK_ST(tidemark_store_append(s, NULL, 0, evs, 1, TIDEMARK_EXPECT_ANY, &r), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_append(s, S("x"), NULL, 0, TIDEMARK_EXPECT_ANY, &r), TIDEMARK_ERR_INVALID_ARGUMENT);
  static uint8_t long_name[TIDEMARK_MAX_NAME + 1];
  memset(long_name, 'n', sizeof long_name);
  CHECK_ST(tidemark_store_append(s, long_name, sizeof long_name, evs, 1, TIDEMARK_EXPECT_ANY, &r), TIDEMARK_ERR_TOO_LARGE);
  CHECK_OK(tidemark_store_append(s, long_name, TIDEMARK_MAX_NAME, evs, 1, TIDEMARK_EXPECT_ANY, NULL));
  rev = tidemark_store_current_revision(s);
  const int64_t bad_expected[] = {-3, -5, INT64_MIN};
  for (size_t i = 0; i < sizeof bad_expected / sizeof bad_expected[0]; i++) {
    CHECK_ST(tidemark_store_append(s, S("x"), evs, 1, bad_expected[i], &r), TIDEMARK_ERR_INVALID_ARGUMENT);
  }
  tidemark_stream_event bad = new_event("t", "d");
  bad.id = (tidemark_bytes){id1, 15};
  CHECK_ST(tidemark_store_append(s, S("x"), &bad, 1, TIDEMARK_EXPECT_ANY, &r), TIDEMARK_ERR_INVALID_ARGUMENT);
  bad = new_event("t", "d");
  bad.data = (tidemark_bytes){NULL, 3};
  CHECK_NULL_ARG(tidemark_store_append(s, S("x"), &bad, 1, TIDEMARK_EXPECT_ANY, &r));
  bad = new_event("t", "d");
  bad.event_type = (tidemark_bytes){NULL, 1};
  CHECK_NULL_ARG(tidemark_store_append(s, S("x"), &bad, 1, TIDEMARK_EXPECT_ANY, &r));
  bad = new_event("t", "d");
  bad.metadata = (tidemark_bytes){NULL, 2};
  CHECK_NULL_ARG(tidemark_store_append(s, S("x"), &bad, 1, TIDEMARK_EXPECT_ANY, &r));
  bad.id = (tidemark_bytes){NULL, 16};
  CHECK_NULL_ARG(tidemark_store_append(s, S("x"), &bad, 1, TIDEMARK_EXPECT_ANY, &r));
  CHECK(r.version == UNTOUCHED && tidemark_store_current_revision(s) == rev);

  out = SENTINEL;
  CHECK_NULL_ARG(tidemark_store_read_stream(NULL, S("orders"), 0, 0, TIDEMARK_FORWARD, &out));
  CHECK_NULL_ARG(tidemark_store_read_stream(s, S("orders"), 0, 0, TIDEMARK_FORWARD, NULL));
  CHECK_NULL_ARG(tidemark_store_read_stream(s, NULL, 3, 0, 0, TIDEMARK_FORWARD, &out));
  CHECK_ST(tidemark_store_read_stream(s, NULL, 0, 0, 0, TIDEMARK_FORWARD, &out), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_read_stream(s, S("orders"), 0, 0, 2, &out), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(strstr(tidemark_last_error_message(), "direction") != NULL);
  CHECK_ST(tidemark_store_read_stream(s, S("orders"), -2, 0, TIDEMARK_BACKWARD, &out), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_read_stream(s, S("orders"), TIDEMARK_READ_FROM_END, 0, TIDEMARK_FORWARD, &out),
           TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_read_stream(s, long_name, sizeof long_name, 0, 0, TIDEMARK_FORWARD, &out), TIDEMARK_ERR_TOO_LARGE);
  CHECK(out == SENTINEL);
  v = 99;
  CHECK_NULL_ARG(tidemark_store_stream_version(NULL, S("orders"), &v));
  CHECK_NULL_ARG(tidemark_store_stream_version(s, S("orders"), NULL));
  CHECK_ST(tidemark_store_stream_version(s, NULL, 0, &v), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(v == 99);
  l = SENTINEL;
  CHECK_NULL_ARG(tidemark_store_list_streams(NULL, NULL, 0, NULL, 0, 0, &l));
  CHECK_NULL_ARG(tidemark_store_list_streams(s, NULL, 0, NULL, 0, 0, NULL));
  CHECK_NULL_ARG(tidemark_store_list_streams(s, NULL, 1, NULL, 0, 0, &l));
  CHECK_NULL_ARG(tidemark_store_list_streams(s, NULL, 0, NULL, 1, 0, &l));
  CHECK(l == SENTINEL);
  CHECK_NULL_ARG(tidemark_store_delete_stream(NULL, S("orders"), NULL));
  CHECK_NULL_ARG(tidemark_store_delete_stream(s, NULL, 2, NULL));
  CHECK_ST(tidemark_store_delete_stream(s, NULL, 0, NULL), TIDEMARK_ERR_INVALID_ARGUMENT);
  /* NULL lists: 0 / NULL / false, frees are no-ops. */
  CHECK(tidemark_stream_events_len(NULL) == 0 && tidemark_stream_events_data(NULL) == NULL);
  CHECK(tidemark_stream_list_len(NULL) == 0 && tidemark_stream_list_data(NULL) == NULL);
  CHECK(!tidemark_stream_list_has_more(NULL));
  tidemark_stream_events_free(NULL);
  tidemark_stream_list_free(NULL);
  tidemark_store_close(s);
}

void test_snapshots(void) {
  section("snapshots: record, read latest at or below, delete, list");
  tidemark_store *s = open_store(NULL);
  uint64_t rev = 0;
  CHECK_OK(tidemark_store_snapshot_record(s, S("src"), S("orders"), 3, S("three"), &rev));
  CHECK(rev == 1);
  CHECK_OK(tidemark_store_snapshot_record(s, S("src"), S("orders"), 7, S("seven"), NULL));
  CHECK_OK(tidemark_store_snapshot_record(s, S("src"), S("other"), 5, S("x"), NULL));
  tidemark_snapshots *out = NULL;
  CHECK_OK(tidemark_store_snapshot_read(s, S("src"), S("orders"), 6, &out));
  REQUIRE(tidemark_snapshots_len(out) == 1);
  const tidemark_snapshot *d = tidemark_snapshots_data(out);
  CHECK(d[0].version == 3 && d[0].revision == 1 && bytes_is(d[0].data, "three"));
  CHECK(bytes_is(d[0].source, "src") && bytes_is(d[0].stream, "orders") && d[0].timestamp_ms > 0);
  tidemark_snapshots_free(out);
  out = SENTINEL;
  CHECK_ST(tidemark_store_snapshot_read(s, S("src"), S("orders"), 2, &out), TIDEMARK_ERR_NOT_FOUND);
  CHECK(out == SENTINEL);
  CHECK_OK(tidemark_store_snapshot_list(s, S("src"), S("orders"), &out));
  d = tidemark_snapshots_data(out);
  CHECK(tidemark_snapshots_len(out) == 2 && d[0].version == 3 && d[1].version == 7 && bytes_is(d[1].data, "seven"));
  tidemark_snapshots_free(out);
  CHECK_OK(tidemark_store_snapshot_delete(s, S("src"), S("orders"), 7, &rev));
  CHECK(rev == 4);
  CHECK_ST(tidemark_store_snapshot_delete(s, S("src"), S("orders"), 7, &rev), TIDEMARK_ERR_NOT_FOUND);
  CHECK_OK(tidemark_store_snapshot_read(s, S("src"), S("orders"), UINT64_MAX, &out));
  CHECK(tidemark_snapshots_data(out)[0].version == 3);
  tidemark_snapshots_free(out);
  CHECK_OK(tidemark_store_snapshot_list(s, S("none"), S("orders"), &out));
  CHECK(tidemark_snapshots_len(out) == 0);
  tidemark_snapshots_free(out);

  /* Bad inputs. */
  out = SENTINEL;
  CHECK_NULL_ARG(tidemark_store_snapshot_record(NULL, S("src"), S("s"), 1, S("d"), NULL));
  CHECK_NULL_ARG(tidemark_store_snapshot_record(s, NULL, 1, S("s"), 1, S("d"), NULL));
  CHECK_NULL_ARG(tidemark_store_snapshot_record(s, S("src"), NULL, 1, 1, S("d"), NULL));
  CHECK_NULL_ARG(tidemark_store_snapshot_record(s, S("src"), S("s"), 1, NULL, 1, NULL));
  CHECK_ST(tidemark_store_snapshot_record(s, NULL, 0, S("s"), 1, S("d"), NULL), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_snapshot_record(s, S("src"), NULL, 0, 1, S("d"), NULL), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_NULL_ARG(tidemark_store_snapshot_read(NULL, S("src"), S("s"), 1, &out));
  CHECK_NULL_ARG(tidemark_store_snapshot_read(s, S("src"), S("s"), 1, NULL));
  CHECK_NULL_ARG(tidemark_store_snapshot_read(s, NULL, 1, S("s"), 1, &out));
  CHECK_NULL_ARG(tidemark_store_snapshot_read(s, S("src"), NULL, 1, 1, &out));
  CHECK_ST(tidemark_store_snapshot_read(s, S("src"), NULL, 0, 1, &out), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_NULL_ARG(tidemark_store_snapshot_delete(NULL, S("src"), S("s"), 1, NULL));
  CHECK_NULL_ARG(tidemark_store_snapshot_delete(s, NULL, 1, S("s"), 1, NULL));
  CHECK_NULL_ARG(tidemark_store_snapshot_delete(s, S("src"), NULL, 1, 1, NULL));
  CHECK_ST(tidemark_store_snapshot_delete(s, NULL, 0, S("s"), 1, NULL), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_NULL_ARG(tidemark_store_snapshot_list(NULL, S("src"), S("s"), &out));
  CHECK_NULL_ARG(tidemark_store_snapshot_list(s, S("src"), S("s"), NULL));
  CHECK_NULL_ARG(tidemark_store_snapshot_list(s, NULL, 1, S("s"), &out));
  CHECK_NULL_ARG(tidemark_store_snapshot_list(s, S("src"), NULL, 1, &out));
  CHECK_ST(tidemark_store_snapshot_list(s, S("src"), NULL, 0, &out), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(out == SENTINEL);
  CHECK(tidemark_snapshots_len(NULL) == 0 && tidemark_snapshots_data(NULL) == NULL);
  tidemark_snapshots_free(NULL);
  tidemark_store_close(s);
}
