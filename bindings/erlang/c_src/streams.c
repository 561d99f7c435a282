/* Streams and snapshots (the NIFs over tidemark_store_append and friends) and the registry of
 * named stores. No resource of its own: every NIF works on a store resource (store.c).
 *
 * Named stores: a process-wide table name -> store resource, guarded by names_lock. A
 * registered store's resource is kept (enif_keep_resource) until it is unregistered, so a
 * named store lives until it is closed by name (or closed directly: a closed store's entry is
 * dropped the next time the table is read). */
#include "tidemark_nif.h"

#include <string.h>

static ErlNifMutex *names_lock;

typedef struct tm_named {
    ErlNifBinary name; /* owned (enif_alloc_binary) */
    tm_store_res *res; /* kept */
    struct tm_named *next;
} tm_named;

static tm_named *names; /* under names_lock */

int streams_load(ErlNifEnv *env, ErlNifResourceFlags flags)
{
    (void)env;
    (void)flags;
    if (names_lock == NULL)
        names_lock = enif_mutex_create("tidemark_names");
    return names_lock != NULL;
}

/* Drops the entries of stores that were closed directly. Under names_lock. */
static void names_prune(void)
{
    tm_named **p = &names;
    while (*p != NULL) {
        tm_named *n = *p;
        /* core_use takes the core's read lock (NULL, lock released, once closed). */
        if (core_use(n->res->core) != NULL) {
            core_done(n->res->core);
            p = &n->next;
        } else {
            *p = n->next;
            enif_release_resource(n->res);
            enif_release_binary(&n->name);
            enif_free(n);
        }
    }
}

static tm_named **names_find(const ErlNifBinary *name)
{
    tm_named **p = &names;
    for (; *p != NULL; p = &(*p)->next)
        if ((*p)->name.size == name->size && memcmp((*p)->name.data, name->data, name->size) == 0)
            return p;
    return p;
}

/* register_store_nif(Name, Store) -> ok | {error, already_registered} */
ERL_NIF_TERM register_store_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    ErlNifBinary name;
    tm_store_res *r;
    tm_named *n;
    ERL_NIF_TERM result = am_ok;
    (void)argc;
    if (!enif_inspect_binary(env, argv[0], &name) || name.size == 0 || !get_store(env, argv[1], &r))
        return enif_make_badarg(env);
    enif_mutex_lock(names_lock);
    names_prune();
    if (*names_find(&name) != NULL) {
        result = make_error(env, enif_make_atom(env, "already_registered"));
    } else if ((n = enif_alloc(sizeof *n)) == NULL || !enif_alloc_binary(name.size, &n->name)) {
        enif_free(n);
        result = make_error(env, enif_make_atom(env, "enomem"));
    } else {
        memcpy(n->name.data, name.data, name.size);
        enif_keep_resource(r);
        n->res = r;
        n->next = names;
        names = n;
    }
    enif_mutex_unlock(names_lock);
    return result;
}

/* whereis_store_nif(Name) -> {ok, Store} | {error, not_found} */
ERL_NIF_TERM whereis_store_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    ErlNifBinary name;
    tm_named *n;
    ERL_NIF_TERM result;
    (void)argc;
    if (!enif_inspect_binary(env, argv[0], &name))
        return enif_make_badarg(env);
    enif_mutex_lock(names_lock);
    names_prune();
    n = *names_find(&name);
    result = n != NULL ? make_ok(env, enif_make_resource(env, n->res)) : make_error(env, enif_make_atom(env, "not_found"));
    enif_mutex_unlock(names_lock);
    return result;
}

/* unregister_store_nif(Name) -> {ok, Store} | {error, not_found}: the caller closes it. */
ERL_NIF_TERM unregister_store_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    ErlNifBinary name;
    tm_named **p, *n;
    ERL_NIF_TERM result;
    (void)argc;
    if (!enif_inspect_binary(env, argv[0], &name))
        return enif_make_badarg(env);
    enif_mutex_lock(names_lock);
    names_prune();
    p = names_find(&name);
    if ((n = *p) == NULL) {
        result = make_error(env, enif_make_atom(env, "not_found"));
    } else {
        *p = n->next;
        result = make_ok(env, enif_make_resource(env, n->res));
        enif_release_resource(n->res);
        enif_release_binary(&n->name);
        enif_free(n);
    }
    enif_mutex_unlock(names_lock);
    return result;
}

