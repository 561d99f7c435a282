%% EUnit tests of transient subscriptions in the Erlang binding: messages, replay from the
%% past, selectors, {active, N} credit, terminal messages, a dead owner, bad input.
-module(tidemark_subscriptions_tests).

-include_lib("eunit/include/eunit.hrl").

-define(WAIT, 20000).
-define(POLL_MS, 2).
-include("tidemark_test_helpers.hrl").

%% Closing the store sends `closed' to every subscription still open (before close returns);
%% those messages are flushed so that later modules' mailbox bounds hold.
with_store(Fun) ->
    {ok, S} = tidemark:open(memory, #{}),
    try Fun(S) after tidemark:close(S), flush() end.

flush() ->
    receive
        {tidemark_sub_event, _, _} -> flush();
        {tidemark_passive, _} -> flush()
    after 0 -> ok
    end.

ev(Type, Data) -> #{type => Type, data => Data}.

populate(S) ->
    {ok, _} = tidemark:append_events(S, <<"order-1">>, [ev(<<"created">>, <<"a">>), ev(<<"paid">>, <<"b">>)], no_stream),
    {ok, _} = tidemark:put(S, <<"user">>, <<"v">>),
    {ok, _} = tidemark:append_events(S, <<"cart-1">>, [ev(<<"created">>, <<"c">>)], any),
    {ok, _} = tidemark:append_events(S, <<"order-2">>, [ev(<<"created">>, <<"d">>)], any).

%% The next N bodies of Ref's messages.
recv(_Ref, 0) -> [];
recv(Ref, N) ->
    receive {tidemark_sub_event, Ref, Body} -> [Body | recv(Ref, N - 1)]
    after ?WAIT -> error({no_message, Ref})
    end.

%% Bodies up to and including the terminal one.
recv_to_end(Ref) ->
    case recv(Ref, 1) of
        [B] when B =:= closed; element(1, B) =:= compacted -> [B];
        [B] -> [B | recv_to_end(Ref)]
    end.

names(Bodies) ->
    [{Stream, V, T} || #{stream := Stream, version := V, type := T} <- Bodies].

no_message(Ref) ->
    receive {tidemark_sub_event, Ref, Body} -> error({unexpected, Body}) after 20 -> ok end.

replay_and_selectors_test() ->
    with_store(fun(S) ->
        populate(S),
        Cases = [{all, [{<<"order-1">>, 0, <<"created">>}, {<<"order-1">>, 1, <<"paid">>},
                        {<<"cart-1">>, 0, <<"created">>}, {<<"order-2">>, 0, <<"created">>}]},
                 {{stream, <<"order-1">>}, [{<<"order-1">>, 0, <<"created">>}, {<<"order-1">>, 1, <<"paid">>}]},
                 {{prefix, "order-"}, [{<<"order-1">>, 0, <<"created">>}, {<<"order-1">>, 1, <<"paid">>},
                                      {<<"order-2">>, 0, <<"created">>}]},
                 {{event_type, <<"created">>}, [{<<"order-1">>, 0, <<"created">>}, {<<"cart-1">>, 0, <<"created">>},
                                                {<<"order-2">>, 0, <<"created">>}]},
                 {{prefix, <<"order">>, <<"created">>}, [{<<"order-1">>, 0, <<"created">>},
                                                         {<<"order-2">>, 0, <<"created">>}]},
                 {{stream, <<"cart-1">>, <<"paid">>}, []}],
        lists:foreach(fun({Sel, Want}) ->
                          {ok, Ref} = tidemark:subscribe(S, Sel, #{start_revision => 1}),
                          ?assertEqual(Want, names(recv(Ref, length(Want)))),
                          no_message(Ref),
                          ok = tidemark:unsubscribe(S, Ref)
                      end, Cases),
        {ok, Ref} = tidemark:subscribe(S, {stream, <<"order-1">>}, #{start_revision => 1}),
        [E0, _] = recv(Ref, 2),
        {ok, [R0 | _]} = tidemark:read_stream(S, <<"order-1">>, 0, 0, forward),
        ?assertEqual(R0, E0)
    end).

live_credit_and_close_test() ->
    {ok, S} = tidemark:open(memory, #{}),
    {ok, Ref} = tidemark:subscribe(S, {prefix, <<"s">>}, #{active => 2}),
    [{ok, _} = tidemark:append_events(S, Name, [ev(<<"t">>, integer_to_binary(I))], any)
     || {Name, I} <- [{<<"s1">>, 1}, {<<"x">>, 0}, {<<"s2">>, 2}, {<<"s1">>, 3}]],
    ?assertEqual([<<"1">>, <<"2">>], [D || #{data := D} <- recv(Ref, 2)]),
    receive {tidemark_passive, Ref} -> ok after ?WAIT -> error(no_passive) end,
    no_message(Ref),
    ok = tidemark:activate(Ref, once),
    ?assertMatch([#{data := <<"3">>, version := 1}], recv(Ref, 1)),
    ok = tidemark:activate(Ref, true),
    {ok, _} = tidemark:append_events(S, <<"s3">>, [ev(<<"t">>, <<"4">>)], any),
    ?assertMatch([#{data := <<"4">>}], recv(Ref, 1)),
    ok = tidemark:close(S),
    ?assertEqual([closed], recv(Ref, 1)),
    flush().

compacted_test() ->
    with_store(fun(S) ->
        {ok, Ref} = tidemark:subscribe(S, {stream, <<"s">>}, #{max_queue => 1, active => 1}),
        [{ok, _} = tidemark:append_events(S, <<"s">>, [ev(<<"t">>, <<>>)], any) || _ <- [1, 2, 3]],
        ?assertMatch([#{version := 0}], recv(Ref, 1)),
        Rev = tidemark:current_revision(S),
        {ok, _} = tidemark:compact(S, Rev),
        %% Out of credit, the subscription may already have ended with the terminal message
        %% (then it is not found); what was queued may come before it (version 1).
        ?assert(lists:member(tidemark:activate(Ref, 10), [ok, {error, not_found}])),
        Bodies = recv_to_end(Ref),
        ?assertEqual({compacted, Rev}, lists:last(Bodies)),
        ?assert(lists:all(fun(B) -> is_map(B) andalso maps:get(version, B) =:= 1 end, lists:droplast(Bodies))),
        ?assertEqual({error, {compacted, Rev}}, tidemark:subscribe(S, all, #{start_revision => 1}))
    end).

dead_owner_ends_the_subscription_test() ->
    with_store(fun(S) ->
        Pid = spawn(fun() -> receive stop -> ok end end),
        {ok, _Ref} = tidemark:subscribe(S, all, #{pid => Pid}),
        ?assertEqual(1, tidemark:watcher_count(S)),
        Pid ! stop,
        wait_until(fun() -> tidemark:watcher_count(S) end, 0)
    end).

bad_input_test() ->
    with_store(fun(S) ->
        Long = binary:copy(<<"x">>, 1025),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:subscribe(S, {stream, <<>>})),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:subscribe(S, {prefix, <<>>, <<"t">>})),
        ?assertMatch({error, {too_large, _}}, tidemark:subscribe(S, {stream, Long})),
        ?assertMatch({error, {too_large, _}}, tidemark:subscribe(S, {prefix, Long})),
        ?assertError(badarg, tidemark:subscribe(S, {event_type, <<>>})),
        ?assertError(badarg, tidemark:subscribe(S, {stream, <<"a">>, <<>>})),
        ?assertError(badarg, tidemark:subscribe(S, {key, <<"a">>})),
        ?assertError(badarg, tidemark:subscribe(S, {stream, 42})),
        ?assertError(badarg, tidemark:subscribe(S, all, #{bogus => 1})),
        ?assertError(badarg, tidemark:subscribe(S, all, #{active => 0})),
        ?assertError(badarg, tidemark:subscribe(S, all, not_a_map)),
        ?assertMatch({error, {future_revision, _}}, tidemark:subscribe(S, all, #{start_revision => 5})),
        ?assertEqual(0, tidemark:watcher_count(S))
    end).
