/* tests/c/test_batch.c: Atomic batches. */
#include "harness.h"

/* ------------------------------------------------------------------------------------------
 * Atomic batches.
 * ---------------------------------------------------------------------------------------- */

void test_batch(void) {
  section("batches: consecutive revisions, all or nothing");
  tidemark_store *s = open_store(NULL);
  put(s, "x", "0"); /* rev 1 */

  tidemark_batch *b = tidemark_batch_new();
  REQUIRE(b != NULL);
  CHECK(tidemark_batch_len(b) == 0);
  CHECK_OK(tidemark_batch_put(b, S("a"), S("1")));
  CHECK_OK(tidemark_batch_put(b, S("a"), S("2"))); /* sees the batch's own earlier put */
  CHECK_OK(tidemark_batch_put(b, S("b"), NULL, 0));
  CHECK_OK(tidemark_batch_delete(b, S("x")));
  CHECK_OK(tidemark_batch_require(b, S("x"), 1)); /* checked against the state before the batch */
  CHECK(tidemark_batch_len(b) == 5);

  uint64_t first = UNTOUCHED;
  CHECK_OK(tidemark_store_commit(s, b, &first));
  CHECK(first == 2);
  CHECK(tidemark_store_current_revision(s) == 5);
  tidemark_entry *e = NULL;
  CHECK_OK(tidemark_store_get(s, S("a"), &e));
  CHECK(bytes_is(tidemark_entry_value(e), "2"));
  CHECK(tidemark_entry_create_revision(e) == 2 && tidemark_entry_mod_revision(e) == 3 && tidemark_entry_version(e) == 2);
  tidemark_entry_free(e);
  e = SENTINEL;
  CHECK_ST(tidemark_store_get(s, S("x"), &e), TIDEMARK_ERR_NOT_FOUND);

  tidemark_events *ev = NULL;
  CHECK_OK(tidemark_store_changes(s, NULL, 2, 0, 0, &ev));
  REQUIRE(ev != NULL);
  const tidemark_event *d = tidemark_events_data(ev);
  REQUIRE(tidemark_events_len(ev) == 4);
  CHECK(d[0].revision == 2 && d[1].revision == 3 && d[2].revision == 4 && d[3].revision == 5);
  CHECK(d[0].kind == TIDEMARK_EVENT_PUT && d[0].version == 1 && d[0].create_revision == 2 && bytes_is(d[0].value, "1"));
  CHECK(d[1].kind == TIDEMARK_EVENT_PUT && d[1].version == 2 && d[1].create_revision == 2 && bytes_is(d[1].value, "2"));
  CHECK(d[2].kind == TIDEMARK_EVENT_PUT && d[2].version == 1 && d[2].create_revision == 4 && d[2].value.len == 0);
  CHECK(d[3].kind == TIDEMARK_EVENT_DELETE && bytes_is(d[3].key, "x") && d[3].version == 0 && d[3].create_revision == 0);
  tidemark_events_free(ev);

  /* The same batch again: x is gone now, so `require x = 1` fails; nothing is applied and the
   * key's current mod_revision (0 = absent) is reported. */
  first = UNTOUCHED;
  CHECK_ST(tidemark_store_commit(s, b, &first), TIDEMARK_ERR_CONFLICT);
  CHECK(tidemark_last_error_revision() == 0);
  CHECK(first == UNTOUCHED);
  CHECK(tidemark_store_current_revision(s) == 5);

  /* A failing require reports the key's current mod_revision; the puts before it are not applied. */
  tidemark_batch_clear(b);
  CHECK(tidemark_batch_len(b) == 0);
  CHECK_OK(tidemark_batch_put(b, S("c"), S("1")));
  CHECK_OK(tidemark_batch_require(b, S("a"), 2)); /* a's mod_revision is 3 */
  CHECK_ST(tidemark_store_commit(s, b, &first), TIDEMARK_ERR_CONFLICT);
  CHECK(tidemark_last_error_revision() == 3);
  CHECK(first == UNTOUCHED);
  CHECK(tidemark_store_current_revision(s) == 5);
  e = SENTINEL;
  CHECK_ST(tidemark_store_get(s, S("c"), &e), TIDEMARK_ERR_NOT_FOUND);

  /* A delete of a missing key fails the whole batch. */
  tidemark_batch_clear(b);
  CHECK_OK(tidemark_batch_put(b, S("c"), S("1")));
  CHECK_OK(tidemark_batch_delete(b, S("nope")));
  CHECK_ST(tidemark_store_commit(s, b, &first), TIDEMARK_ERR_NOT_FOUND);
  CHECK(first == UNTOUCHED);
  CHECK(tidemark_store_current_revision(s) == 5);
  CHECK_ST(tidemark_store_get(s, S("c"), &e), TIDEMARK_ERR_NOT_FOUND);

  /* A delete of a key the batch itself created is fine. */
  tidemark_batch_clear(b);
  CHECK_OK(tidemark_batch_require(b, S("d"), 0));
  CHECK_OK(tidemark_batch_put(b, S("d"), S("1")));
  CHECK_OK(tidemark_batch_delete(b, S("d")));
  CHECK_OK(tidemark_store_commit(s, b, &first));
  CHECK(first == 6);
  CHECK(tidemark_store_current_revision(s) == 7);
  CHECK_ST(tidemark_store_get(s, S("d"), &e), TIDEMARK_ERR_NOT_FOUND);

  /* Only requirements, or nothing at all: success, no revision taken, first = 0. */
  tidemark_batch_clear(b);
  CHECK_OK(tidemark_batch_require(b, S("a"), 3));
  CHECK_OK(tidemark_batch_require(b, S("zz"), 0));
  first = UNTOUCHED;
  CHECK_OK(tidemark_store_commit(s, b, &first));
  CHECK(first == 0);
  tidemark_batch_clear(b);
  first = UNTOUCHED;
  CHECK_OK(tidemark_store_commit(s, b, &first));
  CHECK(first == 0);
  CHECK(tidemark_store_current_revision(s) == 7);

  /* A batch can be committed to another store; first_revision_out may be NULL. */
  tidemark_store *s2 = open_store(NULL);
  CHECK_OK(tidemark_batch_put(b, S("p"), S("q")));
  CHECK_OK(tidemark_store_commit(s2, b, NULL));
  CHECK_OK(tidemark_store_commit(s2, b, &first));
  CHECK(first == 2);
  CHECK(tidemark_store_current_revision(s2) == 2);
  tidemark_store_close(s2);

  /* Empty keys and NULL arguments. */
  tidemark_batch_clear(b);
  CHECK_ST(tidemark_batch_put(b, NULL, 0, S("v")), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_batch_delete(b, B(""), 0), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_batch_require(b, NULL, 0, 1), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_NULL_ARG(tidemark_batch_put(NULL, S("k"), S("v")));
  CHECK_NULL_ARG(tidemark_batch_put(b, NULL, 1, S("v")));
  CHECK_NULL_ARG(tidemark_batch_put(b, S("k"), NULL, 1));
  CHECK_NULL_ARG(tidemark_batch_delete(NULL, S("k")));
  CHECK_NULL_ARG(tidemark_batch_delete(b, NULL, 1));
  CHECK_NULL_ARG(tidemark_batch_require(NULL, S("k"), 0));
  CHECK_NULL_ARG(tidemark_batch_require(b, NULL, 1, 0));
  CHECK(tidemark_batch_len(b) == 0); /* nothing was added */
  CHECK_OK(tidemark_batch_put(b, S("k"), S("v")));
  first = UNTOUCHED;
  CHECK_NULL_ARG(tidemark_store_commit(NULL, b, &first));
  CHECK_NULL_ARG(tidemark_store_commit(s, NULL, &first));
  CHECK(first == UNTOUCHED);
  CHECK(tidemark_batch_len(NULL) == 0);
  tidemark_batch_clear(NULL);
  tidemark_batch_free(NULL);
  tidemark_batch_free(b);
  CHECK(tidemark_store_current_revision(s) == 7);
  tidemark_store_close(s);
}
