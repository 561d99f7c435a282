%% EUnit tests of the lockstep part of the Erlang binding: tidemark:serve/3 and
%% tidemark:follow/3. The HTTP side is checked with gen_tcp only (no httpc). As in
%% tidemark_tests, waits only bound how long a broken build can hang; they never decide a
%% result.
-module(tidemark_lockstep_tests).

-include_lib("eunit/include/eunit.hrl").

-define(WAIT, 8000).
-define(POLL_MS, 5).

%%% Helpers

-include("tidemark_test_helpers.hrl").

%% A served store with a few records under /servers/.
served(Opts) ->
    S = store(),
    {ok, Srv} = tidemark:serve(S, default, Opts),
    {S, Srv}.

url(Srv, Path) -> <<"http://", (tidemark:server_addr(Srv))/binary, Path/binary>>.

json(Map) -> tidemark_json:encode(Map).

%% The next notification of kind Kind for follower F (others stay in the mailbox).
next(F, Kind) ->
    receive {tidemark_lockstep, F, #{kind := Kind} = E} -> E
    after ?WAIT -> error({no_notification, Kind})
    end.

%% Drops F's notifications left in the mailbox.
flush(F) ->
    receive {tidemark_lockstep, F, _} -> flush(F) after 0 -> ok end.

%% The value of Key in S, decoded (a mirrored record), or not_found.
record(S, Key) ->
    case tidemark:get(S, Key) of
        {ok, #{value := V}} -> tidemark_json:decode(V);
        {error, not_found} -> not_found
    end.

%% The keys under Prefix in S.
keys(S, Prefix) ->
    {ok, #{entries := Es}} = tidemark:range(S, {prefix, Prefix}, 0),
    [K || #{key := K} <- Es].

%% A whole HTTP/1.1 exchange over gen_tcp: {Status, Headers (lowercase), Body}. The request
%% asks the server to close the connection, so the body ends where the stream does.
http(Srv, Method, Path) -> http(Srv, Method, Path, [], <<>>).
http(Srv, Method, Path, Headers, Body) ->
    {ok, Sock} = gen_tcp:connect({127, 0, 0, 1}, tidemark:server_port(Srv),
                                 [binary, {active, false}, {packet, raw}], ?WAIT),
    Req = [Method, " ", Path, " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n",
           [[N, ": ", V, "\r\n"] || {N, V} <- Headers],
           case Body of
               <<>> -> [];
               _ -> ["Content-Type: application/json\r\nContent-Length: ",
                     integer_to_list(byte_size(Body)), "\r\n"]
           end,
           "\r\n", Body],
    ok = gen_tcp:send(Sock, Req),
    Resp = recv_all(Sock, <<>>),
    gen_tcp:close(Sock),
    parse_response(Resp).

recv_all(Sock, Acc) ->
    case gen_tcp:recv(Sock, 0, ?WAIT) of
        {ok, Data} -> recv_all(Sock, <<Acc/binary, Data/binary>>);
        {error, closed} -> Acc
    end.

parse_response(Resp) ->
    [Head, Body0] = binary:split(Resp, <<"\r\n\r\n">>),
    [StatusLine | HeaderLines] = binary:split(Head, <<"\r\n">>, [global]),
    [_, Code | _] = binary:split(StatusLine, <<" ">>, [global]),
    Headers = [begin
                   [N, V] = binary:split(L, <<":">>),
                   {string:lowercase(N), string:trim(V)}
               end || L <- HeaderLines],
    Body = case proplists:get_value(<<"transfer-encoding">>, Headers) of
               <<"chunked">> -> dechunk(Body0, <<>>);
               _ -> Body0
           end,
    {binary_to_integer(Code), Headers, Body}.

dechunk(Data, Acc) ->
    [SizeLine, Rest] = binary:split(Data, <<"\r\n">>),
    case binary_to_integer(SizeLine, 16) of
        0 -> Acc;
        N ->
            <<Chunk:N/binary, "\r\n", Rest2/binary>> = Rest,
            dechunk(Rest2, <<Acc/binary, Chunk/binary>>)
    end.

%% NDJSON lines, decoded.
ndjson(Body) -> [tidemark_json:decode(L) || L <- binary:split(Body, <<"\n">>, [global, trim_all])].

%% Whether something still listens on Port (a reset while the server stops counts as yes).
listening(Port) ->
    case gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}], ?WAIT) of
        {ok, Sock} -> gen_tcp:close(Sock), true;
        {error, econnrefused} -> false;
        {error, _} -> true
    end.

%%% The server

serve_test_() ->
    {timeout, 30, fun() ->
        {S, Srv} = served(#{}),
        Addr = tidemark:server_addr(Srv),
        Port = tidemark:server_port(Srv),
        ?assert(is_integer(Port) andalso Port > 0),
        ?assertEqual(<<"127.0.0.1:", (integer_to_binary(Port))/binary>>, Addr),
        ?assertMatch(#{addr := Addr, connections := 0, following := 0, requests := 0,
                       records_served := 0, refused_connections := 0, writable := false,
                       auth := false, heartbeat_ms := 10000},
                     tidemark:server_status(Srv)),
        {ok, _} = tidemark:put(S, <<"/servers/123">>, json(#{ip => <<"10.0.0.1">>, port => 1234})),
        {ok, R2} = tidemark:put(S, <<"/servers/124">>, json(#{ip => <<"10.0.0.2">>})),
        {ok, _} = tidemark:put(S, <<"/other/1">>, <<"{}">>),
        {200, Hs, Body} = http(Srv, "GET", "/servers/0"),
        ?assertEqual(<<"application/x-ndjson">>, proplists:get_value(<<"content-type">>, Hs)),
        ?assertMatch([#{id := <<"123">>, updated_at := 1, deleted_at := null, ip := <<"10.0.0.1">>,
                        port := 1234},
                      #{id := <<"124">>, updated_at := R2, deleted_at := null}],
                     ndjson(Body)),
        %% Changes since a revision: a tombstone for a deleted record.
        {ok, D} = tidemark:delete(S, <<"/servers/123">>),
        {200, _, Body2} = http(Srv, "GET", "/servers/" ++ integer_to_list(R2)),
        ?assertMatch([#{id := <<"124">>}, #{id := <<"123">>, updated_at := D, deleted_at := D}],
                     ndjson(Body2)),
        ?assertEqual(405, element(1, http(Srv, "PUT", "/servers/9", [], <<"{}">>))),
        ?assertEqual(400, element(1, http(Srv, "GET", "/servers/x1"))),
        ?assertMatch(#{requests := 4, records_served := 4}, tidemark:server_status(Srv)),
        ?assertEqual(ok, tidemark:stop_server(Srv)),
        ?assertEqual(ok, tidemark:stop_server(Srv)),
        ?assertEqual({error, closed}, tidemark:server_status(Srv)),
        ?assertEqual(Addr, tidemark:server_addr(Srv)),
        ?assertEqual(Port, tidemark:server_port(Srv)),
        ?assertNot(listening(Port)),
        %% The store is still the owner's.
        ?assertMatch({ok, _}, tidemark:put(S, <<"/servers/125">>, <<"{}">>)),
        tidemark:close(S)
    end}.

serve_options_test_() ->
    {timeout, 30, fun() ->
        {S, Srv} = served(#{writable => true, token => "s3cret", heartbeat_ms => 250,
                            max_connections => 4, max_follows => 8, threads => 1}),
        ?assertMatch(#{writable := true, auth := true, heartbeat_ms := 250, tls := false},
                     tidemark:server_status(Srv)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:serve(S, default, #{tls_cert => "c.pem"})),
        Auth = [{"Authorization", "Bearer s3cret"}],
        ?assertMatch({401, _, _}, http(Srv, "GET", "/servers/0")),
        ?assertMatch({401, _, _}, http(Srv, "GET", "/servers/0", [{"Authorization", "Bearer no"}], <<>>)),
        %% writable: PUT and DELETE write through the same store.
        {200, _, Put} = http(Srv, "PUT", "/servers/7", Auth, json(#{ip => <<"10.0.0.7">>})),
        ?assertMatch([#{id := <<"7">>, updated_at := 1, deleted_at := null}], ndjson(Put)),
        ?assertMatch({ok, #{mod_revision := 1}}, tidemark:get(S, <<"/servers/7">>)),
        ?assertMatch(#{ip := <<"10.0.0.7">>}, record(S, <<"/servers/7">>)),
        {200, _, Del} = http(Srv, "DELETE", "/servers/7", Auth, <<>>),
        ?assertMatch([#{id := <<"7">>, deleted_at := 2}], ndjson(Del)),
        ?assertEqual({error, not_found}, tidemark:get(S, <<"/servers/7">>)),
        ?assertMatch({404, _, _}, http(Srv, "DELETE", "/servers/7", Auth, <<>>)),
        ok = tidemark:stop_server(Srv),
        tidemark:close(S)
    end}.

serve_errors_test() ->
    S = store(),
    Inv = fun(R) -> ?assertMatch({error, {invalid_argument, <<_/binary>>}}, R) end,
    Inv(tidemark:serve(S, default, #{nope => true})),
    Inv(tidemark:serve(S, default, #{writable => 5})),
    Inv(tidemark:serve(S, default, #{token => <<>>})),
    Inv(tidemark:serve(S, default, #{heartbeat_ms => 0})),
    Inv(tidemark:serve(S, <<"no port">>, #{})),
    Inv(tidemark:serve(S, "", #{})),
    Inv(tidemark:serve(S, "127.0.0.1:99999", #{})),
    %% Not a loopback address without allow_remote.
    Inv(tidemark:serve(S, "0.0.0.0:0", #{})),
    %% An address in use.
    {ok, Srv} = tidemark:serve(S, "127.0.0.1:0", #{}),
    ?assertMatch({error, {io, <<_/binary>>}}, tidemark:serve(S, tidemark:server_addr(Srv), #{})),
    ok = tidemark:stop_server(Srv),
    %% Wrong types.
    ?assertError(badarg, tidemark:serve(make_ref(), default, #{})),
    ?assertError(badarg, tidemark:serve(S, 42, #{})),
    ?assertError(badarg, tidemark:serve(S, localhost, #{})),
    ?assertError(badarg, tidemark:serve(S, <<"127.0.0.1:0", 0>>, #{})),
    ?assertError(badarg, tidemark:serve(S, default, [])),
    ?assertError(badarg, tidemark:serve(S, default, #{token => self()})),
    ?assertError(badarg, tidemark:server_addr(S)),
    ?assertError(badarg, tidemark:server_port(make_ref())),
    ?assertError(badarg, tidemark:server_status(S)),
    ?assertError(badarg, tidemark:stop_server(S)),
    %% A closed store.
    ok = tidemark:close(S),
    ?assertEqual({error, closed}, tidemark:serve(S, default, #{})).

%%% The follower

%% A follower mirrors a served store into another store: puts, updates and deletes (as
%% tombstones), with notifications to the caller and status maps on both sides.
follow_mirror_test_() ->
    {timeout, 30, fun() ->
        {S, Srv} = served(#{heartbeat_ms => 100}),
        {ok, _} = tidemark:put(S, <<"/servers/1">>, json(#{ip => <<"10.0.0.1">>})),
        {ok, _} = tidemark:put(S, <<"/servers/2">>, json(#{ip => <<"10.0.0.2">>})),
        {ok, _} = tidemark:put(S, <<"/elsewhere/1">>, <<"{}">>),
        M = store(),
        {ok, _} = tidemark:put(M, <<"/mirror/stale">>, <<"{}">>),
        Url = url(Srv, <<"/servers/">>),
        %% A prefix holding keys it did not mirror is refused, unless the follower adopts it.
        ?assertMatch({error, {invalid_argument, _}}, tidemark:follow(M, Url, #{prefix => "/mirror/"})),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:follow(M, url(Srv, <<"/">>), #{})),
        {ok, F} = tidemark:follow(M, Url, #{prefix => "/mirror/", adopt => true}),
        ?assert(is_reference(F)),
        %% The first sync is a full resync: it also removes what the server does not have.
        ?assertMatch(#{kind := resync_started, message := <<_/binary>>, cursor := undefined},
                     next(F, resync_started)),
        ?assertMatch(#{kind := connected, message := <<"/servers/0">>, line := undefined},
                     next(F, connected)),
        A1 = next(F, applied),
        ?assertMatch(#{records := 2, writes := 2, cursor := <<"2">>, retry_ms := 0,
                       message := undefined, line := undefined}, A1),
        ?assert(maps:get(revision, A1) > 0),
        ?assertMatch(#{kind := resync_done, records := 1}, next(F, resync_done)),
        ?assertEqual([<<"/mirror/1">>, <<"/mirror/2">>], keys(M, <<"/mirror/">>)),
        ?assertMatch(#{id := <<"1">>, updated_at := 1, ip := <<"10.0.0.1">>}, record(M, <<"/mirror/1">>)),
        %% Live: an update, a new record, a delete.
        {ok, _} = tidemark:put(S, <<"/servers/1">>, json(#{ip => <<"10.0.0.11">>})),
        {ok, _} = tidemark:put(S, <<"/servers/3">>, json(#{ip => <<"10.0.0.3">>})),
        {ok, Del} = tidemark:delete(S, <<"/servers/2">>),
        Cursor = integer_to_binary(Del),
        wait_until(fun() -> maps:get(cursor, next(F, applied)) end, Cursor),
        ?assertEqual([<<"/mirror/1">>, <<"/mirror/3">>], keys(M, <<"/mirror/">>)),
        ?assertMatch(#{ip := <<"10.0.0.11">>, updated_at := 4}, record(M, <<"/mirror/1">>)),
        ?assertMatch(#{ip := <<"10.0.0.3">>}, record(M, <<"/mirror/3">>)),
        ?assertEqual(not_found, record(M, <<"/mirror/2">>)),
        %% Status maps.
        FS = tidemark:follower_status(F),
        ?assertMatch(#{state := streaming, cursor := Del, resyncing := false, connected := true,
                       errors := 0, malformed_lines := 0, last_error := undefined,
                       last_malformed := undefined, url := Url, prefix := <<"/mirror/">>}, FS),
        ?assert(maps:get(records, FS) >= 5),
        %% One follow response; the finished resync connection may not be reaped yet.
        #{following := 1, connections := Conns} = tidemark:server_status(Srv),
        ?assert(Conns >= 1),
        %% Stop: idempotent, and no message afterwards.
        ?assertEqual(ok, tidemark:stop_follower(F)),
        ?assert(tidemark_nif:follower_dropped_nif(F)),
        ?assertEqual(ok, tidemark:stop_follower(F)),
        ?assertEqual({error, closed}, tidemark:follower_status(F)),
        flush(F),
        {ok, _} = tidemark:put(S, <<"/servers/4">>, <<"{}">>),
        %% The server notices the follow response's end on its next write (a heartbeat at
        %% most), so wait for that rather than for a message that must not come.
        wait_until(fun() -> maps:get(following, tidemark:server_status(Srv)) end, 0),
        receive {tidemark_lockstep, F, E} -> error({unexpected, E}) after 0 -> ok end,
        ?assertEqual(not_found, record(M, <<"/mirror/4">>)),
        ok = tidemark:stop_server(Srv),
        tidemark:close(S),
        tidemark:close(M)
    end}.

%% A follower restarted on the same store resumes from its committed cursor (no resync),
%% and `pid' sends the notifications elsewhere.
follow_resume_and_pid_test_() ->
    {timeout, 30, fun() ->
        {S, Srv} = served(#{}),
        [{ok, _} = tidemark:put(S, <<"/servers/", (integer_to_binary(I))/binary>>, <<"{}">>)
         || I <- lists:seq(1, 5)],
        M = store(),
        Url = url(Srv, <<"/servers/">>),
        {ok, F1} = tidemark:follow(M, Url, #{}),
        %% The first sync is a resync: complete once its sweep is done.
        ?assertMatch(#{cursor := <<"5">>}, next(F1, resync_done)),
        ok = tidemark:stop_follower(F1),
        flush(F1),
        {ok, 6} = tidemark:put(S, <<"/servers/6">>, <<"{}">>),
        Self = self(),
        Listener = spawn_link(fun() -> listener(Self, []) end),
        {ok, F2} = tidemark:follow(M, Url, #{pid => Listener}),
        wait_until(fun() -> tidemark:get(M, <<"/servers/6">>) =/= {error, not_found} end, true),
        ?assertEqual([<<"/servers/", I>> || I <- "123456"], keys(M, <<"/servers/">>)),
        Listener ! {done, Self},
        Got = receive {got, L} -> L after ?WAIT -> error(no_listener_report) end,
        %% Resumed from cursor 5: no resync, and the request names the cursor.
        ?assertEqual([], [E || {_, #{kind := resync_started} = E} <- Got]),
        ?assertMatch([#{message := <<"/servers/5?follow=true">>} | _],
                     [E || {_, #{kind := connected} = E} <- Got]),
        ?assertEqual([F2], lists:usort([Fx || {Fx, _} <- Got])),
        receive {tidemark_lockstep, F2, _} -> error(sent_to_the_caller) after 0 -> ok end,
        %% pid => none: no messages at all, the mirror still works.
        ok = tidemark:stop_follower(F2),
        {ok, F3} = tidemark:follow(M, Url, #{pid => none}),
        {ok, 7} = tidemark:put(S, <<"/servers/7">>, <<"{}">>),
        wait_until(fun() -> tidemark:get(M, <<"/servers/7">>) =/= {error, not_found} end, true),
        ?assertMatch(#{cursor := 7}, tidemark:follower_status(F3)),
        ok = tidemark:stop_follower(F3),
        receive {tidemark_lockstep, F3, E3} -> error({unexpected, E3}) after 0 -> ok end,
        ok = tidemark:stop_server(Srv),
        tidemark:close(S),
        tidemark:close(M)
    end}.

listener(Parent, Acc) ->
    receive
        {tidemark_lockstep, F, E} -> listener(Parent, [{F, E} | Acc]);
        {done, Parent} -> Parent ! {got, lists:reverse(Acc)}
    end.

follow_errors_test() ->
    S = store(),
    Inv = fun(R) -> ?assertMatch({error, {invalid_argument, <<_/binary>>}}, R) end,
    Url = <<"http://127.0.0.1:1/servers/">>,
    Inv(tidemark:follow(S, Url, #{nope => 1})),
    Inv(tidemark:follow(S, Url, #{id_field => <<>>})),
    Inv(tidemark:follow(S, Url, #{poll_ms => 0})),
    Inv(tidemark:follow(S, Url, #{follow => <<"yes">>})),
    Inv(tidemark:follow(S, Url, #{prefix => "/m/", cursor_key => "/m/cursor"})),
    Inv(tidemark:follow(S, <<"ftp://127.0.0.1/servers/">>, #{})),
    Inv(tidemark:follow(S, "not a url", #{})),
    Inv(tidemark:follow(S, "", #{})),
    %% A dead receiver.
    Dead = spawn(fun() -> ok end),
    MRef = monitor(process, Dead),
    receive {'DOWN', MRef, process, Dead, _} -> ok end,
    ?assertEqual({error, noproc}, tidemark:follow(S, Url, #{pid => Dead})),
    %% Wrong types.
    ?assertError(badarg, tidemark:follow(make_ref(), Url, #{})),
    ?assertError(badarg, tidemark:follow(S, 42, #{})),
    ?assertError(badarg, tidemark:follow(S, <<"http://127.0.0.1:1/", 0>>, #{})),
    ?assertError(badarg, tidemark:follow(S, Url, [])),
    ?assertError(badarg, tidemark:follow(S, Url, #{pid => 42})),
    ?assertError(badarg, tidemark:follow(S, Url, #{pid => undefined})),
    ?assertError(badarg, tidemark:follow(S, Url, #{prefix => self()})),
    ?assertError(badarg, tidemark:follower_status(S)),
    ?assertError(badarg, tidemark:stop_follower(make_ref())),
    {ok, Srv} = tidemark:serve(S, default, #{}),
    ?assertError(badarg, tidemark:stop_follower(Srv)),
    ?assertError(badarg, tidemark:stop_server(make_ref())),
    ok = tidemark:stop_server(Srv),
    %% A closed store.
    ok = tidemark:close(S),
    ?assertEqual({error, closed}, tidemark:follow(S, Url, #{})),
    %% No follower was started by any of these.
    receive {tidemark_lockstep, _, E} -> error({unexpected, E}) after 0 -> ok end.

%% Connection failures are reported and retried with backoff; a malformed line is reported
%% (with the line) and skipped.
follow_reports_test_() ->
    {timeout, 30, fun() ->
        %% Nothing listens on the port of a stopped server.
        {S0, Srv0} = served(#{}),
        Url0 = url(Srv0, <<"/servers/">>),
        ok = tidemark:stop_server(Srv0),
        M = store(),
        {ok, F} = tidemark:follow(M, Url0, #{backoff_initial_ms => 20, backoff_max_ms => 50}),
        #{kind := error, message := Msg, retry_ms := Retry} = next(F, error),
        ?assert(is_binary(Msg) andalso byte_size(Msg) > 0),
        ?assert(Retry >= 10 andalso Retry =< 50),
        _ = next(F, error),
        ?assertMatch(#{errors := N, last_error := <<_/binary>>} when N >= 2, tidemark:follower_status(F)),
        ok = tidemark:stop_follower(F),
        flush(F),
        %% A feed with a malformed line in the middle (a one-shot HTTP server on gen_tcp).
        Body = <<"{\"id\":\"1\",\"updated_at\":1}\nnot json\n\n{\"heartbeat\":true}\n"
                 "{\"id\":\"2\",\"updated_at\":2}\n">>,
        {ok, LSock} = gen_tcp:listen(0, [binary, {active, false}, {ip, {127, 0, 0, 1}}, {reuseaddr, true}]),
        {ok, Port} = inet:port(LSock),
        Feed = spawn_link(fun() -> feed(LSock, Body) end),
        Url = <<"http://127.0.0.1:", (integer_to_binary(Port))/binary, "/feed/">>,
        {ok, F2} = tidemark:follow(M, Url, #{follow => false, poll_ms => 60000}),
        ?assertMatch(#{line := <<"not json">>, message := <<_/binary>>}, next(F2, malformed)),
        wait_until(fun() -> maps:get(state, tidemark:follower_status(F2)) end, polling),
        ?assertEqual([<<"/feed/1">>, <<"/feed/2">>], keys(M, <<"/feed/">>)),
        ?assertMatch(#{malformed_lines := N2, last_malformed := <<_/binary>>, cursor := 2}
                       when N2 >= 1, tidemark:follower_status(F2)),
        ok = tidemark:stop_follower(F2),
        unlink(Feed),
        exit(Feed, kill),
        gen_tcp:close(LSock),
        flush(F2),
        tidemark:close(M),
        tidemark:close(S0)
    end}.

feed(LSock, Body) ->
    {ok, Sock} = gen_tcp:accept(LSock),
    case read_head(Sock, <<>>) of
        ok ->
            _ = gen_tcp:send(Sock, ["HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                                    "Content-Length: ", integer_to_list(byte_size(Body)),
                                    "\r\nConnection: close\r\n\r\n", Body]);
        closed ->
            ok
    end,
    gen_tcp:close(Sock),
    feed(LSock, Body).

read_head(Sock, Acc) ->
    case binary:match(Acc, <<"\r\n\r\n">>) of
        nomatch ->
            case gen_tcp:recv(Sock, 0, ?WAIT) of
                {ok, Data} -> read_head(Sock, <<Acc/binary, Data/binary>>);
                {error, _} -> closed
            end;
        _ -> ok
    end.

%% Two processes stopping the same follower (and server) at once: both get ok.
concurrent_stop_test_() ->
    {timeout, 30, fun() ->
        {S, Srv} = served(#{}),
        M = store(),
        {ok, F} = tidemark:follow(M, url(Srv, <<"/servers/">>), #{pid => none}),
        Self = self(),
        Ps = [spawn_link(fun() -> Self ! {stopped, self(), tidemark:stop_follower(F),
                                          tidemark:stop_server(Srv)} end)
              || _ <- lists:seq(1, 4)],
        [receive {stopped, P, A, B} -> ?assertEqual({ok, ok}, {A, B}) end || P <- Ps],
        ?assert(tidemark_nif:follower_dropped_nif(F)),
        ?assertEqual({error, closed}, tidemark:server_status(Srv)),
        tidemark:close(S),
        tidemark:close(M)
    end}.

%%% Lifetimes

%% A server handle that is garbage-collected stops the server.
server_gc_test_() ->
    {timeout, 30, fun() ->
        Self = self(),
        %% 1. The owning process exits.
        spawn(fun() ->
                          {ok, S} = tidemark:open(memory, #{}),
                          {ok, Srv} = tidemark:serve(S, default, #{}),
                          Self ! {port, tidemark:server_port(Srv)}
                  end),
        Port1 = receive {port, P1} -> P1 end,
        wait_until(fun() -> listening(Port1) end, false),
        %% 2. A live process drops its handle and collects garbage. Until then the server keeps
        %% the store it serves open, although nobody else references that store any more.
        Checker = spawn(fun() -> check_then_exit(Self) end),
        Holder = spawn(fun() ->
                               {ok, S} = tidemark:open(memory, #{}),
                               {ok, _} = tidemark:put(S, <<"/servers/1">>, <<"{}">>),
                               {ok, Srv} = tidemark:serve(S, default, #{}),
                               Checker ! {server, self(), Srv},
                               gc_loop()
                       end),
        {Port2, Resp} = receive {checked, P2, R} -> {P2, R} end,
        ?assertMatch({200, _, <<"{\"id\":\"1\"", _/binary>>}, Resp),
        %% The checker has exited and the holder collected: nobody holds the handle now.
        Holder ! {gc, self()},
        receive collected -> ok end,
        wait_until(fun() -> listening(Port2) end, false),
        exit(Holder, kill)
    end}.

%% Receives a server handle, has its creator collect its garbage (dropping the store handle),
%% checks the server still serves that store, reports and exits (dropping the server handle).
check_then_exit(Parent) ->
    receive
        {server, Holder, Srv} ->
            Holder ! {gc, self()},
            receive collected -> ok end,
            {ok, Sock} = gen_tcp:connect({127, 0, 0, 1}, tidemark:server_port(Srv),
                                         [binary, {active, false}]),
            ok = gen_tcp:send(Sock, "GET /servers/0 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
            Resp = parse_response(recv_all(Sock, <<>>)),
            gen_tcp:close(Sock),
            Parent ! {checked, tidemark:server_port(Srv), Resp}
    end.

gc_loop() ->
    receive
        {gc, From} -> erlang:garbage_collect(), From ! collected, gc_loop()
    end.

%% A follower handle that is garbage-collected stops the follower; a follower whose receiver
%% is alive keeps running (the receiver gets its handle in every message), and stops once
%% that receiver has exited too. A running follower keeps its store open.
follower_gc_test_() ->
    {timeout, 30, fun() ->
        {S, Srv} = served(#{heartbeat_ms => 50}),
        Url = url(Srv, <<"/servers/">>),
        Following = fun() -> maps:get(following, tidemark:server_status(Srv)) end,
        Self = self(),
        %% 1. The owner (and receiver, by default) exits: the follower stops.
        spawn(fun() ->
                      {ok, M} = tidemark:open(memory, #{}),
                      {ok, _} = tidemark:follow(M, Url, #{}),
                      wait_until(Following, 1),
                      Self ! following
              end),
        receive following -> ok end,
        wait_until(Following, 0),
        %% 2. pid => none, handle dropped by a live process: stops.
        Holder = spawn(fun() ->
                               {ok, M} = tidemark:open(memory, #{}),
                               {ok, _} = tidemark:follow(M, Url, #{pid => none}),
                               Self ! started,
                               gc_loop()
                       end),
        receive started -> ok end,
        wait_until(Following, 1),
        Holder ! {gc, self()},
        receive collected -> ok end,
        wait_until(Following, 0),
        exit(Holder, kill),
        %% 3. The receiver is this (live) process; the creator exits at once, with the only
        %% handle on the follower's store: the follower keeps running and keeps the store open.
        spawn(fun() ->
                      {ok, M} = tidemark:open(memory, #{}),
                      {ok, F} = tidemark:follow(M, Url, #{pid => Self}),
                      Self ! {follower, F}
              end),
        F3 = receive {follower, F0} -> F0 end,
        _ = next(F3, resync_done),
        {ok, R} = tidemark:put(S, <<"/servers/live">>, <<"{}">>),
        RBin = integer_to_binary(R),
        wait_until(fun() -> case next(F3, applied) of
                                #{cursor := RBin, writes := 1} -> true;
                                _ -> false
                            end end, true),
        ?assertMatch(#{errors := 0, cursor := R}, tidemark:follower_status(F3)),
        ?assertEqual(1, Following()),
        %% Stopping releases the store; the follower handle stays valid.
        ok = tidemark:stop_follower(F3),
        wait_until(Following, 0),
        flush(F3),
        %% 4. A receiver that exits while the creator keeps nothing: stops.
        Receiver = spawn(fun() -> receive stop -> ok end end),
        spawn(fun() ->
                      {ok, M} = tidemark:open(memory, #{}),
                      {ok, _} = tidemark:follow(M, Url, #{pid => Receiver}),
                      Self ! started
              end),
        receive started -> ok end,
        wait_until(Following, 1),
        Receiver ! stop,
        wait_until(Following, 0),
        ok = tidemark:stop_server(Srv),
        tidemark:close(S)
    end}.

%% Closing a store before stopping its server or follower is safe: the server answers 503;
%% a follower whose own store was closed ends (status state => stopped, with last_error);
%% a follower whose source store was closed reports errors; stopping them afterwards works.
close_store_first_test_() ->
    {timeout, 30, fun() ->
        {S, Srv} = served(#{heartbeat_ms => 100}),
        {ok, _} = tidemark:put(S, <<"/servers/1">>, <<"{}">>),
        M = store(),
        {ok, F} = tidemark:follow(M, url(Srv, <<"/servers/">>),
                                  #{backoff_initial_ms => 20, backoff_max_ms => 100}),
        _ = next(F, resync_done),
        %% The served store is closed under the server and the follower: the follow response
        %% ends, requests get 503, and the follower reports that and retries.
        ok = tidemark:close(S),
        ?assertMatch({503, _, _}, http(Srv, "GET", "/servers/0")),
        #{message := Msg} = next(F, error),
        ?assertMatch({_, _}, binary:match(Msg, <<"503">>)),
        ?assertMatch(#{errors := N, state := St} when N >= 1 andalso St =/= stopped,
                     tidemark:follower_status(F)),
        ?assertMatch(#{requests := _}, tidemark:server_status(Srv)),
        ok = tidemark:stop_server(Srv),
        ?assertEqual(ok, tidemark:stop_server(Srv)),
        %% The mirror's store is closed under the follower: the follower ends by itself (with
        %% a source it can reach, on its next write).
        {S1, Srv1} = served(#{}),
        M1 = store(),
        {ok, F1} = tidemark:follow(M1, url(Srv1, <<"/servers/">>), #{}),
        _ = next(F1, resync_done),
        ok = tidemark:close(M1),
        {ok, _} = tidemark:put(S1, <<"/servers/2">>, <<"{}">>),
        wait_until(fun() -> maps:get(state, tidemark:follower_status(F1)) end, stopped),
        ?assertMatch(#{last_error := <<_/binary>>}, tidemark:follower_status(F1)),
        [ok = tidemark:stop_follower(X) || X <- [F, F, F1, F1]],
        ok = tidemark:stop_server(Srv1),
        [flush(X) || X <- [F, F1]],
        tidemark:close(S1),
        tidemark:close(M),
        %% A follower or server started on a store and then collected with it.
        Self = self(),
        spawn(fun() ->
                      {ok, S2} = tidemark:open(memory, #{}),
                      {ok, Srv2} = tidemark:serve(S2, default, #{}),
                      {ok, _} = tidemark:follow(S2, url(Srv2, <<"/x/">>), #{pid => none}),
                      ok = tidemark:close(S2),
                      Self ! {port, tidemark:server_port(Srv2)}
              end),
        Port = receive {port, P} -> P end,
        wait_until(fun() -> listening(Port) end, false),
        %% A follower into a closed store, whose only holder is a live receiver that drops
        %% every message: it ends by itself, and its handle is then collected, by the
        %% receiver's garbage collection or, when the receiver was faster, on the follower's
        %% own thread as it ends (the destructor only queues the stop for the reaper).
        {S3, Srv3} = served(#{}),
        {ok, _} = tidemark:put(S3, <<"/servers/1">>, <<"{}">>),
        Drain = spawn(fun() -> drain(0) end),
        spawn(fun() ->
                      {ok, M3} = tidemark:open(memory, #{}),
                      {ok, _} = tidemark:follow(M3, url(Srv3, <<"/servers/">>), #{pid => Drain}),
                      ok = tidemark:close(M3),
                      Self ! closed
              end),
        receive closed -> ok end,
        wait_until(fun() -> Drain ! {count, self()}, receive {count, C} -> C > 0 end end, true),
        ok = tidemark:stop_server(Srv3),
        tidemark:close(S3),
        ?assert(is_process_alive(Drain)),
        exit(Drain, kill)
    end}.

drain(N) ->
    receive
        {count, From} -> From ! {count, N}, drain(N);
        {tidemark_lockstep, _, _} -> erlang:garbage_collect(), drain(N + 1)
    end.

%% The follower option `name' names it in the server's /metrics, with its lag, while it is
%% connected.
follower_name_in_server_metrics_test_() ->
    {timeout, 30, fun() ->
        {S, Srv} = served(#{heartbeat_ms => 50}),
        {ok, _} = tidemark:put(S, <<"/servers/1">>, <<"{}">>),
        M = store(),
        {ok, F} = tidemark:follow(M, url(Srv, <<"/servers/">>), #{name => <<"erl-1">>, pid => none}),
        Lag = fun() ->
                  {200, _, Body} = http(Srv, "GET", "/metrics"),
                  Lines = binary:split(Body, <<"\n">>, [global]),
                  Mine = [L || L <- Lines,
                               binary:match(L, <<"tidemark_follower_lag_revisions{follower=\"erl-1\",">>) =:= {0, 49}],
                  [binary_to_integer(lists:last(binary:split(L, <<" ">>, [global]))) || L <- Mine]
              end,
        wait_until(Lag, [0]),
        {ok, _} = tidemark:put(S, <<"/servers/2">>, <<"{}">>),
        wait_until(fun() -> record(M, <<"/servers/2">>) =/= not_found end, true),
        wait_until(Lag, [0]),
        ok = tidemark:stop_follower(F),
        wait_until(Lag, [])
    end}.
