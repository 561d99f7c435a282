/* tests/c/test_changes.c: changes, range and compaction. */
#include "harness.h"

/* ------------------------------------------------------------------------------------------
 * changes: ranges of revisions, paging, selectors.
 * ---------------------------------------------------------------------------------------- */

void test_changes(void) {
  section("changes: ranges, paging, selectors, arena");
  tidemark_store *s = open_store(NULL);
  char key[16], val[16];
  for (int i = 0; i < 10; i++) { /* k0..k9 at revisions 1..10 */
    snprintf(key, sizeof key, "k%d", i);
    snprintf(val, sizeof val, "v%d", i);
    put(s, key, val);
  }
  uint64_t rev = 0;
  CHECK_OK(tidemark_store_delete(s, S("k3"), &rev));
  CHECK(rev == 11);
  tidemark_batch *b = tidemark_batch_new();
  CHECK_OK(tidemark_batch_put(b, S("k10"), S("v10")));
  CHECK_OK(tidemark_batch_put(b, S("k11"), S("v11")));
  CHECK_OK(tidemark_batch_put(b, S("k12"), S("v12")));
  CHECK_OK(tidemark_store_commit(s, b, &rev)); /* revisions 12, 13, 14 */
  CHECK(rev == 12);
  tidemark_batch_free(b);

  /* Everything, ascending, with every field. */
  tidemark_events *ev = NULL;
  CHECK_OK(tidemark_store_changes(s, NULL, 1, 0, 0, &ev));
  REQUIRE(ev != NULL && tidemark_events_len(ev) == 14);
  const tidemark_event *d = tidemark_events_data(ev);
  bool ok = true;
  for (size_t i = 0; i < 14; i++) ok = ok && d[i].revision == i + 1;
  CHECK(ok);
  CHECK(bytes_is(d[0].key, "k0") && bytes_is(d[0].value, "v0") && d[0].kind == TIDEMARK_EVENT_PUT);
  CHECK(d[0].version == 1 && d[0].create_revision == 1);
  CHECK(bytes_is(d[10].key, "k3") && d[10].kind == TIDEMARK_EVENT_DELETE && d[10].value.len == 0);
  CHECK(d[10].version == 0 && d[10].create_revision == 0);
  CHECK(bytes_is(d[13].key, "k12") && bytes_is(d[13].value, "v12") && d[13].create_revision == 14);
  CHECK(!tidemark_events_has_more(ev));
  CHECK(tidemark_events_next_revision(ev) == 15);
  CHECK(arena_holds(ev));
  tidemark_bytes arena = tidemark_events_arena(ev);
  CHECK(arena.ptr != NULL && arena.len >= 2 * 13); /* every key and value, copied once */
  tidemark_events_free(ev);

  /* from 0 reads as 1; to_revision bounds the read; to beyond current is current. */
  static const uint64_t all14[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0};
  CHECK(changes_are(s, NULL, 0, 0, all14));
  CHECK(changes_are(s, NULL, 1, 1000, all14));
  static const uint64_t r3to6[] = {3, 4, 5, 6, 0};
  CHECK(changes_are(s, NULL, 3, 6, r3to6));
  ev = NULL;
  CHECK_OK(tidemark_store_changes(s, NULL, 3, 6, 0, &ev));
  CHECK(tidemark_events_next_revision(ev) == 7 && !tidemark_events_has_more(ev));
  tidemark_events_free(ev);

  /* Paging with a limit: has_more / next_revision, a commit never split across pages. */
  ev = NULL;
  CHECK_OK(tidemark_store_changes(s, NULL, 3, 6, 2, &ev));
  CHECK(tidemark_events_len(ev) == 2 && tidemark_events_has_more(ev) && tidemark_events_next_revision(ev) == 5);
  tidemark_events_free(ev);
  for (size_t limit = 1; limit <= 15; limit++) {
    uint64_t from = 1, expect = 1;
    size_t pages = 0;
    bool paged_ok = true;
    for (;;) {
      ev = NULL;
      if (!CHECK_OK(tidemark_store_changes(s, NULL, from, 0, limit, &ev))) break;
      size_t n = tidemark_events_len(ev);
      d = tidemark_events_data(ev);
      for (size_t i = 0; i < n; i++) paged_ok = paged_ok && d[i].revision == expect++;
      /* At most `limit`, unless the page ends in the batch (12..14) it had to finish. */
      paged_ok = paged_ok && (n <= limit || (d[n - 1].revision == 14 && d[limit - 1].revision >= 12));
      paged_ok = paged_ok && tidemark_events_next_revision(ev) == expect;
      bool more = tidemark_events_has_more(ev);
      paged_ok = paged_ok && more == (expect <= 14);
      from = tidemark_events_next_revision(ev);
      tidemark_events_free(ev);
      if (!more || ++pages > 20) break;
    }
    if (!CHECK(paged_ok && expect == 15)) fprintf(stderr, "    paging with limit %zu\n", limit);
  }
  /* limit 1 in the middle of the batch: the whole commit comes. */
  ev = NULL;
  CHECK_OK(tidemark_store_changes(s, NULL, 12, 0, 1, &ev));
  CHECK(tidemark_events_len(ev) == 3 && !tidemark_events_has_more(ev));
  tidemark_events_free(ev);

  /* current + 1 is an empty read; beyond it is FUTURE_REVISION with the current revision. */
  ev = NULL;
  CHECK_OK(tidemark_store_changes(s, NULL, 15, 0, 0, &ev));
  CHECK(tidemark_events_len(ev) == 0 && !tidemark_events_has_more(ev) && tidemark_events_next_revision(ev) == 15);
  tidemark_events_free(ev);
  ev = SENTINEL;
  CHECK_ST(tidemark_store_changes(s, NULL, 16, 0, 0, &ev), TIDEMARK_ERR_FUTURE_REVISION);
  CHECK(tidemark_last_error_revision() == 14);
  CHECK(ev == SENTINEL);

  /* Selectors. */
  tidemark_selector sel = sel_key("k1");
  static const uint64_t key_k1[] = {2, 0};
  CHECK(changes_are(s, &sel, 1, 0, key_k1));
  sel = sel_prefix("k1");
  static const uint64_t prefix_k1[] = {2, 12, 13, 14, 0};
  CHECK(changes_are(s, &sel, 1, 0, prefix_k1));
  sel = sel_range("k2", "k5"); /* k2, k3 (put and delete), k4 */
  static const uint64_t range_k2_k5[] = {3, 4, 5, 11, 0};
  CHECK(changes_are(s, &sel, 1, 0, range_k2_k5));
  sel = sel_range("k8", ""); /* empty end: unbounded; "k10".."k12" sort before "k8" */
  static const uint64_t range_k8[] = {9, 10, 0};
  CHECK(changes_are(s, &sel, 1, 0, range_k8));
  sel = sel_all();
  CHECK(changes_are(s, &sel, 1, 0, all14));
  sel = sel_prefix(""); /* the empty prefix is everything */
  CHECK(changes_are(s, &sel, 1, 0, all14));
  sel = sel_prefix("zzz");
  static const uint64_t none[] = {0};
  CHECK(changes_are(s, &sel, 1, 0, none));
  sel = sel_prefix("k");
  ev = NULL;
  CHECK_OK(tidemark_store_changes(s, &sel, 1, 0, 3, &ev));
  CHECK(tidemark_events_len(ev) == 3 && tidemark_events_has_more(ev) && tidemark_events_next_revision(ev) == 4);
  tidemark_events_free(ev);

  /* Invalid selectors: INVALID_ARGUMENT, out untouched. */
  tidemark_selector bad_kind = {7, {B("k"), 1}, {NULL, 0}};
  tidemark_selector backwards = sel_range("b", "a");
  tidemark_selector equal = sel_range("a", "a");
  tidemark_selector empty_key = sel_key("");
  const tidemark_selector *invalid[] = {&bad_kind, &backwards, &equal, &empty_key};
  for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
    ev = SENTINEL;
    CHECK_ST(tidemark_store_changes(s, invalid[i], 1, 0, 0, &ev), TIDEMARK_ERR_INVALID_ARGUMENT);
    CHECK(ev == SENTINEL);
    CHECK(tidemark_last_error_message()[0] != '\0');
  }
  /* NULL arguments, including selector bytes that are NULL with a length. */
  tidemark_selector null_start = {TIDEMARK_SELECT_PREFIX, {NULL, 3}, {NULL, 0}};
  tidemark_selector null_end = {TIDEMARK_SELECT_RANGE, {B("a"), 1}, {NULL, 2}};
  ev = SENTINEL;
  CHECK_NULL_ARG(tidemark_store_changes(NULL, NULL, 1, 0, 0, &ev));
  CHECK_NULL_ARG(tidemark_store_changes(s, NULL, 1, 0, 0, NULL));
  CHECK_NULL_ARG(tidemark_store_changes(s, &null_start, 1, 0, 0, &ev));
  CHECK_NULL_ARG(tidemark_store_changes(s, &null_end, 1, 0, 0, &ev));
  CHECK(ev == SENTINEL);

  /* Accessors on NULL. */
  CHECK(tidemark_events_len(NULL) == 0);
  CHECK(tidemark_events_data(NULL) == NULL);
  tidemark_bytes na = tidemark_events_arena(NULL);
  CHECK(na.ptr == NULL && na.len == 0);
  CHECK(tidemark_events_has_more(NULL) == false);
  CHECK(tidemark_events_next_revision(NULL) == 0);
  tidemark_events_free(NULL);
  tidemark_store_close(s);
}

