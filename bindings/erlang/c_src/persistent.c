/* Persistent subscriptions: create / delete / list / parked / replay on a store, and the
 * consumer resource (the Erlang SubRef). Delivery state, timeouts, redelivery and parking are
 * tidemark's (tidemark_subscription_*); this file only turns its pull consumer into messages.
 *
 * Objects
 *  - consumer resource (tm_psub): one tidemark_subscription, the receiving pid (monitored),
 *    the message environment, the {active, N} credit and a pump thread of this library.
 *  - The pump thread holds a resource reference while it runs. It loops: wait for credit,
 *    tidemark_subscription_next (at most PUMP_SLICE_MS, under the core's read lock), send
 *    {tidemark_sub_event, SubRef, Event} per delivery with enif_send(NULL, ...), and, when the
 *    credit runs out, {tidemark_sub_passive, SubRef}. Deliveries beyond the credit wait in the
 *    thread (they are in flight to this consumer in tidemark, so their timeout runs).
 *  - It stops when disconnect/1 or the owner's death (monitor) sets `stop`, or when tidemark
 *    ends the subscription (deleted, store closed, compacted): it then closes the consumer,
 *    which hands every event it holds unacked to the other consumers, sends a last
 *    {tidemark_sub_event, SubRef, deleted | closed | {compacted, E} | {error, R}} unless it was
 *    told to stop, and lets go of its reference.
 *  - ack / nack run on the caller's scheduler (dirty I/O on a durable store: they commit)
 *    under the resource's mutex, which keeps the consumer from being closed meanwhile;
 *    tidemark allows them while the pump waits in next.
 *
 * Joining: disconnect/1 (a dirty I/O scheduler) stops and joins the pump. Otherwise the
 * destructor joins it: at once when it runs on another thread (the pump has let go of its
 * reference, its last act), through the reaper (lockstep.c) when it runs on the pump itself.
 * unload waits for the reaper, and no pump runs without a resource, so none outlives the code.
 */
#include "tidemark_nif.h"

#include <string.h>

/* How long one tidemark_subscription_next waits: a stop is seen within this. */
#define PUMP_SLICE_MS 100

typedef struct {
    tm_core *core;
    ErlNifMutex *mtx;           /* guards everything below but pid, strukt, msg_env */
    ErlNifCond *cond;           /* credit granted or stop */
    tidemark_subscription *sub; /* NULL once closed */
    int limited;
    uint64_t credit;
    int stop;
    int has_thread;             /* created and not yet joined (or handed to the reaper) */
    ErlNifTid tid;
    int monitored;
    ErlNifMonitor mon;
    ErlNifPid pid;
    ERL_NIF_TERM strukt;        /* an atom, or 0 */
    ErlNifEnv *msg_env;         /* the pump's */
} tm_psub;

static ErlNifResourceType *psub_type;
static ERL_NIF_TERM am_tidemark_sub_passive, am_delivery_count, am_deleted;

static void join_boxed(void *arg)
{
    ErlNifTid *tid = arg;
    enif_thread_join(*tid, NULL);
    enif_free(tid);
}

static void psub_dtor(ErlNifEnv *env, void *obj)
{
    tm_psub *p = obj;
    (void)env;
    if (p->has_thread) {
        ErlNifTid *box;
        if (!enif_equal_tids(enif_thread_self(), p->tid))
            enif_thread_join(p->tid, NULL);
        else if ((box = enif_alloc(sizeof *box)) != NULL) {
            *box = p->tid;
            if (!reap_call(join_boxed, box))
                enif_free(box); /* no reaper (out of memory): the thread is left unjoined */
        }
    }
    if (p->sub != NULL) /* the pump never started */
        tidemark_subscription_close(p->sub);
    if (p->msg_env != NULL)
        enif_free_env(p->msg_env);
    if (p->cond != NULL)
        enif_cond_destroy(p->cond);
    if (p->mtx != NULL)
        enif_mutex_destroy(p->mtx);
    if (p->core != NULL)
        core_release(p->core);
}

/* The owner died: stop; the pump closes the consumer (its events go to the others). */
static void psub_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    tm_psub *p = obj;
    (void)env;
    (void)pid;
    (void)mon;
    enif_mutex_lock(p->mtx);
    p->monitored = 0;
    p->stop = 1;
    enif_cond_broadcast(p->cond);
    enif_mutex_unlock(p->mtx);
}

