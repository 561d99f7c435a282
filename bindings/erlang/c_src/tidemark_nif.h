/*
 * tidemark_nif.h: what the files of the Erlang NIF over the tidemark C API (include/tidemark.h)
 * share. One file per resource (store.c, watch.c, lockstep.c) or feature (streams.c: streams,
 * snapshots, named stores; contexts.c; persistent.c: persistent subscriptions), terms.c for converting terms, tidemark_nif.c for the
 * atoms, the function table and load/upgrade/unload. A new resource or feature is one new file:
 * its struct and destructor there (if any), its load function and NIFs declared here, its rows
 * in nif_funcs (tidemark_nif.c) and its stubs in src/tidemark_nif.erl.
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
 *    the disk); on an in-memory store a batch of more than TM_NORMAL_MAX_ITEMS operations, a
 *    range that may return more entries and changes that may return more events move to
 *    dirty CPU schedulers (below), so no call holds a normal scheduler for long.
 *
 * lockstep servers and followers (resources too) are described at the top of lockstep.c.
 */
#ifndef TIDEMARK_NIF_H
#define TIDEMARK_NIF_H

#include <erl_nif.h>

#include <stdint.h>

#include "tidemark.h"

/* --- atoms: each declared once here, created in tidemark_nif.c ---------------------------- */

#define TM_ATOMS(X)                                                                            \
    X(ok) X(error) X(true) X(false) X(undefined) X(all) X(key) X(prefix) X(range) X(infinity)  \
    X(put) X(delete) X(require) X(closed) X(compacted) X(unknown) X(noproc) X(tidemark_event)  \
    X(progress) X(revision) X(type) X(value) X(version) X(create_revision) X(mod_revision)     \
    X(events) X(entries) X(has_more) X(next_revision) X(other) X(tidemark_passive) X(default)  \
    X(none) X(tidemark_lockstep) X(kind) X(records) X(writes) X(retry_ms) X(cursor) X(message) \
    X(line) X(connected) X(applied) X(malformed) X(resync_started) X(resync_done) X(data) X(metadata) \
    X(id) X(stream) X(timestamp_ms) X(forward) X(backward) X(wrong_expected_version) X(source) \
    X(__struct__) X(event_type) X(tidemark_sub_event)

#define TM_DECLARE_ATOM(name) extern ERL_NIF_TERM am_##name;
TM_ATOMS(TM_DECLARE_ATOM)
#undef TM_DECLARE_ATOM

/* --- terms.c: terms from C results, C arguments from terms -------------------------------- */

ERL_NIF_TERM make_ok(ErlNifEnv *env, ERL_NIF_TERM t);
ERL_NIF_TERM make_error(ErlNifEnv *env, ERL_NIF_TERM reason);
ERL_NIF_TERM make_string_bin(ErlNifEnv *env, const char *s);
ERL_NIF_TERM make_bytes(ErlNifEnv *env, tidemark_bytes b);
ERL_NIF_TERM make_u64(ErlNifEnv *env, uint64_t v);
/* The Reason of {error, Reason} for a status: not_found | closed | timeout, {Atom, Revision}
 * (compacted, conflict, future_revision), {Atom, Message} (every other code, Atom from the
 * code's C name), {unknown, Code, Message} (not a status). */
ERL_NIF_TERM status_reason(ErlNifEnv *env, tidemark_status st, uint64_t rev, ERL_NIF_TERM msg);
/* {error, Reason} for a failed call; must run right after it, on the same thread. */
ERL_NIF_TERM status_error(ErlNifEnv *env, tidemark_status st);
ERL_NIF_TERM closed_error(ErlNifEnv *env);
/* A NUL-terminated copy of a binary (NULL for a NUL inside or out of memory); enif_free it. */
char *cstring(const ErlNifBinary *b);

/* The bytes of a whole result batch, copied once into one binary: values longer than a heap
 * binary become sub-binaries of it (no allocation each), short ones are copied. */
typedef struct {
    ERL_NIF_TERM bin;
    const uint8_t *base;
    size_t len;
} tm_arena;

void arena_init(ErlNifEnv *env, tm_arena *a, tidemark_bytes all);
ERL_NIF_TERM arena_bytes(ErlNifEnv *env, const tm_arena *a, tidemark_bytes b);
/* #{revision, type, key, value, version, create_revision}; a may be NULL */
ERL_NIF_TERM make_event_map(ErlNifEnv *env, const tidemark_event *e, const tm_arena *a);
/* #{key, value, create_revision, mod_revision, version} for range results */
ERL_NIF_TERM make_entry_map(ErlNifEnv *env, const tidemark_event *e, const tm_arena *a);

