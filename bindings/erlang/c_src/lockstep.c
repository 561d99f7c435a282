/* lockstep over HTTP: the server and follower resources, the reaper, and their NIFs. */
#include "tidemark_nif.h"

#include <string.h>


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
    void (*fn)(void *); /* reap_call's work (then the fields below are unused), or NULL */
    void *arg;
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
        if (it->fn != NULL)
            it->fn(it->arg);
        else
            ls_stop_now(it->kind, it->handle, it->store);
        enif_free(it);
        enif_mutex_lock(reap_lock);
    }
    enif_mutex_unlock(reap_lock);
    return NULL;
}

/* Queues `it' for the reaper (starting it if needed); 0 if there is none (out of threads, or
 * unloading): the caller then does the work itself. */
static int reap_queue(tm_reap *it)
{
    it->next = NULL;
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
        return 1;
    }
    enif_mutex_unlock(reap_lock);
    return 0;
}

int reap_call(void (*fn)(void *), void *arg)
{
    tm_reap *it = enif_alloc(sizeof *it);
    if (it == NULL)
        return 0;
    memset(it, 0, sizeof *it);
    it->fn = fn;
    it->arg = arg;
    if (reap_queue(it))
        return 1;
    enif_free(it);
    return 0;
}

/* Called from destructors, on whatever thread dropped the last reference: never blocks. */
static void reap_later(ls_kind kind, void *handle, tm_store_res *store)
{
    tm_reap *it = enif_alloc(sizeof *it);
    if (it != NULL) {
        memset(it, 0, sizeof *it);
        it->kind = kind;
        it->handle = handle;
        it->store = store;
        if (reap_queue(it))
            return;
        enif_free(it);
    }
    /* No reaper (out of memory or threads, or unloading): stop on this thread. */
    ls_stop_now(kind, handle, store);
}

/* Stops the reaper once it has stopped everything queued (unload). */
void lockstep_unload(void)
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
ERL_NIF_TERM serve_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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

ERL_NIF_TERM server_addr_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_server_res *r = ls_get(env, argv[0], LS_SERVER);
    (void)argc;
    return r == NULL ? enif_make_badarg(env) : make_string_bin(env, r->addr);
}

ERL_NIF_TERM server_port_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_server_res *r = ls_get(env, argv[0], LS_SERVER);
    (void)argc;
    return r == NULL ? enif_make_badarg(env) : enif_make_uint(env, r->port);
}

ERL_NIF_TERM server_status_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return ls_status(env, argv[0], LS_SERVER);
}

/* Dirty I/O: joins the server's threads (up to about a second). */
ERL_NIF_TERM stop_server_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return ls_stop(env, argv[0], LS_SERVER);
}

/* follow_nif(Store, Url :: binary(), OptionsJson :: binary(), Pid | none) */
ERL_NIF_TERM follow_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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

ERL_NIF_TERM follower_status_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return ls_status(env, argv[0], LS_FOLLOWER);
}

/* Dirty I/O: takes up to about connect_timeout_ms. When it returns, no message for this
 * follower will be sent any more. */
ERL_NIF_TERM stop_follower_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    return ls_stop(env, argv[0], LS_FOLLOWER);
}

/* follower_dropped_nif(Follower) -> true once drop_userdata has run (used by the tests) */
ERL_NIF_TERM follower_dropped_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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

int lockstep_load(ErlNifEnv *env, ErlNifResourceFlags flags)
{
    ErlNifResourceTypeInit server_init = {0};
    ErlNifResourceTypeInit follower_init = {0};
    if (reap_lock == NULL) {
        reap_lock = enif_mutex_create("tidemark_reaper");
        reap_cond = enif_cond_create("tidemark_reaper");
        if (reap_lock == NULL || reap_cond == NULL)
            return 0;
    }
    server_init.dtor = server_dtor;
    follower_init.dtor = follower_dtor;
    follower_init.down = follower_down;
    server_type = enif_open_resource_type_x(env, "tidemark_lockstep_server", &server_init, flags, NULL);
    follower_type = enif_open_resource_type_x(env, "tidemark_lockstep_follower", &follower_init, flags, NULL);
    return server_type != NULL && follower_type != NULL;
}
