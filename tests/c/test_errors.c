/* tests/c/test_errors.c: Library metadata, status codes and names, the last error. */
#include "harness.h"

/* ------------------------------------------------------------------------------------------
 * Library metadata, statuses, last error.
 * ---------------------------------------------------------------------------------------- */

typedef struct fresh_error {
  char message[64]; /* copied: the library's string belongs to the thread */
  uint64_t revision;
} fresh_error;

static void *fresh_thread_error(void *arg) {
  fresh_error *out = arg;
  snprintf(out->message, sizeof out->message, "%s", tidemark_last_error_message());
  out->revision = tidemark_last_error_revision();
  return NULL;
}

void test_meta(void) {
  section("metadata, status names, last error");
  /* Nothing failed yet on this thread. */
  CHECK(tidemark_last_error_message() != NULL && strcmp(tidemark_last_error_message(), "") == 0);
  CHECK(tidemark_last_error_revision() == 0);

  const char *v = tidemark_version();
  unsigned major = 0, minor = 0, patch = 0;
  CHECK(v != NULL && v[0] != '\0');
  CHECK(v != NULL && sscanf(v, "%u.%u.%u", &major, &minor, &patch) == 3);
  CHECK(tidemark_version() == v); /* static string */

  static const char *const names[] = {
      "TIDEMARK_OK",
      "TIDEMARK_ERR_NULL_ARGUMENT",
      "TIDEMARK_ERR_INVALID_ARGUMENT",
      "TIDEMARK_ERR_NOT_FOUND",
      "TIDEMARK_ERR_COMPACTED",
      "TIDEMARK_ERR_FUTURE_REVISION",
      "TIDEMARK_ERR_CONFLICT",
      "TIDEMARK_ERR_TIMEOUT",
      "TIDEMARK_ERR_CLOSED",
      "TIDEMARK_ERR_IO",
      "TIDEMARK_ERR_CORRUPT",
      "TIDEMARK_ERR_LOCKED",
      "TIDEMARK_ERR_TOO_LARGE",
      "TIDEMARK_ERR_PANIC",
  };
  for (uint32_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    const char *name = tidemark_status_name(i);
    if (!CHECK(name != NULL && strcmp(name, names[i]) == 0)) fprintf(stderr, "    status %u is named %s\n", i, name);
  }
  CHECK(strcmp(tidemark_status_name(14), "TIDEMARK_ERR_UNKNOWN") == 0);
  CHECK(strcmp(tidemark_status_name(UINT32_MAX), "TIDEMARK_ERR_UNKNOWN") == 0);

  /* The values are part of the ABI. */
  CHECK(TIDEMARK_OK == 0 && TIDEMARK_ERR_NULL_ARGUMENT == 1 && TIDEMARK_ERR_INVALID_ARGUMENT == 2);
  CHECK(TIDEMARK_ERR_NOT_FOUND == 3 && TIDEMARK_ERR_COMPACTED == 4 && TIDEMARK_ERR_FUTURE_REVISION == 5);
  CHECK(TIDEMARK_ERR_CONFLICT == 6 && TIDEMARK_ERR_TIMEOUT == 7 && TIDEMARK_ERR_CLOSED == 8);
  CHECK(TIDEMARK_ERR_IO == 9 && TIDEMARK_ERR_CORRUPT == 10 && TIDEMARK_ERR_LOCKED == 11);
  CHECK(TIDEMARK_ERR_TOO_LARGE == 12 && TIDEMARK_ERR_PANIC == 13);
  CHECK(TIDEMARK_EVENT_PUT == 1 && TIDEMARK_EVENT_DELETE == 2 && TIDEMARK_EVENT_PROGRESS == 3);
  CHECK(TIDEMARK_EVENT_COMPACTED == 4 && TIDEMARK_EVENT_CLOSED == 5);
  CHECK(TIDEMARK_SELECT_ALL == 0 && TIDEMARK_SELECT_KEY == 1 && TIDEMARK_SELECT_PREFIX == 2 &&
        TIDEMARK_SELECT_RANGE == 3);
  CHECK(sizeof(tidemark_status) == 4);

  tidemark_watch_options o = tidemark_watch_options_default();
  CHECK(o.start_revision == 0 && o.max_queue == 1000 && o.progress_interval_ms == 0 && o.credit == 0);

  /* The last error is per thread, and a success leaves it unchanged. */
  tidemark_store *s = open_store(NULL);
  CHECK_ST(tidemark_store_delete(s, S("missing"), NULL), TIDEMARK_ERR_NOT_FOUND);
  char saved[256];
  snprintf(saved, sizeof saved, "%s", tidemark_last_error_message());
  CHECK(saved[0] != '\0' && strstr(saved, "missing") != NULL);
  put(s, "k", "v");
  CHECK(strcmp(tidemark_last_error_message(), saved) == 0);
  fresh_error seen = {"(not set)", UNTOUCHED};
  pthread_t t;
  REQUIRE(pthread_create(&t, NULL, fresh_thread_error, &seen) == 0);
  pthread_join(t, NULL);
  CHECK(strcmp(seen.message, "") == 0);
  CHECK(seen.revision == 0);
  tidemark_store_close(s);
}
