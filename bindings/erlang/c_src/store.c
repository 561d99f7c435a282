/* The store resource: a tm_core (a store and its lock) and the NIFs on a store (open, close,
 * status, keys, batch, range, changes, compact). */
#include "tidemark_nif.h"

#include <string.h>

static ErlNifResourceType *store_type;

static ErlNifMutex *open_lock;  /* guards open_list */
static tm_core open_list;       /* sentinel of the circular list of open cores */

static tm_core *core_new(tidemark_store *store, int durable)
{
    tm_core *c = enif_alloc(sizeof *c);
    if (c == NULL)
        return NULL;
    c->lock = enif_rwlock_create("tidemark_store");
    if (c->lock == NULL) {
        enif_free(c);
        return NULL;
    }
    c->store = store;
    c->durable = durable;
    c->refs = 1;
    c->manual_now = 0;
    c->has_provider = 0;
    enif_mutex_lock(open_lock);
    c->next = open_list.next;
    c->prev = &open_list;
    open_list.next->prev = c;
    open_list.next = c;
    enif_mutex_unlock(open_lock);
    return c;
}

void core_keep(tm_core *c)
{
    __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

void core_release(tm_core *c)
{
    if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        /* Only reachable once closed: the store resource closes before releasing. */
        enif_rwlock_destroy(c->lock);
        enif_free(c);
    }
}

/* Closes the store if it is still open. Blocks until tidemark has ended every watch (each gets
 * its CLOSED message, then drop_userdata) and joined its threads. Idempotent. */
static void core_close(tm_core *c)
{
    tidemark_store *s;
    enif_rwlock_rwlock(c->lock);
    s = c->store;
    c->store = NULL;
    if (s != NULL) {
        enif_mutex_lock(open_lock);
        c->prev->next = c->next;
        c->next->prev = c->prev;
        c->prev = c->next = c;
        enif_mutex_unlock(open_lock);
        tidemark_store_close(s);
    }
    enif_rwlock_rwunlock(c->lock);
}

/* Takes the read lock and returns the store, or NULL (lock released) when closed. */
tidemark_store *core_use(tm_core *c)
{
    enif_rwlock_rlock(c->lock);
    if (c->store == NULL) {
        enif_rwlock_runlock(c->lock);
        return NULL;
    }
    return c->store;
}

void core_done(tm_core *c)
{
    enif_rwlock_runlock(c->lock);
}


static void store_dtor(ErlNifEnv *env, void *obj)
{
    tm_store_res *r = obj;
    (void)env;
    if (r->core != NULL) {
        /* Runs on an ERTS thread (never a tidemark thread: those hold no store handle). */
        core_close(r->core);
        core_release(r->core);
        r->core = NULL;
    }
}

int get_store(ErlNifEnv *env, ERL_NIF_TERM t, tm_store_res **out)
{
    return enif_get_resource(env, t, store_type, (void **)out) && (*out)->core != NULL;
}


/* ------------------------------------------------------------------------------------------ */
/* open / close / status                                                                      */

/* open_nif(Path :: binary() (<<>> = memory), OptionsJson :: binary() (<<>> = none)) */
ERL_NIF_TERM open_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    ErlNifBinary path, opts;
    char *cpath = NULL, *copts = NULL;
    tidemark_store *store = NULL;
    tidemark_status st;
    tm_store_res *r;
    ERL_NIF_TERM term;
    (void)argc;
    if (!enif_inspect_binary(env, argv[0], &path) || !enif_inspect_binary(env, argv[1], &opts))
        return enif_make_badarg(env);
    if (memchr(path.data, 0, path.size) || memchr(opts.data, 0, opts.size))
        return enif_make_badarg(env);
    if ((path.size && (cpath = cstring(&path)) == NULL) || (opts.size && (copts = cstring(&opts)) == NULL)) {
        if (cpath)
            enif_free(cpath);
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    }
    st = tidemark_store_open(cpath, copts, &store);
    if (cpath)
        enif_free(cpath);
    if (copts)
        enif_free(copts);
    if (st != TIDEMARK_OK)
        return status_error(env, st);
    r = enif_alloc_resource(store_type, sizeof *r);
    r->core = core_new(store, path.size > 0);
    if (r->core == NULL) {
        tidemark_store_close(store);
        enif_release_resource(r);
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    }
    term = enif_make_resource(env, r);
    enif_release_resource(r);
    return make_ok(env, term);
}

ERL_NIF_TERM close_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    (void)argc;
    if (!get_store(env, argv[0], &r))
        return enif_make_badarg(env);
    core_close(r->core);
    return am_ok;
}