/* ------------------------------------------------------------------------------------------
 * range: current keys in byte order.
 * ---------------------------------------------------------------------------------------- */

/* Range and compare keys with `want` (NULL-terminated; "a\\0" written as {"a", 2} via lens). */
static bool range_is(tidemark_store *s, const tidemark_selector *sel, size_t limit, const char *const *want,
                     const size_t *lens, bool more) {
  tidemark_events *ev = NULL;
  if (!CHECK_OK(tidemark_store_range(s, sel, limit, &ev))) return false;
  size_t n = 0;
  while (want[n]) n++;
  const tidemark_event *d = tidemark_events_data(ev);
  bool ok = tidemark_events_len(ev) == n && tidemark_events_has_more(ev) == more &&
            tidemark_events_next_revision(ev) == 0 && arena_holds(ev);
  for (size_t i = 0; ok && i < n; i++) {
    ok = bytes_eq(d[i].key, want[i], lens ? lens[i] : strlen(want[i])) && d[i].kind == TIDEMARK_EVENT_PUT;
  }
  if (!ok) {
    fprintf(stderr, "    got %zu keys (has_more %d):", tidemark_events_len(ev), tidemark_events_has_more(ev));
    for (size_t i = 0; i < tidemark_events_len(ev); i++) fprintf(stderr, " '%.*s'", (int)d[i].key.len, (const char *)d[i].key.ptr);
    fprintf(stderr, "\n");
  }
  tidemark_events_free(ev);
  return ok;
}

