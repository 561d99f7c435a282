%% @doc tidemark: an embeddable change-feed engine (revision log + watch registry).
%%
%% A store is opened with {@link open/2}; every mutation gets the next revision (unique,
%% gap-free, from 1). Readers pull what changed with {@link changes/4}, or are pushed every
%% change as messages with {@link watch/3}:
%%
%% ```
%% {ok, S} = tidemark:open(memory, #{}),
%% {ok, Ref} = tidemark:watch(S, {prefix, <<"/tasks/">>}),
%% {ok, 1} = tidemark:put(S, <<"/tasks/1">>, <<"todo">>),
%% receive {tidemark_event, Ref, #{revision := 1, type := put}} -> ok end.
%% '''
%%
%% Watch messages, all `{tidemark_event, Ref, Body}':
%% <ul>
%% <li>`#{revision, type => put | delete, key, value, version, create_revision}': one change,
%%     in revision order, gap-free; a batch's events are never split by flow control;</li>
%% <li>`{progress, Revision}': the watch has seen everything up to `Revision' (only with
%%     `progress_interval_ms');</li>
%% <li>`{compacted, Earliest}': compaction removed revisions the watch had not delivered
%%     yet; the watch has ended; resync from `Earliest' with {@link range/3} and
%%     {@link changes/4};</li>
%% <li>`closed': the store was closed (or garbage-collected); the watch has ended.</li>
%% </ul>
%%
%% Flow control works like `{active, N}' on sockets: with `active => N' the watch delivers
%% at most N events (plus the rest of a commit it started), then sends
%% `{tidemark_passive, Ref}' and waits, keeping the rest in the store, until
%% {@link activate/2} grants more. Nothing is lost and the mailbox stays bounded.
%%
%% lockstep over HTTP: {@link serve/3} serves a store's keys as an NDJSON feed;
%% {@link follow/3} mirrors such a feed into a store and reports what it does as
%% `{tidemark_lockstep, Follower, #{kind := connected | applied | malformed | error |
%% resync_started | resync_done, ...}}' messages. Both are handles the garbage collector
%% owns (see docs/erlang.md for when a collected one stops).
-module(tidemark).

-export([open/2, close/1, version/0,
         put/3, put/4, get/2, delete/2, batch/2,
         range/3, changes/3, changes/4,
         compact/2, earliest_revision/1, current_revision/1, status/1, tail_repair/1,
         metrics/1, metrics_text/1,
         watch/2, watch/3, unwatch/2, activate/2, watcher_count/1,
         subscribe/2, subscribe/3, unsubscribe/2,
         serve/3, server_addr/1, server_port/1, server_status/1, stop_server/1,
         follow/3, follower_status/1, stop_follower/1,
         context_set/3, context_update/3, context_get/2, context_delete/2, context_sync/3,
         context_list/2, context_deltas/3, context_cleanup/2, set_clock/2, advance_clock/2,
         context_cleaner_start/3, context_cleaner_set_interval/2, context_cleaner_stop/1,
         context_set_exporter/2, context_export/2, context_set_provider/3, context_restore/4,
         append_events/4, read_stream/5, stream_version/2, list_streams/4, delete_stream/2,
         record_snapshot/5, read_snapshot/4, delete_snapshot/4, list_snapshots/3,
         open_named/3, whereis_store/1, stores/0, close_named/1,
         join/3, join/4, leave/3, members/2, notify/5,
         notify_created/4, notify_updated/4, notify_deleted/4,
         subscription_create/3, subscription_delete/2, subscription_list/1,
         subscription_parked/3, subscription_replay_parked/2, subscription_reset/3,
         subscription_connect/3, subscription_activate/2, ack/2, nack/3,
         subscription_disconnect/1]).

-export_type([store/0, watch_ref/0, key/0, selector/0, revision/0, event/0, error/0,
              server/0, follower/0, lockstep_event/0, expected_version/0, stream_event/0,
              snapshot/0, document/0, json_patch/0, stream_selector/0, sub_ref/0,
              delivery/0]).

-opaque store() :: reference().
-type watch_ref() :: reference().
-type key() :: iodata().
-type revision() :: non_neg_integer().
-type selector() :: all | {key, key()} | {prefix, key()} | {range, key(), key() | infinity}.
%% Which stream events a subscription delivers (see {@link subscribe/3}).
-type stream_selector() :: all | {stream, iodata()} | {prefix, iodata()} | {event_type, iodata()}
                         | {stream, iodata(), iodata()} | {prefix, iodata(), iodata()}.
-type event() :: #{revision := revision(), type := put | delete, key := binary(),
                   value := binary(), version := non_neg_integer(),
                   create_revision := revision()}.
-opaque server() :: reference().
-opaque follower() :: reference().
-type lockstep_event() :: #{kind := connected | applied | malformed | error | resync_started
                                    | resync_done | non_neg_integer(),
                            records := non_neg_integer(), writes := non_neg_integer(),
                            revision := revision(), retry_ms := non_neg_integer(),
                            cursor := binary() | undefined, message := binary() | undefined,
                            line := binary() | undefined}.