/* {ok, Binary} from a call that writes a string the caller frees (status, metrics). */
static ERL_NIF_TERM string_call(ErlNifEnv *env, ERL_NIF_TERM store,
                                tidemark_status (*call)(const tidemark_store *, char **))
{
    tm_store_res *r;
    tidemark_store *s;
    char *json = NULL;
    tidemark_status st;
    ERL_NIF_TERM result;
    if (!get_store(env, store, &r))
        return enif_make_badarg(env);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = call(s, &json);
    result = st == TIDEMARK_OK ? make_ok(env, make_string_bin(env, json)) : status_error(env, st);
    core_done(r->core);
    tidemark_string_free(json);
    return result;
}

ERL_NIF_TERM status_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return string_call(env, argv[0], tidemark_store_status_json);
}

/* metrics_nif(Store, text | json): the metrics as Prometheus text or as JSON. */
ERL_NIF_TERM metrics_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    char format[8];
    (void)argc;
    if (!enif_get_atom(env, argv[1], format, sizeof format, ERL_NIF_LATIN1))
        return enif_make_badarg(env);
    if (strcmp(format, "text") == 0)
        return string_call(env, argv[0], tidemark_store_metrics_text);
    if (strcmp(format, "json") == 0)
        return string_call(env, argv[0], tidemark_store_metrics_json);
    return enif_make_badarg(env);
}

/* {Bytes, Commits, Revisions, FirstRevision} cut off the log's end on open (all 0: none). */
ERL_NIF_TERM tail_repair_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    uint64_t v[4] = {0, 0, 0, 0};
    tidemark_status st;
    ERL_NIF_TERM result;
    (void)argc;
    if (!get_store(env, argv[0], &r))
        return enif_make_badarg(env);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_tail_repair(s, &v[0], &v[1], &v[2], &v[3]);
    result = st == TIDEMARK_OK
        ? enif_make_tuple4(env, make_u64(env, v[0]), make_u64(env, v[1]), make_u64(env, v[2]), make_u64(env, v[3]))
        : status_error(env, st);
    core_done(r->core);
    return result;
}

/* current_revision | earliest_revision | watcher_count: which = 0 | 1 | 2 */
static ERL_NIF_TERM counter(ErlNifEnv *env, const ERL_NIF_TERM argv[], int which)
{
    tm_store_res *r;
    tidemark_store *s;
    uint64_t v;
    if (!get_store(env, argv[0], &r))
        return enif_make_badarg(env);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    v = which == 0 ? tidemark_store_current_revision(s)
      : which == 1 ? tidemark_store_earliest_revision(s)
                   : (uint64_t)tidemark_store_watcher_count(s);
    core_done(r->core);
    return make_u64(env, v);
}

ERL_NIF_TERM current_revision_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return counter(env, argv, 0);
}

ERL_NIF_TERM earliest_revision_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return counter(env, argv, 1);
}

ERL_NIF_TERM watcher_count_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return counter(env, argv, 2);
}

ERL_NIF_TERM version_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    (void)argv;
    return make_string_bin(env, tidemark_version());
}

/* ------------------------------------------------------------------------------------------ */
/* keys                                                                                       */

/* put_nif(Store, Key, Value, Expected :: none (unconditional) | N) */
ERL_NIF_TERM put_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary k, v;
    uint64_t expected = 0;
    int conditional = !enif_is_identical(argv[3], am_none);
    uint64_t rev = 0;
    tidemark_status st;
    ERL_NIF_TERM result;
    if (!get_store(env, argv[0], &r) || !get_bytes(env, argv[1], &k) || !get_bytes(env, argv[2], &v)
        || (conditional && !get_u64(env, argv[3], &expected)))
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "put_nif", put_nif);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    if (conditional)
        st = tidemark_store_put_if(s, k.data, k.size, v.data, v.size, expected, &rev);
    else
        st = tidemark_store_put(s, k.data, k.size, v.data, v.size, &rev);
    result = st == TIDEMARK_OK ? make_ok(env, make_u64(env, rev)) : status_error(env, st);
    core_done(r->core);
    return result;
}