void test_range(void) {
  section("range: current keys, byte order, limit, selectors");
  tidemark_store *s = open_store(NULL);
  put(s, "b", "1");                                              /* 1 */
  put(s, "a", "1");                                              /* 2 */
  put(s, "c", "1");                                              /* 3 */
  CHECK_OK(tidemark_store_put(s, B("a\0"), 2, S("nul"), NULL));  /* 4 */
  put(s, "\xff", "1");                                           /* 5 */
  put(s, "ab", "1");                                             /* 6 */
  put(s, "z", "1");                                              /* 7 */
  CHECK_OK(tidemark_store_delete(s, S("c"), NULL));              /* 8 */
  put(s, "b", "2");                                              /* 9 */
  put(s, "b", "3");                                              /* 10 */

  static const char *const all[] = {"a", "a", "ab", "b", "z", "\xff", NULL};
  static const size_t all_lens[] = {1, 2, 2, 1, 1, 1};
  CHECK(range_is(s, NULL, 0, all, all_lens, false));
  CHECK(range_is(s, NULL, 6, all, all_lens, false));
  CHECK(range_is(s, NULL, 100, all, all_lens, false));
  static const char *const first2[] = {"a", "a", NULL};
  CHECK(range_is(s, NULL, 2, first2, all_lens, true));
  static const char *const first5[] = {"a", "a", "ab", "b", "z", NULL};
  CHECK(range_is(s, NULL, 5, first5, all_lens, true));

  tidemark_selector sel = sel_prefix("a");
  static const char *const pa[] = {"a", "a", "ab", NULL};
  CHECK(range_is(s, &sel, 0, pa, all_lens, false));
  sel = sel_key("ab");
  static const char *const kab[] = {"ab", NULL};
  CHECK(range_is(s, &sel, 0, kab, NULL, false));
  sel = sel_key("c"); /* deleted */
  static const char *const nothing[] = {NULL};
  CHECK(range_is(s, &sel, 0, nothing, NULL, false));
  tidemark_selector r = {TIDEMARK_SELECT_RANGE, {B("a\0"), 2}, {B("b"), 1}};
  static const char *const ra[] = {"a", "ab", NULL};
  static const size_t ra_lens[] = {2, 2};
  CHECK(range_is(s, &r, 0, ra, ra_lens, false));
  sel = sel_range("b", "");
  static const char *const rb[] = {"b", "z", "\xff", NULL};
  CHECK(range_is(s, &sel, 0, rb, NULL, false));
  sel = sel_prefix("\xff");
  static const char *const pff[] = {"\xff", NULL};
  CHECK(range_is(s, &sel, 0, pff, NULL, false));
  sel = sel_all();
  CHECK(range_is(s, &sel, 0, all, all_lens, false));

  /* Each key as a PUT event with its current state: revision = mod_revision. */
  sel = sel_key("b");
  tidemark_events *ev = NULL;
  CHECK_OK(tidemark_store_range(s, &sel, 0, &ev));
  REQUIRE(tidemark_events_len(ev) == 1);
  const tidemark_event *d = tidemark_events_data(ev);
  CHECK(d[0].revision == 10 && d[0].create_revision == 1 && d[0].version == 3 && bytes_is(d[0].value, "3"));
  tidemark_events_free(ev);

  /* Errors. */
  tidemark_selector bad_kind = {4, {NULL, 0}, {NULL, 0}};
  tidemark_selector backwards = sel_range("z", "a");
  tidemark_selector empty_key = sel_key("");
  tidemark_selector null_start = {TIDEMARK_SELECT_KEY, {NULL, 1}, {NULL, 0}};
  ev = SENTINEL;
  CHECK_ST(tidemark_store_range(s, &bad_kind, 0, &ev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_range(s, &backwards, 0, &ev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_range(s, &empty_key, 0, &ev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_NULL_ARG(tidemark_store_range(s, &null_start, 0, &ev));
  CHECK_NULL_ARG(tidemark_store_range(NULL, NULL, 0, &ev));
  CHECK_NULL_ARG(tidemark_store_range(s, NULL, 0, NULL));
  CHECK(ev == SENTINEL);
  tidemark_store_close(s);
}

/* ------------------------------------------------------------------------------------------
 * Compaction.
 * ---------------------------------------------------------------------------------------- */

void test_compact(void) {
  section("compact / earliest_revision / COMPACTED");
  tidemark_store *s = open_store(NULL);
  char key[16];
  for (int i = 0; i < 10; i++) {
    snprintf(key, sizeof key, "k%d", i);
    put(s, key, "v");
  }
  uint64_t removed = UNTOUCHED;
  CHECK_OK(tidemark_store_compact(s, 1, &removed));
  CHECK(removed == 0);
  removed = UNTOUCHED;
  CHECK_ST(tidemark_store_compact(s, 12, &removed), TIDEMARK_ERR_FUTURE_REVISION);
  CHECK(tidemark_last_error_revision() == 10);
  CHECK(removed == UNTOUCHED);
  CHECK(tidemark_store_earliest_revision(s) == 1);

  CHECK_OK(tidemark_store_compact(s, 6, &removed));
  CHECK(removed == 5);
  CHECK(tidemark_store_earliest_revision(s) == 6);
  CHECK(tidemark_store_current_revision(s) == 10);

  /* Reading compacted revisions: COMPACTED with the earliest retained one. */
  tidemark_events *ev = SENTINEL;
  CHECK_ST(tidemark_store_changes(s, NULL, 3, 0, 0, &ev), TIDEMARK_ERR_COMPACTED);
  CHECK(tidemark_last_error_revision() == 6);
  CHECK(strstr(tidemark_last_error_message(), "6") != NULL);
  CHECK(ev == SENTINEL);
  CHECK_ST(tidemark_store_changes(s, NULL, 5, 0, 0, &ev), TIDEMARK_ERR_COMPACTED);
  CHECK(tidemark_last_error_revision() == 6);
  CHECK_ST(tidemark_store_changes(s, NULL, 0, 0, 0, &ev), TIDEMARK_ERR_COMPACTED); /* from 0 reads as 1 */
  CHECK(ev == SENTINEL);
  tidemark_selector sel = sel_key("k9");
  CHECK_ST(tidemark_store_changes(s, &sel, 1, 0, 0, &ev), TIDEMARK_ERR_COMPACTED); /* whatever the selector */
  static const uint64_t rest[] = {6, 7, 8, 9, 10, 0};
  CHECK(changes_are(s, NULL, 6, 0, rest));

  /* Compacting below the earliest again does nothing; removed_out may be NULL. */
  removed = UNTOUCHED;
  CHECK_OK(tidemark_store_compact(s, 4, &removed));
  CHECK(removed == 0 && tidemark_store_earliest_revision(s) == 6);
  CHECK_OK(tidemark_store_compact(s, 6, NULL));

  /* Everything: earliest = current + 1, the keys' current state stays. */
  CHECK_OK(tidemark_store_compact(s, 11, &removed));
  CHECK(removed == 5);
  CHECK(tidemark_store_earliest_revision(s) == 11);
  CHECK(tidemark_store_current_revision(s) == 10);
  ev = NULL;
  CHECK_OK(tidemark_store_changes(s, NULL, 11, 0, 0, &ev));
  CHECK(tidemark_events_len(ev) == 0 && !tidemark_events_has_more(ev));
  tidemark_events_free(ev);
  ev = NULL;
  CHECK_OK(tidemark_store_range(s, NULL, 0, &ev));
  CHECK(tidemark_events_len(ev) == 10);
  tidemark_events_free(ev);
  tidemark_entry *e = NULL;
  CHECK_OK(tidemark_store_get(s, S("k0"), &e));
  CHECK(tidemark_entry_mod_revision(e) == 1 && bytes_is(tidemark_entry_value(e), "v"));
  tidemark_entry_free(e);
  CHECK(put(s, "k0", "w") == 11); /* revisions go on */
  e = NULL;
  CHECK_OK(tidemark_store_get(s, S("k0"), &e));
  CHECK(tidemark_entry_version(e) == 2 && tidemark_entry_create_revision(e) == 1);
  tidemark_entry_free(e);

  removed = UNTOUCHED;
  CHECK_NULL_ARG(tidemark_store_compact(NULL, 1, &removed));
  CHECK(removed == UNTOUCHED);
  tidemark_store_close(s);
}
