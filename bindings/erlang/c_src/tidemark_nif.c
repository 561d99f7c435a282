/*
 * tidemark_nif: the Erlang NIF over the tidemark C API (include/tidemark.h).
 *
 * Objects
 *  - tm_core: one open (or closed) tidemark store plus the read/write lock that keeps every
 *    call off the store while it is being closed. Reference counted in C (not a resource) so
 *    that watch handles can outlive the store handle without keeping it alive.
 *  - store resource: the Erlang handle returned by open/2. Holds one core reference. Its
 *    destructor closes the store (idempotent), so a garbage-collected store is closed.
 *  - watch resource: the Erlang `Ref` of a push watch. Holds one core reference, the owner
 *    pid, the message environment and a monitor on the owner. tidemark holds one resource
 *    reference as the watch's userdata and gives it back in drop_userdata, exactly once,
 *    after the last callback.
 *
 * Lifetimes (no cycles): store resource -> core <- watch resource <- tidemark (userdata).
 * The tidemark store owns its dispatcher threads; they only exist while the core is open, and
 * the core is open only while its store resource is alive (or inside its destructor, or inside
 * close/1, whose argument keeps it alive). Therefore a dispatcher thread never releases the
 * last resource of this library, ERTS cannot unload the library while tidemark threads run,
 * and the store resource destructor never runs on a tidemark thread (no close-from-callback).
 *
 * Threads
 *  - Every call on a store takes the core's read lock; close takes the write lock, so
 *    tidemark_store_close is always the last call on a store, as the C API requires.
 *  - Callbacks run on tidemark's threads. They build each message in the watch's own
 *    process-independent environment and send it with enif_send(NULL, ...). They call nothing
 *    in tidemark and take only the watch's mutex, which nobody holds while waiting for a
 *    callback (activate holds it across tidemark_store_watch_credit, which never waits for
 *    one), so closing or unwatching (which wait for a running callback) cannot deadlock.
 *  - open, close, compact and unwatch (which waits for a running callback) run on dirty I/O
 *    schedulers; on a durable store so do put, delete, batch and changes (they may wait on
 *    the disk); changes/range with a big limit run on dirty CPU schedulers (tidemark.erl).
 *
 * lockstep servers and followers (resources too) are described in their own section below.
 */
#include <erl_nif.h>

#include <stdint.h>
#include <string.h>

#include "tidemark.h"

/* ------------------------------------------------------------------------------------------ */
/* atoms                                                                                      */

static ERL_NIF_TERM am_ok, am_error, am_true, am_false, am_undefined, am_all, am_key, am_prefix,
    am_range, am_infinity, am_put, am_delete, am_require, am_not_found, am_closed, am_timeout,
    am_compacted, am_conflict, am_future_revision, am_invalid_argument, am_null_argument,
    am_io, am_corrupt, am_locked, am_too_large, am_panic, am_unknown, am_noproc,
    am_tidemark_event, am_progress, am_revision, am_type, am_value, am_version,
    am_create_revision, am_mod_revision, am_events, am_entries, am_has_more, am_next_revision,
    am_other, am_tidemark_passive, am_default, am_none, am_tidemark_lockstep, am_kind,
    am_records, am_writes, am_retry_ms, am_cursor, am_message, am_line, am_connected,
    am_applied, am_malformed, am_resync_started, am_resync_done;

static void init_atoms(ErlNifEnv *env)
{
#define A(name) am_##name = enif_make_atom(env, #name)
    A(ok); A(error); A(true); A(false); A(undefined); A(all); A(key); A(prefix); A(range);
    A(infinity); A(put); A(delete); A(require); A(not_found); A(closed); A(timeout);
    A(compacted); A(conflict); A(future_revision); A(invalid_argument); A(null_argument);
    A(io); A(corrupt); A(locked); A(too_large); A(panic); A(unknown); A(noproc);
    A(tidemark_event); A(progress); A(revision); A(type); A(value); A(version);
    A(create_revision); A(mod_revision); A(events); A(entries); A(has_more);
    A(next_revision); A(other); A(tidemark_passive); A(default); A(none);
    A(tidemark_lockstep); A(kind); A(records); A(writes); A(retry_ms); A(cursor); A(message);
    A(line); A(connected); A(applied); A(malformed); A(resync_started); A(resync_done);
#undef A
}

/* ------------------------------------------------------------------------------------------ */
/* core: a store and its lock                                                                 */

typedef struct tm_core {
    ErlNifRWLock *lock;
    tidemark_store *store; /* NULL once closed; written under the write lock */
    int durable;           /* a directory store: its writes and log reads may wait on disk */
    int refs;              /* atomic */
    struct tm_core *prev, *next; /* the list of open cores, under open_lock */
} tm_core;

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
    enif_mutex_lock(open_lock);
    c->next = open_list.next;
    c->prev = &open_list;
    open_list.next->prev = c;
    open_list.next = c;
    enif_mutex_unlock(open_lock);
    return c;
}

static void core_keep(tm_core *c)
{
    __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

static void core_release(tm_core *c)
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
static tidemark_store *core_use(tm_core *c)
{
    enif_rwlock_rlock(c->lock);
    if (c->store == NULL) {
        enif_rwlock_runlock(c->lock);
        return NULL;
    }
    return c->store;
}

static void core_done(tm_core *c)
{
    enif_rwlock_runlock(c->lock);
}

/* ------------------------------------------------------------------------------------------ */
/* resources                                                                                  */

typedef struct {
    tm_core *core;
} tm_store_res;

typedef struct {
    tm_core *core;
    ErlNifMutex *mtx;  /* guards id, ended, monitored, mon, limited, credit */
    uint64_t id;       /* 0 until registered */
    /* Flow control. With `active => N` tidemark counts the watch's credit; this is a mirror
     * of it, to know when the credit runs out and send {tidemark_passive, Ref}. It never
     * exceeds tidemark's own count (grants are added to both, deliveries subtracted from
     * both, saturating), so when tidemark stops delivering, the mirror is at zero and the
     * owner has been told. */
    int limited;
    uint64_t credit;
    int ended;         /* drop_userdata ran: tidemark will never call back again */
    int monitored;
    ErlNifMonitor mon;
    ErlNifPid pid;     /* receiver; read-only after creation */
    ErlNifEnv *msg_env; /* used only by the (single) running callback; freed at drop */
} tm_watch_res;

static ErlNifResourceType *store_type;
static ErlNifResourceType *watch_type;

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

static void watch_dtor(ErlNifEnv *env, void *obj)
{
    tm_watch_res *w = obj;
    (void)env;
    /* The watch has ended: tidemark held a reference until drop_userdata. */
    if (w->msg_env != NULL) {
        enif_free_env(w->msg_env);
        w->msg_env = NULL;
    }
    if (w->mtx != NULL) {
        enif_mutex_destroy(w->mtx);
        w->mtx = NULL;
    }
    if (w->core != NULL) {
        core_release(w->core);
        w->core = NULL;
    }
}

/* The receiving process died: remove the watch so watcher_count drops. */
static void watch_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    tm_watch_res *w = obj;
    uint64_t id;
    int ended;
    (void)env;
    (void)pid;
    (void)mon;
    enif_mutex_lock(w->mtx);
    w->monitored = 0;
    id = w->id;
    ended = w->ended;
    enif_mutex_unlock(w->mtx);
    if (ended || id == 0)
        return;
    /* Never wait for a close in progress: it ends this watch anyway. */
    if (enif_rwlock_tryrlock(w->core->lock) != 0)
        return;
    if (w->core->store != NULL)
        (void)tidemark_store_unwatch(w->core->store, id);
    enif_rwlock_runlock(w->core->lock);
}