%% One reason per status code of include/tidemark.h (the atom is the code's name without
%% `TIDEMARK_ERR_', lowercased; the tests check every code against this type), plus `noproc'.
-type error() :: {error, not_found | closed | timeout | noproc
                        | {compacted, Earliest :: revision()}
                        | {conflict, CurrentModRevision :: revision()}
                        | {future_revision, Current :: revision()}
                        | {invalid_argument | null_argument | locked | io | corrupt | too_large
                           | panic, binary()}
                        | {unknown, Code :: non_neg_integer(), binary()}}.

%% A context document: a map with binary keys (as decoded: strings are binaries, JSON null is
%% `null', arrays are lists). As input, atom keys and `nil' (for null) are accepted too, and a
%% binary is taken as JSON text.
-type document() :: #{binary() => term()}.
%% An RFC 6902 JSON Patch: a list of operations `#{<<"op">> => <<"add">>, <<"path">> => ...}'.
-type json_patch() :: [#{binary() => term()}].
-type expected_version() :: any | no_stream | stream_exists | non_neg_integer().
-type stream_event() :: #{stream := binary(), id := <<_:128>>, type := binary(), data := binary(),
                          metadata := binary(), version := non_neg_integer(),
                          revision := revision(), timestamp_ms := non_neg_integer()}.
%% A consumer of a persistent subscription (see {@link subscription_connect/3}).
-opaque sub_ref() :: reference().
%% An event of a persistent subscription: the stream event and its delivery count.
-type delivery() :: #{stream := binary(), id := <<_:128>>, type := binary(), data := binary(),
                      metadata := binary(), version := non_neg_integer(), revision := revision(),
                      timestamp_ms := non_neg_integer(), delivery_count := pos_integer()}.
-type snapshot() :: #{source := binary(), stream := binary(), version := non_neg_integer(),
                      revision := revision(), timestamp_ms := non_neg_integer(), data := binary()}.

-define(U64_MAX, 18446744073709551615).

%%% Stores

%% @doc Opens a store: `memory' for an in-memory store, or a directory path for a durable
%% store. `Opts' is a map of store options (`dispatch_threads', `max_key_size',
%% `max_value_size', ...) passed to the C API as a JSON object.
-spec open(memory | file:filename_all(), map()) -> {ok, store()} | error().
open(memory, Opts) when is_map(Opts) ->
    tidemark_nif:open_nif(<<>>, options_json(Opts));
open(Path, Opts) when (is_list(Path) orelse is_binary(Path)), is_map(Opts) ->
    case unicode:characters_to_binary(Path) of
        Bin when is_binary(Bin), Bin =/= <<>> -> tidemark_nif:open_nif(Bin, options_json(Opts));
        _ -> erlang:error(badarg)
    end;
open(_, _) ->
    erlang:error(badarg).

%% @doc Closes the store: every watch receives `closed' and ends. Idempotent. A store that is
%% garbage-collected is closed the same way.
-spec close(store()) -> ok.
close(Store) -> tidemark_nif:close_nif(Store).

%% @doc The version of the tidemark library.
-spec version() -> binary().
version() -> tidemark_nif:version_nif().

%% @doc The store's state (`revision', `earliest_revision', `keys', `watchers', ...).
-spec status(store()) -> {ok, map()} | error().
status(Store) ->
    case tidemark_nif:status_nif(Store) of
        {ok, Json} -> {ok, tidemark_json:decode(Json)};
        Error -> Error
    end.

%% @doc The store's metrics as a map by family name (see docs/operations.md): a number, a
%% histogram `#{<<"count">>, <<"sum">>, <<"buckets">>}', or a list of
%% `#{<<"labels">> => #{...}, <<"value">> => V}' for a labeled family.
-spec metrics(store()) -> {ok, map()} | error().
metrics(Store) ->
    case tidemark_nif:metrics_nif(Store, json) of
        {ok, Json} -> {ok, tidemark_json:decode(Json)};
        Error -> Error
    end.

%% @doc The store's metrics in the Prometheus text exposition format.
-spec metrics_text(store()) -> {ok, binary()} | error().
metrics_text(Store) -> tidemark_nif:metrics_nif(Store, text).

%% @doc What opening a directory store cut off the end of its log (a torn tail, see
%% docs/durability.md "Tail repairs"): `none', or the bytes, commits and revisions cut and
%% the first revision cut.
-spec tail_repair(store()) ->
          none | #{bytes := non_neg_integer(), commits := pos_integer(),
                   revisions := non_neg_integer(), first_revision := revision()} | error().
tail_repair(Store) ->
    case tidemark_nif:tail_repair_nif(Store) of
        {_, 0, _, _} -> none;
        {Bytes, Commits, Revisions, First} ->
            #{bytes => Bytes, commits => Commits, revisions => Revisions, first_revision => First};
        Error -> Error
    end.

-spec current_revision(store()) -> revision() | {error, closed}.
current_revision(Store) -> tidemark_nif:current_revision_nif(Store).

-spec earliest_revision(store()) -> revision() | {error, closed}.
earliest_revision(Store) -> tidemark_nif:earliest_revision_nif(Store).

%% @doc Push watches that have not ended.
-spec watcher_count(store()) -> non_neg_integer() | {error, closed}.
watcher_count(Store) -> tidemark_nif:watcher_count_nif(Store).

%%% Keys

%% @doc Sets `Key' to `Value'; returns the new revision.
-spec put(store(), key(), iodata()) -> {ok, revision()} | error().
put(Store, Key, Value) -> tidemark_nif:put_nif(Store, Key, Value, none).

%% @doc Like {@link put/3}; with `#{expected_mod_revision => N}' only if the key's
%% mod_revision is `N' (0 = the key must not exist), otherwise `{error, {conflict, Current}}'.
-spec put(store(), key(), iodata(), #{expected_mod_revision => revision()}) ->
          {ok, revision()} | error().
put(Store, Key, Value, #{expected_mod_revision := N} = Opts)
  when is_integer(N), N >= 0, map_size(Opts) =:= 1 ->
    tidemark_nif:put_nif(Store, Key, Value, N);
put(Store, Key, Value, Opts) when Opts =:= #{} ->
    tidemark_nif:put_nif(Store, Key, Value, none);
put(_, _, _, _) ->
    erlang:error(badarg).

-spec get(store(), key()) ->
          {ok, #{value := binary(), create_revision := revision(),
                 mod_revision := revision(), version := pos_integer()}} | error().
get(Store, Key) -> tidemark_nif:get_nif(Store, Key).

%% @doc Deletes `Key'; returns the delete's revision. A missing key is `{error, not_found}'.
-spec delete(store(), key()) -> {ok, revision()} | error().
delete(Store, Key) -> tidemark_nif:delete_nif(Store, Key).

%% @doc Applies operations atomically at consecutive revisions, all or nothing; returns the
%% first write's revision (0 if there were only requirements). `{require, K, Rev}' demands
%% that K's mod_revision is Rev (0 = K must not exist), else `{error, {conflict, Current}}'.
-spec batch(store(), [{put, key(), iodata()} | {delete, key()} | {require, key(), revision()}]) ->
          {ok, revision()} | error().
batch(Store, Ops) -> tidemark_nif:batch_nif(Store, Ops).

%% @doc The current keys matching `Selector', in byte order, at most `Limit' (0 = all).
-spec range(store(), selector(), non_neg_integer()) ->
          {ok, #{entries := [#{key := binary(), value := binary(),
                               create_revision := revision(), mod_revision := revision(),
                               version := pos_integer()}],
                 has_more := boolean()}} | error().
range(Store, Selector, Limit) when is_integer(Limit), Limit >= 0 ->
    tidemark_nif:range_nif(Store, Selector, Limit);
range(_, _, _) ->
    erlang:error(badarg).

