/*
 * examples/c/contexts.c: contexts from C (docs/contexts.md).
 *
 *   make -C examples/c run        (builds against target/release/libtidemark.a)
 *
 * A context is a versioned JSON document (here a call's state). set replaces it, update
 * applies an RFC 7386 merge patch, and every version change keeps its RFC 6902 delta, so a
 * client at an older version is brought up to date with one exact patch (sync). Expired
 * deltas and idle contexts are removed by cleanup, which hands each expired context to an
 * exporter first. The store's clock is a callback here, so the example moves time itself.
 *
 * JSON goes in and out as UTF-8 strings; every string the library returns is freed with
 * tidemark_string_free.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidemark.h"

#define S(text) (const uint8_t *)(text), strlen(text)

static void ok_or_exit(tidemark_status status, const char *what) {
  if (status != TIDEMARK_OK) {
    fprintf(stderr, "%s failed: %s: %s\n", what, tidemark_status_name(status), tidemark_last_error_message());
    exit(1);
  }
}
#define OK(call) ok_or_exit((call), #call)
#define CHECK(cond)                                          \
  do {                                                       \
    if (!(cond)) {                                           \
      fprintf(stderr, "check failed: %s\n", #cond);          \
      exit(1);                                               \
    }                                                        \
  } while (0)

/* The store's clock: ms since the epoch, moved by the program (userdata is the counter). */
static uint64_t manual_clock(void *userdata) { return *(const uint64_t *)userdata; }

/* The exporter: cleanup calls it with each expired context before deleting it. */
static uint32_t archive(void *userdata, const uint8_t *id, size_t id_len, const char *context_json, uint64_t version) {
  int *exported = userdata;
  printf("  exported %.*s at version %" PRIu64 ": %s\n", (int)id_len, (const char *)id, version, context_json);
  (*exported)++;
  return TIDEMARK_OK; /* any other value: the export failed and cleanup keeps the context */
}

static void print_sync(const tidemark_store *store, const char *id, int64_t client) {
  tidemark_sync_kind kind;
  uint64_t version;
  char *json = NULL;
  OK(tidemark_store_context_sync(store, S(id), client, &kind, &version, &json));
  const char *name = kind == TIDEMARK_SYNC_NO_CHANGE ? "NO_CHANGE" : kind == TIDEMARK_SYNC_DELTA ? "DELTA" : "FULL";
  printf("sync from %" PRId64 ": %s to version %" PRIu64 " %s\n", client, name, version, json ? json : "");
  tidemark_string_free(json);
}

int main(void) {
  tidemark_store *store = NULL;
  /* Idle contexts expire after 60 s (and are deleted by cleanup), deltas after 10 s. */
  OK(tidemark_store_open(NULL, "{\"context_ttl_ms\": 60000, \"delta_ttl_ms\": 10000, \"context_auto_delete\": true}", &store));
  uint64_t now_ms = 1000000;
  OK(tidemark_store_set_clock(store, manual_clock, &now_ms, NULL));
  const char *id = "call:123";
  char *result = NULL;

  /* 1. set: the first write is version 1. A client keeps the version it was given. */
  OK(tidemark_store_context_set(store, S(id), "{\"status\": \"ringing\", \"participants\": [\"ann\"], \"muted\": true}", &result));
  printf("set:    %s\n", result);
  tidemark_string_free(result);

  /* 2. update: merge patches (null removes a field); each result holds its RFC 6902 delta. */
  OK(tidemark_store_context_update(store, S(id), "{\"status\": \"active\"}", NULL));
  OK(tidemark_store_context_update(store, S(id), "{\"participants\": [\"ann\", \"bob\"], \"muted\": null}", &result));
  printf("update: %s\n", result);
  tidemark_string_free(result);

  /* 3. sync: a client at version 1 gets one patch to version 3; a current one NO_CHANGE;
   *    one with nothing (TIDEMARK_SYNC_NONE) the whole document. */
  print_sync(store, id, 1);
  print_sync(store, id, 3);
  print_sync(store, id, TIDEMARK_SYNC_NONE);

  /* 4. The retained deltas, oldest first. */
  OK(tidemark_store_context_deltas(store, S(id), 0, 0, 0, &result));
  printf("deltas: %s\n", result);
  tidemark_string_free(result);

  /* 5. 11 s later the deltas have expired: cleanup drops them and version 1 gets FULL. */
  now_ms += 11000;
  uint64_t contexts = 0, deltas = 0;
  OK(tidemark_store_context_cleanup(store, 0, &contexts, &deltas));
  printf("cleanup after 11 s: %" PRIu64 " contexts, %" PRIu64 " deltas deleted\n", contexts, deltas);
  CHECK(contexts == 0 && deltas == 2);
  print_sync(store, id, 1);

  /* 6. 60 s idle: cleanup exports the context, then deletes it. */
  int exported = 0;
  OK(tidemark_store_context_set_exporter(store, archive, &exported, NULL));
  now_ms += 60000;
  OK(tidemark_store_context_cleanup(store, 0, &contexts, &deltas));
  printf("cleanup after 60 s idle: %" PRIu64 " contexts deleted\n", contexts);
  CHECK(contexts == 1 && exported == 1);
  CHECK(tidemark_store_context_get(store, S(id), &result) == TIDEMARK_ERR_NOT_FOUND);

  tidemark_store_close(store);
  printf("contexts: ok\n");
  return 0;
}
