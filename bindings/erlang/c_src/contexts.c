/* contexts.c: the NIFs of contexts (tidemark_store_context_*) and of the store's manual clock. JSON travels as binaries both
 * ways; src/tidemark.erl encodes maps to JSON and decodes the results with tidemark_json. On a
 * durable store every call that writes moves to a dirty I/O scheduler (DIRTY_IF_DURABLE). */
#include "tidemark_nif.h"

#include <string.h>

/* The env of the NIF call that may export (context_export_nif, context_cleanup_nif), for the
 * exporter to send with from that scheduler; NULL on the store's own cleanup thread. */
static __thread ErlNifEnv *caller_env;

/* {ok, JsonBinary} for a library string (freed here), or {error, Reason}. */
static ERL_NIF_TERM json_result(ErlNifEnv *env, tidemark_status st, char *json)
{
    ERL_NIF_TERM result = st == TIDEMARK_OK ? make_ok(env, make_string_bin(env, json)) : status_error(env, st);
    tidemark_string_free(json);
    return result;
}

/* JSON text as a NUL-terminated string (enif_free it); NULL when out of memory. A NUL inside is
 * no valid JSON text: the string is then empty and the library says so. */
static char *c_string(ErlNifBinary json)
{
    char *doc = enif_alloc(json.size + 1);
    if (doc == NULL)
        return NULL;
    memcpy(doc, json.data, json.size);
    doc[json.size] = '\0';
    if (memchr(json.data, '\0', json.size) != NULL)
        doc[0] = '\0';
    return doc;
}

/* context_write_nif(Store, Id, Json, Update): set (false) or update (true). */
ERL_NIF_TERM context_write_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary id, json;
    char *doc, *out = NULL;
    tidemark_status st;
    int update = enif_is_identical(argv[3], am_true);
    if (!get_store(env, argv[0], &r) || !get_bytes(env, argv[1], &id) || !get_bytes(env, argv[2], &json)
        || (!update && !enif_is_identical(argv[3], am_false)))
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "context_write_nif", context_write_nif);
    if ((doc = c_string(json)) == NULL)
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    if ((s = core_use(r->core)) == NULL) {
        enif_free(doc);
        return closed_error(env);
    }
    st = update ? tidemark_store_context_update(s, id.data, id.size, doc, &out)
                : tidemark_store_context_set(s, id.data, id.size, doc, &out);
    core_done(r->core);
    enif_free(doc);
    return json_result(env, st, out);
}

/* context_get_nif(Store, Id) and context_export_nif(Store, Id): {ok, ContextJson}. */
static ERL_NIF_TERM context_read(ErlNifEnv *env, const ERL_NIF_TERM argv[], int export)
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary id;
    char *out = NULL;
    tidemark_status st;
    if (!get_store(env, argv[0], &r) || !get_bytes(env, argv[1], &id))
        return enif_make_badarg(env);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    caller_env = env; /* an exporter sends from this scheduler with it */
    st = export ? tidemark_store_context_export(s, id.data, id.size, &out)
                : tidemark_store_context_get(s, id.data, id.size, &out);
    caller_env = NULL;
    core_done(r->core);
    return json_result(env, st, out);
}

ERL_NIF_TERM context_get_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return context_read(env, argv, 0);
}

ERL_NIF_TERM context_delete_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary id;
    uint64_t rev = 0;
    tidemark_status st;
    if (!get_store(env, argv[0], &r) || !get_bytes(env, argv[1], &id))
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "context_delete_nif", context_delete_nif);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_context_delete(s, id.data, id.size, &rev);
    core_done(r->core);
    return st == TIDEMARK_OK ? make_ok(env, make_u64(env, rev)) : status_error(env, st);
}

/* context_sync_nif(Store, Id, ClientVersion) -> {ok, Kind, Version, Json | undefined}. */
ERL_NIF_TERM context_sync_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary id;
    ErlNifSInt64 client;
    tidemark_sync_kind kind = TIDEMARK_SYNC_NO_CHANGE;
    uint64_t version = 0;
    char *out = NULL;
    tidemark_status st;
    ERL_NIF_TERM json;
    (void)argc;
    if (!get_store(env, argv[0], &r) || !get_bytes(env, argv[1], &id) || !enif_get_int64(env, argv[2], &client))
        return enif_make_badarg(env);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_context_sync(s, id.data, id.size, (int64_t)client, &kind, &version, &out);
    core_done(r->core);
    if (st != TIDEMARK_OK)
        return status_error(env, st);
    json = out == NULL ? am_undefined : make_string_bin(env, out);
    tidemark_string_free(out);
    return enif_make_tuple4(env, am_ok, enif_make_uint(env, (unsigned)kind), make_u64(env, version), json);
}