%% @doc The changes with revision in `[From, To]' (`To' 0 = current), at most 1000.
%% @equiv changes(Store, From, To, #{})
-spec changes(store(), revision(), revision()) ->
          {ok, #{events := [event()], has_more := boolean(), next_revision := revision()}}
              | error().
changes(Store, From, To) -> changes(Store, From, To, #{}).

%% @doc The changes matching `selector' (default `all') with revision in `[From, To]'
%% (`To' 0 = current), ascending, at most about `limit' (default 1000; a commit is never
%% split). When `has_more' is true, call again from `next_revision'. `From' below the
%% earliest retained revision is `{error, {compacted, Earliest}}'; beyond current + 1,
%% `{error, {future_revision, Current}}'.
-spec changes(store(), revision(), revision(),
              #{limit => pos_integer(), selector => selector()}) ->
          {ok, #{events := [event()], has_more := boolean(), next_revision := revision()}}
              | error().
changes(Store, From, To, Opts) when is_map(Opts) ->
    Limit = maps:get(limit, Opts, 0),
    Selector = maps:get(selector, Opts, all),
    check_keys(Opts, [limit, selector]),
    tidemark_nif:changes_nif(Store, Selector, From, To, Limit);
changes(_, _, _, _) ->
    erlang:error(badarg).

%% @doc Drops log entries below `Keep' (the keys' current state is kept); returns how many.
%% A watch that had not yet delivered a dropped event it matches ends with
%% `{compacted, Earliest}'.
-spec compact(store(), revision()) -> {ok, non_neg_integer()} | error().
compact(Store, Keep) -> tidemark_nif:compact_nif(Store, Keep).

%%% Watches

%% @equiv watch(Store, Selector, #{})
-spec watch(store(), selector()) -> {ok, watch_ref()} | error().
watch(Store, Selector) -> watch(Store, Selector, #{}).

%% @doc Sends every change matching `Selector' to `pid' (default: the caller) as
%% `{tidemark_event, Ref, Body}' messages. Options:
%% <ul>
%% <li>`pid': the receiver; it is monitored, and the watch ends when it dies;</li>
%% <li>`start_revision': 0 (default) = only changes after this call; N = replay from N;</li>
%% <li>`active': `true' (default) or N (a positive integer, or `once' = 1): flow control,
%%     see {@link activate/2};</li>
%% <li>`max_queue': events buffered in memory before the watch reads from the log instead
%%     (default 1000);</li>
%% <li>`progress_interval_ms': send `{progress, Rev}' after this long without an event;</li>
%% <li>`struct': a module name; each event map gets `'__struct__' => Module', so it arrives
%%     as that Elixir struct (the Elixir package's `Tidemark.Event').</li>
%% </ul>
-spec watch(store(), selector(),
            #{pid => pid(), start_revision => revision(), active => true | once | pos_integer(),
              max_queue => pos_integer(), progress_interval_ms => non_neg_integer(),
              struct => module()}) ->
          {ok, watch_ref()} | error().
watch(Store, Selector, Opts) when is_map(Opts) ->
    {Pid, Start, Credit, MaxQueue, Progress, Struct} = watch_opts(Opts),
    tidemark_nif:watch_nif(Store, Selector, Pid, Start, Credit, MaxQueue, Progress, Struct);
watch(_, _, _) ->
    erlang:error(badarg).

%% The options of watch/3 and subscribe/3, checked.
watch_opts(Opts) ->
    check_keys(Opts, [pid, start_revision, active, max_queue, progress_interval_ms, struct]),
    Credit = case maps:get(active, Opts, true) of
                 true -> 0;
                 once -> 1;
                 N when is_integer(N), N > 0 -> N;
                 _ -> erlang:error(badarg)
             end,
    {maps:get(pid, Opts, self()), maps:get(start_revision, Opts, 0), Credit,
     maps:get(max_queue, Opts, 0), maps:get(progress_interval_ms, Opts, 0),
     maps:get(struct, Opts, undefined)}.

%% @doc Ends a watch. When it returns no further message for `Ref' is sent (messages already
%% in the mailbox stay there). `{error, not_found}' if the watch had already ended.
-spec unwatch(store(), watch_ref()) -> ok | error().
unwatch(Store, Ref) -> tidemark_nif:unwatch_nif(Store, Ref).

%% @doc Lets a watch opened with `active => N' deliver `N' more events (`once' = 1, `true' =
%% no limit from now on). Like sockets: when the credit runs out the watch sends
%% `{tidemark_passive, Ref}' after its last event; call `activate' when you receive it.
%% Has no effect on a watch opened with `active => true'.
-spec activate(watch_ref(), pos_integer() | once | true) -> ok | error().
activate(Ref, once) -> tidemark_nif:activate_nif(Ref, 1);
activate(Ref, true) -> tidemark_nif:activate_nif(Ref, ?U64_MAX);
activate(Ref, N) when is_integer(N), N > 0 -> tidemark_nif:activate_nif(Ref, N);
activate(_, _) -> erlang:error(badarg).

%%% Transient subscriptions (docs/subscriptions.md)

%% @equiv subscribe(Store, Selector, #{})
-spec subscribe(store(), stream_selector()) -> {ok, watch_ref()} | error().
subscribe(Store, Selector) -> subscribe(Store, Selector, #{}).

%% @doc Sends the stream events `Selector' matches to `pid' (default: the caller) as
%% `{tidemark_sub_event, Ref, Body}' messages, in global revision order, gap-free: `Body' is
%% a stream event map (as {@link read_stream/5} returns), `{progress, Rev}', or, last,
%% `{compacted, Earliest}' or `closed'. `Selector': `all', `{stream, Name}', `{prefix, P}',
%% `{event_type, T}', or `{stream, Name, T}' / `{prefix, P, T}' (events of type `T' only).
%% Options as for {@link watch/3}: `start_revision' 0 (default) = appended from now on, 1 =
%% from the beginning, N = from revision N; `active => N' is flow control counted in
%% subscription events (`{tidemark_passive, Ref}', then {@link activate/2}). A subscription
%% is a watch: `Ref' works with {@link unwatch/2} and {@link activate/2}. A name that is empty
%% or longer than 1024 bytes is `{error, {invalid_argument | too_large, Msg}}'; a malformed
%% selector (or an empty type) is `badarg'.
-spec subscribe(store(), stream_selector(),
                #{pid => pid(), start_revision => revision(), active => true | once | pos_integer(),
                  max_queue => pos_integer(), progress_interval_ms => non_neg_integer(),
                  struct => module()}) ->
          {ok, watch_ref()} | error().
subscribe(Store, Selector, Opts) when is_map(Opts) ->
    {Pid, Start, Credit, MaxQueue, Progress, Struct} = watch_opts(Opts),
    tidemark_nif:subscribe_nif(Store, Selector, Pid, Start, Credit, MaxQueue, Progress, Struct);
subscribe(_, _, _) ->
    erlang:error(badarg).

%% @doc Ends a subscription: {@link unwatch/2}.
-spec unsubscribe(store(), watch_ref()) -> ok | error().
unsubscribe(Store, Ref) -> unwatch(Store, Ref).

%%% lockstep over HTTP (docs/lockstep.md)

%% @doc Serves the keys of `Store' over HTTP as lockstep feeds: `GET /<path>/<since>' answers
%% the records under `/<path>/' as NDJSON, `?follow=true' keeps streaming live changes.
%% `Addr' is `"host:port"' (a binary or string; port 0 picks a free port) or `default'
%% (`"127.0.0.1:0"'); a non-loopback address needs `allow_remote => true'. `Opts' (all
%% optional): `writable', `token', `heartbeat_ms', `max_connections' (finite requests at
%% once), `max_follows' (follow streams at once), `max_sockets', `threads', `tls_cert' and
%% `tls_key' (PEM files: serve HTTPS), `max_header_bytes', `max_body_bytes', `allow_remote',
%% `max_queue', `idle_timeout_ms', `request_timeout_ms', `write_timeout_ms'; unknown options and bad values are `{error, {invalid_argument, Msg}}'.
%%
%% The server runs on its own threads until {@link stop_server/1}, or until its handle is
%% garbage-collected. While it runs it keeps `Store' from being garbage-collected;
%% {@link close/1} of the store is still allowed (requests then get 503).
-spec serve(store(), default | iodata(), map()) -> {ok, server()} | error().
serve(Store, Addr, Opts) when is_map(Opts) ->
    A = case Addr of
            default -> default;
            _ -> to_binary(Addr)
        end,
    tidemark_nif:serve_nif(Store, A, lockstep_json(Opts));
serve(_, _, _) ->
    erlang:error(badarg).

%% @doc The address the server listens on, e.g. `<<"127.0.0.1:38123">>' (still answered after
%% the server has stopped).
-spec server_addr(server()) -> binary().
server_addr(Server) -> tidemark_nif:server_addr_nif(Server).

%% @doc The port the server listens on.
-spec server_port(server()) -> 0..65535.
server_port(Server) -> tidemark_nif:server_port_nif(Server).

%% @doc The server's counters: `addr', `connections', `accepted_connections', `following', `requests',
%% `records_served', `refused_connections', `writable', `auth', `heartbeat_ms'.
%% `{error, closed}' once stopped.
-spec server_status(server()) -> map() | {error, closed}.
server_status(Server) -> lockstep_status_result(tidemark_nif:server_status_nif(Server)).

%% @doc Stops the server: no new connections, every follow response ends with its final
%% chunk, and every server thread has ended when it returns (clients that read nothing are
%% cut after about a second). Runs on a dirty I/O scheduler. Idempotent.
-spec stop_server(server()) -> ok.
stop_server(Server) -> tidemark_nif:stop_server_nif(Server).

%% @doc Mirrors the lockstep feed at `Url' (e.g. `"http://127.0.0.1:4567/servers/"') into
%% `Store': a record is put at `Prefix ++ id' as the JSON line received, a tombstone
%% (`deleted_at' set) deletes that key; the cursor is committed with the records, so a
%% follower of a durable store resumes exactly where its data is after a restart.
%%
%% `Opts' (all optional): `pid' (default `self()'; `none' for no messages), and the follower
%% options `prefix' (default: the URL's path), `id_field', `order_by', `token', `follow',
%% `cursor_param', `cursor_key', `poll_ms', `connect_timeout_ms', `idle_timeout_ms',
%% `backoff_initial_ms', `backoff_max_ms', `batch_records', `max_line_bytes', `adopt' (a
%% first sync into a prefix that holds keys is refused without it), `allow_root_prefix',
%% `tls_ca_file' (PEM roots trusted for `https://' URLs), `name' (how a tidemark server's
%% metrics and status page name this follower).
%%
%% `pid' receives `{tidemark_lockstep, Follower, Event}' (`Event' is a `lockstep_event()');
%% it is monitored, and messages stop when it dies. The follower runs until
%% {@link stop_follower/1}, or until it is garbage: nobody holds its handle and its `pid' has
%% exited (or `pid => none'). A running follower keeps `Store' from being garbage-collected.
-spec follow(store(), iodata(), map()) -> {ok, follower()} | error().
follow(Store, Url, Opts) when is_map(Opts) ->
    Pid = case maps:get(pid, Opts, self()) of
              none -> none;
              P when is_pid(P) -> P;
              _ -> erlang:error(badarg)
          end,
    tidemark_nif:follow_nif(Store, to_binary(Url), lockstep_json(maps:remove(pid, Opts)), Pid);
follow(_, _, _) ->
    erlang:error(badarg).

%% @doc The follower's state: `state' (`starting', `connecting', `streaming', `polling',
%% `backoff'), `cursor' (decoded: an integer, a binary, or `undefined'), `resyncing',
%% `connected', `records', `writes', `batches', `malformed_lines', `errors', `connections',
%% `resyncs', `heartbeats', `local_revision', `last_error', `last_malformed', `url',
%% `prefix'. `{error, closed}' once stopped.
-spec follower_status(follower()) -> map() | {error, closed}.
follower_status(Follower) -> lockstep_status_result(tidemark_nif:follower_status_nif(Follower)).

%% @doc Stops the follower. When it returns its thread has ended and no further message for
%% it is sent (messages already in the mailbox stay there). Takes at most about
%% `connect_timeout_ms'; runs on a dirty I/O scheduler. Idempotent.
-spec stop_follower(follower()) -> ok.
stop_follower(Follower) -> tidemark_nif:stop_follower_nif(Follower).

%%% Contexts (docs/contexts.md)

%% @doc Replaces the context `Id' with `Doc' (a map, or JSON text as a binary; it must be a
%% JSON object). Returns the new document, its version (the first write is 1) and the RFC 6902
%% delta from the previous version; a document equal to the current one writes nothing
%% (`delta => []', `revision => 0').
-spec context_set(store(), key(), document() | binary()) ->
          {ok, #{document := document(), version := pos_integer(), delta := json_patch(),
                 revision := revision()}} | error().
context_set(Store, Id, Doc) -> context_write(Store, Id, Doc, false).

%% @doc Applies `Patch', an RFC 7386 JSON Merge Patch (a map; `null' removes a field), to the
%% context `Id' (an absent one is `#{}'). Concurrent updates each get their own version.
-spec context_update(store(), key(), document() | binary()) ->
          {ok, #{document := document(), version := pos_integer(), delta := json_patch(),
                 revision := revision()}} | error().
context_update(Store, Id, Patch) ->
    Write = fun() -> context_write(Store, Id, Patch, true) end,
    case tidemark_nif:context_provider_nif(Store) of
        undefined -> Write();
        _ ->
            case tidemark_nif:context_get_nif(Store, Id) of
                {error, not_found} -> with_provider(Store, Id, Write, Write);
                _ -> Write()
            end
    end.

context_write(Store, Id, Doc, Update) ->
    envelope(tidemark_nif:context_write_nif(Store, Id, json_doc(Doc), Update)).

json_doc(Doc) when is_binary(Doc) -> Doc;
json_doc(Doc) when is_map(Doc) -> tidemark_json:encode(Doc);
json_doc(_) -> erlang:error(badarg).

%% @doc The context `Id': its document, version, `created_ms', `updated_ms' (store clock) and
%% revision; `{error, not_found}' when it does not exist.
-spec context_get(store(), key()) ->
          {ok, #{id := binary(), document := document(), version := pos_integer(),
                 created_ms := non_neg_integer(), updated_ms := non_neg_integer(),
                 revision := revision()}} | error().
context_get(Store, Id) ->
    Get = fun() -> envelope(tidemark_nif:context_get_nif(Store, Id)) end,
    case Get() of
        {error, not_found} = Missing -> with_provider(Store, Id, Get, fun() -> Missing end);
        Found -> Found
    end.

%% @doc Deletes the context and all its deltas in one commit; returns its revision.
-spec context_delete(store(), key()) -> {ok, revision()} | error().
context_delete(Store, Id) -> tidemark_nif:context_delete_nif(Store, Id).

%% @doc What a client at `ClientVersion' (`undefined', `nil' or =< 0: it has nothing) needs to
%% reach the current version `V': `{no_change, V}', `{delta, Patch, V}' (one RFC 6902 patch that
%% turns exactly the client's version into `V') or `{full_context, Doc, V}' whenever the
%% retained deltas cannot do that exactly (too old, pruned, expired, unknown or future).
-spec context_sync(store(), key(), integer() | undefined | nil) ->
          {full_context, document(), pos_integer()} | {delta, json_patch(), pos_integer()}
          | {no_change, pos_integer()} | error().
context_sync(Store, Id, V) when V =:= undefined; V =:= nil ->
    context_sync(Store, Id, -1);
context_sync(Store, Id, V) when is_integer(V) ->
    Client = max(-1, min(V, 16#7fffffffffffffff)),
    Sync = fun() -> sync_answer(tidemark_nif:context_sync_nif(Store, Id, Client)) end,
    case Sync() of
        {error, not_found} = Missing -> with_provider(Store, Id, Sync, fun() -> Missing end);
        Answer -> Answer
    end;
context_sync(_, _, _) ->
    erlang:error(badarg).

sync_answer({ok, 0, Version, undefined}) -> {no_change, Version};
sync_answer({ok, 1, Version, Json}) -> {delta, tidemark_json:decode(Json, binary), Version};
sync_answer({ok, 2, Version, Json}) -> {full_context, tidemark_json:decode(Json, binary), Version};
sync_answer(Error) -> Error.

%% @doc Contexts in id order, as {@link context_get/2} returns them. Options: `limit'
%% (0 = 1000), `offset', `order' (`asc' | `desc').
-spec context_list(store(), #{limit => non_neg_integer(), offset => non_neg_integer(),
                             order => asc | desc}) -> {ok, [map()]} | error().
context_list(Store, Opts) ->
    {Limit, Offset, Desc} = list_opts(Opts),
    envelopes(tidemark_nif:context_list_nif(Store, undefined, Limit, Offset, Desc)).

%% @doc The retained deltas of `Id' by version, each `#{version, timestamp_ms, patch}'.
%% Options as for {@link context_list/2} (`limit' 0 = all).
-spec context_deltas(store(), key(), #{limit => non_neg_integer(), offset => non_neg_integer(),
                                       order => asc | desc}) -> {ok, [map()]} | error().
context_deltas(Store, Id, Opts) ->
    {Limit, Offset, Desc} = list_opts(Opts),
    envelopes(tidemark_nif:context_list_nif(Store, to_id(Id), Limit, Offset, Desc)).

%% @doc One cleanup pass by the store's clock (`context_ttl_ms' with `context_auto_delete',
%% `delta_ttl_ms'), changing at most `Limit' contexts (0 = no limit). Returns how many
%% contexts and deltas it deleted.
-spec context_cleanup(store(), non_neg_integer()) ->
          {ok, {non_neg_integer(), non_neg_integer()}} | error().
context_cleanup(Store, Limit) when is_integer(Limit), Limit >= 0 ->
    tidemark_nif:context_cleanup_nif(Store, Limit);
context_cleanup(_, _) ->
    erlang:error(badarg).

%% @doc Sets the exporter of the store's contexts: the process `Pid' (`undefined' removes it)
%% receives `{tidemark_context_export, Id, ContextJson, Version}' for every export:
%% {@link context_export/2} and every cleanup pass, which hands it each expired context before
%% deleting it (a dead exporter fails the export: cleanup then keeps the context).
%% `ContextJson' is the context as JSON text (`tidemark_json:decode(Json, binary)' gives the
%% map {@link context_get/2} returns, with binary keys). The message is sent by the library
%% (from the caller's scheduler or from the store's cleanup thread), so it arrives after the
%% export returned; a context is deleted by cleanup once the message is sent.
-spec context_set_exporter(store(), pid() | undefined) -> ok | error().
context_set_exporter(Store, Pid) when is_pid(Pid); Pid =:= undefined ->
    tidemark_nif:context_set_exporter_nif(Store, Pid);
context_set_exporter(_, _) ->
    erlang:error(badarg).

%% @doc Hands the context `Id' to the exporter (see {@link context_set_exporter/2}) and
%% returns it. `{error, not_found}' when it does not exist, `{error, {invalid_argument, _}}'
%% without an exporter, `{error, {io, _}}' when the exporter process is dead.
-spec context_export(store(), key()) -> {ok, map()} | error().
context_export(Store, Id) -> envelope(tidemark_nif:context_export_nif(Store, Id)).

%% @doc Sets the provider of missing contexts: when {@link context_get/2},
%% {@link context_update/3} or {@link context_sync/3} finds the context `Id' missing, the
%% calling process sends `Pid' `{tidemark_context_restore, From, Ref, Id}' and waits up to
%% `TimeoutMs' in a `receive' (no scheduler blocks) for `From ! {Ref, Answer}', where `Answer'
%% is `{ok, Doc}', `{ok, Doc, Version}' (the version it had where it was kept), `not_found' or
%% `{error, Reason}'. A document is stored with {@link context_restore/4} and the call goes on
%% with it; `not_found' leaves get and sync `{error, not_found}' (update starts from `#{}');
%% `{error, Reason}' gives `{error, {provider, Reason}}', no answer in time `{error, timeout}',
%% a dead provider `{error, {provider_down, Why}}'; then nothing is written. A late answer is
%% dropped (the request's reply alias is gone). `undefined' removes the provider.
-spec context_set_provider(store(), pid() | undefined, non_neg_integer()) -> ok | error().
context_set_provider(Store, Pid, TimeoutMs)
  when (is_pid(Pid) orelse Pid =:= undefined), is_integer(TimeoutMs), TimeoutMs >= 0 ->
    tidemark_nif:context_provider_nif(Store, Pid, TimeoutMs);
context_set_provider(_, _, _) ->
    erlang:error(badarg).

%% @doc Stores `Doc' as the context `Id' if it does not exist (one commit, no delta), at the
%% larger of `Version' (0 = unknown) and the version a new write of the id gets (1, or the one
%% after a deleted context's). Returns the context as it is then (another writer's, if first).
-spec context_restore(store(), key(), document() | binary(), non_neg_integer()) -> {ok, map()} | error().
context_restore(Store, Id, Doc, Version) when is_integer(Version), Version >= 0 ->
    envelope(tidemark_nif:context_restore_nif(Store, Id, json_doc(Doc), Version));
context_restore(_, _, _, _) ->
    erlang:error(badarg).

%% Runs `Then' after asking the provider (if any) for the missing context `Id' and storing its
%% answer; `Missing' when there is no provider or it has none.
with_provider(Store, Id, Then, Missing) ->
    case tidemark_nif:context_provider_nif(Store) of
        {Pid, Timeout} ->
            Ref = erlang:monitor(process, Pid, [{alias, reply_demonitor}]),
            Pid ! {tidemark_context_restore, Ref, Ref, iolist_to_binary(Id)},
            receive
                {Ref, Answer} -> provided(Store, Id, Answer, Then, Missing);
                {'DOWN', Ref, process, _, Why} -> {error, {provider_down, Why}}
            after Timeout ->
                erlang:demonitor(Ref, [flush]),
                {error, timeout}
            end;
        undefined -> Missing();
        Error -> Error
    end.

provided(Store, Id, {ok, Doc}, Then, Missing) -> provided(Store, Id, {ok, Doc, 0}, Then, Missing);
provided(Store, Id, {ok, Doc, Version}, Then, _) ->
    case context_restore(Store, Id, Doc, Version) of
        {ok, _} -> Then();
        Error -> Error
    end;
provided(_, _, not_found, _, Missing) -> Missing();
provided(_, _, {error, Reason}, _, _) -> {error, {provider, Reason}}.

%% @doc The store's clock, from which every timestamp and TTL of its features comes:
%% `{manual, Ms}' installs a manual clock at `Ms' (ms since the epoch) that only
%% {@link advance_clock/2} moves (tests use it instead of sleeping); `system' goes back to the
%% system clock.
-spec set_clock(store(), {manual, non_neg_integer()} | system) -> ok | error().
set_clock(Store, {manual, Ms}) when is_integer(Ms), Ms >= 0 -> tidemark_nif:set_clock_nif(Store, Ms);
set_clock(Store, system) -> tidemark_nif:set_clock_nif(Store, system);
set_clock(_, _) -> erlang:error(badarg).

%% @doc Moves the manual clock forward by `Ms'; returns its new time. (Without a manual clock
%% installed it only changes what a later `{manual, _}' would start from: nothing reads it.)
-spec advance_clock(store(), non_neg_integer()) -> {ok, non_neg_integer()} | error().
advance_clock(Store, Ms) when is_integer(Ms), Ms >= 0 -> tidemark_nif:advance_clock_nif(Store, Ms);
advance_clock(_, _) -> erlang:error(badarg).

%% @doc Starts the store's cleanup thread: one {@link context_cleanup/2} pass every
%% `IntervalMs' (> 0) until {@link context_cleaner_stop/1} or close; when it runs already,
%% sets its interval and limit. `status/1' shows it as `context_cleaner'.
-spec context_cleaner_start(store(), pos_integer(), non_neg_integer()) -> ok | error().
context_cleaner_start(Store, IntervalMs, Limit)
  when is_integer(IntervalMs), IntervalMs >= 0, is_integer(Limit), Limit >= 0 ->
    tidemark_nif:context_cleaner_nif(Store, start, {IntervalMs, Limit});
context_cleaner_start(_, _, _) -> erlang:error(badarg).

%% @doc Changes the running cleanup thread's interval; `{error, not_found}' when none runs.
-spec context_cleaner_set_interval(store(), pos_integer()) -> ok | error().
context_cleaner_set_interval(Store, IntervalMs) when is_integer(IntervalMs), IntervalMs >= 0 ->
    tidemark_nif:context_cleaner_nif(Store, interval, IntervalMs);
context_cleaner_set_interval(_, _) -> erlang:error(badarg).

%% @doc Stops the cleanup thread and waits for it; `{ok, WasRunning}'.
-spec context_cleaner_stop(store()) -> {ok, boolean()} | error().
context_cleaner_stop(Store) -> tidemark_nif:context_cleaner_nif(Store, stop, undefined).

list_opts(Opts) when is_map(Opts) ->
    case maps:keys(Opts) -- [limit, offset, order] of
        [] -> ok;
        _ -> erlang:error(badarg)
    end,
    Limit = maps:get(limit, Opts, 0),
    Offset = maps:get(offset, Opts, 0),
    Desc = case maps:get(order, Opts, asc) of
               asc -> false;
               desc -> true;
               _ -> erlang:error(badarg)
           end,
    (is_integer(Limit) andalso Limit >= 0 andalso is_integer(Offset) andalso Offset >= 0)
        orelse erlang:error(badarg),
    {Limit, Offset, Desc};
list_opts(_) ->
    erlang:error(badarg).

to_id(Id) when is_binary(Id) -> Id;
to_id(Id) when is_list(Id) -> iolist_to_binary(Id);
to_id(_) -> erlang:error(badarg).

%% The library's JSON envelopes: its own fixed keys become atoms, the user's documents and
%% patches keep binary keys; `id' comes from `id_hex' (ids are bytes).
envelope({ok, Json}) -> {ok, fields(tidemark_json:decode(Json, binary))};
envelope(Error) -> Error.

envelopes({ok, Json}) -> {ok, [fields(M) || M <- tidemark_json:decode(Json, binary)]};
envelopes(Error) -> Error.

fields(M) ->
    maps:fold(fun(<<"id">>, _, Acc) -> Acc;
                 (<<"id_hex">>, Hex, Acc) -> Acc#{id => binary:decode_hex(Hex)};
                 (K, V, Acc) -> Acc#{field(K) => V}
              end, #{}, M).

field(<<"document">>) -> document;
field(<<"version">>) -> version;
field(<<"delta">>) -> delta;
field(<<"revision">>) -> revision;
field(<<"created_ms">>) -> created_ms;
field(<<"updated_ms">>) -> updated_ms;
field(<<"timestamp_ms">>) -> timestamp_ms;
field(<<"patch">>) -> patch.

%%% Internals

check_keys(Map, Known) ->
    case maps:keys(maps:without(Known, Map)) of
        [] -> ok;
        _ -> erlang:error(badarg)
    end.

options_json(Opts) when map_size(Opts) =:= 0 -> <<>>;
options_json(Opts) -> tidemark_json:encode(Opts).

to_binary(B) when is_binary(B) -> B;
to_binary(L) when is_list(L) ->
    case unicode:characters_to_binary(L) of
        B when is_binary(B) -> B;
        _ -> erlang:error(badarg)
    end;
to_binary(_) -> erlang:error(badarg).

%% lockstep options: no option takes a list, so a string (charlist) value is a string.
lockstep_json(Opts) ->
    options_json(maps:map(fun(_, V) when is_list(V), V =/= [] ->
                                  case io_lib:printable_unicode_list(V) of
                                      true -> unicode:characters_to_binary(V);
                                      false -> V
                                  end;
                             (_, V) -> V
                          end, Opts)).

%% server_status/1 and follower_status/1 from what the NIF answered: the JSON decoded, its
%% null as `undefined' and the follower's state an atom; an error as it is.
lockstep_status_result({ok, Json}) ->
    maps:map(fun(_, null) -> undefined;
                (state, S) when is_binary(S) -> binary_to_atom(S, utf8);
                (_, V) -> V
             end, tidemark_json:decode(Json));
lockstep_status_result(Error) ->
    Error.

%%% Streams, snapshots and named stores (the C API's tidemark_store_append and friends)

%% @doc Appends `Events' to `Stream' atomically (all or none, consecutive versions) if the
%% stream's version is what `Expected' says: `any', `no_stream', `stream_exists' or an exact
%% version. Each event is `#{type := iodata(), data := iodata()}' with optional `metadata'
%% (iodata) and `id' (a 16-byte binary, generated when absent). Returns the stream's version
%% after the append, or `{error, {wrong_expected_version, Current}}' (-1 = no stream).
%% Appending events whose ids all equal those of the stream's last append returns that
%% append's version and writes nothing (a retry after a lost reply).
-spec append_events(store(), key(), [map()], expected_version()) ->
          {ok, non_neg_integer()} | {error, {wrong_expected_version, integer()}} | error().
append_events(Store, Stream, Events, Expected) when is_list(Events) ->
    tidemark_nif:append_events_nif(Store, Stream, Events, expected(Expected)).

expected(any) -> -2;
expected(no_stream) -> -1;
expected(stream_exists) -> -4;
expected(N) when is_integer(N), N >= 0 -> N;
expected(N) when is_integer(N) -> N; % below -4 or -3: the library's invalid_argument
expected(_) -> erlang:error(badarg).

%% @doc Up to `Count' events (0 = all) of `Stream' from version `From' on: `forward' in
%% version order, or `backward' down to version 0 (`From' = `-1': from the last version).
%% `{error, not_found}' for a stream that does not exist.
-spec read_stream(store(), key(), integer(), non_neg_integer(), forward | backward) ->
          {ok, [stream_event()]} | error().
read_stream(Store, Stream, From, Count, Direction) ->
    tidemark_nif:read_stream_nif(Store, Stream, From, Count, Direction).

%% @doc The stream's last version; -1 when it does not exist.
-spec stream_version(store(), key()) -> {ok, integer()} | error().
stream_version(Store, Stream) -> tidemark_nif:stream_version_nif(Store, Stream).

%% @doc One page of `{Name, Version}' in name order: names starting with `Prefix', after
%% `After' (exclusive; `<<>>' = from the first), at most `Limit' (0 = 1000), and whether more
%% names follow.
-spec list_streams(store(), key(), key(), non_neg_integer()) ->
          {ok, [{binary(), integer()}], boolean()} | error().
list_streams(Store, Prefix, After, Limit) ->
    tidemark_nif:list_streams_nif(Store, Prefix, After, Limit).

%% @doc Deletes the stream's events and the stream in one commit. Its name can be appended
%% to again, from version 0, with `no_stream' or `any'.
-spec delete_stream(store(), key()) -> {ok, revision()} | error().
delete_stream(Store, Stream) -> tidemark_nif:delete_stream_nif(Store, Stream).

%% @doc Records `Data' as `Source''s snapshot of `Stream' at `Version' (replacing one at the
%% same version).
-spec record_snapshot(store(), key(), key(), non_neg_integer(), iodata()) -> {ok, revision()} | error().
record_snapshot(Store, Source, Stream, Version, Data) ->
    tidemark_nif:snapshot_record_nif(Store, Source, Stream, Version, Data).

%% @doc The snapshot with the greatest version at or below `MaxVersion' (`{error,
%% not_found}' when there is none).
-spec read_snapshot(store(), key(), key(), non_neg_integer()) -> {ok, snapshot()} | error().
read_snapshot(Store, Source, Stream, MaxVersion) ->
    tidemark_nif:snapshot_read_nif(Store, Source, Stream, MaxVersion).

-spec delete_snapshot(store(), key(), key(), non_neg_integer()) -> {ok, revision()} | error().
delete_snapshot(Store, Source, Stream, Version) ->
    tidemark_nif:snapshot_delete_nif(Store, Source, Stream, Version).

%% @doc Every snapshot of `Stream' by `Source', by version ascending.
-spec list_snapshots(store(), key(), key()) -> {ok, [snapshot()]} | error().
list_snapshots(Store, Source, Stream) -> tidemark_nif:snapshot_list_nif(Store, Source, Stream).

%% @doc Opens a store as {@link open/2} does and registers it under `Name' (an atom or a
%% binary) for the whole node; `{error, already_registered}' if an open store has that name.
-spec open_named(atom() | binary(), memory | file:filename_all(), map()) ->
          {ok, store()} | {error, already_registered} | error().
open_named(Name, Path, Opts) ->
    N = store_name(Name),
    case open(Path, Opts) of
        {ok, S} ->
            case tidemark_nif:register_store_nif(N, S) of
                ok -> {ok, S};
                Error -> close(S), Error
            end;
        Error ->
            Error
    end.

%% @doc The open store registered under `Name'.
-spec whereis_store(atom() | binary()) -> {ok, store()} | {error, not_found}.
whereis_store(Name) -> tidemark_nif:whereis_store_nif(store_name(Name)).

%% @doc The names of the open named stores (as binaries).
-spec stores() -> [binary()].
stores() -> lists:sort(tidemark_nif:registered_stores_nif()).

%% @doc Closes the store registered under `Name' and forgets the name.
-spec close_named(atom() | binary()) -> ok | {error, not_found}.
close_named(Name) ->
    case tidemark_nif:unregister_store_nif(store_name(Name)) of
        {ok, S} -> close(S);
        Error -> Error
    end.

store_name(Name) when is_atom(Name) -> atom_to_binary(Name, utf8);
store_name(Name) when is_binary(Name), Name =/= <<>> -> Name;
store_name(_) -> erlang:error(badarg).

%%% Trackers (docs/trackers.md): reckon_db's tracker groups over tidemark trackers

%% @equiv join(Store, Feature, PidOrPids, #{})
-spec join(store(), atom() | binary(), pid() | [pid()]) -> ok | error().
join(Store, Feature, PidOrPids) -> join(Store, Feature, PidOrPids, #{}).

%% @doc Joins processes to the tracker group of `Feature': `streams', `snapshots',
%% `contexts', `subscriptions', `keys' (every user key), `<<"keys/Prefix">>' (the user keys under a prefix),
%% or any other name (a user feature, see {@link notify/5}). Every member receives
%% `{feature_created | feature_updated | feature_deleted, Feature, #{id := binary(),
%% revision := revision(), data := binary()}}' (`data' is JSON text: decode it with
%% `tidemark_json:decode/1'), in revision order, and `{feature_tracker_ended, Feature,
%% {compacted, Earliest} | closed}' if the group's tracker ends by itself. `Feature' in the
%% messages is the term the group was first joined with. Members are monitored: one that
%% dies leaves; the group ends with its last member. `start_revision' (default 0 = from
%% now) replays the feature's history from that revision when the group is new.
-spec join(store(), atom() | binary(), pid() | [pid()], #{start_revision => revision()}) -> ok | error().
join(Store, Feature, Pid, Opts) when is_pid(Pid) -> join(Store, Feature, [Pid], Opts);
join(Store, Feature, Pids, Opts) when is_list(Pids), is_map(Opts) ->
    tidemark_nif:join_nif(Store, Feature, Pids, maps:get(start_revision, Opts, 0)).

%% @doc Removes processes from the group. When it returns they receive no further
%% notification of it (messages already in their mailboxes stay there).
-spec leave(store(), atom() | binary(), pid() | [pid()]) -> ok.
leave(Store, Feature, Pid) when is_pid(Pid) -> leave(Store, Feature, [Pid]);
leave(Store, Feature, Pids) when is_list(Pids) -> tidemark_nif:leave_nif(Store, Feature, Pids).

%% @doc The member processes of the group of `Feature' (`[]' when there is none).
-spec members(store(), atom() | binary()) -> [pid()].
members(Store, Feature) -> tidemark_nif:members_nif(Store, Feature).

%% @doc Notifies the trackers of the user feature `Feature' that `Id' was `created',
%% `updated' or `deleted', with `Data' (a term `tidemark_json:encode/1' takes, or JSON text
%% as a binary). One durable commit, replayed to groups that start at or before it.
-spec notify(store(), atom() | binary(), created | updated | deleted, key(), term()) ->
          {ok, revision()} | error().
notify(Store, Feature, Action, Id, Data) ->
    Code = case Action of
               created -> 1;
               updated -> 2;
               deleted -> 3;
               _ -> erlang:error(badarg)
           end,
    Json = if is_binary(Data) -> Data;
              true -> tidemark_json:encode(Data)
           end,
    tidemark_nif:notify_nif(Store, Feature, Code, Id, Json).

%% @equiv notify(Store, Feature, created, Id, Data)
notify_created(Store, Feature, Id, Data) -> notify(Store, Feature, created, Id, Data).
%% @equiv notify(Store, Feature, updated, Id, Data)
notify_updated(Store, Feature, Id, Data) -> notify(Store, Feature, updated, Id, Data).
%% @equiv notify(Store, Feature, deleted, Id, Data)
notify_deleted(Store, Feature, Id, Data) -> notify(Store, Feature, deleted, Id, Data).

%%% Persistent subscriptions (docs/subscriptions.md): the C API's tidemark_store_subscription_*
%%% and tidemark_subscription_*; delivery, timeouts, retries and parking are the core's.

%% @doc Creates the durable subscription `Name' (1 to 1024 bytes) in one commit. `Opts':
%% `selector' (as for {@link subscribe/3}, default `all'), `start' (`beginning' (default),
%% `end' or a revision >= 1), `max_in_flight' (events one consumer may hold unacked, default
%% 100), `message_timeout_ms' (default 30000; by the store clock, see {@link set_clock/2}),
%% `max_retry' (deliveries before an event is parked, default 10), `pinned' (each stream's
%% events go to one consumer, in order; default false). A name in use is
%% `{error, {conflict, _}}'; bad options are `{error, {invalid_argument, Msg}}' or `badarg'.
-spec subscription_create(store(), iodata(),
                          #{selector => stream_selector(), start => beginning | 'end' | revision(),
                            max_in_flight => pos_integer(), message_timeout_ms => pos_integer(),
                            max_retry => pos_integer(), pinned => boolean()}) -> ok | error().
subscription_create(Store, Name, Opts) when is_map(Opts) ->
    check_keys(Opts, [selector, start, max_in_flight, message_timeout_ms, max_retry, pinned]),
    {Start, StartRev} = case maps:get(start, Opts, beginning) of
                            beginning -> {0, 0};
                            'end' -> {1, 0};
                            R when is_integer(R), R >= 0 -> {2, R};
                            _ -> erlang:error(badarg)
                        end,
    Opt = fun(K) -> maps:get(K, Opts, undefined) end,
    Pinned = case Opt(pinned) of
                 P when is_boolean(P); P =:= undefined -> P;
                 _ -> erlang:error(badarg)
             end,
    case tidemark_nif:subscription_create_nif(Store, Name, maps:get(selector, Opts, all), Start, StartRev,
                                              Opt(max_in_flight), Opt(message_timeout_ms),
                                              Opt(max_retry), Pinned) of
        {ok, _Revision} -> ok;
        Error -> Error
    end;
subscription_create(_, _, _) ->
    erlang:error(badarg).

%% @doc Deletes the subscription (definition, checkpoint, parked events); its consumers then
%% get `{tidemark_sub_event, SubRef, deleted}' and end. Unknown: `{error, not_found}'.
-spec subscription_delete(store(), iodata()) -> ok | error().
subscription_delete(Store, Name) ->
    case tidemark_nif:subscription_delete_nif(Store, Name) of
        {ok, _Revision} -> ok;
        Error -> Error
    end.

%% @doc Every subscription, in name order: `#{name, selector, max_in_flight,
%% message_timeout_ms, max_retry, pinned, checkpoint (the highest revision below which every
%% event is acked), lag (matching events after the checkpoint), in_flight, parked,
%% consumers}'.
-spec subscription_list(store()) -> {ok, [map()]} | error().
subscription_list(Store) ->
    case tidemark_nif:subscription_list_nif(Store) of
        {ok, Json} -> {ok, [subscription_info(I) || I <- tidemark_json:decode(Json)]};
        Error -> Error
    end.

subscription_info(#{streams := Kind, stream := Stream, event_type := Type} = I) ->
    Streams = case Kind of
                  <<"all">> -> all;
                  <<"one">> -> {stream, Stream};
                  <<"prefix">> -> {prefix, Stream}
              end,
    Selector = case {Streams, Type} of
                   {_, null} -> Streams;
                   {all, _} -> {event_type, Type};
                   {{K, S}, _} -> {K, S, Type}
               end,
    (maps:without([streams, stream, event_type], I))#{selector => Selector}.

%% @doc Up to `Limit' (0 = all) parked events of the subscription, in revision order, each
%% with the `delivery_count' it had when it was parked.
-spec subscription_parked(store(), iodata(), non_neg_integer()) -> {ok, [delivery()]} | error().
subscription_parked(Store, Name, Limit) when is_integer(Limit), Limit >= 0 ->
    tidemark_nif:subscription_parked_nif(Store, Name, Limit);
subscription_parked(_, _, _) ->
    erlang:error(badarg).

%% @doc Delivers every parked event again (delivery counts start over); each leaves the parked
%% list when it is acked or skipped. Returns how many were queued.
-spec subscription_replay_parked(store(), iodata()) -> {ok, non_neg_integer()} | error().
subscription_replay_parked(Store, Name) ->
    tidemark_nif:subscription_replay_parked_nif(Store, Name).

%% @doc Delivery starts again at `Revision' (1 to the current revision + 1, else
%% `{error, invalid_argument}'): earlier delivers events again, later skips them; parked
%% events stay parked. Connected consumers get `{tidemark_sub_event, SubRef, {error,
%% {conflict, _}}}' (their subscription ended) and connect again. Returns the revision of the commit that moved the checkpoint.
-spec subscription_reset(store(), iodata(), non_neg_integer()) -> {ok, revision()} | error().
subscription_reset(Store, Name, Revision) when is_integer(Revision), Revision >= 0 ->
    tidemark_nif:subscription_reset_nif(Store, Name, Revision);
subscription_reset(_, _, _) ->
    erlang:error(badarg).

%% @doc Connects a consumer to the subscription `Name'. The consumer process (`pid', default
%% the caller) receives `{tidemark_sub_event, SubRef, Delivery}' for each event delivered to
%% it (at most `max_in_flight' unacked at once) and must {@link ack/2} or {@link nack/3} each.
%% Consumers of one subscription share its events (round robin, or by stream when pinned).
%% Flow control: `active => N' (a positive integer, `once' = 1, `false' = 0: nothing until
%% {@link subscription_activate/2}) sends `{tidemark_sub_passive, SubRef}' when N deliveries
%% are used up; `true' (default) is limited only by `max_in_flight'. `struct => Module' puts
%% `'__struct__' => Module' in each delivery (Elixir). The process is monitored: when it
%% dies the consumer is disconnected and its unacked events go to other consumers. The last
%% message, when the subscription ends by itself, is `{tidemark_sub_event, SubRef, deleted |
%% closed | {compacted, Earliest} | {error, Reason}}'. Unknown name: `{error, not_found}'.
-spec subscription_connect(store(), iodata(),
                           #{pid => pid(), active => boolean() | once | pos_integer(),
                             struct => module()}) -> {ok, sub_ref()} | error().
subscription_connect(Store, Name, Opts) when is_map(Opts) ->
    check_keys(Opts, [pid, active, struct]),
    Pid = maps:get(pid, Opts, self()),
    Credit = case maps:get(active, Opts, true) of
                 true -> ?U64_MAX;
                 false -> 0;
                 once -> 1;
                 N when is_integer(N), N > 0, N < ?U64_MAX -> N;
                 _ -> erlang:error(badarg)
             end,
    Struct = maps:get(struct, Opts, undefined),
    is_pid(Pid) andalso is_atom(Struct) orelse erlang:error(badarg),
    tidemark_nif:subscription_connect_nif(Store, Name, Pid, Credit, Struct);
subscription_connect(_, _, _) ->
    erlang:error(badarg).

%% @doc Lets the consumer send `N' more deliveries (`once' = 1, `true' = no limit from now on).
-spec subscription_activate(sub_ref(), true | once | pos_integer()) -> ok.
subscription_activate(SubRef, once) -> tidemark_nif:subscription_activate_nif(SubRef, 1);
subscription_activate(SubRef, true) -> tidemark_nif:subscription_activate_nif(SubRef, ?U64_MAX);
subscription_activate(SubRef, N) when is_integer(N), N > 0, N < ?U64_MAX ->
    tidemark_nif:subscription_activate_nif(SubRef, N);
subscription_activate(_, _) -> erlang:error(badarg).

%% @doc Acks deliveries (a delivery map or its revision, or a list of them) in one commit
%% that moves the checkpoint as far as every event below it is done. One that is not in flight
%% to this consumer (never delivered to it, acked already, timed out and redelivered) is
%% `{error, {invalid_argument, Msg}}' and nothing is acked; after disconnect,
%% `{error, closed}'.
-spec ack(sub_ref(), delivery() | revision() | [delivery() | revision()]) -> ok | error().
ack(SubRef, Events) when is_list(Events) ->
    tidemark_nif:ack_nif(SubRef, [delivery_revision(E) || E <- Events]);
ack(SubRef, Event) ->
    ack(SubRef, [Event]).

%% @doc Gives a delivery back: `retry' (deliver it again; parked after `max_retry'
%% deliveries), `park' (now) or `skip' (done, as an ack).
-spec nack(sub_ref(), delivery() | revision(), retry | park | skip) -> ok | error().
nack(SubRef, Event, Action) ->
    Code = case Action of
               retry -> 0;
               park -> 1;
               skip -> 2;
               _ -> erlang:error(badarg)
           end,
    tidemark_nif:nack_nif(SubRef, delivery_revision(Event), Code).

delivery_revision(#{revision := R}) -> R;
delivery_revision(R) when is_integer(R) -> R;
delivery_revision(_) -> erlang:error(badarg).

%% @doc Disconnects the consumer: no message for `SubRef' is sent after this returns, and its
%% unacked events go to the other consumers. Idempotent.
-spec subscription_disconnect(sub_ref()) -> ok.
subscription_disconnect(SubRef) -> tidemark_nif:subscription_disconnect_nif(SubRef).
