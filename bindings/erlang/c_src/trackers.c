/* Tracker groups (reckon_db's pg groups over tidemark trackers): join/leave/members per
 * (store, feature). Each group is one tidemark tracker whose callback sends every notification
 * to every member: {feature_created | feature_updated | feature_deleted, Feature,
 * #{id, revision, data}} (data: the JSON text), and, when the tracker ends by itself,
 * {feature_tracker_ended, Feature, {compacted, Earliest} | closed}. Members are monitored: a
 * member that dies leaves; a group whose last member leaves untracks.
 *
 * Lifetime: a group is a resource that Erlang never sees. tidemark holds one reference (the
 * tracker's userdata, given back in group_drop); `groups' lists the live ones without a
 * reference, and the destructor unlinks. A group is found in the list only while `ended' is 0,
 * i.e. while tidemark's reference is still held, so taking a reference there never revives a
 * group being destroyed. The callback sends with enif_send(NULL, ...) from tidemark's threads;
 * it takes only the group's mutex, which nobody holds while waiting for a callback. */
#include "tidemark_nif.h"

#include <string.h>

typedef struct {
    ErlNifPid pid;
    ErlNifMonitor mon;
} tm_member;

typedef struct tm_group {
    tm_core *core;
    char *feature;         /* NUL-terminated */
    int is_atom;           /* messages name the feature as it was first joined: atom or binary */
    ErlNifMutex *mtx;      /* guards members, n, cap, id, ended */
    tm_member *members;
    size_t n, cap;
    uint64_t id;           /* the tracker id; 0 until registered */
    int ended;             /* group_drop ran, or untracked: never found again */
    ErlNifEnv *tmpl_env;   /* the (single) running callback builds each message here once */
    ErlNifEnv *msg_env;    /* and copies it here for each member: enif_send consumes it */
    struct tm_group *next; /* in `groups', under groups_lock */
} tm_group;

static ErlNifResourceType *group_type;
static ErlNifMutex *groups_lock;
static tm_group *groups;

static ERL_NIF_TERM am_feature_created, am_feature_updated, am_feature_deleted, am_feature_tracker_ended;

static void group_dtor(ErlNifEnv *env, void *obj)
{
    tm_group *g = obj;
    tm_group **p;
    (void)env;
    enif_mutex_lock(groups_lock);
    for (p = &groups; *p != NULL; p = &(*p)->next)
        if (*p == g) {
            *p = g->next;
            break;
        }
    enif_mutex_unlock(groups_lock);
    if (g->msg_env != NULL)
        enif_free_env(g->msg_env);
    if (g->tmpl_env != NULL)
        enif_free_env(g->tmpl_env);
    if (g->mtx != NULL)
        enif_mutex_destroy(g->mtx);
    enif_free(g->members);
    enif_free(g->feature);
    if (g->core != NULL)
        core_release(g->core);
}

/* Ends the group's tracker (never waiting for a close in progress: that ends it anyway). */
static void group_untrack(tm_group *g, uint64_t id)
{
    if (id == 0 || enif_rwlock_tryrlock(g->core->lock) != 0)
        return;
    if (g->core->store != NULL)
        (void)tidemark_store_untrack(g->core->store, id);
    enif_rwlock_runlock(g->core->lock);
}

/* Removes member i (under the mutex); returns the tracker id to untrack if it was the last. */
static uint64_t remove_member(ErlNifEnv *env, tm_group *g, size_t i, int demonitor)
{
    if (demonitor)
        (void)enif_demonitor_process(env, g, &g->members[i].mon);
    g->members[i] = g->members[--g->n];
    if (g->n > 0 || g->ended)
        return 0;
    g->ended = 1; /* empty: nobody finds it any more */
    return g->id;
}