/* context_list_nif(Store, Id | undefined, Limit, Offset, Desc): contexts, or an id's deltas. */
ERL_NIF_TERM context_list_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary id;
    uint64_t limit, offset;
    char *out = NULL;
    tidemark_status st;
    int contexts = enif_is_identical(argv[1], am_undefined);
    uint32_t order;
    (void)argc;
    if (!get_store(env, argv[0], &r) || (!contexts && !get_bytes(env, argv[1], &id))
        || !get_u64(env, argv[2], &limit) || !get_u64(env, argv[3], &offset) || limit > SIZE_MAX
        || offset > SIZE_MAX)
        return enif_make_badarg(env);
    if (enif_is_identical(argv[4], am_true))
        order = TIDEMARK_ORDER_DESC;
    else if (enif_is_identical(argv[4], am_false))
        order = TIDEMARK_ORDER_ASC;
    else
        return enif_make_badarg(env);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = contexts ? tidemark_store_context_list(s, (size_t)limit, (size_t)offset, order, &out)
                  : tidemark_store_context_deltas(s, id.data, id.size, (size_t)limit, (size_t)offset, order, &out);
    core_done(r->core);
    return json_result(env, st, out);
}

ERL_NIF_TERM context_cleanup_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    uint64_t limit, contexts = 0, deltas = 0;
    tidemark_status st;
    if (!get_store(env, argv[0], &r) || !get_u64(env, argv[1], &limit) || limit > SIZE_MAX)
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "context_cleanup_nif", context_cleanup_nif);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    caller_env = env; /* the exporter sends from this scheduler with it */
    st = tidemark_store_context_cleanup(s, (size_t)limit, &contexts, &deltas);
    caller_env = NULL;
    core_done(r->core);
    if (st != TIDEMARK_OK)
        return status_error(env, st);
    return make_ok(env, enif_make_tuple2(env, make_u64(env, contexts), make_u64(env, deltas)));
}

/* The manual clock: the store calls this from any thread; it reads the core's atomic time. The
 * core outlives the store's use of the clock (it is freed only after the store is closed), so
 * the clock needs no drop function. */
static uint64_t manual_clock(void *userdata)
{
    return __atomic_load_n(&((tm_core *)userdata)->manual_now, __ATOMIC_SEQ_CST);
}

/* set_clock_nif(Store, Ms | system): a manual clock at Ms, or the system clock again. */
ERL_NIF_TERM set_clock_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    uint64_t ms = 0;
    int system = enif_is_identical(argv[1], enif_make_atom(env, "system"));
    tidemark_status st;
    (void)argc;
    if (!get_store(env, argv[0], &r) || (!system && !get_u64(env, argv[1], &ms)))
        return enif_make_badarg(env);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    __atomic_store_n(&r->core->manual_now, ms, __ATOMIC_SEQ_CST);
    st = system ? tidemark_store_set_clock(s, NULL, NULL, NULL)
                : tidemark_store_set_clock(s, manual_clock, r->core, NULL);
    core_done(r->core);
    return st == TIDEMARK_OK ? am_ok : status_error(env, st);
}

/* advance_clock_nif(Store, Ms): moves the manual clock forward; returns the new time. */
ERL_NIF_TERM advance_clock_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    uint64_t ms, now;
    (void)argc;
    if (!get_store(env, argv[0], &r) || !get_u64(env, argv[1], &ms))
        return enif_make_badarg(env);
    if (core_use(r->core) == NULL)
        return closed_error(env);
    now = __atomic_add_fetch(&r->core->manual_now, ms, __ATOMIC_SEQ_CST);
    core_done(r->core);
    return make_ok(env, make_u64(env, now));
}

/* context_cleaner_nif(Store, start, {IntervalMs, Limit}) | (Store, interval, IntervalMs) |
 * (Store, stop, _): the store's cleanup thread. Runs on a dirty I/O scheduler (stop waits for a
 * pass under way). */
ERL_NIF_TERM context_cleaner_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    uint64_t interval = 0, limit = 0;
    const ERL_NIF_TERM *el;
    int arity, which;
    bool was = false;
    tidemark_status st;
    (void)argc;
    if (!get_store(env, argv[0], &r))
        return enif_make_badarg(env);
    if (enif_is_identical(argv[1], enif_make_atom(env, "start"))) {
        if (!enif_get_tuple(env, argv[2], &arity, &el) || arity != 2 || !get_u64(env, el[0], &interval)
            || !get_u64(env, el[1], &limit) || limit > SIZE_MAX)
            return enif_make_badarg(env);
        which = 0;
    } else if (enif_is_identical(argv[1], enif_make_atom(env, "interval"))) {
        if (!get_u64(env, argv[2], &interval))
            return enif_make_badarg(env);
        which = 1;
    } else if (enif_is_identical(argv[1], enif_make_atom(env, "stop"))) {
        which = 2;
    } else {
        return enif_make_badarg(env);
    }
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = which == 0 ? tidemark_store_context_cleaner_start(s, interval, (size_t)limit)
       : which == 1 ? tidemark_store_context_cleaner_set_interval(s, interval)
                    : tidemark_store_context_cleaner_stop(s, &was);
    core_done(r->core);
    if (st != TIDEMARK_OK)
        return status_error(env, st);
    return which == 2 ? make_ok(env, was ? am_true : am_false) : am_ok;
}


