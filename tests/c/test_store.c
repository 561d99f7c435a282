/* tests/c/test_store.c: Opening and closing stores, durable stores, put/get/delete/put_if, sizes, status JSON. */
#include "harness.h"

/* ------------------------------------------------------------------------------------------
 * Opening and closing stores, options.
 * ---------------------------------------------------------------------------------------- */


void test_open(void) {
  section("store_open / store_close / options");
  tidemark_store *s = SENTINEL;
  CHECK_NULL_ARG(tidemark_store_open(NULL, NULL, NULL));

  static const char *const bad[] = {
      "{",                              /* not JSON */
      "[1, 2]",                         /* not an object */
      "{\"no_such_option\": 1}",        /* unknown option */
      "{\"max_key_size\": 0}",          /* out of range */
      "{\"max_value_size\": \"big\"}", /* wrong type */
      "{\"dispatch_threads\": -1}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    s = SENTINEL;
    if (!CHECK_ST(tidemark_store_open(NULL, bad[i], &s), TIDEMARK_ERR_INVALID_ARGUMENT))
      fprintf(stderr, "    options: %s\n", bad[i]);
    CHECK(s == SENTINEL);
    CHECK(tidemark_last_error_message()[0] != '\0');
  }
  s = SENTINEL;
  CHECK_ST(tidemark_store_open(NULL, "{\"no_such_option\": 1}", &s), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(strstr(tidemark_last_error_message(), "no_such_option") != NULL);

  /* NULL and "" are both an in-memory store; NULL and "" options are the defaults. */
  s = NULL;
  CHECK_OK(tidemark_store_open(NULL, NULL, &s));
  CHECK(s != NULL && s != SENTINEL);
  CHECK(tidemark_store_current_revision(s) == 0);
  CHECK(tidemark_store_earliest_revision(s) == 1);
  CHECK(tidemark_store_watcher_count(s) == 0);
  tidemark_store_close(s);

  s = NULL;
  CHECK_OK(tidemark_store_open("", "", &s));
  CHECK(s != NULL);
  tidemark_store_close(s);

  s = NULL;
  CHECK_OK(tidemark_store_open(NULL, "{\"dispatch_threads\": 2, \"max_key_size\": 16, \"max_value_size\": 64}", &s));
  CHECK(s != NULL);
  tidemark_store_close(s);

  tidemark_store_close(NULL); /* no-op */
  CHECK(tidemark_store_current_revision(NULL) == 0);
  CHECK(tidemark_store_earliest_revision(NULL) == 0);
  CHECK(tidemark_store_watcher_count(NULL) == 0);
}


/* A durable store in a directory, through the C API (the storage engine has its own tests). */
void test_durable(void) {
  section("durable store: reopen, LOCKED, replay from disk");
  char dir[] = "/tmp/tidemark-c-test-XXXXXX";
  if (!CHECK(mkdtemp(dir) != NULL)) return;
  const char *opts = "{\"sync\": \"none\"}";
  tidemark_store *s = NULL;
  tidemark_status st = tidemark_store_open(dir, opts, &s);
  if (st != TIDEMARK_OK) {
    printf("   (durable stores not available in this build: %s; skipped)\n", tidemark_status_name(st));
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return;
  }
  tidemark_store *other = SENTINEL;
  CHECK_ST(tidemark_store_open(dir, opts, &other), TIDEMARK_ERR_LOCKED);
  CHECK(other == SENTINEL);
  CHECK(tidemark_last_error_message()[0] != '\0');

  put(s, "a", "1");                                  /* 1 */
  put(s, "b", "1");                                  /* 2 */
  put(s, "a", "2");                                  /* 3 */
  CHECK_OK(tidemark_store_delete(s, S("b"), NULL));  /* 4 */
  tidemark_batch *b = tidemark_batch_new();
  CHECK_OK(tidemark_batch_put(b, S("c"), S("1")));
  CHECK_OK(tidemark_batch_put(b, S("d"), S("1")));
  CHECK_OK(tidemark_store_commit(s, b, NULL));       /* 5, 6 */
  tidemark_batch_free(b);
  CHECK_OK(tidemark_store_compact(s, 3, NULL));
  char *json = NULL;
  CHECK_OK(tidemark_store_status_json(s, &json));
  CHECK(json != NULL && strstr(json, "\"durable\":true") != NULL);
  tidemark_string_free(json);
  tidemark_store_close(s);

  /* Reopened: the same keys, revisions, log and earliest revision; revisions go on. */
  s = NULL;
  CHECK_OK(tidemark_store_open(dir, opts, &s));
  REQUIRE(s != NULL);
  CHECK(tidemark_store_current_revision(s) == 6);
  CHECK(tidemark_store_earliest_revision(s) == 3);
  tidemark_entry *e = NULL;
  CHECK_OK(tidemark_store_get(s, S("a"), &e));
  CHECK(bytes_is(tidemark_entry_value(e), "2") && tidemark_entry_version(e) == 2 && tidemark_entry_create_revision(e) == 1);
  tidemark_entry_free(e);
  e = SENTINEL;
  CHECK_ST(tidemark_store_get(s, S("b"), &e), TIDEMARK_ERR_NOT_FOUND);
  static const uint64_t kept[] = {3, 4, 5, 6, 0};
  CHECK(changes_are(s, NULL, 3, 0, kept));
  tidemark_events *ev = SENTINEL;
  CHECK_ST(tidemark_store_changes(s, NULL, 2, 0, 0, &ev), TIDEMARK_ERR_COMPACTED);
  CHECK(tidemark_last_error_revision() == 3);
  CHECK(put(s, "e", "1") == 7);

  /* A watch replaying from the log on disk, then live. */
  collector c;
  collector_init(&c, 0);
  tidemark_watch_options o = tidemark_watch_options_default();
  o.start_revision = 3;
  uint64_t id = 0;
  CHECK_OK(tidemark_store_watch(s, NULL, &o, collect_cb, &c, collect_drop, &id));
  put(s, "f", "1"); /* 8 */
  WAIT(&c, p_events, 6);
  CHECK(seq_is(&c, 3, 6));
  check_clean(&c);
  uint64_t cut[4] = {9, 9, 9, 9};
  CHECK_OK(tidemark_store_tail_repair(s, &cut[0], &cut[1], &cut[2], &cut[3]));
  CHECK(cut[0] == 0 && cut[1] == 0 && cut[2] == 0 && cut[3] == 0);
  CHECK_OK(tidemark_store_tail_repair(s, NULL, NULL, NULL, NULL));
  CHECK_NULL_ARG(tidemark_store_tail_repair(NULL, &cut[0], NULL, NULL, NULL));
  tidemark_store_close(s);
  CHECK(snap(&c).drops == 1);
  collector_destroy(&c);

  /* A torn last commit (its last byte lost, as in a crash) is cut on open, and reported. */
  char seg[sizeof dir + 40];
  snprintf(seg, sizeof seg, "%s/seg-00000000000000000001.log", dir);
  FILE *sf = fopen(seg, "r+b");
  if (CHECK(sf != NULL)) {
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, sf);
    size_t end = n;
    while (end > 0 && buf[end - 1] == 0) end--;
    CHECK(end > 24);
    fseek(sf, (long)end - 1, SEEK_SET);
    fputc(0, sf);
    fclose(sf);
    s = NULL;
    CHECK_OK(tidemark_store_open(dir, opts, &s));
    REQUIRE(s != NULL);
    CHECK(tidemark_store_current_revision(s) == 7);
    CHECK_OK(tidemark_store_tail_repair(s, &cut[0], &cut[1], &cut[2], &cut[3]));
    CHECK(cut[0] >= 1 && cut[1] == 1 && cut[2] == 1 && cut[3] == 8);
    tidemark_store_close(s);
  }

  /* A path that is a file, not a directory: an error, not a crash. */
  char file[sizeof dir + 16];
  snprintf(file, sizeof file, "%s/plain-file", dir);
  FILE *f = fopen(file, "w");
  if (CHECK(f != NULL)) {
    fputs("not a store", f);
    fclose(f);
    s = SENTINEL;
    st = tidemark_store_open(file, NULL, &s);
    CHECK(st != TIDEMARK_OK && st != TIDEMARK_ERR_PANIC);
    CHECK(s == SENTINEL);
  }
  nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ------------------------------------------------------------------------------------------
 * put / get / delete / put_if, entries, sizes, status JSON.
 * ---------------------------------------------------------------------------------------- */

void test_kv(void) {
  section("put / get / delete / entries");
  tidemark_store *s = open_store(NULL);
  uint64_t rev = UNTOUCHED;

  CHECK_OK(tidemark_store_put(s, S("k1"), S("v1"), &rev));
  CHECK(rev == 1);
  CHECK_OK(tidemark_store_put(s, S("k2"), S("v2"), &rev));
  CHECK(rev == 2);
  CHECK_OK(tidemark_store_put(s, S("k1"), S("v1b"), &rev));
  CHECK(rev == 3);
  CHECK(tidemark_store_current_revision(s) == 3);
  CHECK(tidemark_store_earliest_revision(s) == 1);

  tidemark_entry *e = NULL;
  CHECK_OK(tidemark_store_get(s, S("k1"), &e));
  CHECK(bytes_is(tidemark_entry_value(e), "v1b"));
  CHECK(tidemark_entry_create_revision(e) == 1);
  CHECK(tidemark_entry_mod_revision(e) == 3);
  CHECK(tidemark_entry_version(e) == 2);
  tidemark_entry_free(e);

  e = NULL;
  CHECK_OK(tidemark_store_get(s, S("k2"), &e));
  CHECK(tidemark_entry_create_revision(e) == 2 && tidemark_entry_mod_revision(e) == 2 && tidemark_entry_version(e) == 1);
  tidemark_entry_free(e);

  CHECK_OK(tidemark_store_delete(s, S("k2"), &rev));
  CHECK(rev == 4);
  /* A missing key: NOT_FOUND, no revision taken, out-parameters untouched. */
  rev = UNTOUCHED;
  CHECK_ST(tidemark_store_delete(s, S("k2"), &rev), TIDEMARK_ERR_NOT_FOUND);
  CHECK(rev == UNTOUCHED);
  CHECK(tidemark_last_error_revision() == 0);
  CHECK(tidemark_last_error_message()[0] != '\0');
  CHECK(tidemark_store_current_revision(s) == 4);
  e = SENTINEL;
  CHECK_ST(tidemark_store_get(s, S("k2"), &e), TIDEMARK_ERR_NOT_FOUND);
  CHECK(e == SENTINEL);
  CHECK_ST(tidemark_store_delete(s, S("never"), NULL), TIDEMARK_ERR_NOT_FOUND);
  CHECK_OK(tidemark_store_put(s, S("k3"), S("x"), &rev));
  CHECK(rev == 5); /* the failed deletes took nothing */

  /* A recreated key starts over: create_revision = its new revision, version 1. */
  CHECK_OK(tidemark_store_put(s, S("k2"), S("again"), &rev));
  CHECK(rev == 6);
  e = NULL;
  CHECK_OK(tidemark_store_get(s, S("k2"), &e));
  CHECK(tidemark_entry_create_revision(e) == 6 && tidemark_entry_mod_revision(e) == 6 && tidemark_entry_version(e) == 1);
  tidemark_entry_free(e);

  /* Empty values (NULL with length 0), NULL revision_out, binary keys and values. */
  CHECK_OK(tidemark_store_put(s, S("empty"), NULL, 0, NULL));
  CHECK(tidemark_store_current_revision(s) == 7);
  e = NULL;
  CHECK_OK(tidemark_store_get(s, S("empty"), &e));
  CHECK(tidemark_entry_value(e).len == 0 && tidemark_entry_version(e) == 1);
  tidemark_entry_free(e);
  static const uint8_t bkey[] = {0x01, 0xff, 0x00, 'k'};
  static const uint8_t bval[] = {0x00, 0x01, 0xfe, 0x00};
  CHECK_OK(tidemark_store_put(s, bkey, sizeof bkey, bval, sizeof bval, &rev));
  CHECK(rev == 8);
  e = NULL;
  CHECK_OK(tidemark_store_get(s, bkey, sizeof bkey, &e));
  CHECK(bytes_eq(tidemark_entry_value(e), bval, sizeof bval));
  tidemark_entry_free(e);
  e = SENTINEL;
  CHECK_ST(tidemark_store_get(s, bkey, 3, &e), TIDEMARK_ERR_NOT_FOUND); /* a prefix of the key is another key */
  CHECK(e == SENTINEL);

  /* Empty keys are INVALID_ARGUMENT everywhere (NULL with length 0 is the empty key). */
  rev = UNTOUCHED;
  CHECK_ST(tidemark_store_put(s, NULL, 0, S("v"), &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_put(s, B(""), 0, S("v"), &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_put_if(s, NULL, 0, S("v"), 0, &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_store_delete(s, NULL, 0, &rev), TIDEMARK_ERR_INVALID_ARGUMENT);
  e = SENTINEL;
  CHECK_ST(tidemark_store_get(s, NULL, 0, &e), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(e == SENTINEL && rev == UNTOUCHED);
  CHECK(tidemark_store_current_revision(s) == 8);

  /* Every pointer argument NULL in turn. */
  rev = UNTOUCHED;
  CHECK_NULL_ARG(tidemark_store_put(NULL, S("k"), S("v"), &rev));
  CHECK_NULL_ARG(tidemark_store_put(s, NULL, 1, S("v"), &rev));
  CHECK_NULL_ARG(tidemark_store_put(s, S("k"), NULL, 1, &rev));
  CHECK_NULL_ARG(tidemark_store_put_if(NULL, S("k"), S("v"), 0, &rev));
  CHECK_NULL_ARG(tidemark_store_put_if(s, NULL, 1, S("v"), 0, &rev));
  CHECK_NULL_ARG(tidemark_store_put_if(s, S("k"), NULL, 1, 0, &rev));
  CHECK_NULL_ARG(tidemark_store_delete(NULL, S("k1"), &rev));
  CHECK_NULL_ARG(tidemark_store_delete(s, NULL, 2, &rev));
  CHECK(rev == UNTOUCHED);
  e = SENTINEL;
  CHECK_NULL_ARG(tidemark_store_get(NULL, S("k1"), &e));
  CHECK_NULL_ARG(tidemark_store_get(s, NULL, 2, &e));
  CHECK(e == SENTINEL);
  CHECK_NULL_ARG(tidemark_store_get(s, S("k1"), NULL));
  CHECK(tidemark_store_current_revision(s) == 8); /* nothing was written */
  tidemark_bytes none = tidemark_entry_value(NULL);
  CHECK(none.ptr == NULL && none.len == 0);
  CHECK(tidemark_entry_create_revision(NULL) == 0);
  CHECK(tidemark_entry_mod_revision(NULL) == 0);
  CHECK(tidemark_entry_version(NULL) == 0);
  tidemark_entry_free(NULL);

  /* An entry is a copy: it outlives later writes and the store itself. */
  e = NULL;
  CHECK_OK(tidemark_store_get(s, S("k1"), &e));
  put(s, "k1", "changed");
  tidemark_store_close(s);
  CHECK(bytes_is(tidemark_entry_value(e), "v1b"));
  CHECK(tidemark_entry_mod_revision(e) == 3);
  tidemark_entry_free(e);
}

void test_put_if(void) {
  section("put_if: conditional writes and CONFLICT");
  tidemark_store *s = open_store(NULL);
  uint64_t rev = UNTOUCHED;
  CHECK_OK(tidemark_store_put_if(s, S("a"), S("1"), 0, &rev)); /* 0 = must not exist */
  CHECK(rev == 1);
  put(s, "other", "x"); /* rev 2 */

  rev = UNTOUCHED;
  CHECK_ST(tidemark_store_put_if(s, S("a"), S("2"), 0, &rev), TIDEMARK_ERR_CONFLICT);
  CHECK(tidemark_last_error_revision() == 1); /* a's current mod_revision */
  CHECK(rev == UNTOUCHED);
  CHECK_ST(tidemark_store_put_if(s, S("a"), S("2"), 2, &rev), TIDEMARK_ERR_CONFLICT);
  CHECK(tidemark_last_error_revision() == 1);
  CHECK(tidemark_last_error_message()[0] != '\0');
  CHECK(rev == UNTOUCHED);
  CHECK(tidemark_store_current_revision(s) == 2); /* nothing applied */
  tidemark_entry *e = NULL;
  CHECK_OK(tidemark_store_get(s, S("a"), &e));
  CHECK(bytes_is(tidemark_entry_value(e), "1") && tidemark_entry_version(e) == 1);
  tidemark_entry_free(e);

  CHECK_OK(tidemark_store_put_if(s, S("a"), S("2"), 1, &rev));
  CHECK(rev == 3);
  CHECK_OK(tidemark_store_put_if(s, S("a"), S("3"), 3, NULL));
  e = NULL;
  CHECK_OK(tidemark_store_get(s, S("a"), &e));
  CHECK(bytes_is(tidemark_entry_value(e), "3") && tidemark_entry_version(e) == 3 && tidemark_entry_mod_revision(e) == 4);
  tidemark_entry_free(e);

  /* Expecting a revision of a key that does not exist: the current one reported is 0. */
  rev = UNTOUCHED;
  CHECK_ST(tidemark_store_put_if(s, S("absent"), S("v"), 4, &rev), TIDEMARK_ERR_CONFLICT);
  CHECK(tidemark_last_error_revision() == 0);
  CHECK(rev == UNTOUCHED);
  e = SENTINEL;
  CHECK_ST(tidemark_store_get(s, S("absent"), &e), TIDEMARK_ERR_NOT_FOUND);
  CHECK(tidemark_store_current_revision(s) == 4);
  tidemark_store_close(s);
}

void test_sizes(void) {
  section("TOO_LARGE: max_key_size / max_value_size");
  tidemark_store *s = open_store("{\"max_key_size\": 4, \"max_value_size\": 8}");
  uint64_t rev = UNTOUCHED;
  CHECK_OK(tidemark_store_put(s, S("abcd"), S("12345678"), &rev)); /* exactly at the limits */
  CHECK(rev == 1);
  rev = UNTOUCHED;
  CHECK_ST(tidemark_store_put(s, S("abcde"), S("1"), &rev), TIDEMARK_ERR_TOO_LARGE);
  CHECK(tidemark_last_error_message()[0] != '\0');
  CHECK_ST(tidemark_store_put(s, S("k"), S("123456789"), &rev), TIDEMARK_ERR_TOO_LARGE);
  CHECK_ST(tidemark_store_put_if(s, S("abcde"), S("1"), 0, &rev), TIDEMARK_ERR_TOO_LARGE);
  CHECK_ST(tidemark_store_put_if(s, S("k"), S("123456789"), 0, &rev), TIDEMARK_ERR_TOO_LARGE);
  CHECK(rev == UNTOUCHED);

  tidemark_batch *b = tidemark_batch_new();
  REQUIRE(b != NULL);
  CHECK_OK(tidemark_batch_put(b, S("ok"), S("1")));
  CHECK_OK(tidemark_batch_put(b, S("k"), S("123456789")));
  CHECK_ST(tidemark_store_commit(s, b, &rev), TIDEMARK_ERR_TOO_LARGE);
  CHECK(rev == UNTOUCHED);
  tidemark_batch_free(b);

  CHECK(tidemark_store_current_revision(s) == 1); /* nothing applied */
  tidemark_entry *e = SENTINEL;
  CHECK_ST(tidemark_store_get(s, S("ok"), &e), TIDEMARK_ERR_NOT_FOUND);
  CHECK(e == SENTINEL);
  tidemark_store_close(s);
}

void test_status_json(void) {
  section("store_status_json / string_free");
  tidemark_store *s = open_store(NULL);
  put(s, "a", "1");
  put(s, "b", "2");
  char *json = SENTINEL;
  CHECK_NULL_ARG(tidemark_store_status_json(NULL, &json));
  CHECK(json == (char *)SENTINEL);
  CHECK_NULL_ARG(tidemark_store_status_json(s, NULL));
  json = NULL;
  CHECK_OK(tidemark_store_status_json(s, &json));
  REQUIRE(json != NULL);
  CHECK(json[0] == '{');
  CHECK(strstr(json, "\"revision\":2") != NULL);
  CHECK(strstr(json, "\"earliest_revision\":1") != NULL);
  CHECK(strstr(json, "\"keys\":2") != NULL);
  CHECK(strstr(json, "\"watchers\":0") != NULL);
  tidemark_string_free(json);
  tidemark_string_free(NULL);
  tidemark_store_close(s);
}

void test_metrics(void) {
  section("store_metrics_text / store_metrics_json");
  tidemark_store *s = open_store(NULL);
  put(s, "a", "1");
  char *text = SENTINEL;
  CHECK_NULL_ARG(tidemark_store_metrics_text(NULL, &text));
  CHECK(text == (char *)SENTINEL);
  CHECK_NULL_ARG(tidemark_store_metrics_text(s, NULL));
  CHECK_NULL_ARG(tidemark_store_metrics_json(NULL, &text));
  CHECK_NULL_ARG(tidemark_store_metrics_json(s, NULL));
  CHECK(text == (char *)SENTINEL);
  text = NULL;
  if (CHECK_OK(tidemark_store_metrics_text(s, &text))) {
    CHECK(strstr(text, "# TYPE tidemark_commits_total counter\ntidemark_commits_total 1\n") != NULL);
    CHECK(strstr(text, "tidemark_revision 1\n") != NULL);
    CHECK(strstr(text, "tidemark_commit_duration_seconds_bucket{le=\"+Inf\"} 1\n") != NULL);
  }
  tidemark_string_free(text);
  char *json = NULL;
  if (CHECK_OK(tidemark_store_metrics_json(s, &json))) CHECK(strstr(json, "\"tidemark_commits_total\":1") != NULL);
  tidemark_string_free(json);
  tidemark_store_close(s);
}