static void group_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon)
{
    tm_group *g = obj;
    uint64_t untrack = 0;
    size_t i;
    (void)pid;
    enif_mutex_lock(g->mtx);
    for (i = 0; i < g->n; i++)
        if (enif_compare_monitors(&g->members[i].mon, mon) == 0) {
            untrack = remove_member(env, g, i, 0);
            break;
        }
    enif_mutex_unlock(g->mtx);
    group_untrack(g, untrack);
}

static ERL_NIF_TERM action_atom(uint32_t action)
{
    switch (action) {
    case TIDEMARK_ACTION_CREATED: return am_feature_created;
    case TIDEMARK_ACTION_UPDATED: return am_feature_updated;
    default: return am_feature_deleted;
    }
}

/* Runs on a tidemark thread, never on two threads at once for one group. */
static void group_callback(void *userdata, const tidemark_notification *n)
{
    tm_group *g = userdata;
    ErlNifEnv *env = g->tmpl_env;
    ERL_NIF_TERM msg, feature;
    size_t i;
    if (g->is_atom)
        feature = enif_make_atom(env, g->feature);
    else
        feature = make_bytes(env, n->feature);
    if (n->action == TIDEMARK_ACTION_COMPACTED || n->action == TIDEMARK_ACTION_CLOSED) {
        ERL_NIF_TERM why = n->action == TIDEMARK_ACTION_CLOSED
                               ? am_closed
                               : enif_make_tuple2(env, am_compacted, make_u64(env, n->revision));
        msg = enif_make_tuple3(env, am_feature_tracker_ended, feature, why);
    } else {
        ERL_NIF_TERM keys[3] = {am_id, am_revision, am_data};
        ERL_NIF_TERM vals[3] = {make_bytes(env, n->id), make_u64(env, n->revision), make_bytes(env, n->data)};
        ERL_NIF_TERM data;
        enif_make_map_from_arrays(env, keys, vals, 3, &data);
        msg = enif_make_tuple3(env, action_atom(n->action), feature, data);
    }
    enif_mutex_lock(g->mtx);
    for (i = 0; i < g->n; i++) {
        /* A dead member is not an error here: its monitor removes it. */
        (void)enif_send(NULL, &g->members[i].pid, g->msg_env, enif_make_copy(g->msg_env, msg));
        enif_clear_env(g->msg_env);
    }
    enif_mutex_unlock(g->mtx);
    enif_clear_env(env);
}

/* Called exactly once, after the last callback. */
static void group_drop(void *userdata)
{
    tm_group *g = userdata;
    enif_mutex_lock(g->mtx);
    g->ended = 1;
    enif_mutex_unlock(g->mtx);
    enif_release_resource(g);
}

/* A feature name from an atom or a binary, NUL-terminated (enif_free it); NULL if neither. */
static char *get_feature(ErlNifEnv *env, ERL_NIF_TERM t)
{
    ErlNifBinary b;
    unsigned len;
    char *s;
    if (enif_get_atom_length(env, t, &len, ERL_NIF_LATIN1)) {
        if ((s = enif_alloc(len + 1)) != NULL && !enif_get_atom(env, t, s, len + 1, ERL_NIF_LATIN1)) {
            enif_free(s);
            return NULL;
        }
        return s;
    }
    return enif_inspect_binary(env, t, &b) ? cstring(&b) : NULL;
}

/* The live group of (core, feature) with a reference taken, or NULL; under groups_lock. */
static tm_group *find_group(tm_core *core, const char *feature)
{
    tm_group *g;
    for (g = groups; g != NULL; g = g->next) {
        if (g->core != core || strcmp(g->feature, feature) != 0)
            continue;
        enif_mutex_lock(g->mtx);
        int live = !g->ended;
        if (live)
            enif_keep_resource(g);
        enif_mutex_unlock(g->mtx);
        if (live)
            return g;
    }
    return NULL;
}