/* registered_stores_nif() -> [Name] */
ERL_NIF_TERM registered_stores_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    ERL_NIF_TERM list = enif_make_list(env, 0);
    tm_named *n;
    (void)argc;
    (void)argv;
    enif_mutex_lock(names_lock);
    names_prune();
    for (n = names; n != NULL; n = n->next)
        list = enif_make_list_cell(env, make_bytes(env, (tidemark_bytes){n->name.data, n->name.size}), list);
    enif_mutex_unlock(names_lock);
    return list;
}

/* ------------------------------------------------------------------------------------------ */
/* streams                                                                                    */

/* An event map #{type := T, data := D, metadata => M, id => <<_:16/binary>>} as C input;
 * the bytes are borrowed from the terms for the call. */
static int get_new_event(ErlNifEnv *env, ERL_NIF_TERM m, tidemark_stream_event *e)
{
    ERL_NIF_TERM v;
    ErlNifBinary b;
    size_t known = 2;
    memset(e, 0, sizeof *e);
    if (!enif_is_map(env, m))
        return 0;
    if (!enif_get_map_value(env, m, am_type, &v) || !get_bytes(env, v, &b))
        return 0;
    e->event_type = (tidemark_bytes){b.data, b.size};
    if (!enif_get_map_value(env, m, am_data, &v) || !get_bytes(env, v, &b))
        return 0;
    e->data = (tidemark_bytes){b.data, b.size};
    if (enif_get_map_value(env, m, am_metadata, &v)) {
        if (!get_bytes(env, v, &b))
            return 0;
        e->metadata = (tidemark_bytes){b.data, b.size};
        known++;
    }
    if (enif_get_map_value(env, m, am_id, &v)) {
        if (!enif_inspect_binary(env, v, &b))
            return 0;
        e->id = (tidemark_bytes){b.data, b.size};
        known++;
    }
    /* No other keys: a misspelt one is an error, not ignored. */
    {
        size_t size;
        return enif_get_map_size(env, m, &size) && size == known;
    }
}

/* append_events_nif(Store, Stream, [EventMap], Expected :: integer())
 * -> {ok, Version} | {error, {wrong_expected_version, Current}} | {error, Reason} */
ERL_NIF_TERM append_events_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary stream;
    ErlNifSInt64 expected;
    unsigned n, i = 0;
    ERL_NIF_TERM list = argv[2], head, result;
    tidemark_stream_event *evs;
    tidemark_append_result res;
    tidemark_status st;
    if (!get_store(env, argv[0], &r) || !get_bytes(env, argv[1], &stream) || !enif_get_list_length(env, list, &n)
        || !enif_get_int64(env, argv[3], &expected))
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "append_events_nif", append_events_nif);
    DIRTY_CPU_IF(n > TM_NORMAL_MAX_ITEMS, "append_events_nif", append_events_nif);
    evs = enif_alloc(sizeof *evs * (n ? n : 1));
    if (evs == NULL)
        return make_error(env, enif_make_atom(env, "enomem"));
    while (enif_get_list_cell(env, list, &head, &list)) {
        if (!get_new_event(env, head, &evs[i++])) {
            enif_free(evs);
            return enif_make_badarg(env);
        }
    }
    if ((s = core_use(r->core)) == NULL) {
        enif_free(evs);
        return closed_error(env);
    }
    st = tidemark_store_append(s, stream.data, stream.size, evs, n, (int64_t)expected, &res);
    if (st == TIDEMARK_OK)
        result = make_ok(env, make_u64(env, res.version));
    else if (st == TIDEMARK_ERR_CONFLICT)
        result = make_error(env, enif_make_tuple2(env, am_wrong_expected_version,
                                                  enif_make_int64(env, tidemark_last_error_current_version())));
    else
        result = status_error(env, st);
    core_done(r->core);
    enif_free(evs);
    return result;
}

ERL_NIF_TERM stream_event_map(ErlNifEnv *env, const tidemark_stream_event *e)
{
    ERL_NIF_TERM keys[8] = {am_stream, am_id, am_type, am_data, am_metadata, am_version, am_revision, am_timestamp_ms};
    ERL_NIF_TERM vals[8], map;
    vals[0] = make_bytes(env, e->stream);
    vals[1] = make_bytes(env, e->id);
    vals[2] = make_bytes(env, e->event_type);
    vals[3] = make_bytes(env, e->data);
    vals[4] = make_bytes(env, e->metadata);
    vals[5] = make_u64(env, e->version);
    vals[6] = make_u64(env, e->revision);
    vals[7] = make_u64(env, e->timestamp_ms);
    enif_make_map_from_arrays(env, keys, vals, 8, &map);
    return map;
}