/* A delivery as the stream event map plus delivery_count ('__struct__' with strukt). */
static ERL_NIF_TERM delivery_map(ErlNifEnv *env, const tidemark_delivery *d, ERL_NIF_TERM strukt)
{
    ERL_NIF_TERM map = stream_event_map(env, &d->event);
    (void)enif_make_map_put(env, map, am_delivery_count, enif_make_uint(env, d->delivery_count), &map);
    return with_struct(env, map, strukt);
}

static void pump_send(tm_psub *p, ERL_NIF_TERM msg)
{
    (void)enif_send(NULL, &p->pid, p->msg_env, msg); /* a dead owner: its monitor stops us */
    enif_clear_env(p->msg_env);
}

/* The last message's body for a status that ended the subscription. */
static ERL_NIF_TERM end_body(ErlNifEnv *env, tidemark_status st)
{
    if (st == TIDEMARK_ERR_NOT_FOUND)
        return am_deleted;
    if (st == TIDEMARK_ERR_CLOSED)
        return am_closed;
    ERL_NIF_TERM err = status_error(env, st); /* {error, Reason} */
    const ERL_NIF_TERM *el;
    int arity;
    if (st == TIDEMARK_ERR_COMPACTED && enif_get_tuple(env, err, &arity, &el) && arity == 2)
        return el[1]; /* {compacted, Earliest} */
    return err;
}

static void *pump_main(void *arg)
{
    tm_psub *p = arg;
    ErlNifEnv *env = p->msg_env;
    tidemark_deliveries *batch = NULL;
    size_t pos = 0, len = 0;
    tidemark_status end = TIDEMARK_OK;
    ERL_NIF_TERM body = 0;
    tidemark_subscription *sub;
    int stopped;
    for (;;) {
        size_t n, i;
        int passive;
        enif_mutex_lock(p->mtx);
        while (!p->stop && p->limited && p->credit == 0)
            enif_cond_wait(p->cond, p->mtx);
        stopped = p->stop;
        enif_mutex_unlock(p->mtx);
        if (stopped)
            break;
        if (pos == len) {
            tidemark_store *s;
            tidemark_status st;
            tidemark_deliveries_free(batch);
            batch = NULL;
            if ((s = core_use(p->core)) == NULL) {
                end = TIDEMARK_ERR_CLOSED;
                break;
            }
            st = tidemark_subscription_next(p->sub, PUMP_SLICE_MS, &batch);
            if (st != TIDEMARK_OK && st != TIDEMARK_ERR_TIMEOUT)
                body = end_body(env, st); /* status_error reads this thread's last error */
            core_done(p->core);
            if (st == TIDEMARK_ERR_TIMEOUT)
                continue;
            if (st != TIDEMARK_OK) {
                end = st;
                break;
            }
            pos = 0;
            len = tidemark_deliveries_len(batch);
        }
        enif_mutex_lock(p->mtx);
        n = len - pos;
        if (p->limited && p->credit < n)
            n = (size_t)p->credit;
        if (p->limited)
            p->credit -= n;
        passive = p->limited && p->credit == 0;
        enif_mutex_unlock(p->mtx);
        for (i = 0; i < n; i++, pos++) {
            const tidemark_delivery *d = tidemark_deliveries_data(batch) + pos;
            pump_send(p, enif_make_tuple3(env, am_tidemark_sub_event, enif_make_resource(env, p),
                                          delivery_map(env, d, p->strukt)));
        }
        if (passive)
            pump_send(p, enif_make_tuple2(env, am_tidemark_sub_passive, enif_make_resource(env, p)));
    }
    tidemark_deliveries_free(batch);
    enif_mutex_lock(p->mtx); /* no ack or nack runs on the consumer while it closes */
    sub = p->sub;
    p->sub = NULL;
    stopped = p->stop;
    tidemark_subscription_close(sub);
    enif_mutex_unlock(p->mtx);
    if (end != TIDEMARK_OK && !stopped) {
        if (body == 0)
            body = am_closed;
        pump_send(p, enif_make_tuple3(env, am_tidemark_sub_event, enif_make_resource(env, p), body));
    } else {
        enif_clear_env(env);
    }
    enif_release_resource(p); /* may run the destructor, here: see the top */
    return NULL;
}

