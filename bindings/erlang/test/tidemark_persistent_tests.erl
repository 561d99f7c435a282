%% EUnit tests of persistent subscriptions in the Erlang binding: replay from the past, kill -9
%% of an OS process and resume at the first unacked event, 3 competing consumers over 30,000
%% events and a dead one, nack retry/park/skip, parking after max_retry and replay, timeout redelivery by the
%% injected store clock, {active, N}, deletion, bad input.
-module(tidemark_persistent_tests).

-include_lib("eunit/include/eunit.hrl").

-define(WAIT, 20000).

with_store(Fun) ->
    {ok, S} = tidemark:open(memory, #{}),
    try Fun(S) after tidemark:close(S), flush() end.

flush() ->
    receive
        {tidemark_sub_event, _, _} -> flush();
        {tidemark_sub_passive, _} -> flush()
    after 0 -> ok
    end.

append(S, Stream, N) ->
    Evs = [#{type => <<"t">>, data => integer_to_binary(I)} || I <- lists:seq(1, N)],
    {ok, _} = tidemark:append_events(S, Stream, Evs, any),
    ok.

%% The next N deliveries to Ref.
recv(_Ref, 0) -> [];
recv(Ref, N) ->
    receive {tidemark_sub_event, Ref, D} when is_map(D) -> [D | recv(Ref, N - 1)]
    after ?WAIT -> error({no_delivery, Ref})
    end.

%% Nothing is in the mailbox for Ref right now, once the consumer's thread had the time of a
%% few of its polls to send something (a negative check: it can only miss a bug, never fail
%% a correct build).
nothing(Ref) ->
    receive {tidemark_sub_event, Ref, D} -> error({unexpected, D}) after 300 -> ok end.

revs(Ds) -> [R || #{revision := R} <- Ds].
datas(Ds) -> [D || #{data := D} <- Ds].

info(S, Name) ->
    {ok, L} = tidemark:subscription_list(S),
    [I] = [I || #{name := N} = I <- L, N =:= Name],
    I.

start_in_the_past_replays_history_test() ->
    with_store(fun(S) ->
        ok = append(S, <<"order-1">>, 3),
        ok = append(S, <<"cart-1">>, 2),
        ok = tidemark:subscription_create(S, <<"orders">>, #{selector => {prefix, <<"order-">>}}),
        {ok, Sub} = tidemark:subscription_connect(S, <<"orders">>, #{}),
        Ds = recv(Sub, 3),
        ?assertEqual([<<"1">>, <<"2">>, <<"3">>], datas(Ds)),
        ?assert(lists:all(fun(#{delivery_count := C, stream := St}) -> C =:= 1 andalso St =:= <<"order-1">> end, Ds)),
        nothing(Sub),
        ?assertMatch(#{in_flight := 3, lag := 3, consumers := 1, selector := {prefix, <<"order-">>}},
                     info(S, <<"orders">>)),
        ok = tidemark:ack(Sub, Ds),
        ?assertMatch(#{in_flight := 0, lag := 0, parked := 0}, info(S, <<"orders">>)),
        #{checkpoint := Cp} = info(S, <<"orders">>),
        ?assert(Cp >= lists:max(revs(Ds))),
        ok = tidemark:subscription_disconnect(Sub),
        ok = tidemark:subscription_disconnect(Sub)
    end).

start_end_and_revision_test() ->
    with_store(fun(S) ->
        ok = append(S, <<"a">>, 3),
        {ok, [_, #{revision := R2} | _]} = tidemark:read_stream(S, <<"a">>, 0, 10, forward),
        ok = tidemark:subscription_create(S, <<"from-end">>, #{start => 'end'}),
        ok = tidemark:subscription_create(S, <<"from-r2">>, #{start => R2, selector => {stream, <<"a">>}}),
        {ok, E} = tidemark:subscription_connect(S, <<"from-end">>, #{}),
        {ok, F} = tidemark:subscription_connect(S, <<"from-r2">>, #{}),
        ?assertEqual([<<"2">>, <<"3">>], datas(recv(F, 2))),
        nothing(E),
        ok = append(S, <<"a">>, 1),
        ?assertEqual([<<"1">>], datas(recv(E, 1))),
        ?assertEqual([<<"1">>], datas(recv(F, 1)))
    end).

%% A consumer in an OS process of its own acks 5 of 10 and is killed with -9; reopening the
%% directory, a new consumer gets 6-10 again.
kill_9_resumes_at_the_first_unacked_event_test_() ->
    {timeout, 120, fun kill_9/0}.

kill_9() ->
    Dir = string:trim(os:cmd("mktemp -d")),
    Ebin = filename:dirname(code:which(tidemark)),
    Script = lists:flatten(io_lib:format(
        "{ok, S} = tidemark:open(~p, #{}),"
        "ok = tidemark:subscription_create(S, <<\"work\">>, #{}),"
        "Evs = [#{type => <<\"t\">>, data => integer_to_binary(I)} || I <- lists:seq(1, 10)],"
        "{ok, _} = tidemark:append_events(S, <<\"jobs\">>, Evs, no_stream),"
        "{ok, Sub} = tidemark:subscription_connect(S, <<\"work\">>, #{}),"
        "Ds = [receive {tidemark_sub_event, Sub, D} -> D end || _ <- lists:seq(1, 10)],"
        "ok = tidemark:ack(Sub, lists:sublist(Ds, 5)),"
        "io:format(\"ready ~~s~~n\", [os:getpid()]),"
        "receive never -> ok end.", [Dir])),
    Erl = os:find_executable("erl"),
    P = open_port({spawn_executable, Erl},
                  [{args, ["-noshell", "-pa", Ebin, "-eval", Script]}, {line, 1024}, exit_status,
                   stderr_to_stdout]),
    OsPid = receive {P, {data, {eol, "ready " ++ Pid}}} -> Pid;
                    {P, Other} -> error({child, Other})
            after 60000 -> error(child_not_ready)
            end,
    os:cmd("kill -9 " ++ OsPid),
    receive {P, {exit_status, _}} -> ok after 60000 -> error(child_alive) end,
    {ok, S} = tidemark:open(Dir, #{}),
    try
        {ok, Sub} = tidemark:subscription_connect(S, <<"work">>, #{}),
        Ds = recv(Sub, 5),
        ?assertEqual([integer_to_binary(I) || I <- lists:seq(6, 10)], datas(Ds)),
        ?assert(lists:all(fun(#{delivery_count := C}) -> C >= 1 end, Ds)),
        nothing(Sub),
        ok = tidemark:ack(Sub, Ds),
        ?assertMatch(#{lag := 0, in_flight := 0}, info(S, <<"work">>))
    after
        tidemark:close(S),
        flush(),
        os:cmd("rm -rf " ++ Dir)
    end.

%% A consumer process that acks everything it gets and reports each ack to Parent; with
%% `Stop' after that many deliveries it stops acking and waits to be killed.
consumer(S, Parent, Stop) ->
    spawn(fun() ->
        {ok, Sub} = tidemark:subscription_connect(S, <<"shared">>, #{active => 4}),
        Parent ! {connected, self()},
        consume(Sub, Parent, Stop)
    end).

consume(_Sub, Parent, 0) ->
    Parent ! {holding, self()},
    receive never -> ok end;
consume(Sub, Parent, Left) ->
    receive
        {tidemark_sub_event, Sub, #{revision := R} = D} ->
            case Left of
                1 -> ok; % held, not acked: redelivered to the other after the kill
                _ -> ok = tidemark:ack(Sub, D), Parent ! {acked, self(), R}
            end,
            consume(Sub, Parent, Left - 1);
        {tidemark_sub_passive, Sub} ->
            ok = tidemark:subscription_activate(Sub, 4),
            consume(Sub, Parent, Left)
    end.

acks(0, Acc) -> Acc;
acks(N, Acc) ->
    receive {acked, From, R} -> acks(N - 1, [{R, From} | Acc])
    after ?WAIT -> error({missing_acks, N})
    end.

%% The issue's case: 3 consumer processes, 30,000 events, one killed mid-way while it holds
%% unacked events: every event is acked exactly once overall, none is lost.
competing_consumers_and_a_dead_one_test_() ->
    {timeout, 300, fun competing/0}.

competing() ->
    with_store(fun(S) ->
        N = 30000,
        ok = tidemark:subscription_create(S, <<"shared">>, #{max_in_flight => 50}),
        Self = self(),
        Dying = consumer(S, Self, 20),
        Steady = [consumer(S, Self, -1) || _ <- [1, 2]], % never stop
        [receive {connected, P} -> ok end || P <- [Dying | Steady]],
        [ok = append(S, <<"s-", (integer_to_binary(I))/binary>>, 1000) || I <- lists:seq(1, N div 1000)],
        receive {holding, Dying} -> ok after ?WAIT -> error(dying_never_held) end,
        exit(Dying, kill),
        All = acks(N, []),
        Revs = [R || {R, _} <- All],
        ?assertEqual(N, length(lists:usort(Revs))), % each acked exactly once, none lost
        ?assertEqual(19, length([R || {R, P} <- All, P =:= Dying])),
        [exit(P, kill) || P <- Steady],
        ?assertMatch(#{lag := 0, in_flight := 0}, info(S, <<"shared">>))
    end).

nack_retry_park_skip_and_replay_test() ->
    with_store(fun(S) ->
        ok = tidemark:subscription_create(S, <<"n">>, #{max_retry => 2}),
        {ok, Sub} = tidemark:subscription_connect(S, <<"n">>, #{}),
        ok = append(S, <<"s">>, 4),
        [D1, D2, D3, D4] = recv(Sub, 4),
        ok = tidemark:nack(Sub, D1, retry),
        [#{revision := R1, delivery_count := 2} = D1b] = recv(Sub, 1),
        ?assertEqual(R1, maps:get(revision, D1)),
        ok = tidemark:nack(Sub, D1b, retry), % the 2nd failed delivery: max_retry, parked
        ok = tidemark:nack(Sub, D2, park),
        ok = tidemark:nack(Sub, D3, skip),
        ok = tidemark:ack(Sub, D4),
        nothing(Sub),
        {ok, Parked} = tidemark:subscription_parked(S, <<"n">>, 0),
        ?assertEqual(revs([D1, D2]), revs(Parked)),
        ?assertMatch([#{delivery_count := 2}, #{delivery_count := 1}], Parked),
        {ok, [_]} = tidemark:subscription_parked(S, <<"n">>, 1),
        ?assertMatch(#{parked := 2}, info(S, <<"n">>)),
        {ok, 2} = tidemark:subscription_replay_parked(S, <<"n">>),
        Again = recv(Sub, 2),
        ?assertEqual(revs([D1, D2]), revs(Again)),
        ?assert(lists:all(fun(#{delivery_count := C}) -> C =:= 1 end, Again)),
        ok = tidemark:ack(Sub, Again),
        ?assertEqual({ok, []}, tidemark:subscription_parked(S, <<"n">>, 0)),
        ?assertMatch(#{parked := 0, lag := 0, in_flight := 0}, info(S, <<"n">>))
    end).

timeout_redelivers_by_the_store_clock_test() ->
    with_store(fun(S) ->
        ok = tidemark:set_clock(S, {manual, 1000}),
        ok = tidemark:subscription_create(S, <<"t">>, #{message_timeout_ms => 60000}),
        {ok, Sub} = tidemark:subscription_connect(S, <<"t">>, #{}),
        ok = append(S, <<"s">>, 1),
        [#{delivery_count := 1, revision := R}] = recv(Sub, 1),
        nothing(Sub), % the wall clock moves, the store clock does not
        {ok, 61001} = tidemark:advance_clock(S, 60001),
        [#{delivery_count := 2, revision := R} = D] = recv(Sub, 1),
        ok = tidemark:ack(Sub, D)
    end).

active_n_and_passive_test() ->
    with_store(fun(S) ->
        ok = tidemark:subscription_create(S, <<"a">>, #{}),
        {ok, Sub} = tidemark:subscription_connect(S, <<"a">>, #{active => 2}),
        ok = append(S, <<"s">>, 5),
        ?assertEqual([<<"1">>, <<"2">>], datas(recv(Sub, 2))),
        receive {tidemark_sub_passive, Sub} -> ok after ?WAIT -> error(no_passive) end,
        nothing(Sub),
        ok = tidemark:subscription_activate(Sub, 3),
        ?assertEqual([<<"3">>, <<"4">>, <<"5">>], datas(recv(Sub, 3))),
        receive {tidemark_sub_passive, Sub} -> ok after ?WAIT -> error(no_passive) end,
        {ok, Off} = tidemark:subscription_connect(S, <<"a">>, #{active => false}),
        ok = tidemark:subscription_disconnect(Sub), % its 5 go to Off, once it is activated
        nothing(Off),
        ok = tidemark:subscription_activate(Off, true),
        Again = recv(Off, 5),
        ?assertEqual([<<"1">>, <<"2">>, <<"3">>, <<"4">>, <<"5">>], lists:sort(datas(Again))),
        ok = tidemark:ack(Off, Again)
    end).

deleted_and_closed_end_the_consumer_test() ->
    {ok, S} = tidemark:open(memory, #{}),
    ok = tidemark:subscription_create(S, <<"d">>, #{}),
    ok = tidemark:subscription_create(S, <<"c">>, #{}),
    {ok, D} = tidemark:subscription_connect(S, <<"d">>, #{struct => 'Elixir.Tidemark.Delivery'}),
    {ok, C} = tidemark:subscription_connect(S, <<"c">>, #{}),
    ok = append(S, <<"s">>, 1),
    [#{'__struct__' := 'Elixir.Tidemark.Delivery', delivery_count := 1}] = recv(D, 1),
    ok = tidemark:subscription_delete(S, <<"d">>),
    receive {tidemark_sub_event, D, deleted} -> ok after ?WAIT -> error(no_deleted) end,
    ?assertEqual({error, not_found}, tidemark:subscription_delete(S, <<"d">>)),
    [_] = recv(C, 1),
    ok = tidemark:close(S),
    receive {tidemark_sub_event, C, closed} -> ok after ?WAIT -> error(no_closed) end,
    ?assertEqual({error, closed}, tidemark:ack(C, 1)),
    ?assertEqual({error, closed}, tidemark:subscription_list(S)),
    ok = tidemark:subscription_disconnect(C),
    flush().

bad_input_test() ->
    with_store(fun(S) ->
        ?assertEqual({error, not_found}, tidemark:subscription_connect(S, <<"none">>, #{})),
        ?assertEqual({error, not_found}, tidemark:subscription_parked(S, <<"none">>, 0)),
        ?assertEqual({error, not_found}, tidemark:subscription_replay_parked(S, <<"none">>)),
        ok = tidemark:subscription_create(S, <<"x">>, #{}),
        ?assertMatch({error, {conflict, _}}, tidemark:subscription_create(S, <<"x">>, #{})),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:subscription_create(S, <<>>, #{})),
        ?assertMatch({error, {invalid_argument, _}},
                     tidemark:subscription_create(S, <<"y">>, #{max_in_flight => 0})),
        ?assertMatch({error, {future_revision, _}}, tidemark:subscription_create(S, <<"y">>, #{start => 99})),
        ?assertError(badarg, tidemark:subscription_create(S, <<"y">>, #{selector => {nope, 1}})),
        ?assertError(badarg, tidemark:subscription_create(S, <<"y">>, #{start => later})),
        ?assertError(badarg, tidemark:subscription_create(S, <<"y">>, #{colour => red})),
        ?assertError(badarg, tidemark:subscription_connect(S, <<"x">>, #{active => -1})),
        ?assertError(badarg, tidemark:subscription_connect(S, <<"x">>, #{pid => nobody})),
        Dead = spawn(fun() -> ok end),
        Mon = monitor(process, Dead),
        receive {'DOWN', Mon, _, _, _} -> ok end,
        ?assertEqual({error, noproc}, tidemark:subscription_connect(S, <<"x">>, #{pid => Dead})),
        {ok, Sub} = tidemark:subscription_connect(S, <<"x">>, #{}),
        ?assertError(badarg, tidemark:ack(not_a_sub, 1)),
        ?assertError(badarg, tidemark:nack(Sub, 1, later)),
        ?assertError(badarg, tidemark:ack(Sub, #{no_revision => 1})),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:ack(Sub, 12345)), % never delivered
        ok = append(S, <<"s">>, 1),
        [D] = recv(Sub, 1),
        {ok, Other} = tidemark:subscription_connect(S, <<"x">>, #{}),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:ack(Other, D)), % not its delivery
        ?assertMatch({error, {invalid_argument, _}}, tidemark:nack(Other, D, retry)),
        ok = tidemark:ack(Sub, D),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:ack(Sub, D)), % twice
        ok = tidemark:ack(Sub, []),
        ok = tidemark:subscription_disconnect(Sub),
        ?assertEqual({error, closed}, tidemark:ack(Sub, D)),
        ?assertEqual({error, closed}, tidemark:nack(Sub, D, skip)),
        ok = tidemark:subscription_activate(Sub, 1) % harmless after disconnect
    end).

%% A reset backwards delivers acked events again (an open consumer is told and ends), forwards
%% skips them; bad input changes nothing.
reset_test() ->
    with_store(fun(S) ->
        ok = append(S, <<"s">>, 4),
        ok = tidemark:subscription_create(S, <<"r">>, #{start => beginning}),
        {ok, Sub} = tidemark:subscription_connect(S, <<"r">>, #{}),
        [D1, D2, D3, D4] = recv(Sub, 4),
        ok = tidemark:ack(Sub, [D1, D2, D3, D4]),
        Current = tidemark:current_revision(S),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:subscription_reset(S, <<"r">>, 0)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:subscription_reset(S, <<"r">>, Current + 2)),
        ?assertEqual({error, not_found}, tidemark:subscription_reset(S, <<"none">>, 1)),
        ?assertError(badarg, tidemark:subscription_reset(S, <<"r">>, -1)),
        ?assertEqual(Current, tidemark:current_revision(S)),
        Next = Current + 1,
        {ok, Next} = tidemark:subscription_reset(S, <<"r">>, maps:get(revision, D2)),
        receive {tidemark_sub_event, Sub, {error, {conflict, _}}} -> ok after ?WAIT -> error(no_end) end,
        ok = tidemark:subscription_disconnect(Sub),
        {ok, Again} = tidemark:subscription_connect(S, <<"r">>, #{}),
        ?assertEqual(revs([D2, D3, D4]), revs(recv(Again, 3))),
        ok = tidemark:subscription_disconnect(Again),
        {ok, _} = tidemark:subscription_reset(S, <<"r">>, maps:get(revision, D4)),
        {ok, Fwd} = tidemark:subscription_connect(S, <<"r">>, #{}),
        ?assertEqual(revs([D4]), revs(recv(Fwd, 1))),
        nothing(Fwd)
    end).