/* read_stream_nif(Store, Stream, From :: integer() (-1 = end, backward), Count, forward | backward)
 * -> {ok, [EventMap]} */
ERL_NIF_TERM read_stream_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary stream;
    ErlNifSInt64 from;
    ErlNifUInt64 count;
    uint32_t dir;
    tidemark_stream_events *out = NULL;
    tidemark_status st;
    ERL_NIF_TERM result;
    if (!get_store(env, argv[0], &r) || !get_bytes(env, argv[1], &stream) || !enif_get_int64(env, argv[2], &from)
        || !enif_get_uint64(env, argv[3], &count))
        return enif_make_badarg(env);
    if (enif_is_identical(argv[4], am_forward))
        dir = TIDEMARK_FORWARD;
    else if (enif_is_identical(argv[4], am_backward))
        dir = TIDEMARK_BACKWARD;
    else
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "read_stream_nif", read_stream_nif);
    DIRTY_CPU_IF(count == 0 || count > TM_NORMAL_MAX_ITEMS, "read_stream_nif", read_stream_nif);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_read_stream(s, stream.data, stream.size, (int64_t)from, (size_t)count, dir, &out);
    if (st == TIDEMARK_OK) {
        size_t n = tidemark_stream_events_len(out), i = n;
        const tidemark_stream_event *d = tidemark_stream_events_data(out);
        ERL_NIF_TERM list = enif_make_list(env, 0);
        while (i-- > 0)
            list = enif_make_list_cell(env, stream_event_map(env, &d[i]), list);
        result = make_ok(env, list);
    } else {
        result = status_error(env, st);
    }
    core_done(r->core);
    tidemark_stream_events_free(out);
    return result;
}

/* stream_version_nif(Store, Stream) -> {ok, Version} (-1 = no stream) */
ERL_NIF_TERM stream_version_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary stream;
    int64_t v = -1;
    tidemark_status st;
    ERL_NIF_TERM result;
    (void)argc;
    if (!get_store(env, argv[0], &r) || !get_bytes(env, argv[1], &stream))
        return enif_make_badarg(env);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_stream_version(s, stream.data, stream.size, &v);
    result = st == TIDEMARK_OK ? make_ok(env, enif_make_int64(env, v)) : status_error(env, st);
    core_done(r->core);
    return result;
}

/* list_streams_nif(Store, Prefix, After (<<>> = from the first), Limit) -> {ok, [{Name, Version}], HasMore} */
ERL_NIF_TERM list_streams_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary prefix, after;
    ErlNifUInt64 limit;
    tidemark_stream_list *out = NULL;
    tidemark_status st;
    ERL_NIF_TERM result;
    if (!get_store(env, argv[0], &r) || !get_bytes(env, argv[1], &prefix) || !get_bytes(env, argv[2], &after)
        || !enif_get_uint64(env, argv[3], &limit))
        return enif_make_badarg(env);
    DIRTY_CPU_IF(limit == 0 || limit > TM_NORMAL_MAX_ITEMS, "list_streams_nif", list_streams_nif);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_list_streams(s, prefix.data, prefix.size, after.data, after.size, (size_t)limit, &out);
    if (st == TIDEMARK_OK) {
        size_t n = tidemark_stream_list_len(out), i = n;
        const tidemark_stream_info *d = tidemark_stream_list_data(out);
        ERL_NIF_TERM list = enif_make_list(env, 0);
        while (i-- > 0)
            list = enif_make_list_cell(
                env, enif_make_tuple2(env, make_bytes(env, d[i].name), enif_make_int64(env, d[i].version)), list);
        result = enif_make_tuple3(env, am_ok, list, tidemark_stream_list_has_more(out) ? am_true : am_false);
    } else {
        result = status_error(env, st);
    }
    core_done(r->core);
    tidemark_stream_list_free(out);
    return result;
}

/* delete_stream_nif(Store, Stream) -> {ok, Revision} */
ERL_NIF_TERM delete_stream_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary stream;
    uint64_t rev = 0;
    tidemark_status st;
    ERL_NIF_TERM result;
    if (!get_store(env, argv[0], &r) || !get_bytes(env, argv[1], &stream))
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "delete_stream_nif", delete_stream_nif);
    DIRTY_CPU_IF(1, "delete_stream_nif", delete_stream_nif); /* a stream's length is unbounded */
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_delete_stream(s, stream.data, stream.size, &rev);
    result = st == TIDEMARK_OK ? make_ok(env, make_u64(env, rev)) : status_error(env, st);
    core_done(r->core);
    return result;
}