/* ------------------------------------------------------------------------------------------ */
/* helpers                                                                                    */

static ERL_NIF_TERM make_ok(ErlNifEnv *env, ERL_NIF_TERM t)
{
    return enif_make_tuple2(env, am_ok, t);
}

static ERL_NIF_TERM make_error(ErlNifEnv *env, ERL_NIF_TERM reason)
{
    return enif_make_tuple2(env, am_error, reason);
}

static ERL_NIF_TERM make_string_bin(ErlNifEnv *env, const char *s)
{
    ERL_NIF_TERM t;
    size_t n = s ? strlen(s) : 0;
    unsigned char *p = enif_make_new_binary(env, n, &t);
    if (n)
        memcpy(p, s, n);
    return t;
}

static ERL_NIF_TERM make_bytes(ErlNifEnv *env, tidemark_bytes b)
{
    ERL_NIF_TERM t;
    unsigned char *p = enif_make_new_binary(env, b.len, &t);
    if (b.len)
        memcpy(p, b.ptr, b.len);
    return t;
}

/* The bytes of a whole result batch, copied once into one binary: values longer than a heap
 * binary become sub-binaries of it (no allocation each), short ones are copied. */
typedef struct {
    ERL_NIF_TERM bin;
    const uint8_t *base;
    size_t len;
} tm_arena;

static void arena_init(ErlNifEnv *env, tm_arena *a, tidemark_bytes all)
{
    unsigned char *p = enif_make_new_binary(env, all.len, &a->bin);
    if (all.len)
        memcpy(p, all.ptr, all.len);
    a->base = all.ptr;
    a->len = all.len;
}

static ERL_NIF_TERM arena_bytes(ErlNifEnv *env, const tm_arena *a, tidemark_bytes b)
{
    if (a != NULL && b.len > 64 && b.ptr >= a->base && b.ptr + b.len <= a->base + a->len)
        return enif_make_sub_binary(env, a->bin, (size_t)(b.ptr - a->base), b.len);
    return make_bytes(env, b);
}

static ERL_NIF_TERM make_u64(ErlNifEnv *env, uint64_t v)
{
    return enif_make_uint64(env, (ErlNifUInt64)v);
}

/* {error, Reason} for a failed call; must run right after it, on the same thread. */
static ERL_NIF_TERM status_error(ErlNifEnv *env, tidemark_status st)
{
    uint64_t rev = tidemark_last_error_revision();
    ERL_NIF_TERM msg = make_string_bin(env, tidemark_last_error_message());
    ERL_NIF_TERM reason;
    switch (st) {
    case TIDEMARK_ERR_NOT_FOUND: reason = am_not_found; break;
    case TIDEMARK_ERR_CLOSED: reason = am_closed; break;
    case TIDEMARK_ERR_TIMEOUT: reason = am_timeout; break;
    case TIDEMARK_ERR_COMPACTED: reason = enif_make_tuple2(env, am_compacted, make_u64(env, rev)); break;
    case TIDEMARK_ERR_CONFLICT: reason = enif_make_tuple2(env, am_conflict, make_u64(env, rev)); break;
    case TIDEMARK_ERR_FUTURE_REVISION: reason = enif_make_tuple2(env, am_future_revision, make_u64(env, rev)); break;
    case TIDEMARK_ERR_INVALID_ARGUMENT: reason = enif_make_tuple2(env, am_invalid_argument, msg); break;
    case TIDEMARK_ERR_NULL_ARGUMENT: reason = enif_make_tuple2(env, am_null_argument, msg); break;
    case TIDEMARK_ERR_IO: reason = enif_make_tuple2(env, am_io, msg); break;
    case TIDEMARK_ERR_CORRUPT: reason = enif_make_tuple2(env, am_corrupt, msg); break;
    case TIDEMARK_ERR_LOCKED: reason = enif_make_tuple2(env, am_locked, msg); break;
    case TIDEMARK_ERR_TOO_LARGE: reason = enif_make_tuple2(env, am_too_large, msg); break;
    case TIDEMARK_ERR_PANIC: reason = enif_make_tuple2(env, am_panic, msg); break;
    default:
        reason = enif_make_tuple3(env, am_unknown, enif_make_uint(env, (unsigned)st), msg);
        break;
    }
    return make_error(env, reason);
}

static ERL_NIF_TERM closed_error(ErlNifEnv *env)
{
    return make_error(env, am_closed);
}

/* Bytes from a binary or iolist; valid for the duration of the NIF call. */
static int get_bytes(ErlNifEnv *env, ERL_NIF_TERM t, ErlNifBinary *b)
{
    return enif_inspect_binary(env, t, b) || enif_inspect_iolist_as_binary(env, t, b);
}

static int get_u64(ErlNifEnv *env, ERL_NIF_TERM t, uint64_t *out)
{
    ErlNifUInt64 v;
    if (!enif_get_uint64(env, t, &v))
        return 0;
    *out = (uint64_t)v;
    return 1;
}

static int get_store(ErlNifEnv *env, ERL_NIF_TERM t, tm_store_res **out)
{
    return enif_get_resource(env, t, store_type, (void **)out) && (*out)->core != NULL;
}

/* On a durable store, writes (fsync, group commit) and log reads may wait on the disk: such a
 * call moves itself to a dirty I/O scheduler. In-memory stores stay on the caller's scheduler. */
#define DIRTY_IF_DURABLE(r, name, fun)                                                        \
    do {                                                                                      \
        if ((r)->core->durable && enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER)         \
            return enif_schedule_nif(env, name, ERL_NIF_DIRTY_JOB_IO_BOUND, fun, argc, argv); \
    } while (0)

/* all | {key, K} | {prefix, P} | {range, Start, End | infinity} */
static int get_selector(ErlNifEnv *env, ERL_NIF_TERM t, tidemark_selector *sel)
{
    const ERL_NIF_TERM *el;
    int arity;
    ErlNifBinary a, b;
    memset(sel, 0, sizeof *sel);
    if (enif_is_identical(t, am_all)) {
        sel->kind = TIDEMARK_SELECT_ALL;
        return 1;
    }
    if (!enif_get_tuple(env, t, &arity, &el))
        return 0;
    if (arity == 2 && (enif_is_identical(el[0], am_key) || enif_is_identical(el[0], am_prefix))) {
        if (!get_bytes(env, el[1], &a))
            return 0;
        sel->kind = enif_is_identical(el[0], am_key) ? TIDEMARK_SELECT_KEY : TIDEMARK_SELECT_PREFIX;
        sel->start.ptr = a.data;
        sel->start.len = a.size;
        return 1;
    }
    if (arity == 3 && enif_is_identical(el[0], am_range)) {
        if (!get_bytes(env, el[1], &a))
            return 0;
        sel->kind = TIDEMARK_SELECT_RANGE;
        sel->start.ptr = a.data;
        sel->start.len = a.size;
        if (enif_is_identical(el[2], am_infinity))
            return 1;
        if (!get_bytes(env, el[2], &b))
            return 0;
        sel->end.ptr = b.data;
        sel->end.len = b.size;
        return 1;
    }
    return 0;
}