/* Bytes from a binary or iolist; valid for the duration of the NIF call. */
int get_bytes(ErlNifEnv *env, ERL_NIF_TERM t, ErlNifBinary *b);
int get_u64(ErlNifEnv *env, ERL_NIF_TERM t, uint64_t *out);
/* all | {key, K} | {prefix, P} | {range, Start, End | infinity} */
int get_selector(ErlNifEnv *env, ERL_NIF_TERM t, tidemark_selector *sel);

/* --- store.c: the core (a store and its lock) and the store resource ---------------------- */

typedef struct tm_core {
    ErlNifRWLock *lock;
    tidemark_store *store; /* NULL once closed; written under the write lock */
    int durable;           /* a directory store: its writes and log reads may wait on disk */
    int refs;              /* atomic */
    uint64_t manual_now;   /* atomic: the manual clock's time (contexts.c, set_clock_nif) */
    int has_provider;      /* contexts.c: the context provider process, under the lock */
    ErlNifPid provider;
    uint64_t provider_timeout_ms;
    struct tm_core *prev, *next; /* the list of open cores, under open_lock */
} tm_core;

typedef struct {
    tm_core *core;
} tm_store_res;

void core_keep(tm_core *c);
void core_release(tm_core *c);
/* Takes the read lock and returns the store, or NULL (lock released) when closed. */
tidemark_store *core_use(tm_core *c);
void core_done(tm_core *c);
int get_store(ErlNifEnv *env, ERL_NIF_TERM t, tm_store_res **out);

/* On a durable store, writes (fsync, group commit) and log reads may wait on the disk: such a
 * call moves itself to a dirty I/O scheduler. In-memory stores stay on the caller's scheduler. */
#define DIRTY_IF_DURABLE(r, name, fun)                                                        \
    do {                                                                                      \
        if ((r)->core->durable && enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER)         \
            return enif_schedule_nif(env, name, ERL_NIF_DIRTY_JOB_IO_BOUND, fun, argc, argv); \
    } while (0)

/* Work that grows with the input (a batch's operations, the events or entries a read returns)
 * stays on the caller's normal scheduler only up to this many items, about a millisecond of
 * work (Erlang's budget for a NIF call on a normal scheduler; docs/benchmarks.md has the
 * measured gaps); above it, the call moves itself to a dirty CPU scheduler. */
#define TM_NORMAL_MAX_ITEMS 200

#define DIRTY_CPU_IF(big, name, fun)                                                           \
    do {                                                                                       \
        if ((big) && enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER)                       \
            return enif_schedule_nif(env, name, ERL_NIF_DIRTY_JOB_CPU_BOUND, fun, argc, argv); \
    } while (0)

/* --- watch.c: the push-watch resource, shared with subscriptions.c ------------------------ */

/* Registers a push watch of some kind with the store: `w` is the userdata, watch_drop the drop. */
typedef tidemark_status (*tm_register_fn)(tidemark_store *s, const void *selector,
                                          const tidemark_watch_options *opts, void *w, uint64_t *id);
/* The message body of item i of a delivery (maps get '__struct__' => strukt unless it is 0);
 * sets *change for an event (counted as credit). */
typedef ERL_NIF_TERM (*tm_body_fn)(ErlNifEnv *env, ERL_NIF_TERM strukt, const void *items, size_t i, int *change);
ERL_NIF_TERM with_struct(ErlNifEnv *env, ERL_NIF_TERM map, ERL_NIF_TERM strukt);
/* {ok, Ref} for a new watch from argv = (Store, _, Pid, Start, Credit, MaxQueue, ProgressMs, Struct). */
ERL_NIF_TERM watch_start(ErlNifEnv *env, const ERL_NIF_TERM argv[], const void *selector, tm_register_fn reg);
/* A callback's body: sends {Tag, Ref, Body} per item, then {tidemark_passive, Ref} at no credit. */
void watch_send(void *w, ERL_NIF_TERM tag, const void *items, size_t count, tm_body_fn body);
void watch_drop(void *w);