/* A new group with its tracker, a reference taken; under groups_lock. NULL with *err set. */
static tm_group *new_group(ErlNifEnv *env, tm_store_res *r, ERL_NIF_TERM feature_term, char *feature,
                           uint64_t start, ERL_NIF_TERM *err)
{
    tidemark_watch_options opts = tidemark_watch_options_default();
    tidemark_store *s;
    tidemark_status st;
    uint64_t id = 0;
    tm_group *g = enif_alloc_resource(group_type, sizeof *g);
    memset(g, 0, sizeof *g);
    g->core = r->core;
    core_keep(g->core);
    g->feature = feature;
    g->mtx = enif_mutex_create("tidemark_tracker_group");
    g->msg_env = enif_alloc_env();
    g->tmpl_env = enif_alloc_env();
    if (g->mtx == NULL || g->msg_env == NULL || g->tmpl_env == NULL) {
        enif_release_resource(g);
        *err = enif_raise_exception(env, enif_make_atom(env, "enomem"));
        return NULL;
    }
    g->is_atom = enif_is_atom(env, feature_term);
    if ((s = core_use(r->core)) == NULL) {
        enif_release_resource(g);
        *err = closed_error(env);
        return NULL;
    }
    opts.start_revision = start;
    enif_keep_resource(g); /* tidemark's reference, given back in group_drop */
    st = tidemark_store_track(s, feature, &opts, group_callback, g, group_drop, &id);
    if (st != TIDEMARK_OK) {
        *err = status_error(env, st); /* group_drop has run already */
        core_done(r->core);
        enif_release_resource(g);
        return NULL;
    }
    core_done(r->core);
    enif_mutex_lock(g->mtx);
    g->id = id;
    enif_mutex_unlock(g->mtx);
    g->next = groups;
    groups = g;
    return g;
}

/* join_nif(Store, Feature, [Pid], StartRevision): the start applies when the group is new. */
ERL_NIF_TERM join_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    uint64_t start, untrack = 0;
    ERL_NIF_TERM list = argv[2], head, err = 0;
    ErlNifPid pid;
    char *feature;
    tm_group *g;
    (void)argc;
    if (!get_store(env, argv[0], &r) || !enif_is_list(env, list) || !get_u64(env, argv[3], &start))
        return enif_make_badarg(env);
    while (enif_get_list_cell(env, list, &head, &list))
        if (!enif_get_local_pid(env, head, &pid))
            return enif_make_badarg(env);
    if ((feature = get_feature(env, argv[1])) == NULL)
        return enif_make_badarg(env);
    enif_mutex_lock(groups_lock);
    g = find_group(r->core, feature);
    if (g != NULL)
        enif_free(feature);
    else
        g = new_group(env, r, argv[1], feature, start, &err);
    enif_mutex_unlock(groups_lock);
    if (g == NULL)
        return err;
    enif_mutex_lock(g->mtx);
    for (list = argv[2]; enif_get_list_cell(env, list, &head, &list);) {
        size_t i;
        enif_get_local_pid(env, head, &pid);
        for (i = 0; i < g->n && enif_compare_pids(&g->members[i].pid, &pid) != 0; i++)
            ;
        if (i < g->n || g->ended)
            continue; /* a member already, or the group ended meanwhile */
        if (g->n == g->cap) {
            size_t cap = g->cap ? 2 * g->cap : 4;
            tm_member *m = enif_realloc(g->members, cap * sizeof *m);
            if (m == NULL)
                break;
            g->members = m;
            g->cap = cap;
        }
        g->members[g->n].pid = pid;
        if (enif_monitor_process(env, g, &pid, &g->members[g->n].mon) == 0)
            g->n++; /* a dead pid is no member */
    }
    if (g->n == 0 && !g->ended) {
        g->ended = 1;
        untrack = g->id;
    }
    enif_mutex_unlock(g->mtx);
    group_untrack(g, untrack);
    enif_release_resource(g);
    return am_ok;
}

