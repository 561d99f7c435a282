#!/usr/bin/env escript
%% -*- erlang -*-
%% tidemark from Erlang in five minutes: keys, revisions, changes, batches, watches as
%% messages, {active, N} flow control, compaction, and lockstep over HTTP (serve a prefix,
%% follow it into another store).
%%
%% Run from anywhere after `make -C bindings/erlang`:
%%     escript examples/erlang/quickstart.escript
-mode(compile).

main(_) ->
    Here = filename:dirname(filename:absname(escript:script_name())),
    Ebin = filename:join([Here, "..", "..", "bindings", "erlang", "ebin"]),
    true = code:add_patha(Ebin),
    case code:ensure_loaded(tidemark) of
        {module, tidemark} -> ok;
        Err -> fail("cannot load tidemark from ~s (~p); run `make -C bindings/erlang` first", [Ebin, Err])
    end,
    try run() of
        ok -> io:format("~nquickstart: ok~n"), halt(0)
    catch
        C:R:St -> fail("~p:~p~n~p", [C, R, St])
    end.

fail(Fmt, Args) ->
    io:format(standard_error, "quickstart failed: " ++ Fmt ++ "~n", Args),
    halt(1).

say(Fmt, Args) -> io:format(Fmt ++ "~n", Args).

run() ->
    say("tidemark ~s", [tidemark:version()]),

    %% 1. Open an in-memory store (a directory path opens a durable one).
    {ok, S} = tidemark:open(memory, #{dispatch_threads => 1}),
    say("~n== open(memory, #{}) -> a store handle", []),

    %% 2. Keys: every write gets the next revision.
    {ok, R1} = tidemark:put(S, <<"/tasks/1">>, <<"write docs">>),
    {ok, R2} = tidemark:put(S, <<"/tasks/2">>, <<"ship it">>),
    {ok, R3} = tidemark:put(S, <<"/tasks/1">>, <<"write better docs">>),
    say("~n== put: revisions ~p, ~p, ~p", [R1, R2, R3]),
    {ok, Entry} = tidemark:get(S, <<"/tasks/1">>),
    say("get(/tasks/1) -> ~p", [Entry]),
    say("get(/tasks/9) -> ~p", [tidemark:get(S, <<"/tasks/9">>)]),
    %% A conditional write: only if nobody changed the key since we read it.
    #{mod_revision := Seen} = Entry,
    {error, {conflict, Current}} =
        tidemark:put(S, <<"/tasks/1">>, <<"stale">>, #{expected_mod_revision => Seen - 1}),
    say("put with a stale expected_mod_revision -> {error, {conflict, ~p}}", [Current]),
    {ok, R4} = tidemark:put(S, <<"/tasks/1">>, <<"done">>, #{expected_mod_revision => Seen}),
    say("put with expected_mod_revision ~p -> {ok, ~p}", [Seen, R4]),

    %% 3. Pull: what changed since a revision.
    {ok, #{events := Events, has_more := More, next_revision := Next}} = tidemark:changes(S, 2, 0),
    say("~n== changes(S, 2, 0): ~p events, has_more ~p, next_revision ~p", [length(Events), More, Next]),
    [say("  rev ~p ~p ~s = ~s", [R, T, K, V])
     || #{revision := R, type := T, key := K, value := V} <- Events],

    %% 4. An atomic batch: consecutive revisions, all or nothing.
    {ok, First} = tidemark:batch(S, [{put, <<"/tasks/3">>, <<"review">>},
                                     {delete, <<"/tasks/2">>},
                                     {require, <<"/tasks/1">>, R4}]),
    say("~n== batch: committed from revision ~p; now at ~p", [First, tidemark:current_revision(S)]),
    Refused = tidemark:batch(S, [{put, <<"/tasks/4">>, <<"x">>}, {require, <<"/tasks/1">>, 1}]),
    say("batch with a failed require -> ~p (nothing applied)", [Refused]),
    {ok, #{entries := Entries}} = tidemark:range(S, {prefix, <<"/tasks/">>}, 0),
    say("range({prefix, /tasks/}) -> ~p", [[K || #{key := K} <- Entries]]),

    %% 5. Push: watches send messages to a process, in order, with no gaps.
    say("~n== watch: a consumer process replays from revision 1, then follows live", []),
    Self = self(),
    Consumer = spawn_link(fun() -> consumer(Self, 0) end),
    {ok, WRef} = tidemark:watch(S, {prefix, <<"/tasks/">>}, #{pid => Consumer, start_revision => 1}),
    Consumer ! {watching, WRef},
    {ok, _} = tidemark:put(S, <<"/tasks/5">>, <<"live event">>),
    Last = tidemark:current_revision(S),
    Consumer ! {stop_at, Last},
    receive {consumed, N} -> say("consumer saw ~p events up to revision ~p, and exits", [N, Last]) end,
    %% The watch monitors its process: when the consumer dies, the watch is removed.
    wait_for(fun() -> tidemark:watcher_count(S) =:= 0 end),
    say("the consumer's watch was removed when it exited: watcher_count -> ~p",
        [tidemark:watcher_count(S)]),
    {error, not_found} = tidemark:unwatch(S, WRef),
    {ok, Mine} = tidemark:watch(S, all),
    say("watch(S, all) -> watcher_count ~p", [tidemark:watcher_count(S)]),
    ok = tidemark:unwatch(S, Mine),
    say("unwatch -> ok; watcher_count ~p", [tidemark:watcher_count(S)]),

    %% 6. Flow control like {active, N} on sockets: at most N events, then it waits.
    say("~n== active flow control: watch(..., #{active => 2})", []),
    {ok, Paced} = tidemark:watch(S, {prefix, <<"/jobs/">>}, #{active => 2}),
    [{ok, _} = tidemark:put(S, <<"/jobs/", (integer_to_binary(I))/binary>>, <<"job">>)
     || I <- lists:seq(1, 6)],
    Got1 = take(Paced, 2),
    receive {tidemark_passive, Paced} -> ok after 5000 -> error(no_passive) end,
    say("wrote 6 jobs; received ~w, then {tidemark_passive, Ref}; the mailbox holds ~p more "
        "(the rest waits in the store)", [revisions(Got1), pending(Paced)]),
    ok = tidemark:activate(Paced, 4),
    Got2 = take(Paced, 4),
    say("activate(Ref, 4) -> received ~w", [revisions(Got2)]),

    %% 7. Compaction: old revisions go, current keys stay, and nobody silently misses data.
    say("~n== compaction", []),
    {ok, Lagging} = tidemark:watch(S, {prefix, <<"/logs/">>}, #{active => 1, max_queue => 4}),
    [{ok, _} = tidemark:put(S, <<"/logs/", (integer_to_binary(I))/binary>>, <<"line">>)
     || I <- lists:seq(1, 20)],
    [_] = take(Lagging, 1),
    Keep = tidemark:current_revision(S),
    {ok, Removed} = tidemark:compact(S, Keep),
    say("compact(S, ~p) removed ~p log entries; earliest_revision -> ~p",
        [Keep, Removed, tidemark:earliest_revision(S)]),
    say("changes(S, 1, 0) -> ~p", [tidemark:changes(S, 1, 0)]),
    say("get(/tasks/1) still -> ~p", [element(2, tidemark:get(S, <<"/tasks/1">>))]),
    receive {tidemark_event, Lagging, {compacted, Earliest}} ->
            say("the paused watch was overtaken: {tidemark_event, Ref, {compacted, ~p}}; "
                "it resyncs with range + changes from ~p", [Earliest, Earliest])
    after 5000 -> error(no_compacted_notice)
    end,

    %% 8. Closing ends every watch with a final message.
    {ok, #{revision := Rev, keys := Keys}} = tidemark:status(S),
    say("~n== status: revision ~p, ~p keys", [Rev, Keys]),
    ok = tidemark:close(S),
    receive {tidemark_event, Paced, closed} -> say("close -> watches receive closed", []) end,
    say("put after close -> ~p", [tidemark:put(S, <<"k">>, <<"v">>)]),

    %% 9. lockstep over HTTP: serve a store's keys as an NDJSON feed, mirror it elsewhere.
    lockstep(),
    ok.

lockstep() ->
    say("~n== lockstep: serve /servers/ over HTTP, follow it into a second store", []),
    {ok, Src} = tidemark:open(memory, #{}),
    [{ok, _} = tidemark:put(Src, <<"/servers/", Id/binary>>, Json)
     || {Id, Json} <- [{<<"123">>, <<"{\"ip\":\"10.0.0.1\",\"port\":1234}">>},
                       {<<"124">>, <<"{\"ip\":\"10.0.0.2\",\"port\":1234}">>}]],
    {ok, Server} = tidemark:serve(Src, default, #{}),   % 127.0.0.1, any free port
    Url = <<"http://", (tidemark:server_addr(Server))/binary, "/servers/">>,
    say("serve(Src, default, #{}) -> listening on ~s (try: curl ~s0)", [tidemark:server_addr(Server), Url]),
    {ok, Mirror} = tidemark:open(memory, #{}),
    {ok, Follower} = tidemark:follow(Mirror, Url, #{prefix => <<"/mirror/">>}),
    %% Notifications come as {tidemark_lockstep, Follower, #{kind := ...}}; the first sync is a
    %% full one, done once resync_done arrives.
    #{records := Swept} = lockstep_wait(Follower, resync_done),
    say("follow(Mirror, ~s, #{prefix => /mirror/}) -> in sync (~p stale local records removed)", [Url, Swept]),
    say("mirrored keys: ~p", [mirror_keys(Mirror)]),
    {ok, #{value := Record}} = tidemark:get(Mirror, <<"/mirror/123">>),
    say("get(Mirror, /mirror/123) -> ~s", [Record]),
    %% Live: a put and a delete on the source reach the mirror (the delete as a tombstone).
    {ok, _} = tidemark:put(Src, <<"/servers/125">>, <<"{\"ip\":\"10.0.0.3\"}">>),
    {ok, Del} = tidemark:delete(Src, <<"/servers/123">>),
    lockstep_until_cursor(Follower, integer_to_binary(Del)),
    say("after put /servers/125 and delete /servers/123 on the source: ~p", [mirror_keys(Mirror)]),
    #{state := State, records := Records, cursor := Cursor} = tidemark:follower_status(Follower),
    say("follower_status -> state ~p, ~p records read, cursor ~p", [State, Records, Cursor]),
    #{requests := Requests, following := Following} = tidemark:server_status(Server),
    say("server_status -> ~p requests, ~p follow response(s) open", [Requests, Following]),
    ok = tidemark:stop_follower(Follower),
    ok = tidemark:stop_server(Server),
    say("stop_follower, stop_server -> ok", []),
    ok = tidemark:close(Mirror),
    ok = tidemark:close(Src).

mirror_keys(Mirror) ->
    {ok, #{entries := Es}} = tidemark:range(Mirror, {prefix, <<"/mirror/">>}, 0),
    [K || #{key := K} <- Es].

lockstep_wait(Follower, Kind) ->
    receive {tidemark_lockstep, Follower, #{kind := Kind} = E} -> E
    after 5000 -> error({no_lockstep_notification, Kind})
    end.

lockstep_until_cursor(Follower, Cursor) ->
    case lockstep_wait(Follower, applied) of
        #{cursor := Cursor} -> ok;
        _ -> lockstep_until_cursor(Follower, Cursor)
    end.

consumer(Parent, Count) ->
    receive
        {watching, Ref} -> consume(Parent, Ref, Count, 0, infinity)
    end.

%% Prints events until it has seen revision StopAt (told later with {stop_at, Rev}).
consume(Parent, _Ref, Count, Seen, StopAt) when is_integer(StopAt), Seen >= StopAt ->
    Parent ! {consumed, Count};
consume(Parent, Ref, Count, Seen, StopAt) ->
    receive
        {tidemark_event, Ref, #{revision := R, type := T, key := K}} ->
            io:format("  [consumer] rev ~p ~p ~s~n", [R, T, K]),
            consume(Parent, Ref, Count + 1, max(Seen, R), StopAt);
        {stop_at, Last} ->
            consume(Parent, Ref, Count, Seen, Last)
    end.

wait_for(Fun) ->
    case Fun() of
        true -> ok;
        false -> timer:sleep(1), wait_for(Fun)
    end.

take(Ref, N) ->
    [receive {tidemark_event, Ref, E} -> E after 5000 -> error({missing_event, Ref}) end
     || _ <- lists:seq(1, N)].

revisions(Events) -> [R || #{revision := R} <- Events].

pending(Ref) ->
    %% A receive fetches what tidemark's threads sent, so process_info/2 sees it.
    receive '$none' -> ok after 0 -> ok end,
    {messages, Ms} = process_info(self(), messages),
    length([M || {tidemark_event, R, _} = M <- Ms, R =:= Ref]).