/* #{revision, type, key, value, version, create_revision} */
static ERL_NIF_TERM make_event_map(ErlNifEnv *env, const tidemark_event *e, const tm_arena *a)
{
    ERL_NIF_TERM keys[6] = {am_revision, am_type, am_key, am_value, am_version, am_create_revision};
    ERL_NIF_TERM vals[6];
    ERL_NIF_TERM map;
    vals[0] = make_u64(env, e->revision);
    vals[1] = e->kind == TIDEMARK_EVENT_DELETE ? am_delete : am_put;
    vals[2] = arena_bytes(env, a, e->key);
    vals[3] = arena_bytes(env, a, e->value);
    vals[4] = make_u64(env, e->version);
    vals[5] = make_u64(env, e->create_revision);
    enif_make_map_from_arrays(env, keys, vals, 6, &map);
    return map;
}

/* #{key, value, create_revision, mod_revision, version} for range results */
static ERL_NIF_TERM make_entry_map(ErlNifEnv *env, const tidemark_event *e, const tm_arena *a)
{
    ERL_NIF_TERM keys[5] = {am_key, am_value, am_create_revision, am_mod_revision, am_version};
    ERL_NIF_TERM vals[5];
    ERL_NIF_TERM map;
    vals[0] = arena_bytes(env, a, e->key);
    vals[1] = arena_bytes(env, a, e->value);
    vals[2] = make_u64(env, e->create_revision);
    vals[3] = make_u64(env, e->revision);
    vals[4] = make_u64(env, e->version);
    enif_make_map_from_arrays(env, keys, vals, 5, &map);
    return map;
}

/* The body of a watch message for one event. */
static ERL_NIF_TERM make_watch_body(ErlNifEnv *env, const tidemark_event *e)
{
    switch (e->kind) {
    case TIDEMARK_EVENT_PUT:
    case TIDEMARK_EVENT_DELETE:
        return make_event_map(env, e, NULL);
    case TIDEMARK_EVENT_PROGRESS:
        return enif_make_tuple2(env, am_progress, make_u64(env, e->revision));
    case TIDEMARK_EVENT_COMPACTED:
        return enif_make_tuple2(env, am_compacted, make_u64(env, e->revision));
    case TIDEMARK_EVENT_CLOSED:
        return am_closed;
    default: /* kinds of later features */
        return enif_make_tuple3(env, am_other, enif_make_uint(env, e->kind), make_event_map(env, e, NULL));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* open / close / status                                                                      */

/* open_nif(Path :: binary() (<<>> = memory), OptionsJson :: binary() (<<>> = none)) */
static ERL_NIF_TERM open_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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
    if (path.size) {
        cpath = enif_alloc(path.size + 1);
        memcpy(cpath, path.data, path.size);
        cpath[path.size] = 0;
    }
    if (opts.size) {
        copts = enif_alloc(opts.size + 1);
        memcpy(copts, opts.data, opts.size);
        copts[opts.size] = 0;
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

static ERL_NIF_TERM close_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    (void)argc;
    if (!get_store(env, argv[0], &r))
        return enif_make_badarg(env);
    core_close(r->core);
    return am_ok;
}

static ERL_NIF_TERM status_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    char *json = NULL;
    tidemark_status st;
    ERL_NIF_TERM result;
    (void)argc;
    if (!get_store(env, argv[0], &r))
        return enif_make_badarg(env);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_status_json(s, &json);
    result = st == TIDEMARK_OK ? make_ok(env, make_string_bin(env, json)) : status_error(env, st);
    core_done(r->core);
    tidemark_string_free(json);
    return result;
}

/* {Bytes, Commits, Revisions, FirstRevision} cut off the log's end on open (all 0: none). */
static ERL_NIF_TERM tail_repair_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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

static ERL_NIF_TERM current_revision_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return counter(env, argv, 0);
}

static ERL_NIF_TERM earliest_revision_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return counter(env, argv, 1);
}

static ERL_NIF_TERM watcher_count_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return counter(env, argv, 2);
}

static ERL_NIF_TERM version_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    (void)argv;
    return make_string_bin(env, tidemark_version());
}

/* ------------------------------------------------------------------------------------------ */
/* keys                                                                                       */

/* put_nif(Store, Key, Value, Expected :: -1 (unconditional) | N) */
static ERL_NIF_TERM put_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary k, v;
    ErlNifSInt64 expected;
    uint64_t rev = 0;
    tidemark_status st;
    ERL_NIF_TERM result;
    if (!get_store(env, argv[0], &r) || !get_bytes(env, argv[1], &k) || !get_bytes(env, argv[2], &v)
        || !enif_get_int64(env, argv[3], &expected) || expected < -1)
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "put_nif", put_nif);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    if (expected < 0)
        st = tidemark_store_put(s, k.data, k.size, v.data, v.size, &rev);
    else
        st = tidemark_store_put_if(s, k.data, k.size, v.data, v.size, (uint64_t)expected, &rev);
    result = st == TIDEMARK_OK ? make_ok(env, make_u64(env, rev)) : status_error(env, st);
    core_done(r->core);
    return result;
}

static ERL_NIF_TERM get_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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

static ERL_NIF_TERM delete_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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

/* batch_nif(Store, [{put, K, V} | {delete, K} | {require, K, Rev}]) */
static ERL_NIF_TERM batch_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    tidemark_batch *b;
    ERL_NIF_TERM list = argv[1], head, result;
    uint64_t first = 0;
    tidemark_status st = TIDEMARK_OK;
    if (!get_store(env, argv[0], &r) || !enif_is_list(env, list))
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "batch_nif", batch_nif);
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
static ERL_NIF_TERM range_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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
static ERL_NIF_TERM changes_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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
    st = tidemark_store_changes(s, &sel, from, to, (size_t)limit, &evs);
    result = st == TIDEMARK_OK ? events_answer(env, evs, 1) : status_error(env, st);
    core_done(r->core);
    tidemark_events_free(evs);
    return result;
}

static ERL_NIF_TERM compact_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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
/* push watches                                                                               */

