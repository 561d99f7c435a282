/* tidemark_nif: the Erlang NIF over the tidemark C API. The atoms, the function table and
 * load/upgrade/unload; the resources and their NIFs are in store.c, watch.c and lockstep.c (see
 * tidemark_nif.h). */
#include "tidemark_nif.h"

#define TM_DEFINE_ATOM(name) ERL_NIF_TERM am_##name;
TM_ATOMS(TM_DEFINE_ATOM)
#undef TM_DEFINE_ATOM

static void init_atoms(ErlNifEnv *env)
{
#define TM_MAKE_ATOM(name) am_##name = enif_make_atom(env, #name);
    TM_ATOMS(TM_MAKE_ATOM)
#undef TM_MAKE_ATOM
}

static int load_all(ErlNifEnv *env, ErlNifResourceFlags flags)
{
    init_atoms(env);
    return store_load(env, flags) && watch_load(env, flags) && lockstep_load(env, flags) && streams_load(env, flags)
                   && trackers_load(env, flags) && persistent_load(env, flags)
               ? 0
               : 1;
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info)
{
    (void)priv;
    (void)info;
    return load_all(env, ERL_NIF_RT_CREATE);
}

static int upgrade(ErlNifEnv *env, void **priv, void **old_priv, ERL_NIF_TERM info)
{
    (void)priv;
    (void)old_priv;
    (void)info;
    return load_all(env, ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER);
}

/* ERTS calls unload only when no resource of this library is left, so normally every store is
 * closed already; close any that is not, so no tidemark thread outlives the code. */
static void unload(ErlNifEnv *env, void *priv)
{
    (void)env;
    (void)priv;
    lockstep_unload();
    store_unload();
}

static ErlNifFunc nif_funcs[] = {
    /* store.c */
    {"open_nif", 2, open_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"close_nif", 1, close_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"status_nif", 1, status_nif, 0},
    {"metrics_nif", 2, metrics_nif, 0}, /* scans subscriptions' events for their lag */
    {"tail_repair_nif", 1, tail_repair_nif, 0},
    {"current_revision_nif", 1, current_revision_nif, 0},
    {"earliest_revision_nif", 1, earliest_revision_nif, 0},
    {"watcher_count_nif", 1, watcher_count_nif, 0},
    {"version_nif", 0, version_nif, 0},
    {"put_nif", 4, put_nif, 0},
    {"get_nif", 2, get_nif, 0},
    {"delete_nif", 2, delete_nif, 0},
    /* batch, range and changes move themselves to a dirty CPU scheduler when big */
    {"batch_nif", 2, batch_nif, 0},
    {"range_nif", 3, range_nif, 0},
    {"changes_nif", 5, changes_nif, 0},
    {"compact_nif", 2, compact_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"status_reason_nif", 1, status_reason_nif, 0},
    /* watch.c */
    {"watch_nif", 8, watch_nif, 0},
    {"unwatch_nif", 2, unwatch_nif, ERL_NIF_DIRTY_JOB_IO_BOUND}, /* waits for a running callback */
    {"activate_nif", 2, activate_nif, 0},
    {"watch_ended_nif", 1, watch_ended_nif, 0},
    /* subscriptions.c */
    {"subscribe_nif", 8, subscribe_nif, 0},
    /* lockstep.c: starting may resolve a host name; stopping joins threads */
    {"serve_nif", 3, serve_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"server_addr_nif", 1, server_addr_nif, 0},
    {"server_port_nif", 1, server_port_nif, 0},
    {"server_status_nif", 1, server_status_nif, 0},
    {"stop_server_nif", 1, stop_server_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"follow_nif", 4, follow_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"follower_status_nif", 1, follower_status_nif, 0},
    {"stop_follower_nif", 1, stop_follower_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"follower_dropped_nif", 1, follower_dropped_nif, 0},
    /* contexts.c: the writes move to a dirty I/O scheduler on a durable store */
    {"context_write_nif", 4, context_write_nif, 0},
    {"context_get_nif", 2, context_get_nif, 0},
    {"context_delete_nif", 2, context_delete_nif, 0},
    {"context_sync_nif", 3, context_sync_nif, 0},
    {"context_list_nif", 5, context_list_nif, 0},
    {"context_cleanup_nif", 2, context_cleanup_nif, 0},
    {"set_clock_nif", 2, set_clock_nif, 0},
    {"advance_clock_nif", 2, advance_clock_nif, 0},
    {"context_cleaner_nif", 3, context_cleaner_nif, ERL_NIF_DIRTY_JOB_IO_BOUND}, /* stop joins */
    {"context_set_exporter_nif", 2, context_set_exporter_nif, 0},
    {"context_export_nif", 2, context_export_nif, 0},
    {"context_restore_nif", 4, context_restore_nif, 0},
    {"context_provider_nif", 1, context_provider_nif, 0},
    {"context_provider_nif", 3, context_provider_nif, 0},
    /* streams.c: big reads and writes move themselves to dirty schedulers */
    {"append_events_nif", 4, append_events_nif, 0},
    {"read_stream_nif", 5, read_stream_nif, 0},
    {"stream_version_nif", 2, stream_version_nif, 0},
    {"list_streams_nif", 4, list_streams_nif, 0},
    {"delete_stream_nif", 2, delete_stream_nif, 0},
    {"snapshot_record_nif", 5, snapshot_record_nif, 0},
    {"snapshot_read_nif", 4, snapshot_read_nif, 0},
    {"snapshot_delete_nif", 4, snapshot_delete_nif, 0},
    {"snapshot_list_nif", 3, snapshot_list_nif, 0},
    {"register_store_nif", 2, register_store_nif, 0},
    {"whereis_store_nif", 1, whereis_store_nif, 0},
    {"unregister_store_nif", 1, unregister_store_nif, 0},
    {"registered_stores_nif", 0, registered_stores_nif, 0},
    /* trackers.c: notify moves to a dirty I/O scheduler on a durable store; leave may wait
     * for a running callback when it ends the group's tracker */
    {"join_nif", 4, join_nif, 0},
    {"leave_nif", 3, leave_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"members_nif", 2, members_nif, 0},
    {"notify_nif", 5, notify_nif, 0},
    /* persistent.c: the writes move to a dirty I/O scheduler on a durable store; connect
     * opens a feed (it may read the log), disconnect joins the consumer's thread */
    {"subscription_create_nif", 9, subscription_create_nif, 0},
    {"subscription_delete_nif", 2, subscription_delete_nif, 0},
    {"subscription_list_nif", 1, subscription_list_nif, 0},
    {"subscription_parked_nif", 3, subscription_parked_nif, 0},
    {"subscription_replay_parked_nif", 2, subscription_replay_parked_nif, 0},
    {"subscription_reset_nif", 3, subscription_reset_nif, 0},
    {"subscription_connect_nif", 5, subscription_connect_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"subscription_activate_nif", 2, subscription_activate_nif, 0},
    {"ack_nif", 2, ack_nif, 0},
    {"nack_nif", 3, nack_nif, 0},
    {"subscription_disconnect_nif", 1, subscription_disconnect_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
};

ERL_NIF_INIT(tidemark_nif, nif_funcs, load, NULL, upgrade, unload)
