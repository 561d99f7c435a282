%% @private The NIF stubs of tidemark: one function per C function of c_src/, loaded from
%% priv/tidemark_nif.so. They only translate (no defaults, no validation beyond what C checks);
%% the documented API, with its argument checks and defaults, is the `tidemark' module.
-module(tidemark_nif).

-export([open_nif/2, close_nif/1, status_nif/1, metrics_nif/2, tail_repair_nif/1, current_revision_nif/1,
         earliest_revision_nif/1, watcher_count_nif/1, version_nif/0, put_nif/4,
         get_nif/2, delete_nif/2, batch_nif/2, range_nif/3,
         changes_nif/5, compact_nif/2, status_reason_nif/1,
         watch_nif/8, unwatch_nif/2, activate_nif/2, watch_ended_nif/1,
         subscribe_nif/8,
         serve_nif/3, server_addr_nif/1, server_port_nif/1, server_status_nif/1,
         stop_server_nif/1, follow_nif/4, follower_status_nif/1, stop_follower_nif/1,
         follower_dropped_nif/1,
         context_write_nif/4, context_get_nif/2, context_delete_nif/2, context_sync_nif/3,
         context_list_nif/5, context_cleanup_nif/2, set_clock_nif/2, advance_clock_nif/2,
         context_cleaner_nif/3, context_set_exporter_nif/2, context_export_nif/2,
         context_restore_nif/4, context_provider_nif/1, context_provider_nif/3,
         append_events_nif/4, read_stream_nif/5, stream_version_nif/2, list_streams_nif/4,
         delete_stream_nif/2, snapshot_record_nif/5, snapshot_read_nif/4, snapshot_delete_nif/4,
         snapshot_list_nif/3, register_store_nif/2, whereis_store_nif/1, unregister_store_nif/1,
         registered_stores_nif/0,
         join_nif/4, leave_nif/3, members_nif/2, notify_nif/5,
         subscription_create_nif/9, subscription_delete_nif/2, subscription_list_nif/1,
         subscription_parked_nif/3, subscription_replay_parked_nif/2, subscription_reset_nif/3, subscription_connect_nif/5,
         subscription_activate_nif/2, ack_nif/2, nack_nif/3, subscription_disconnect_nif/1
        ]).

-on_load(init/0).

init() ->
    Priv = case code:priv_dir(tidemark) of
               {error, _} ->
                   filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
               Dir ->
                   Dir
           end,
    erlang:load_nif(filename:join(Priv, "tidemark_nif"), 0).

-define(NIF, erlang:nif_error({nif_not_loaded, ?MODULE})).

open_nif(_Path, _OptsJson) -> ?NIF.
close_nif(_Store) -> ?NIF.
status_nif(_Store) -> ?NIF.
metrics_nif(_Store, _Format) -> ?NIF.
tail_repair_nif(_Store) -> ?NIF.
current_revision_nif(_Store) -> ?NIF.
earliest_revision_nif(_Store) -> ?NIF.
watcher_count_nif(_Store) -> ?NIF.
version_nif() -> ?NIF.
put_nif(_Store, _Key, _Value, _Expected) -> ?NIF.
get_nif(_Store, _Key) -> ?NIF.
delete_nif(_Store, _Key) -> ?NIF.
batch_nif(_Store, _Ops) -> ?NIF.
range_nif(_Store, _Selector, _Limit) -> ?NIF.
changes_nif(_Store, _Selector, _From, _To, _Limit) -> ?NIF.
compact_nif(_Store, _Keep) -> ?NIF.
%% The Reason of `{error, Reason}' for a status code; for the tests.
status_reason_nif(_Code) -> ?NIF.
watch_nif(_Store, _Selector, _Pid, _Start, _Credit, _MaxQueue, _ProgressMs, _Struct) -> ?NIF.
unwatch_nif(_Store, _Ref) -> ?NIF.
activate_nif(_Ref, _N) -> ?NIF.
%% True once the watch has ended (its last message was sent); for the tests.
watch_ended_nif(_Ref) -> ?NIF.
subscribe_nif(_Store, _StreamSelector, _Pid, _Start, _Credit, _MaxQueue, _ProgressMs, _Struct) -> ?NIF.
serve_nif(_Store, _Addr, _OptsJson) -> ?NIF.
server_addr_nif(_Server) -> ?NIF.
server_port_nif(_Server) -> ?NIF.
server_status_nif(_Server) -> ?NIF.
stop_server_nif(_Server) -> ?NIF.
follow_nif(_Store, _Url, _OptsJson, _Pid) -> ?NIF.
follower_status_nif(_Follower) -> ?NIF.
stop_follower_nif(_Follower) -> ?NIF.
%% True once the follower's context was dropped (it has stopped for good); for the tests.
follower_dropped_nif(_Follower) -> ?NIF.
context_write_nif(_Store, _Id, _Json, _Update) -> ?NIF.
context_get_nif(_Store, _Id) -> ?NIF.
context_delete_nif(_Store, _Id) -> ?NIF.
context_sync_nif(_Store, _Id, _ClientVersion) -> ?NIF.
%% `_Id' undefined: the contexts; an id: that context's deltas.
context_list_nif(_Store, _Id, _Limit, _Offset, _Desc) -> ?NIF.
context_cleanup_nif(_Store, _Limit) -> ?NIF.
%% `_Ms': a manual clock at that time, or `system'.
set_clock_nif(_Store, _Ms) -> ?NIF.
advance_clock_nif(_Store, _Ms) -> ?NIF.
%% `_What': start ({IntervalMs, Limit}), interval (IntervalMs) or stop.
context_cleaner_nif(_Store, _What, _Arg) -> ?NIF.
context_set_exporter_nif(_Store, _Pid) -> ?NIF.
context_export_nif(_Store, _Id) -> ?NIF.
context_restore_nif(_Store, _Id, _Json, _Version) -> ?NIF.
context_provider_nif(_Store) -> ?NIF.
context_provider_nif(_Store, _Pid, _TimeoutMs) -> ?NIF.
append_events_nif(_Store, _Stream, _Events, _Expected) -> ?NIF.
read_stream_nif(_Store, _Stream, _From, _Count, _Direction) -> ?NIF.
stream_version_nif(_Store, _Stream) -> ?NIF.
list_streams_nif(_Store, _Prefix, _After, _Limit) -> ?NIF.
delete_stream_nif(_Store, _Stream) -> ?NIF.
snapshot_record_nif(_Store, _Source, _Stream, _Version, _Data) -> ?NIF.
snapshot_read_nif(_Store, _Source, _Stream, _MaxVersion) -> ?NIF.
snapshot_delete_nif(_Store, _Source, _Stream, _Version) -> ?NIF.
snapshot_list_nif(_Store, _Source, _Stream) -> ?NIF.
register_store_nif(_Name, _Store) -> ?NIF.
whereis_store_nif(_Name) -> ?NIF.
unregister_store_nif(_Name) -> ?NIF.
registered_stores_nif() -> ?NIF.
join_nif(_Store, _Feature, _Pids, _StartRevision) -> ?NIF.
leave_nif(_Store, _Feature, _Pids) -> ?NIF.
members_nif(_Store, _Feature) -> ?NIF.
notify_nif(_Store, _Feature, _Action, _Id, _DataJson) -> ?NIF.
subscription_create_nif(_Store, _Name, _Selector, _Start, _StartRevision, _MaxInFlight, _MessageTimeoutMs,
                        _MaxRetry, _Pinned) -> ?NIF.
subscription_delete_nif(_Store, _Name) -> ?NIF.
subscription_list_nif(_Store) -> ?NIF.
subscription_parked_nif(_Store, _Name, _Limit) -> ?NIF.
subscription_replay_parked_nif(_Store, _Name) -> ?NIF.
subscription_reset_nif(_Store, _Name, _Revision) -> ?NIF.
subscription_connect_nif(_Store, _Name, _Pid, _Credit, _Struct) -> ?NIF.
subscription_activate_nif(_SubRef, _N) -> ?NIF.
ack_nif(_SubRef, _Revisions) -> ?NIF.
nack_nif(_SubRef, _Revision, _Action) -> ?NIF.
subscription_disconnect_nif(_SubRef) -> ?NIF.