/* Runs on a tidemark thread, never on two threads at once for the same watch. */
static void watch_callback(void *userdata, const tidemark_event *events, size_t count)
{
    tm_watch_res *w = userdata;
    ErlNifEnv *env = w->msg_env;
    uint64_t changes = 0;
    size_t i;
    for (i = 0; i < count; i++) {
        uint32_t kind = events[i].kind;
        ERL_NIF_TERM msg = enif_make_tuple3(env, am_tidemark_event, enif_make_resource(env, w),
                                            make_watch_body(env, &events[i]));
        /* A dead receiver is not an error here: its monitor removes the watch. */
        (void)enif_send(NULL, &w->pid, env, msg);
        enif_clear_env(env);
        if (kind != TIDEMARK_EVENT_PROGRESS && kind != TIDEMARK_EVENT_COMPACTED && kind != TIDEMARK_EVENT_CLOSED)
            changes++;
    }
    if (changes > 0) {
        int passive = 0;
        enif_mutex_lock(w->mtx);
        if (w->limited && w->credit > 0) {
            w->credit = w->credit > changes ? w->credit - changes : 0;
            passive = w->credit == 0;
        }
        enif_mutex_unlock(w->mtx);
        if (passive) {
            /* After this watch's events, from the same thread: it arrives after them. */
            ERL_NIF_TERM msg = enif_make_tuple2(env, am_tidemark_passive, enif_make_resource(env, w));
            (void)enif_send(NULL, &w->pid, env, msg);
            enif_clear_env(env);
        }
    }
}

/* Called exactly once, after the last callback. */
static void watch_drop(void *userdata)
{
    tm_watch_res *w = userdata;
    enif_mutex_lock(w->mtx);
    w->ended = 1;
    enif_mutex_unlock(w->mtx);
    if (w->msg_env != NULL) {
        enif_free_env(w->msg_env);
        w->msg_env = NULL;
    }
    /* Not the last reference of the library while a dispatcher thread runs (see the top). */
    enif_release_resource(w);
}

/* watch_nif(Store, Selector, Pid, StartRevision, Credit (0 = unlimited), MaxQueue, ProgressMs) */
static ERL_NIF_TERM watch_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    tidemark_selector sel;
    tidemark_watch_options opts = tidemark_watch_options_default();
    ErlNifPid pid;
    uint64_t start, credit, max_queue, progress;
    uint64_t id = 0;
    tm_watch_res *w;
    tidemark_status st;
    ERL_NIF_TERM term;
    int mon;
    (void)argc;
    if (!get_store(env, argv[0], &r) || !get_selector(env, argv[1], &sel) || !enif_get_local_pid(env, argv[2], &pid)
        || !get_u64(env, argv[3], &start) || !get_u64(env, argv[4], &credit) || !get_u64(env, argv[5], &max_queue)
        || !get_u64(env, argv[6], &progress) || max_queue > SIZE_MAX || progress > UINT32_MAX)
        return enif_make_badarg(env);
    opts.start_revision = start;
    opts.credit = credit;
    opts.max_queue = (size_t)max_queue;
    opts.progress_interval_ms = (uint32_t)progress;

    w = enif_alloc_resource(watch_type, sizeof *w);
    memset(w, 0, sizeof *w);
    w->core = r->core;
    core_keep(w->core);
    w->pid = pid;
    w->limited = credit > 0;
    w->credit = credit;
    w->mtx = enif_mutex_create("tidemark_watch");
    w->msg_env = enif_alloc_env();
    if (w->mtx == NULL || w->msg_env == NULL) {
        enif_release_resource(w);
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    }
    if ((s = core_use(r->core)) == NULL) {
        enif_release_resource(w);
        return closed_error(env);
    }
    enif_keep_resource(w); /* tidemark's reference, given back in watch_drop */
    st = tidemark_store_watch(s, &sel, &opts, watch_callback, w, watch_drop, &id);
    if (st != TIDEMARK_OK) {
        /* watch_drop has already run and released tidemark's reference. */
        ERL_NIF_TERM err = status_error(env, st);
        core_done(r->core);
        enif_release_resource(w);
        return err;
    }
    enif_mutex_lock(w->mtx);
    w->id = id;
    mon = enif_monitor_process(env, w, &pid, &w->mon);
    w->monitored = mon == 0;
    enif_mutex_unlock(w->mtx);
    if (mon != 0) {
        /* The receiver is already dead. */
        (void)tidemark_store_unwatch(s, id);
        core_done(r->core);
        enif_release_resource(w);
        return make_error(env, am_noproc);
    }
    core_done(r->core);
    term = enif_make_resource(env, w);
    enif_release_resource(w);
    return make_ok(env, term);
}

static int get_watch(ErlNifEnv *env, ERL_NIF_TERM t, tm_watch_res **out)
{
    return enif_get_resource(env, t, watch_type, (void **)out);
}

/* unwatch_nif(Store, Ref) */
static ERL_NIF_TERM unwatch_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tm_watch_res *w;
    tidemark_store *s;
    tidemark_status st;
    ERL_NIF_TERM result;
    uint64_t id;
    (void)argc;
    if (!get_store(env, argv[0], &r) || !get_watch(env, argv[1], &w) || w->core != r->core)
        return enif_make_badarg(env);
    enif_mutex_lock(w->mtx);
    id = w->id;
    enif_mutex_unlock(w->mtx);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_unwatch(s, id);
    result = st == TIDEMARK_OK ? am_ok : status_error(env, st);
    core_done(r->core);
    if (st == TIDEMARK_OK) {
        enif_mutex_lock(w->mtx);
        if (w->monitored) {
            (void)enif_demonitor_process(env, w, &w->mon);
            w->monitored = 0;
        }
        enif_mutex_unlock(w->mtx);
    }
    return result;
}

/* activate_nif(Ref, N): grants N more events (flow control); N = 2^64-1: no limit any more */
static ERL_NIF_TERM activate_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_watch_res *w;
    tidemark_store *s;
    uint64_t n;
    tidemark_status st;
    ERL_NIF_TERM result;
    (void)argc;
    if (!get_watch(env, argv[0], &w) || !get_u64(env, argv[1], &n))
        return enif_make_badarg(env);
    if ((s = core_use(w->core)) == NULL)
        return closed_error(env);
    /* Under the watch's lock, so the mirror and tidemark's count move together with respect
     * to the callback's decrement. The callback holds no tidemark lock while it waits here. */
    enif_mutex_lock(w->mtx);
    st = tidemark_store_watch_credit(s, w->id, n);
    if (st == TIDEMARK_OK && w->limited) {
        if (n == UINT64_MAX)
            w->limited = 0;
        else
            w->credit = w->credit > UINT64_MAX - n ? UINT64_MAX : w->credit + n;
    }
    enif_mutex_unlock(w->mtx);
    result = st == TIDEMARK_OK ? am_ok : status_error(env, st);
    core_done(w->core);
    return result;
}

/* watch_ended_nif(Ref) -> true once drop_userdata has run (used by the tests) */
static ERL_NIF_TERM watch_ended_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_watch_res *w;
    int ended;
    (void)argc;
    if (!get_watch(env, argv[0], &w))
        return enif_make_badarg(env);
    enif_mutex_lock(w->mtx);
    ended = w->ended;
    enif_mutex_unlock(w->mtx);
    return ended ? am_true : am_false;
}

/* ------------------------------------------------------------------------------------------ */
/* lockstep: servers and followers                                                            */