/* subscriptions.c: all | {stream, S} | {prefix, P} | {event_type, T} | {stream | prefix, _, T} */
int get_stream_selector(ErlNifEnv *env, ERL_NIF_TERM t, tidemark_stream_selector *sel);

/* lockstep.c: runs fn(arg) on the reaper thread (for work a destructor must not do where it
 * runs); 0 if there is no reaper (out of memory or threads, or unloading). */
int reap_call(void (*fn)(void *), void *arg);

/* streams.c: #{stream, id, type, data, metadata, version, revision, timestamp_ms} */
ERL_NIF_TERM stream_event_map(ErlNifEnv *env, const tidemark_stream_event *e);

/* --- load and unload of each file (0 = failed) -------------------------------------------- */

int store_load(ErlNifEnv *env, ErlNifResourceFlags flags);
int watch_load(ErlNifEnv *env, ErlNifResourceFlags flags);
int lockstep_load(ErlNifEnv *env, ErlNifResourceFlags flags);
int streams_load(ErlNifEnv *env, ErlNifResourceFlags flags);
int trackers_load(ErlNifEnv *env, ErlNifResourceFlags flags);
int persistent_load(ErlNifEnv *env, ErlNifResourceFlags flags);
/* Unload: stop what collected lockstep handles still run, then close every open store. */
void lockstep_unload(void);
void store_unload(void);

/* --- the NIFs, by file --------------------------------------------------------------------- */

#define TM_NIF(name) ERL_NIF_TERM name(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

/* store.c */
TM_NIF(open_nif) TM_NIF(close_nif) TM_NIF(status_nif) TM_NIF(current_revision_nif)
TM_NIF(earliest_revision_nif) TM_NIF(watcher_count_nif) TM_NIF(version_nif) TM_NIF(put_nif)
TM_NIF(get_nif) TM_NIF(delete_nif) TM_NIF(batch_nif) TM_NIF(range_nif) TM_NIF(changes_nif)
TM_NIF(compact_nif) TM_NIF(status_reason_nif) TM_NIF(tail_repair_nif)
TM_NIF(metrics_nif)
/* watch.c */
TM_NIF(watch_nif) TM_NIF(unwatch_nif) TM_NIF(activate_nif) TM_NIF(watch_ended_nif)
/* subscriptions.c */
TM_NIF(subscribe_nif)
/* lockstep.c */
TM_NIF(serve_nif) TM_NIF(server_addr_nif) TM_NIF(server_port_nif) TM_NIF(server_status_nif)
TM_NIF(stop_server_nif) TM_NIF(follow_nif) TM_NIF(follower_status_nif) TM_NIF(stop_follower_nif)
TM_NIF(follower_dropped_nif)
/* contexts.c */
TM_NIF(context_write_nif) TM_NIF(context_get_nif) TM_NIF(context_delete_nif) TM_NIF(context_sync_nif)
TM_NIF(context_list_nif) TM_NIF(context_cleanup_nif) TM_NIF(set_clock_nif) TM_NIF(advance_clock_nif)
TM_NIF(context_cleaner_nif) TM_NIF(context_set_exporter_nif) TM_NIF(context_export_nif)
TM_NIF(context_restore_nif) TM_NIF(context_provider_nif)
/* streams.c */
TM_NIF(append_events_nif) TM_NIF(read_stream_nif) TM_NIF(stream_version_nif) TM_NIF(list_streams_nif)
TM_NIF(delete_stream_nif) TM_NIF(snapshot_record_nif) TM_NIF(snapshot_read_nif) TM_NIF(snapshot_delete_nif)
TM_NIF(snapshot_list_nif) TM_NIF(register_store_nif) TM_NIF(whereis_store_nif) TM_NIF(unregister_store_nif)
TM_NIF(registered_stores_nif)
/* trackers.c */
TM_NIF(join_nif) TM_NIF(leave_nif) TM_NIF(members_nif) TM_NIF(notify_nif)
/* persistent.c */
TM_NIF(subscription_create_nif) TM_NIF(subscription_delete_nif) TM_NIF(subscription_list_nif)
TM_NIF(subscription_parked_nif) TM_NIF(subscription_replay_parked_nif) TM_NIF(subscription_reset_nif) TM_NIF(subscription_connect_nif)
TM_NIF(subscription_activate_nif) TM_NIF(ack_nif) TM_NIF(nack_nif) TM_NIF(subscription_disconnect_nif)

#undef TM_NIF

#endif