ERL_NIF_TERM get_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary k;
    tidemark_entry *e = NULL;
    tidemark_status st;
    ERL_NIF_TERM result;
    (void)argc;
    if (!get_store(env, argv[0], &r) || !get_bytes(env, argv[1], &k))
        return enif_make_badarg(env);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_get(s, k.data, k.size, &e);
    if (st == TIDEMARK_OK) {
        ERL_NIF_TERM keys[4] = {am_value, am_create_revision, am_mod_revision, am_version};
        ERL_NIF_TERM vals[4];
        ERL_NIF_TERM map;
        vals[0] = make_bytes(env, tidemark_entry_value(e));
        vals[1] = make_u64(env, tidemark_entry_create_revision(e));
        vals[2] = make_u64(env, tidemark_entry_mod_revision(e));
        vals[3] = make_u64(env, tidemark_entry_version(e));
        enif_make_map_from_arrays(env, keys, vals, 4, &map);
        result = make_ok(env, map);
    } else {
        result = status_error(env, st);
    }
    core_done(r->core);
    tidemark_entry_free(e);
    return result;
}

ERL_NIF_TERM delete_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary k;
    uint64_t rev = 0;
    tidemark_status st;
    ERL_NIF_TERM result;
    if (!get_store(env, argv[0], &r) || !get_bytes(env, argv[1], &k))
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "delete_nif", delete_nif);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_delete(s, k.data, k.size, &rev);
    result = st == TIDEMARK_OK ? make_ok(env, make_u64(env, rev)) : status_error(env, st);
    core_done(r->core);
    return result;
}

/* batch_nif(Store, [{put, K, V} | {delete, K} | {require, K, Rev}]): every operation is
 * checked (a proper list, each a tuple of the right arity and types, revisions within 64 bits)
 * before anything is committed; any malformed one is badarg and nothing changes. */
ERL_NIF_TERM batch_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    tidemark_batch *b;
    ERL_NIF_TERM list = argv[1], head, result;
    unsigned ops;
    uint64_t first = 0;
    tidemark_status st = TIDEMARK_OK;
    /* enif_get_list_length fails for an improper list. */
    if (!get_store(env, argv[0], &r) || !enif_get_list_length(env, list, &ops))
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "batch_nif", batch_nif);
    DIRTY_CPU_IF(ops > TM_NORMAL_MAX_ITEMS, "batch_nif", batch_nif);
    b = tidemark_batch_new();
    while (enif_get_list_cell(env, list, &head, &list)) {
        const ERL_NIF_TERM *el;
        int arity;
        ErlNifBinary k, v;
        uint64_t rev;
        if (!enif_get_tuple(env, head, &arity, &el))
            goto badarg;
        if (arity == 3 && enif_is_identical(el[0], am_put) && get_bytes(env, el[1], &k)
            && get_bytes(env, el[2], &v))
            st = tidemark_batch_put(b, k.data, k.size, v.data, v.size);
        else if (arity == 2 && enif_is_identical(el[0], am_delete) && get_bytes(env, el[1], &k))
            st = tidemark_batch_delete(b, k.data, k.size);
        else if (arity == 3 && enif_is_identical(el[0], am_require) && get_bytes(env, el[1], &k)
                 && get_u64(env, el[2], &rev))
            st = tidemark_batch_require(b, k.data, k.size, rev);
        else
            goto badarg;
        if (st != TIDEMARK_OK) {
            result = status_error(env, st);
            tidemark_batch_free(b);
            return result;
        }
    }
    if ((s = core_use(r->core)) == NULL) {
        tidemark_batch_free(b);
        return closed_error(env);
    }
    st = tidemark_store_commit(s, b, &first);
    result = st == TIDEMARK_OK ? make_ok(env, make_u64(env, first)) : status_error(env, st);
    core_done(r->core);
    tidemark_batch_free(b);
    return result;
badarg:
    tidemark_batch_free(b);
    return enif_make_badarg(env);
}

/* The answer of range_nif (entries, changes == 0) or changes_nif (events and next_revision,
 * changes != 0) for what the store returned. */
static ERL_NIF_TERM events_answer(ErlNifEnv *env, const tidemark_events *evs, int changes)
{
    size_t n = tidemark_events_len(evs), i = n;
    const tidemark_event *data = tidemark_events_data(evs);
    ERL_NIF_TERM list = enif_make_list(env, 0);
    ERL_NIF_TERM keys[3] = {changes ? am_events : am_entries, am_has_more, am_next_revision};
    ERL_NIF_TERM vals[3];
    ERL_NIF_TERM map;
    tm_arena arena;
    arena_init(env, &arena, tidemark_events_arena(evs));
    while (i > 0) {
        i--;
        list = enif_make_list_cell(env, changes ? make_event_map(env, &data[i], &arena)
                                                : make_entry_map(env, &data[i], &arena), list);
    }
    vals[0] = list;
    vals[1] = tidemark_events_has_more(evs) ? am_true : am_false;
    if (changes)
        vals[2] = make_u64(env, tidemark_events_next_revision(evs));
    enif_make_map_from_arrays(env, keys, vals, changes ? 3 : 2, &map);
    return make_ok(env, map);
}