/*
 * Objects
 *  - server resource: one tidemark_lockstep_server. Its address and port are copied at start
 *    (immutable); the pointer is used under the resource's mutex and taken out of it to stop.
 *  - follower resource: one tidemark_lockstep_follower, plus a reference on the
 *    follower context below.
 *  - follower context (tm_fctx, C memory, two owners: the resource and tidemark, which gives
 *    its share back in drop_userdata): the message environment, the receiving pid and, while
 *    that pid is alive, a reference on the follower resource, so the callback can put the
 *    handle in its messages. The pid is monitored; when it dies that reference is dropped.
 *  - Both resources hold a reference on their store resource while they run, so a store is not
 *    garbage-collected (closed) under a running server or follower. close/1 still works: the
 *    C API gives them their own handle on the store, so a server then answers 503 and a
 *    follower into that store ends by itself. This file uses the store pointer only during
 *    tidemark_lockstep_serve/_follow, under the core's read lock, never afterwards.
 *  - A store resource reference is released by stop_server/1 or stop_follower/1 (a dirty
 *    scheduler) or by the reaper, never on a tidemark thread, so store_dtor still never runs on
 *    one. A follower resource may be released on the follower's thread (follower_drop, when a
 *    follower ended by itself); its destructor then only queues work for the reaper.
 *
 * Lifetimes (no cycles): follower resource -> context; the context points back at the
 * resource only while the receiving process is alive, and the handle is in the messages sent
 * to that process anyway. A follower is therefore garbage once nobody holds its handle and its
 * receiver (if any) has exited.
 *
 * Stopping: stop_server/1 and stop_follower/1 run on dirty I/O schedulers (the C stops join
 * threads: up to about a second for a server, connect_timeout_ms for a follower). A resource
 * that is garbage-collected hands its server or follower to the reaper, a thread of this
 * library that stops it (and then releases the store reference), so a destructor never blocks
 * a scheduler and never joins tidemark's threads from one of them. unload waits for the reaper.
 */

enum { LS_STOPPED = 0, LS_RUNNING = 1, LS_STOPPING = 2 };

/* Which of the two a lockstep resource runs; picks the C calls to status and stop it. */
typedef enum { LS_SERVER = 0, LS_FOLLOWER = 1 } ls_kind;

/* The part servers and followers share, the first member of both resources (so a pointer to
 * either resource is a pointer to it). Started, statused, stopped and destroyed by the ls_*
 * functions below, whatever the kind. */
typedef struct {
    ErlNifMutex *mtx;     /* guards state, handle, store (and a follower's monitor) */
    ErlNifCond *cond;     /* signalled when a stop completes */
    ls_kind kind;         /* read-only */
    int state;
    void *handle;         /* the tidemark_lockstep_server or _follower; NULL unless running */
    tm_store_res *store;  /* a store resource reference while running */
} tm_lockstep_res;

typedef struct {
    tm_lockstep_res ls;
    char *addr;                       /* copied at start */
    unsigned port;
} tm_server_res;

typedef struct tm_follower_res tm_follower_res;

typedef struct {
    ErlNifMutex *mtx;       /* guards env, res, dropped; held by the callback while it sends */
    ErlNifEnv *env;         /* messages are built here; NULL once dropped or without a pid */
    ErlNifPid pid;          /* read-only */
    tm_follower_res *res;   /* a reference on the resource while messages go to a live pid */
    int dropped;            /* drop_userdata ran */
    int refs;               /* atomic: the resource's and tidemark's */
} tm_fctx;

struct tm_follower_res {
    tm_lockstep_res ls;
    tm_fctx *ctx;           /* read-only after creation */
    int monitored;          /* guarded by ls.mtx, like mon */
    ErlNifMonitor mon;
};

static ErlNifResourceType *server_type;
static ErlNifResourceType *follower_type;

/* By kind: the resource type, and the name of the resource's mutex and condition. */
static ErlNifResourceType **const ls_types[] = {&server_type, &follower_type};
static char *const ls_names[] = {"tidemark_server", "tidemark_follower"};

/* Stops a running server or follower (joining its threads), then lets go of the store
 * reference it held. Either may be NULL. */
static void ls_stop_now(ls_kind kind, void *handle, tm_store_res *store)
{
    if (handle != NULL) {
        if (kind == LS_SERVER)
            tidemark_lockstep_server_stop(handle);
        else
            tidemark_lockstep_follower_stop(handle);
    }
    if (store != NULL)
        enif_release_resource(store); /* may close the store (on this thread) */
}

/* --- the reaper: stops what garbage-collected resources were running ---------------------- */

typedef struct tm_reap {
    struct tm_reap *next;
    ls_kind kind;
    void *handle;
    tm_store_res *store;
} tm_reap;

static ErlNifMutex *reap_lock; /* guards the fields below */
static ErlNifCond *reap_cond;
static tm_reap *reap_head, *reap_tail;
static int reap_started, reap_quit;
static ErlNifTid reap_tid;

static void *reaper_main(void *arg)
{
    (void)arg;
    enif_mutex_lock(reap_lock);
    for (;;) {
        tm_reap *it;
        while (reap_head == NULL && !reap_quit)
            enif_cond_wait(reap_cond, reap_lock);
        if (reap_head == NULL)
            break; /* asked to quit, and nothing is left */
        it = reap_head;
        reap_head = it->next;
        if (reap_head == NULL)
            reap_tail = NULL;
        enif_mutex_unlock(reap_lock);
        ls_stop_now(it->kind, it->handle, it->store);
        enif_free(it);
        enif_mutex_lock(reap_lock);
    }
    enif_mutex_unlock(reap_lock);
    return NULL;
}

/* Called from destructors, on whatever thread dropped the last reference: never blocks. */
static void reap_later(ls_kind kind, void *handle, tm_store_res *store)
{
    tm_reap *it = enif_alloc(sizeof *it);
    if (it != NULL) {
        it->next = NULL;
        it->kind = kind;
        it->handle = handle;
        it->store = store;
        enif_mutex_lock(reap_lock);
        if (!reap_started && !reap_quit
            && enif_thread_create("tidemark_reaper", &reap_tid, reaper_main, NULL, NULL) == 0)
            reap_started = 1;
        if (reap_started && !reap_quit) {
            if (reap_tail != NULL)
                reap_tail->next = it;
            else
                reap_head = it;
            reap_tail = it;
            enif_cond_signal(reap_cond);
            enif_mutex_unlock(reap_lock);
            return;
        }
        enif_mutex_unlock(reap_lock);
        enif_free(it);
    }
    /* No reaper (out of memory or threads, or unloading): stop on this thread. */
    ls_stop_now(kind, handle, store);
}

/* Stops the reaper once it has stopped everything queued (unload). */
static void reaper_shutdown(void)
{
    int started;
    if (reap_lock == NULL)
        return;
    enif_mutex_lock(reap_lock);
    reap_quit = 1;
    started = reap_started;
    enif_cond_broadcast(reap_cond);
    enif_mutex_unlock(reap_lock);
    if (started)
        enif_thread_join(reap_tid, NULL);
    enif_mutex_lock(reap_lock);
    reap_started = 0;
    reap_quit = 0;
    enif_mutex_unlock(reap_lock);
}

/* --- destructors and monitors ------------------------------------------------------------- */

/* The shared part of both destructors: what still runs goes to the reaper. Nobody else can
 * reach the resource any more: no lock needed. */