static int get_psub(ErlNifEnv *env, ERL_NIF_TERM t, tm_psub **out)
{
    return enif_get_resource(env, t, psub_type, (void **)out);
}

static int get_name(ErlNifEnv *env, ERL_NIF_TERM t, ErlNifBinary *b)
{
    return get_bytes(env, t, b);
}

/* subscription_create_nif(Store, Name, StreamSelector, Start (0 beginning | 1 end | 2), StartRevision,
 *                         MaxInFlight, MessageTimeoutMs, MaxRetry, Pinned) -> {ok, Revision}
 * (each option `undefined' = tidemark's default) */
ERL_NIF_TERM subscription_create_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary name;
    tidemark_stream_selector sel;
    tidemark_subscription_options o = tidemark_subscription_options_default();
    unsigned start, u;
    uint64_t start_rev, v, rev = 0;
    tidemark_status st;
    ERL_NIF_TERM result;
    (void)argc;
    if (!get_store(env, argv[0], &r) || !get_name(env, argv[1], &name) || !get_stream_selector(env, argv[2], &sel)
        || !enif_get_uint(env, argv[3], &start) || !get_u64(env, argv[4], &start_rev))
        return enif_make_badarg(env);
    if (!enif_is_identical(argv[5], am_undefined)) {
        if (!enif_get_uint(env, argv[5], &u))
            return enif_make_badarg(env);
        o.max_in_flight = u;
    }
    if (!enif_is_identical(argv[6], am_undefined)) {
        if (!get_u64(env, argv[6], &v))
            return enif_make_badarg(env);
        o.message_timeout_ms = v;
    }
    if (!enif_is_identical(argv[7], am_undefined)) {
        if (!enif_get_uint(env, argv[7], &u))
            return enif_make_badarg(env);
        o.max_retry = u;
    }
    if (!enif_is_identical(argv[8], am_undefined))
        o.pinned = enif_is_identical(argv[8], am_true);
    DIRTY_IF_DURABLE(r, "subscription_create_nif", subscription_create_nif);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_subscription_create(s, name.data, name.size, &sel, start, start_rev, &o, &rev);
    result = st == TIDEMARK_OK ? make_ok(env, make_u64(env, rev)) : status_error(env, st);
    core_done(r->core);
    return result;
}

/* subscription_delete_nif(Store, Name) -> {ok, Revision} */
ERL_NIF_TERM subscription_delete_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary name;
    uint64_t rev = 0;
    tidemark_status st;
    ERL_NIF_TERM result;
    (void)argc;
    if (!get_store(env, argv[0], &r) || !get_name(env, argv[1], &name))
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "subscription_delete_nif", subscription_delete_nif);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_subscription_delete(s, name.data, name.size, &rev);
    result = st == TIDEMARK_OK ? make_ok(env, make_u64(env, rev)) : status_error(env, st);
    core_done(r->core);
    return result;
}

/* subscription_reset_nif(Store, Name, Revision) -> {ok, CommitRevision} */
ERL_NIF_TERM subscription_reset_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary name;
    uint64_t revision, rev = 0;
    tidemark_status st;
    ERL_NIF_TERM result;
    (void)argc;
    if (!get_store(env, argv[0], &r) || !get_name(env, argv[1], &name) || !get_u64(env, argv[2], &revision))
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "subscription_reset_nif", subscription_reset_nif);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_subscription_reset(s, name.data, name.size, revision, &rev);
    result = st == TIDEMARK_OK ? make_ok(env, make_u64(env, rev)) : status_error(env, st);
    core_done(r->core);
    return result;
}

/* subscription_list_nif(Store) -> {ok, Json} */
ERL_NIF_TERM subscription_list_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
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
    st = tidemark_store_subscription_list(s, &json);
    result = st == TIDEMARK_OK ? make_ok(env, make_string_bin(env, json)) : status_error(env, st);
    core_done(r->core);
    tidemark_string_free(json);
    return result;
}