/* leave_nif(Store, Feature, [Pid]) */
ERL_NIF_TERM leave_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    ERL_NIF_TERM list, head;
    ErlNifPid pid;
    uint64_t untrack = 0;
    char *feature;
    tm_group *g;
    (void)argc;
    if (!get_store(env, argv[0], &r) || !enif_is_list(env, argv[2]) || (feature = get_feature(env, argv[1])) == NULL)
        return enif_make_badarg(env);
    enif_mutex_lock(groups_lock);
    g = find_group(r->core, feature);
    enif_mutex_unlock(groups_lock);
    enif_free(feature);
    if (g == NULL)
        return am_ok;
    enif_mutex_lock(g->mtx);
    for (list = argv[2]; enif_get_list_cell(env, list, &head, &list);) {
        size_t i;
        if (!enif_get_local_pid(env, head, &pid))
            continue;
        for (i = 0; i < g->n; i++)
            if (enif_compare_pids(&g->members[i].pid, &pid) == 0) {
                uint64_t id = remove_member(env, g, i, 1);
                untrack = id ? id : untrack;
                break;
            }
    }
    enif_mutex_unlock(g->mtx);
    group_untrack(g, untrack); /* unwatch semantics: no message after this returns */
    enif_release_resource(g);
    return am_ok;
}

/* members_nif(Store, Feature) -> [Pid] */
ERL_NIF_TERM members_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    ERL_NIF_TERM list = enif_make_list(env, 0);
    char *feature;
    tm_group *g;
    size_t i;
    (void)argc;
    if (!get_store(env, argv[0], &r) || (feature = get_feature(env, argv[1])) == NULL)
        return enif_make_badarg(env);
    enif_mutex_lock(groups_lock);
    g = find_group(r->core, feature);
    enif_mutex_unlock(groups_lock);
    enif_free(feature);
    if (g == NULL)
        return list;
    enif_mutex_lock(g->mtx);
    for (i = g->n; i > 0; i--)
        list = enif_make_list_cell(env, enif_make_pid(env, &g->members[i - 1].pid), list);
    enif_mutex_unlock(g->mtx);
    enif_release_resource(g);
    return list;
}

/* notify_nif(Store, Feature, Action (1..3), Id, DataJson) -> {ok, Revision} */
ERL_NIF_TERM notify_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tm_store_res *r;
    tidemark_store *s;
    ErlNifBinary id, json;
    unsigned action;
    uint64_t rev = 0;
    char *feature, *data;
    tidemark_status st;
    ERL_NIF_TERM result;
    (void)argc;
    if (!get_store(env, argv[0], &r) || !enif_get_uint(env, argv[2], &action) || !get_bytes(env, argv[3], &id)
        || !enif_inspect_binary(env, argv[4], &json))
        return enif_make_badarg(env);
    DIRTY_IF_DURABLE(r, "notify_nif", notify_nif);
    if ((feature = get_feature(env, argv[1])) == NULL)
        return enif_make_badarg(env);
    if ((data = cstring(&json)) == NULL) {
        enif_free(feature);
        return enif_make_badarg(env);
    }
    if ((s = core_use(r->core)) == NULL) {
        result = closed_error(env);
    } else {
        st = tidemark_store_notify(s, feature, action, id.data, id.size, data, &rev);
        result = st == TIDEMARK_OK ? make_ok(env, make_u64(env, rev)) : status_error(env, st);
        core_done(r->core);
    }
    enif_free(feature);
    enif_free(data);
    return result;
}

int trackers_load(ErlNifEnv *env, ErlNifResourceFlags flags)
{
    ErlNifResourceTypeInit init = {0};
    init.dtor = group_dtor;
    init.down = group_down;
    am_feature_created = enif_make_atom(env, "feature_created");
    am_feature_updated = enif_make_atom(env, "feature_updated");
    am_feature_deleted = enif_make_atom(env, "feature_deleted");
    am_feature_tracker_ended = enif_make_atom(env, "feature_tracker_ended");
    if (groups_lock == NULL && (groups_lock = enif_mutex_create("tidemark_tracker_groups")) == NULL)
        return 0;
    group_type = enif_open_resource_type_x(env, "tidemark_tracker_group", &init, flags, NULL);
    return group_type != NULL;
}