static void ls_dtor(tm_lockstep_res *r)
{
    if (r->handle != NULL || r->store != NULL)
        reap_later(r->kind, r->handle, r->store);
    r->handle = NULL;
    r->store = NULL;
    if (r->cond != NULL)
        enif_cond_destroy(r->cond);
    if (r->mtx != NULL)
        enif_mutex_destroy(r->mtx);
}

static void server_dtor(ErlNifEnv *env, void *obj)
{
    tm_server_res *r = obj;
    (void)env;
    ls_dtor(&r->ls);
    if (r->addr != NULL)
        enif_free(r->addr);
}

static void fctx_release(tm_fctx *c)
{
    if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        if (c->env != NULL)
            enif_free_env(c->env);
        if (c->mtx != NULL)
            enif_mutex_destroy(c->mtx);
        enif_free(c);
    }
}

static void follower_dtor(ErlNifEnv *env, void *obj)
{
    tm_follower_res *r = obj;
    (void)env;
    /* The context holds no reference on the resource now (or it would not be dying). */
    ls_dtor(&r->ls);
    if (r->ctx != NULL)
        fctx_release(r->ctx);
    r->ctx = NULL;
}

/* With r->ls.mtx held: no more down callback for the receiving process. */
static void follower_demonitor(ErlNifEnv *env, tm_follower_res *r)
{
    if (r->monitored) {
        (void)enif_demonitor_process(env, r, &r->mon);
        r->monitored = 0;
    }
}

/* The receiving process died: no more messages, and the context lets go of the handle, so a
 * follower nobody else references is garbage-collected (and stopped). */
static void follower_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    tm_follower_res *r = obj;
    tm_follower_res *held;
    (void)env;
    (void)pid;
    (void)mon;
    enif_mutex_lock(r->ls.mtx);
    r->monitored = 0;
    enif_mutex_unlock(r->ls.mtx);
    enif_mutex_lock(r->ctx->mtx);
    held = r->ctx->res;
    r->ctx->res = NULL;
    enif_mutex_unlock(r->ctx->mtx);
    if (held != NULL)
        enif_release_resource(held); /* ERTS keeps obj alive until this callback returns */
}

/* --- follower callbacks (on the follower's own thread) ------------------------------------ */

static ERL_NIF_TERM make_opt_bytes(ErlNifEnv *env, tidemark_bytes b)
{
    return b.len == 0 ? am_undefined : make_bytes(env, b);
}

static ERL_NIF_TERM make_lockstep_body(ErlNifEnv *env, const tidemark_lockstep_event *e)
{
    ERL_NIF_TERM keys[8] = {am_kind, am_records, am_writes, am_revision,
                            am_retry_ms, am_cursor, am_message, am_line};
    ERL_NIF_TERM vals[8];
    ERL_NIF_TERM map;
    switch (e->kind) {
    case TIDEMARK_LOCKSTEP_CONNECTED: vals[0] = am_connected; break;
    case TIDEMARK_LOCKSTEP_APPLIED: vals[0] = am_applied; break;
    case TIDEMARK_LOCKSTEP_MALFORMED: vals[0] = am_malformed; break;
    case TIDEMARK_LOCKSTEP_ERROR: vals[0] = am_error; break;
    case TIDEMARK_LOCKSTEP_RESYNC_STARTED: vals[0] = am_resync_started; break;
    case TIDEMARK_LOCKSTEP_RESYNC_DONE: vals[0] = am_resync_done; break;
    default: vals[0] = enif_make_uint(env, e->kind); break; /* kinds of later versions */
    }
    vals[1] = make_u64(env, e->records);
    vals[2] = make_u64(env, e->writes);
    vals[3] = make_u64(env, e->revision);
    vals[4] = make_u64(env, e->retry_ms);
    /* The cursor's JSON text; `null` (no record seen yet) and no cursor are `undefined`. */
    if (e->cursor.len == 4 && memcmp(e->cursor.ptr, "null", 4) == 0)
        vals[5] = am_undefined;
    else
        vals[5] = make_opt_bytes(env, e->cursor);
    vals[6] = make_opt_bytes(env, e->message);
    vals[7] = make_opt_bytes(env, e->line);
    enif_make_map_from_arrays(env, keys, vals, 8, &map);
    return map;
}

/* One call at a time, on the follower's thread. Every borrowed string is copied into the
 * message before enif_send. */
static void follower_callback(void *userdata, const tidemark_lockstep_event *event)
{
    tm_fctx *c = userdata;
    enif_mutex_lock(c->mtx);
    if (c->res != NULL && c->env != NULL) {
        ErlNifEnv *env = c->env;
        ERL_NIF_TERM msg = enif_make_tuple3(env, am_tidemark_lockstep, enif_make_resource(env, c->res),
                                            make_lockstep_body(env, event));
        /* A dead receiver is not an error: its monitor is about to fire. */
        (void)enif_send(NULL, &c->pid, env, msg);
        enif_clear_env(env);
    }
    enif_mutex_unlock(c->mtx);
}

/* Exactly once, after the last callback: inside tidemark_lockstep_follower_stop (from
 * stop_follower/1, whose argument keeps the resource alive, or from the reaper, when the
 * context holds no resource reference any more), or inside a failed tidemark_lockstep_follow. */
static void follower_drop(void *userdata)
{
    tm_fctx *c = userdata;
    tm_follower_res *held;
    enif_mutex_lock(c->mtx);
    c->dropped = 1;
    held = c->res;
    c->res = NULL;
    if (c->env != NULL) {
        enif_free_env(c->env);
        c->env = NULL;
    }
    enif_mutex_unlock(c->mtx);
    if (held != NULL)
        enif_release_resource(held);
    fctx_release(c);
}

/* --- NIFs ---------------------------------------------------------------------------------- */

/* A NUL-terminated copy of a binary (NULL for a NUL inside); free with enif_free. */
static char *cstring(const ErlNifBinary *b)
{
    char *s;
    if (memchr(b->data, 0, b->size) != NULL)
        return NULL;
    s = enif_alloc(b->size + 1);
    if (s == NULL)
        return NULL;
    memcpy(s, b->data, b->size);
    s[b->size] = 0;
    return s;
}

/* --- what servers and followers share ---------------------------------------------------- */

/* A new, stopped resource of that kind (size bytes, zeroed); its mtx or cond is NULL when
 * out of memory. Released by the caller. */
static void *ls_alloc(ls_kind kind, size_t size)
{
    tm_lockstep_res *r = enif_alloc_resource(*ls_types[kind], size);
    memset(r, 0, size);
    r->kind = kind;
    r->mtx = enif_mutex_create(ls_names[kind]);
    r->cond = enif_cond_create(ls_names[kind]);
    return r;
}

/* The resource of that kind t is a handle of, or NULL. */
static void *ls_get(ErlNifEnv *env, ERL_NIF_TERM t, ls_kind kind)
{
    void *obj;
    return enif_get_resource(env, t, *ls_types[kind], &obj) ? obj : NULL;
}