/* --- The exporter and the provider (docs/contexts.md, "Export and restore") ------------------
 * The exporter is a process: the library's exporter callback sends it
 * {tidemark_context_export, Id, ContextJson, Version}. The callback runs on the exporting thread:
 * a scheduler running context_export_nif / context_cleanup_nif (which leave their env in
 * caller_env for it) or the store's own cleanup thread (caller_env NULL: enif_send(NULL, ...)).
 * The provider is a process too, but asked from Erlang (src/tidemark.erl): the calling process
 * sends the request and waits in `receive ... after Timeout', so no scheduler ever blocks on it;
 * the core's provider callback is not used. Its pid and timeout live in the core. */


typedef struct {
    ErlNifPid pid;
} tm_exporter;

static uint32_t export_to_process(void *userdata, const uint8_t *id, size_t id_len, const char *json, uint64_t version)
{
    ErlNifEnv *msg_env = enif_alloc_env();
    ERL_NIF_TERM idb, jb, msg;
    size_t json_len = strlen(json);
    int sent;
    if (msg_env == NULL)
        return TIDEMARK_ERR_IO;
    memcpy(enif_make_new_binary(msg_env, id_len, &idb), id, id_len);
    memcpy(enif_make_new_binary(msg_env, json_len, &jb), json, json_len);
    msg = enif_make_tuple4(msg_env, enif_make_atom(msg_env, "tidemark_context_export"), idb, jb,
                           enif_make_uint64(msg_env, version));
    sent = enif_send(caller_env, &((tm_exporter *)userdata)->pid, msg_env, msg);
    enif_free_env(msg_env);
    return sent ? TIDEMARK_OK : TIDEMARK_ERR_IO; /* a dead exporter: the export failed */
}

static void exporter_drop(void *userdata)
{
    enif_free(userdata);
}

/* context_set_exporter_nif(Store, Pid | undefined) */
ERL_NIF_TERM context_set_exporter_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    tm_exporter *x = NULL;
    ErlNifPid pid;
    tidemark_status st;
    (void)argc;
    if (!get_store(env, argv[0], &r))
        return enif_make_badarg(env);
    if (!enif_is_identical(argv[1], enif_make_atom(env, "undefined"))) {
        if (!enif_get_local_pid(env, argv[1], &pid))
            return enif_make_badarg(env);
        if ((x = enif_alloc(sizeof *x)) == NULL)
            return enif_raise_exception(env, enif_make_atom(env, "enomem"));
        x->pid = pid;
    }
    if ((s = core_use(r->core)) == NULL) {
        enif_free(x);
        return closed_error(env);
    }
    /* The library owns x from here on (exporter_drop frees it, also when this fails). */
    st = x ? tidemark_store_context_set_exporter(s, export_to_process, x, exporter_drop)
           : tidemark_store_context_set_exporter(s, NULL, NULL, NULL);
    core_done(r->core);
    return st == TIDEMARK_OK ? am_ok : status_error(env, st);
}

ERL_NIF_TERM context_export_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return context_read(env, argv, 1);
}

/* context_restore_nif(Store, Id, Json, Version) -> {ok, ContextJson} */
ERL_NIF_TERM context_restore_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary id, json;
    uint64_t version;
    char *doc, *out = NULL;
    tidemark_status st;
    if (!get_store(env, argv[0], &r) || !get_bytes(env, argv[1], &id) || !get_bytes(env, argv[2], &json)
        || !get_u64(env, argv[3], &version))
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "context_restore_nif", context_restore_nif);
    if ((doc = c_string(json)) == NULL)
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    if ((s = core_use(r->core)) == NULL) {
        enif_free(doc);
        return closed_error(env);
    }
    st = tidemark_store_context_restore(s, id.data, id.size, doc, version, &out);
    core_done(r->core);
    enif_free(doc);
    return json_result(env, st, out);
}

/* context_provider_nif(Store) -> {Pid, TimeoutMs} | undefined (under the core's read lock);
 * context_provider_nif(Store, Pid | undefined, TimeoutMs) -> ok (under its write lock). */
ERL_NIF_TERM context_provider_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    ERL_NIF_TERM result;
    ErlNifPid pid;
    uint64_t timeout = 0;
    int has = 0;
    if (!get_store(env, argv[0], &r))
        return enif_make_badarg(env);
    if (argc == 3) {
        has = !enif_is_identical(argv[1], enif_make_atom(env, "undefined"));
        if ((has && !enif_get_local_pid(env, argv[1], &pid)) || !get_u64(env, argv[2], &timeout))
            return enif_make_badarg(env);
        enif_rwlock_rwlock(r->core->lock);
        r->core->has_provider = has;
        if (has)
            r->core->provider = pid;
        r->core->provider_timeout_ms = timeout;
        enif_rwlock_rwunlock(r->core->lock);
        return am_ok;
    }
    if (core_use(r->core) == NULL)
        return closed_error(env);
    result = !r->core->has_provider ? enif_make_atom(env, "undefined")
                                    : enif_make_tuple2(env, enif_make_pid(env, &r->core->provider),
                                                       make_u64(env, r->core->provider_timeout_ms));
    core_done(r->core);
    return result;
}
