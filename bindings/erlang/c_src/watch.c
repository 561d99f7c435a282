/* The watch resource (a push watch; see tidemark_nif.h for its lifetime) and its NIFs. A
 * subscription (subscriptions.c) is the same resource with its own selector and message body. */
#include "tidemark_nif.h"

#include <string.h>

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
    int cancelled;     /* atomic: unwatch started or the owner died; the callback sends no more */
    int monitored;
    ErlNifMonitor mon;
    ErlNifPid pid;     /* receiver; read-only after creation */
    ERL_NIF_TERM strukt; /* an atom: event maps get '__struct__' => it (Elixir); 0 = none */
    ErlNifEnv *msg_env; /* used only by the (single) running callback; freed at drop */
} tm_watch_res;

static ErlNifResourceType *watch_type;

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
    __atomic_store_n(&w->cancelled, 1, __ATOMIC_RELEASE); /* nobody to send to */
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

/* The map with '__struct__' => strukt when strukt is an atom (0 = the map as it is). */
ERL_NIF_TERM with_struct(ErlNifEnv *env, ERL_NIF_TERM map, ERL_NIF_TERM strukt)
{
    if (strukt != 0)
        (void)enif_make_map_put(env, map, am___struct__, strukt, &map);
    return map;
}

/* The body of a watch message for one event. */
static ERL_NIF_TERM make_watch_body(ErlNifEnv *env, ERL_NIF_TERM strukt, const tidemark_event *e)
{
    switch (e->kind) {
    case TIDEMARK_EVENT_PUT:
    case TIDEMARK_EVENT_DELETE:
        return with_struct(env, make_event_map(env, e, NULL), strukt);
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


/* The body of item i of a watch delivery. */
static ERL_NIF_TERM watch_body(ErlNifEnv *env, ERL_NIF_TERM strukt, const void *items, size_t i, int *change)
{
    const tidemark_event *e = (const tidemark_event *)items + i;
    *change = e->kind != TIDEMARK_EVENT_PROGRESS && e->kind != TIDEMARK_EVENT_COMPACTED
              && e->kind != TIDEMARK_EVENT_CLOSED;
    return make_watch_body(env, strukt, e);
}

/* Runs on a tidemark thread, never on two threads at once for the same watch. */
void watch_send(void *userdata, ERL_NIF_TERM tag, const void *items, size_t count, tm_body_fn body)
{
    tm_watch_res *w = userdata;
    ErlNifEnv *env = w->msg_env;
    uint64_t changes = 0;
    size_t i;
    for (i = 0; i < count; i++) {
        int change = 0;
        /* Stop within a delivery too: nothing more after unwatch/1 started. */
        if (__atomic_load_n(&w->cancelled, __ATOMIC_ACQUIRE))
            return;
        ERL_NIF_TERM b = body(env, w->strukt, items, i, &change);
        ERL_NIF_TERM msg = enif_make_tuple3(env, tag, enif_make_resource(env, w), b);
        /* A dead receiver is not an error here: its monitor removes the watch. */
        (void)enif_send(NULL, &w->pid, env, msg);
        enif_clear_env(env);
        if (change)
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

static void watch_callback(void *userdata, const tidemark_event *events, size_t count)
{
    watch_send(userdata, am_tidemark_event, events, count, watch_body);
}

/* Called exactly once, after the last callback. */
void watch_drop(void *userdata)
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

/* Starts a push watch of any kind from argv = (Store, _Selector, Pid, StartRevision, Credit
 * (0 = unlimited), MaxQueue, ProgressMs, Struct (an atom; undefined = plain maps)): `reg`
 * registers it with `selector` (parsed by the caller), this resource as userdata and watch_drop. */
ERL_NIF_TERM watch_start(ErlNifEnv *env, const ERL_NIF_TERM argv[], const void *selector, tm_register_fn reg)
{
    tm_store_res *r;
    tidemark_store *s;
    tidemark_watch_options opts = tidemark_watch_options_default();
    ErlNifPid pid;
    uint64_t start, credit, max_queue, progress;
    uint64_t id = 0;
    tm_watch_res *w;
    tidemark_status st;
    ERL_NIF_TERM term;
    int mon;
    if (!get_store(env, argv[0], &r) || !enif_get_local_pid(env, argv[2], &pid)
        || !get_u64(env, argv[3], &start) || !get_u64(env, argv[4], &credit) || !get_u64(env, argv[5], &max_queue)
        || !get_u64(env, argv[6], &progress) || max_queue > SIZE_MAX || progress > UINT32_MAX
        || !enif_is_atom(env, argv[7]))
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
    w->strukt = enif_is_identical(argv[7], am_undefined) ? 0 : argv[7]; /* atoms need no env */
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
    st = reg(s, selector, &opts, w, &id);
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

static tidemark_status watch_register(tidemark_store *s, const void *selector, const tidemark_watch_options *opts,
                                      void *w, uint64_t *id)
{
    return tidemark_store_watch(s, selector, opts, watch_callback, w, watch_drop, id);
}

/* watch_nif(Store, Selector, Pid, StartRevision, Credit (0 = unlimited), MaxQueue, ProgressMs,
 *           Struct (an atom; undefined = plain maps)) */
ERL_NIF_TERM watch_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tidemark_selector sel;
    (void)argc;
    if (!get_selector(env, argv[1], &sel))
        return enif_make_badarg(env);
    return watch_start(env, argv, &sel, watch_register);
}

static int get_watch(ErlNifEnv *env, ERL_NIF_TERM t, tm_watch_res **out)
{
    return enif_get_resource(env, t, watch_type, (void **)out);
}

/* unwatch_nif(Store, Ref) */
ERL_NIF_TERM unwatch_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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
    __atomic_store_n(&w->cancelled, 1, __ATOMIC_RELEASE);
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
ERL_NIF_TERM activate_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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
ERL_NIF_TERM watch_ended_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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

int watch_load(ErlNifEnv *env, ErlNifResourceFlags flags)
{
    ErlNifResourceTypeInit init = {0};
    init.dtor = watch_dtor;
    init.down = watch_down;
    watch_type = enif_open_resource_type_x(env, "tidemark_watch", &init, flags, NULL);
    return watch_type != NULL;
}