/* range_nif(Store, Selector, Limit) -> {ok, #{entries := [...], has_more := bool()}} */
ERL_NIF_TERM range_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    tidemark_selector sel;
    uint64_t limit;
    tidemark_events *evs = NULL;
    tidemark_status st;
    ERL_NIF_TERM result;
    (void)argc;
    if (!get_store(env, argv[0], &r) || !get_selector(env, argv[1], &sel) || !get_u64(env, argv[2], &limit)
        || limit > SIZE_MAX)
        return enif_make_badarg(env);
    /* At most limit entries (0 = all of them). */
    DIRTY_CPU_IF(limit == 0 || limit > TM_NORMAL_MAX_ITEMS, "range_nif", range_nif);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_range(s, &sel, (size_t)limit, &evs);
    result = st == TIDEMARK_OK ? events_answer(env, evs, 0) : status_error(env, st);
    core_done(r->core);
    tidemark_events_free(evs);
    return result;
}

/* changes_nif(Store, Selector, From, To, Limit)
 *   -> {ok, #{events := [...], has_more := bool(), next_revision := N}} */
ERL_NIF_TERM changes_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    tidemark_selector sel;
    uint64_t from, to, limit;
    tidemark_events *evs = NULL;
    tidemark_status st;
    ERL_NIF_TERM result;
    if (!get_store(env, argv[0], &r) || !get_selector(env, argv[1], &sel) || !get_u64(env, argv[2], &from)
        || !get_u64(env, argv[3], &to) || !get_u64(env, argv[4], &limit) || limit > SIZE_MAX)
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "changes_nif", changes_nif);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    if (enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER) {
        /* Every revision is one event, so [from, min(to, current)] bounds the answer, whatever
         * the limit (which never splits a commit). A commit racing this check can add to it. */
        uint64_t cur = tidemark_store_current_revision(s);
        uint64_t hi = to == 0 || to > cur ? cur : to;
        if (hi >= from && hi - from >= TM_NORMAL_MAX_ITEMS) {
            core_done(r->core);
            return enif_schedule_nif(env, "changes_nif", ERL_NIF_DIRTY_JOB_CPU_BOUND, changes_nif, argc, argv);
        }
    }
    st = tidemark_store_changes(s, &sel, from, to, (size_t)limit, &evs);
    result = st == TIDEMARK_OK ? events_answer(env, evs, 1) : status_error(env, st);
    core_done(r->core);
    tidemark_events_free(evs);
    return result;
}

ERL_NIF_TERM compact_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    uint64_t keep, removed = 0;
    tidemark_status st;
    ERL_NIF_TERM result;
    (void)argc;
    if (!get_store(env, argv[0], &r) || !get_u64(env, argv[1], &keep))
        return enif_make_badarg(env);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_compact(s, keep, &removed);
    result = st == TIDEMARK_OK ? make_ok(env, make_u64(env, removed)) : status_error(env, st);
    core_done(r->core);
    return result;
}

/* ------------------------------------------------------------------------------------------ */
/* load / unload                                                                              */

int store_load(ErlNifEnv *env, ErlNifResourceFlags flags)
{
    ErlNifResourceTypeInit init = {0};
    if (open_lock == NULL) {
        open_lock = enif_mutex_create("tidemark_open_list");
        if (open_lock == NULL)
            return 0;
        open_list.next = open_list.prev = &open_list;
    }
    init.dtor = store_dtor;
    store_type = enif_open_resource_type_x(env, "tidemark_store", &init, flags, NULL);
    return store_type != NULL;
}

void store_unload(void)
{
    if (open_lock == NULL)
        return;
    for (;;) {
        tm_core *c;
        enif_mutex_lock(open_lock);
        c = open_list.next == &open_list ? NULL : open_list.next;
        if (c != NULL)
            core_keep(c);
        enif_mutex_unlock(open_lock);
        if (c == NULL)
            break;
        core_close(c);
        core_release(c);
    }
}

/* status_reason_nif(Code) -> the Reason of {error, Reason} for that status code (revision 0,
 * message <<>>): the tests check every code of tidemark.h against it. */
ERL_NIF_TERM status_reason_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    unsigned code;
    (void)argc;
    if (!enif_get_uint(env, argv[0], &code))
        return enif_make_badarg(env);
    return status_reason(env, (tidemark_status)code, 0, make_string_bin(env, ""));
}
