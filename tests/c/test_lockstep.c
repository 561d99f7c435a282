/* tests/c/test_lockstep.c: lockstep over the C API. */
#include "harness.h"

/* lockstep: a server over one store, a follower mirroring it into another. */
typedef struct {
  pthread_mutex_t mu;
  int applied, drops, calls_after_stop, stopped, errors;
} ls_ctx;

static void ls_event(void *userdata, const tidemark_lockstep_event *e) {
  ls_ctx *c = (ls_ctx *)userdata;
  pthread_mutex_lock(&c->mu);
  if (c->stopped) c->calls_after_stop++;
  if (e->kind == TIDEMARK_LOCKSTEP_APPLIED) c->applied++;
  if (e->kind == TIDEMARK_LOCKSTEP_ERROR) c->errors++;
  pthread_mutex_unlock(&c->mu);
}

static void ls_drop(void *userdata) {
  ls_ctx *c = (ls_ctx *)userdata;
  pthread_mutex_lock(&c->mu);
  c->drops++;
  pthread_mutex_unlock(&c->mu);
}

/* Waits until `key` in `s` is present (want = 1) or absent (want = 0). */
static bool wait_key(tidemark_store *s, const char *key, int want) {
  double deadline = now_s() + WAIT_S;
  while (now_s() < deadline) {
    tidemark_entry *e = NULL;
    tidemark_status st = tidemark_store_get(s, S(key), &e);
    tidemark_entry_free(e);
    if ((want && st == TIDEMARK_OK) || (!want && st == TIDEMARK_ERR_NOT_FOUND)) return true;
    sleep_ms(5);
  }
  return false;
}

void test_lockstep(void) {
  section("lockstep: serve, follow, status, stop, and closing the store first");
  tidemark_store *src = open_store(NULL);
  tidemark_store *dst = open_store(NULL);
  tidemark_lockstep_server *server = SENTINEL;
  CHECK_NULL_ARG(tidemark_lockstep_serve(NULL, NULL, NULL, &server));
  CHECK_NULL_ARG(tidemark_lockstep_serve(src, NULL, NULL, NULL));
  CHECK_ST(tidemark_lockstep_serve(src, NULL, "{\"bogus\": 1}", &server), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK_ST(tidemark_lockstep_serve(src, "not an address", NULL, &server), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(server == SENTINEL);
  CHECK(tidemark_lockstep_server_addr(NULL) == NULL);
  CHECK(tidemark_lockstep_server_port(NULL) == 0);
  char *json = SENTINEL;
  CHECK_NULL_ARG(tidemark_lockstep_server_status_json(NULL, &json));
  tidemark_lockstep_server_stop(NULL);

  put(src, "/servers/1", "{\"ip\":\"10.0.0.1\"}");
  put(src, "/servers/2", "{\"ip\":\"10.0.0.2\"}");
  REQUIRE(tidemark_lockstep_serve(src, "127.0.0.1:0", "{\"heartbeat_ms\": 50}", &server) == TIDEMARK_OK);
  uint16_t port = tidemark_lockstep_server_port(server);
  CHECK(port != 0);
  CHECK(strstr(tidemark_lockstep_server_addr(server), "127.0.0.1:") != NULL);
  CHECK_NULL_ARG(tidemark_lockstep_server_status_json(server, NULL));
  json = NULL;
  if (CHECK_OK(tidemark_lockstep_server_status_json(server, &json))) CHECK(json != NULL && json[0] == '{');
  tidemark_string_free(json);

  char url[96];
  snprintf(url, sizeof url, "http://127.0.0.1:%u/servers/", (unsigned)port);
  ls_ctx ctx = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, 0};
  tidemark_lockstep_follower *f = SENTINEL;
  CHECK_NULL_ARG(tidemark_lockstep_follow(NULL, url, NULL, ls_event, &ctx, ls_drop, &f));
  CHECK_NULL_ARG(tidemark_lockstep_follow(dst, NULL, NULL, ls_event, &ctx, ls_drop, &f));
  CHECK_NULL_ARG(tidemark_lockstep_follow(dst, url, NULL, ls_event, &ctx, ls_drop, NULL));
  CHECK(ctx.drops == 0); /* nothing was taken over */
  CHECK(tidemark_lockstep_follow(dst, "ftp://nowhere/", NULL, ls_event, &ctx, ls_drop, &f) != TIDEMARK_OK);
  CHECK(ctx.drops == 1); /* a failed start drops the userdata before returning */
  CHECK(f == SENTINEL);
  /* A first sync into a prefix holding keys the follower did not mirror is refused. */
  put(dst, "/held/x", "{}");
  CHECK(tidemark_lockstep_follow(dst, url, "{\"prefix\": \"/held/\"}", ls_event, &ctx, ls_drop, &f) ==
        TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(f == SENTINEL);
  ctx.drops = 0;
  CHECK_NULL_ARG(tidemark_lockstep_follower_status_json(NULL, &json));
  tidemark_lockstep_follower_stop(NULL);

  REQUIRE(tidemark_lockstep_follow(dst, url, "{\"prefix\": \"/mirror/\"}", ls_event, &ctx, ls_drop, &f) == TIDEMARK_OK);
  CHECK(wait_key(dst, "/mirror/1", 1));
  CHECK(wait_key(dst, "/mirror/2", 1));
  uint64_t rev = 0;
  CHECK_OK(tidemark_store_delete(src, S("/servers/2"), &rev));
  put(src, "/servers/3", "{\"ip\":\"10.0.0.3\"}");
  CHECK(wait_key(dst, "/mirror/2", 0));
  CHECK(wait_key(dst, "/mirror/3", 1));
  json = NULL;
  if (CHECK_OK(tidemark_lockstep_follower_status_json(f, &json))) CHECK(json != NULL && strstr(json, "cursor") != NULL);
  tidemark_string_free(json);
  tidemark_lockstep_follower_stop(f);
  pthread_mutex_lock(&ctx.mu);
  CHECK(ctx.drops == 1);
  CHECK(ctx.applied >= 1);
  ctx.stopped = 1;
  pthread_mutex_unlock(&ctx.mu);
  put(src, "/servers/4", "{}");
  sleep_ms(50);
  CHECK(ctx.calls_after_stop == 0);

  /* Closing the stores before stopping what serves and follows them is safe. */
  ls_ctx ctx2 = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, 0};
  tidemark_store *dst2 = open_store(NULL);
  tidemark_lockstep_follower *f2 = NULL;
  REQUIRE(tidemark_lockstep_follow(dst2, url, NULL, ls_event, &ctx2, ls_drop, &f2) == TIDEMARK_OK);
  CHECK(wait_key(dst2, "/servers/4", 1));
  tidemark_store_close(dst2);
  put(src, "/servers/5", "{}"); /* the follower gets it, cannot apply it, says so and ends */
  double deadline = now_s() + WAIT_S;
  int errors = 0;
  while (now_s() < deadline) {
    pthread_mutex_lock(&ctx2.mu);
    errors = ctx2.errors;
    pthread_mutex_unlock(&ctx2.mu);
    if (errors > 0) break;
    sleep_ms(5);
  }
  CHECK(errors == 1);
  json = NULL;
  if (CHECK_OK(tidemark_lockstep_follower_status_json(f2, &json))) CHECK(json != NULL && strstr(json, "\"stopped\"") != NULL);
  tidemark_string_free(json);
  tidemark_store_close(src);
  sleep_ms(20);
  tidemark_lockstep_follower_stop(f2);
  CHECK(ctx2.drops == 1);
  tidemark_lockstep_server_stop(server);
  tidemark_store_close(dst);
}