/* The resource now runs handle, and keeps store from being collected while it does. */
static void ls_run(tm_lockstep_res *r, void *handle, tm_store_res *store)
{
    enif_mutex_lock(r->mtx);
    r->handle = handle;
    r->store = store;
    enif_keep_resource(store);
    r->state = LS_RUNNING;
    enif_mutex_unlock(r->mtx);
}

/* server_status_nif and follower_status_nif: {ok, Json}, or {error, closed} once stopped. */
static ERL_NIF_TERM ls_status(ErlNifEnv *env, ERL_NIF_TERM t, ls_kind kind)
{
    tm_lockstep_res *r = ls_get(env, t, kind);
    char *json = NULL;
    tidemark_status st;
    ERL_NIF_TERM result;
    if (r == NULL)
        return enif_make_badarg(env);
    enif_mutex_lock(r->mtx);
    if (r->state != LS_RUNNING) {
        enif_mutex_unlock(r->mtx);
        return closed_error(env);
    }
    st = kind == LS_SERVER ? tidemark_lockstep_server_status_json(r->handle, &json)
                           : tidemark_lockstep_follower_status_json(r->handle, &json);
    result = st == TIDEMARK_OK ? make_ok(env, make_string_bin(env, json)) : status_error(env, st);
    enif_mutex_unlock(r->mtx);
    tidemark_string_free(json);
    return result;
}

/* stop_server_nif and stop_follower_nif, on dirty I/O schedulers: the C stop joins threads.
 * A concurrent second call waits for the first. */
static ERL_NIF_TERM ls_stop(ErlNifEnv *env, ERL_NIF_TERM t, ls_kind kind)
{
    tm_lockstep_res *r = ls_get(env, t, kind);
    void *handle;
    tm_store_res *store;
    if (r == NULL)
        return enif_make_badarg(env);
    enif_mutex_lock(r->mtx);
    while (r->state == LS_STOPPING)
        enif_cond_wait(r->cond, r->mtx);
    if (r->state == LS_RUNNING) {
        r->state = LS_STOPPING;
        handle = r->handle;
        store = r->store;
        r->handle = NULL;
        r->store = NULL;
        enif_mutex_unlock(r->mtx);
        /* A follower's follower_drop runs inside: the context lets go of the resource (t
         * keeps it). */
        ls_stop_now(kind, handle, store);
        enif_mutex_lock(r->mtx);
        if (kind == LS_FOLLOWER)
            follower_demonitor(env, (tm_follower_res *)r);
        r->state = LS_STOPPED;
        enif_cond_broadcast(r->cond);
    }
    enif_mutex_unlock(r->mtx);
    return am_ok;
}

/* serve_nif(Store, Addr :: binary() | default, OptionsJson :: binary() (<<>> = none)) */
static ERL_NIF_TERM serve_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *sr;
    tidemark_store *s;
    ErlNifBinary addr_bin, opts_bin;
    char *caddr = NULL, *copts = NULL;
    int default_addr;
    tidemark_lockstep_server *server = NULL;
    tidemark_status st;
    tm_server_res *r;
    const char *bound;
    ERL_NIF_TERM term;
    (void)argc;
    default_addr = enif_is_identical(argv[1], am_default);
    if (!get_store(env, argv[0], &sr) || (!default_addr && !enif_inspect_binary(env, argv[1], &addr_bin))
        || !enif_inspect_binary(env, argv[2], &opts_bin))
        return enif_make_badarg(env);
    if ((!default_addr && memchr(addr_bin.data, 0, addr_bin.size)) || memchr(opts_bin.data, 0, opts_bin.size))
        return enif_make_badarg(env);
    if ((!default_addr && (caddr = cstring(&addr_bin)) == NULL)
        || (opts_bin.size > 0 && (copts = cstring(&opts_bin)) == NULL)) {
        if (caddr)
            enif_free(caddr);
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    }
    if ((s = core_use(sr->core)) == NULL) {
        if (caddr)
            enif_free(caddr);
        if (copts)
            enif_free(copts);
        return closed_error(env);
    }
    st = tidemark_lockstep_serve(s, caddr, copts, &server);
    if (caddr)
        enif_free(caddr);
    if (copts)
        enif_free(copts);
    if (st != TIDEMARK_OK) {
        ERL_NIF_TERM err = status_error(env, st);
        core_done(sr->core);
        return err;
    }
    core_done(sr->core);

    r = ls_alloc(LS_SERVER, sizeof *r);
    bound = tidemark_lockstep_server_addr(server);
    r->addr = enif_alloc(strlen(bound ? bound : "") + 1);
    if (r->ls.mtx == NULL || r->ls.cond == NULL || r->addr == NULL) {
        tidemark_lockstep_server_stop(server);
        enif_release_resource(r);
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    }
    strcpy(r->addr, bound ? bound : "");
    r->port = tidemark_lockstep_server_port(server);
    ls_run(&r->ls, server, sr);
    term = enif_make_resource(env, r);
    enif_release_resource(r);
    return make_ok(env, term);
}

static ERL_NIF_TERM server_addr_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_server_res *r = ls_get(env, argv[0], LS_SERVER);
    (void)argc;
    return r == NULL ? enif_make_badarg(env) : make_string_bin(env, r->addr);
}

static ERL_NIF_TERM server_port_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_server_res *r = ls_get(env, argv[0], LS_SERVER);
    (void)argc;
    return r == NULL ? enif_make_badarg(env) : enif_make_uint(env, r->port);
}

static ERL_NIF_TERM server_status_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return ls_status(env, argv[0], LS_SERVER);
}

/* Dirty I/O: joins the server's threads (up to about a second). */
static ERL_NIF_TERM stop_server_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return ls_stop(env, argv[0], LS_SERVER);
}

/* follow_nif(Store, Url :: binary(), OptionsJson :: binary(), Pid | none) */
static ERL_NIF_TERM follow_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *sr;
    tidemark_store *s;
    ErlNifBinary url_bin, opts_bin;
    char *curl = NULL, *copts = NULL;
    ErlNifPid pid;
    int notify;
    tidemark_lockstep_follower *follower = NULL;
    tidemark_status st;
    tm_follower_res *r;
    tm_fctx *c;
    ERL_NIF_TERM term, result;
    (void)argc;
    notify = enif_get_local_pid(env, argv[3], &pid);
    if (!get_store(env, argv[0], &sr) || !enif_inspect_binary(env, argv[1], &url_bin)
        || !enif_inspect_binary(env, argv[2], &opts_bin) || (!notify && !enif_is_identical(argv[3], am_none)))
        return enif_make_badarg(env);
    if (memchr(url_bin.data, 0, url_bin.size) || memchr(opts_bin.data, 0, opts_bin.size))
        return enif_make_badarg(env);

    r = ls_alloc(LS_FOLLOWER, sizeof *r);
    c = enif_alloc(sizeof *c);
    if (c != NULL) {
        memset(c, 0, sizeof *c);
        c->refs = 1; /* the resource's */
        c->mtx = enif_mutex_create("tidemark_follower_ctx");
        c->env = notify ? enif_alloc_env() : NULL;
        r->ctx = c;
    }
    curl = cstring(&url_bin);
    copts = opts_bin.size > 0 ? cstring(&opts_bin) : NULL;
    if (r->ls.mtx == NULL || r->ls.cond == NULL || c == NULL || c->mtx == NULL || (notify && c->env == NULL)
        || curl == NULL || (opts_bin.size > 0 && copts == NULL)) {
        result = enif_raise_exception(env, enif_make_atom(env, "enomem"));
        goto out;
    }
    if (notify) {
        c->pid = pid;
        if (enif_monitor_process(env, r, &pid, &r->mon) != 0) {
            result = make_error(env, am_noproc); /* the receiver is already dead */
            goto out;
        }
        r->monitored = 1;
        enif_keep_resource(r); /* the context's reference, for the handle in messages */
        c->res = r;
    }
    if ((s = core_use(sr->core)) == NULL) {
        result = closed_error(env);
        goto undo;
    }
    __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED); /* tidemark's, given back in follower_drop */
    st = tidemark_lockstep_follow(s, curl, copts, notify ? follower_callback : NULL, c, follower_drop, &follower);
    if (st != TIDEMARK_OK) {
        /* follower_drop has run: the context let go of the resource. */
        result = status_error(env, st);
        core_done(sr->core);
        goto undo;
    }
    core_done(sr->core);
    ls_run(&r->ls, follower, sr);
    term = enif_make_resource(env, r);
    result = make_ok(env, term);
    goto out;