/* subscription_parked_nif(Store, Name, Limit (0 = all)) -> {ok, [Event]} */
ERL_NIF_TERM subscription_parked_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary name;
    uint64_t limit;
    tidemark_deliveries *out = NULL;
    tidemark_status st;
    ERL_NIF_TERM result;
    (void)argc;
    if (!get_store(env, argv[0], &r) || !get_name(env, argv[1], &name) || !get_u64(env, argv[2], &limit)
        || limit > SIZE_MAX)
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "subscription_parked_nif", subscription_parked_nif);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_subscription_parked(s, name.data, name.size, (size_t)limit, &out);
    if (st == TIDEMARK_OK) {
        const tidemark_delivery *d = tidemark_deliveries_data(out);
        size_t i = tidemark_deliveries_len(out);
        ERL_NIF_TERM list = enif_make_list(env, 0);
        while (i-- > 0)
            list = enif_make_list_cell(env, delivery_map(env, &d[i], 0), list);
        result = make_ok(env, list);
    } else {
        result = status_error(env, st);
    }
    core_done(r->core);
    tidemark_deliveries_free(out);
    return result;
}

/* subscription_replay_parked_nif(Store, Name) -> {ok, Count} */
ERL_NIF_TERM subscription_replay_parked_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary name;
    size_t count = 0;
    tidemark_status st;
    ERL_NIF_TERM result;
    (void)argc;
    if (!get_store(env, argv[0], &r) || !get_name(env, argv[1], &name))
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "subscription_replay_parked_nif", subscription_replay_parked_nif);
    if ((s = core_use(r->core)) == NULL)
        return closed_error(env);
    st = tidemark_store_subscription_replay_parked(s, name.data, name.size, &count);
    result = st == TIDEMARK_OK ? make_ok(env, enif_make_uint64(env, count)) : status_error(env, st);
    core_done(r->core);
    return result;
}

/* subscription_connect_nif(Store, Name, Pid, Credit (0 = passive, 2^64-1 = unlimited), Struct)
 * -> {ok, SubRef}. Runs on a dirty I/O scheduler (connecting opens the feed). */
ERL_NIF_TERM subscription_connect_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary name;
    ErlNifPid pid;
    uint64_t credit;
    tidemark_status st;
    tm_psub *p;
    ERL_NIF_TERM term;
    (void)argc;
    if (!get_store(env, argv[0], &r) || !get_name(env, argv[1], &name) || !enif_get_local_pid(env, argv[2], &pid)
        || !get_u64(env, argv[3], &credit) || !enif_is_atom(env, argv[4]))
        return enif_make_badarg(env);
    p = enif_alloc_resource(psub_type, sizeof *p);
    memset(p, 0, sizeof *p);
    p->core = r->core;
    core_keep(p->core);
    p->pid = pid;
    p->strukt = enif_is_identical(argv[4], am_undefined) ? 0 : argv[4];
    p->limited = credit != UINT64_MAX;
    p->credit = credit;
    p->mtx = enif_mutex_create("tidemark_psub");
    p->cond = enif_cond_create("tidemark_psub");
    p->msg_env = enif_alloc_env();
    if (p->mtx == NULL || p->cond == NULL || p->msg_env == NULL) {
        enif_release_resource(p);
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    }
    if ((s = core_use(r->core)) == NULL) {
        enif_release_resource(p);
        return closed_error(env);
    }
    st = tidemark_subscription_connect(s, name.data, name.size, &p->sub);
    term = st == TIDEMARK_OK ? 0 : status_error(env, st);
    core_done(r->core);
    if (st != TIDEMARK_OK) {
        enif_release_resource(p);
        return term;
    }
    if (enif_monitor_process(env, p, &pid, &p->mon) != 0) {
        enif_release_resource(p); /* closes the consumer */
        return make_error(env, am_noproc);
    }
    p->monitored = 1;
    enif_keep_resource(p); /* the pump's reference */
    if (enif_thread_create("tidemark_psub", &p->tid, pump_main, p, NULL) != 0) {
        enif_release_resource(p);
        (void)enif_demonitor_process(env, p, &p->mon);
        enif_release_resource(p);
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    }
    enif_mutex_lock(p->mtx);
    p->has_thread = 1;
    enif_mutex_unlock(p->mtx);
    term = enif_make_resource(env, p);
    enif_release_resource(p);
    return make_ok(env, term);
}