/* ------------------------------------------------------------------------------------------ */
/* snapshots                                                                                  */

static ERL_NIF_TERM snapshot_map(ErlNifEnv *env, const tidemark_snapshot *x)
{
    ERL_NIF_TERM keys[6] = {am_source, am_stream, am_version, am_revision, am_timestamp_ms, am_data};
    ERL_NIF_TERM vals[6], map;
    vals[0] = make_bytes(env, x->source);
    vals[1] = make_bytes(env, x->stream);
    vals[2] = make_u64(env, x->version);
    vals[3] = make_u64(env, x->revision);
    vals[4] = make_u64(env, x->timestamp_ms);
    vals[5] = make_bytes(env, x->data);
    enif_make_map_from_arrays(env, keys, vals, 6, &map);
    return map;
}

/* snapshot_record_nif(Store, Source, Stream, Version, Data) -> {ok, Revision} */
ERL_NIF_TERM snapshot_record_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary src, stream, data;
    uint64_t version, rev = 0;
    tidemark_status st;
    ERL_NIF_TERM result;
    if (!get_store(env, argv[0], &r) || !get_bytes(env, argv[1], &src) || !get_bytes(env, argv[2], &stream)
        || !get_u64(env, argv[3], &version) || !get_bytes(env, argv[4], &data))
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "snapshot_record_nif", snapshot_record_nif);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_snapshot_record(s, src.data, src.size, stream.data, stream.size, version, data.data, data.size, &rev);
    result = st == TIDEMARK_OK ? make_ok(env, make_u64(env, rev)) : status_error(env, st);
    core_done(r->core);
    return result;
}

/* snapshot_read_nif(Store, Source, Stream, MaxVersion) -> {ok, SnapshotMap} | {error, not_found}
 * snapshot_list_nif(Store, Source, Stream) -> {ok, [SnapshotMap]} */
static ERL_NIF_TERM snapshots_get(ErlNifEnv *env, const ERL_NIF_TERM argv[], int read)
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary src, stream;
    uint64_t max = 0;
    tidemark_snapshots *out = NULL;
    tidemark_status st;
    ERL_NIF_TERM result;
    if (!get_store(env, argv[0], &r) || !get_bytes(env, argv[1], &src) || !get_bytes(env, argv[2], &stream)
        || (read && !get_u64(env, argv[3], &max)))
        return enif_make_badarg(env);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = read ? tidemark_store_snapshot_read(s, src.data, src.size, stream.data, stream.size, max, &out)
              : tidemark_store_snapshot_list(s, src.data, src.size, stream.data, stream.size, &out);
    if (st == TIDEMARK_OK) {
        size_t n = tidemark_snapshots_len(out), i = n;
        const tidemark_snapshot *d = tidemark_snapshots_data(out);
        ERL_NIF_TERM list = enif_make_list(env, 0);
        while (i-- > 0)
            list = enif_make_list_cell(env, snapshot_map(env, &d[i]), list);
        result = read ? make_ok(env, snapshot_map(env, &d[0])) : make_ok(env, list);
    } else {
        result = status_error(env, st);
    }
    core_done(r->core);
    tidemark_snapshots_free(out);
    return result;
}

ERL_NIF_TERM snapshot_read_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return snapshots_get(env, argv, 1);
}

ERL_NIF_TERM snapshot_list_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    DIRTY_CPU_IF(1, "snapshot_list_nif", snapshot_list_nif); /* the list's length is unbounded */
    return snapshots_get(env, argv, 0);
}

/* snapshot_delete_nif(Store, Source, Stream, Version) -> {ok, Revision} | {error, not_found} */
ERL_NIF_TERM snapshot_delete_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary src, stream;
    uint64_t version, rev = 0;
    tidemark_status st;
    ERL_NIF_TERM result;
    if (!get_store(env, argv[0], &r) || !get_bytes(env, argv[1], &src) || !get_bytes(env, argv[2], &stream)
        || !get_u64(env, argv[3], &version))
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "snapshot_delete_nif", snapshot_delete_nif);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_snapshot_delete(s, src.data, src.size, stream.data, stream.size, version, &rev);
    result = st == TIDEMARK_OK ? make_ok(env, make_u64(env, rev)) : status_error(env, st);
    core_done(r->core);
    return result;
}