undo:
    {
        tm_follower_res *held;
        enif_mutex_lock(c->mtx);
        held = c->res;
        c->res = NULL;
        enif_mutex_unlock(c->mtx);
        if (held != NULL)
            enif_release_resource(held);
        enif_mutex_lock(r->ls.mtx);
        follower_demonitor(env, r);
        enif_mutex_unlock(r->ls.mtx);
    }
out:
    if (curl)
        enif_free(curl);
    if (copts)
        enif_free(copts);
    enif_release_resource(r);
    return result;
}

static ERL_NIF_TERM follower_status_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return ls_status(env, argv[0], LS_FOLLOWER);
}

/* Dirty I/O: takes up to about connect_timeout_ms. When it returns, no message for this
 * follower will be sent any more. */
static ERL_NIF_TERM stop_follower_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return ls_stop(env, argv[0], LS_FOLLOWER);
}

/* follower_dropped_nif(Follower) -> true once drop_userdata has run (used by the tests) */
static ERL_NIF_TERM follower_dropped_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_follower_res *r = ls_get(env, argv[0], LS_FOLLOWER);
    int dropped;
    (void)argc;
    if (r == NULL)
        return enif_make_badarg(env);
    enif_mutex_lock(r->ctx->mtx);
    dropped = r->ctx->dropped;
    enif_mutex_unlock(r->ctx->mtx);
    return dropped ? am_true : am_false;
}

/* ------------------------------------------------------------------------------------------ */
/* load / upgrade / unload                                                                    */

static int initialized = 0;

static int open_types(ErlNifEnv *env, ErlNifResourceFlags flags)
{
    ErlNifResourceTypeInit store_init = {0};
    ErlNifResourceTypeInit watch_init = {0};
    ErlNifResourceTypeInit server_init = {0};
    ErlNifResourceTypeInit follower_init = {0};
    store_init.dtor = store_dtor;
    watch_init.dtor = watch_dtor;
    watch_init.down = watch_down;
    server_init.dtor = server_dtor;
    follower_init.dtor = follower_dtor;
    follower_init.down = follower_down;
    store_type = enif_open_resource_type_x(env, "tidemark_store", &store_init, flags, NULL);
    watch_type = enif_open_resource_type_x(env, "tidemark_watch", &watch_init, flags, NULL);
    server_type = enif_open_resource_type_x(env, "tidemark_lockstep_server", &server_init, flags, NULL);
    follower_type = enif_open_resource_type_x(env, "tidemark_lockstep_follower", &follower_init, flags, NULL);
    return store_type != NULL && watch_type != NULL && server_type != NULL && follower_type != NULL;
}

static int init_globals(void)
{
    if (initialized)
        return 1;
    open_lock = enif_mutex_create("tidemark_open_list");
    reap_lock = enif_mutex_create("tidemark_reaper");
    reap_cond = enif_cond_create("tidemark_reaper");
    if (open_lock == NULL || reap_lock == NULL || reap_cond == NULL)
        return 0;
    open_list.next = open_list.prev = &open_list;
    initialized = 1;
    return 1;
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info)
{
    (void)priv;
    (void)info;
    init_atoms(env);
    if (!init_globals())
        return 1;
    return open_types(env, ERL_NIF_RT_CREATE) ? 0 : 1;
}

static int upgrade(ErlNifEnv *env, void **priv, void **old_priv, ERL_NIF_TERM info)
{
    (void)priv;
    (void)old_priv;
    (void)info;
    init_atoms(env);
    if (!init_globals())
        return 1;
    return open_types(env, ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER) ? 0 : 1;
}

/* ERTS calls unload only when no resource of this library is left, so normally every store is
 * closed already; close any that is not, so no tidemark thread outlives the code. */
static void unload(ErlNifEnv *env, void *priv)
{
    (void)env;
    (void)priv;
    if (!initialized)
        return;
    /* Servers and followers of collected handles: stopped before the code goes away. */
    reaper_shutdown();
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

static ErlNifFunc nif_funcs[] = {
    {"open_nif", 2, open_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"close_nif", 1, close_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"status_nif", 1, status_nif, 0},
    {"tail_repair_nif", 1, tail_repair_nif, 0},
    {"current_revision_nif", 1, current_revision_nif, 0},
    {"earliest_revision_nif", 1, earliest_revision_nif, 0},
    {"watcher_count_nif", 1, watcher_count_nif, 0},
    {"version_nif", 0, version_nif, 0},
    {"put_nif", 4, put_nif, 0},
    {"get_nif", 2, get_nif, 0},
    {"delete_nif", 2, delete_nif, 0},
    {"batch_nif", 2, batch_nif, 0},
    {"range_nif", 3, range_nif, 0},
    {"range_dirty_nif", 3, range_nif, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"changes_nif", 5, changes_nif, 0},
    {"changes_dirty_nif", 5, changes_nif, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"compact_nif", 2, compact_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"watch_nif", 7, watch_nif, 0},
    {"unwatch_nif", 2, unwatch_nif, ERL_NIF_DIRTY_JOB_IO_BOUND}, /* waits for a running callback */
    {"activate_nif", 2, activate_nif, 0},
    {"watch_ended_nif", 1, watch_ended_nif, 0},
    /* lockstep: starting may resolve a host name; stopping joins threads */
    {"serve_nif", 3, serve_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"server_addr_nif", 1, server_addr_nif, 0},
    {"server_port_nif", 1, server_port_nif, 0},
    {"server_status_nif", 1, server_status_nif, 0},
    {"stop_server_nif", 1, stop_server_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"follow_nif", 4, follow_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"follower_status_nif", 1, follower_status_nif, 0},
    {"stop_follower_nif", 1, stop_follower_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"follower_dropped_nif", 1, follower_dropped_nif, 0},
};

ERL_NIF_INIT(tidemark, nif_funcs, load, NULL, upgrade, unload)