/* subscription_activate_nif(SubRef, N): N more deliveries; 2^64-1: no limit any more */
ERL_NIF_TERM subscription_activate_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_psub *p;
    uint64_t n;
    (void)argc;
    if (!get_psub(env, argv[0], &p) || !get_u64(env, argv[1], &n))
        return enif_make_badarg(env);
    enif_mutex_lock(p->mtx);
    if (n == UINT64_MAX)
        p->limited = 0;
    else
        p->credit = p->credit > UINT64_MAX - n ? UINT64_MAX : p->credit + n;
    enif_cond_broadcast(p->cond);
    enif_mutex_unlock(p->mtx);
    return am_ok;
}

/* ack_nif(SubRef, [Revision]) and nack_nif(SubRef, Revision, Action (0..2)): the consumer stays
 * open while the mutex is held. A disconnected consumer is {error, closed}. */
static ERL_NIF_TERM ack_or_nack(ErlNifEnv *env, tm_psub *p, const uint64_t *revs, size_t n, int nack, unsigned action)
{
    tidemark_status st;
    ERL_NIF_TERM result;
    enif_mutex_lock(p->mtx);
    if (p->sub == NULL) {
        enif_mutex_unlock(p->mtx);
        return closed_error(env);
    }
    if (core_use(p->core) == NULL) {
        enif_mutex_unlock(p->mtx);
        return closed_error(env);
    }
    st = nack ? tidemark_subscription_nack(p->sub, revs[0], action) : tidemark_subscription_ack(p->sub, revs, n);
    result = st == TIDEMARK_OK ? am_ok : status_error(env, st);
    core_done(p->core);
    enif_mutex_unlock(p->mtx);
    return result;
}

ERL_NIF_TERM ack_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_psub *p;
    unsigned len, i = 0;
    uint64_t *revs;
    ERL_NIF_TERM list = argv[1], head, result;
    if (!get_psub(env, argv[0], &p) || !enif_get_list_length(env, list, &len))
        return enif_make_badarg(env);
    if (p->core->durable && len > 0 && enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER)
        return enif_schedule_nif(env, "ack_nif", ERL_NIF_DIRTY_JOB_IO_BOUND, ack_nif, argc, argv);
    if ((revs = enif_alloc((len ? len : 1) * sizeof *revs)) == NULL)
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    while (enif_get_list_cell(env, list, &head, &list))
        if (!get_u64(env, head, &revs[i++])) {
            enif_free(revs);
            return enif_make_badarg(env);
        }
    result = ack_or_nack(env, p, revs, len, 0, 0);
    enif_free(revs);
    return result;
}

ERL_NIF_TERM nack_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_psub *p;
    uint64_t rev;
    unsigned action;
    if (!get_psub(env, argv[0], &p) || !get_u64(env, argv[1], &rev) || !enif_get_uint(env, argv[2], &action))
        return enif_make_badarg(env);
    if (p->core->durable && enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER)
        return enif_schedule_nif(env, "nack_nif", ERL_NIF_DIRTY_JOB_IO_BOUND, nack_nif, argc, argv);
    return ack_or_nack(env, p, &rev, 1, 1, action);
}

/* subscription_disconnect_nif(SubRef) -> ok, on a dirty I/O scheduler: stops and joins the pump
 * (at most PUMP_SLICE_MS); the consumer's unacked events go to the other consumers. */
ERL_NIF_TERM subscription_disconnect_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_psub *p;
    int join;
    (void)argc;
    if (!get_psub(env, argv[0], &p))
        return enif_make_badarg(env);
    enif_mutex_lock(p->mtx);
    p->stop = 1;
    enif_cond_broadcast(p->cond);
    if (p->monitored) {
        (void)enif_demonitor_process(env, p, &p->mon);
        p->monitored = 0;
    }
    join = p->has_thread;
    p->has_thread = 0;
    enif_mutex_unlock(p->mtx);
    if (join)
        enif_thread_join(p->tid, NULL); /* the caller's SubRef keeps the resource alive */
    return am_ok;
}

int persistent_load(ErlNifEnv *env, ErlNifResourceFlags flags)
{
    ErlNifResourceTypeInit init = {0};
    init.dtor = psub_dtor;
    init.down = psub_down;
    am_tidemark_sub_passive = enif_make_atom(env, "tidemark_sub_passive");
    am_delivery_count = enif_make_atom(env, "delivery_count");
    am_deleted = enif_make_atom(env, "deleted");
    psub_type = enif_open_resource_type_x(env, "tidemark_psub", &init, flags, NULL);
    return psub_type != NULL;
}
