%% EUnit tests of streams, snapshots and named stores in the Erlang binding.
-module(tidemark_streams_tests).

-include_lib("eunit/include/eunit.hrl").

with_store(Fun) ->
    {ok, S} = tidemark:open(memory, #{}),
    try Fun(S) after tidemark:close(S) end.

ev(Type, Data) -> #{type => Type, data => Data}.

append_and_read_test() ->
    with_store(fun(S) ->
        ?assertEqual({ok, -1}, tidemark:stream_version(S, <<"orders">>)),
        ?assertEqual({ok, 1}, tidemark:append_events(S, <<"orders">>,
                                                      [ev(<<"created">>, <<"1">>),
                                                       #{type => "paid", data => [<<"2">>], metadata => <<"m">>}],
                                                      no_stream)),
        ?assertEqual({ok, 2}, tidemark:append_events(S, "orders", [ev(<<"shipped">>, <<"3">>)], 1)),
        ?assertEqual({ok, 3}, tidemark:append_events(S, "orders", [ev(<<"x">>, <<>>)], stream_exists)),
        ?assertEqual({ok, 4}, tidemark:append_events(S, "orders", [ev(<<"x">>, <<>>)], any)),
        {ok, Evs} = tidemark:read_stream(S, <<"orders">>, 0, 0, forward),
        ?assertEqual([0, 1, 2, 3, 4], [V || #{version := V} <- Evs]),
        [_, E1 | _] = Evs,
        ?assertMatch(#{stream := <<"orders">>, type := <<"paid">>, data := <<"2">>, metadata := <<"m">>,
                       revision := 2, id := <<_:128>>, timestamp_ms := T} when T > 1600000000000, E1),
        {ok, Back} = tidemark:read_stream(S, <<"orders">>, -1, 2, backward),
        ?assertEqual([4, 3], [V || #{version := V} <- Back]),
        ?assertEqual({ok, []}, tidemark:read_stream(S, <<"orders">>, 9, 0, forward)),
        ?assertEqual({error, not_found}, tidemark:read_stream(S, <<"none">>, 0, 0, forward)),
        %% user ALL never shows stream events
        ?assertMatch({ok, #{events := []}}, tidemark:changes(S, 1, 0))
    end).

wrong_expected_version_test() ->
    with_store(fun(S) ->
        ?assertEqual({error, {wrong_expected_version, -1}},
                     tidemark:append_events(S, <<"s">>, [ev(<<"t">>, <<>>)], stream_exists)),
        {ok, 1} = tidemark:append_events(S, <<"s">>, [ev(<<"t">>, <<>>), ev(<<"t">>, <<>>)], any),
        ?assertEqual({error, {wrong_expected_version, 1}},
                     tidemark:append_events(S, <<"s">>, [ev(<<"t">>, <<>>)], 0)),
        ?assertEqual({error, {wrong_expected_version, 1}},
                     tidemark:append_events(S, <<"s">>, [ev(<<"t">>, <<>>)], no_stream))
    end).

idempotent_retry_test() ->
    with_store(fun(S) ->
        Evs = [#{type => <<"t">>, data => <<"a">>, id => binary:copy(<<1>>, 16)},
               #{type => <<"t">>, data => <<"b">>, id => binary:copy(<<2>>, 16)}],
        {ok, 1} = tidemark:append_events(S, <<"s">>, Evs, no_stream),
        Rev = tidemark:current_revision(S),
        ?assertEqual({ok, 1}, tidemark:append_events(S, <<"s">>, Evs, no_stream)),
        ?assertEqual(Rev, tidemark:current_revision(S))
    end).

list_and_delete_test() ->
    with_store(fun(S) ->
        [{ok, 0} = tidemark:append_events(S, N, [ev(<<"t">>, <<>>)], any) || N <- [<<"a">>, <<"b/1">>, <<"b/2">>]],
        ?assertEqual({ok, [{<<"a">>, 0}, {<<"b/1">>, 0}, {<<"b/2">>, 0}], false}, tidemark:list_streams(S, <<>>, <<>>, 0)),
        ?assertEqual({ok, [{<<"b/1">>, 0}], true}, tidemark:list_streams(S, <<"b/">>, <<>>, 1)),
        ?assertEqual({ok, [{<<"b/2">>, 0}], false}, tidemark:list_streams(S, <<"b/">>, <<"b/1">>, 0)),
        ?assertMatch({ok, #{streams := 3, snapshots := 0}}, tidemark:status(S)),
        ?assertMatch({ok, _}, tidemark:delete_stream(S, <<"a">>)),
        ?assertEqual({error, not_found}, tidemark:delete_stream(S, <<"a">>)),
        ?assertEqual({ok, -1}, tidemark:stream_version(S, <<"a">>)),
        ?assertEqual({error, {wrong_expected_version, -1}},
                     tidemark:append_events(S, <<"a">>, [ev(<<"t">>, <<>>)], stream_exists)),
        ?assertEqual({ok, 0}, tidemark:append_events(S, <<"a">>, [ev(<<"t">>, <<>>)], no_stream))
    end).

snapshots_test() ->
    with_store(fun(S) ->
        {ok, R} = tidemark:record_snapshot(S, <<"src">>, <<"s">>, 3, <<"three">>),
        {ok, _} = tidemark:record_snapshot(S, <<"src">>, <<"s">>, 7, "seven"),
        ?assertMatch({ok, #{version := 3, data := <<"three">>, revision := R, source := <<"src">>,
                            stream := <<"s">>}}, tidemark:read_snapshot(S, <<"src">>, <<"s">>, 6)),
        ?assertEqual({error, not_found}, tidemark:read_snapshot(S, <<"src">>, <<"s">>, 2)),
        {ok, L} = tidemark:list_snapshots(S, <<"src">>, <<"s">>),
        ?assertEqual([3, 7], [V || #{version := V} <- L]),
        ?assertMatch({ok, _}, tidemark:delete_snapshot(S, <<"src">>, <<"s">>, 7)),
        ?assertEqual({error, not_found}, tidemark:delete_snapshot(S, <<"src">>, <<"s">>, 7))
    end).

bad_inputs_test() ->
    with_store(fun(S) ->
        E = [ev(<<"t">>, <<>>)],
        ?assertMatch({error, {invalid_argument, _}}, tidemark:append_events(S, <<>>, E, any)),
        ?assertMatch({error, {too_large, _}}, tidemark:append_events(S, binary:copy(<<"x">>, 1025), E, any)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:append_events(S, <<"s">>, [], any)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:append_events(S, <<"s">>, E, -3)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:append_events(S, <<"s">>, E, -5)),
        ?assertMatch({error, {invalid_argument, _}},
                     tidemark:append_events(S, <<"s">>, [#{type => <<"t">>, data => <<>>, id => <<"short">>}], any)),
        ?assertError(badarg, tidemark:append_events(S, <<"s">>, E, maybe)),
        ?assertError(badarg, tidemark:append_events(S, <<"s">>, [not_a_map], any)),
        ?assertError(badarg, tidemark:append_events(S, <<"s">>, [#{type => <<"t">>}], any)),
        ?assertError(badarg, tidemark:append_events(S, <<"s">>, [#{type => <<"t">>, data => <<>>, bogus => 1}], any)),
        ?assertError(badarg, tidemark:append_events(S, <<"s">>, [E | improper], any)),
        ?assertError(badarg, tidemark:read_stream(S, <<"s">>, 0, 0, sideways)),
        ?assertError(badarg, tidemark:read_stream(S, <<"s">>, 0, -1, forward)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:read_stream(S, <<"s">>, -1, 0, forward)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:read_stream(S, <<"s">>, -7, 0, backward)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:stream_version(S, <<>>)),
        ?assertError(badarg, tidemark:record_snapshot(S, <<"src">>, <<"s">>, -1, <<>>)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:record_snapshot(S, <<>>, <<"s">>, 1, <<>>)),
        ?assertEqual(0, tidemark:current_revision(S)),
        tidemark:close(S),
        ?assertEqual({error, closed}, tidemark:append_events(S, <<"s">>, E, any))
    end).

named_stores_test() ->
    {ok, S} = tidemark:open_named(orders_db, memory, #{}),
    ?assertEqual({ok, S}, tidemark:whereis_store(orders_db)),
    ?assertEqual({ok, S}, tidemark:whereis_store(<<"orders_db">>)),
    ?assert(lists:member(<<"orders_db">>, tidemark:stores())),
    ?assertEqual({error, already_registered}, tidemark:open_named(orders_db, memory, #{})),
    ?assertEqual(ok, tidemark:close_named(orders_db)),
    ?assertEqual({error, closed}, tidemark:stream_version(S, <<"s">>)),
    ?assertEqual({error, not_found}, tidemark:whereis_store(orders_db)),
    ?assertEqual({error, not_found}, tidemark:close_named(orders_db)),
    ?assertError(badarg, tidemark:whereis_store(<<>>)),
    %% a named store closed directly leaves the registry
    {ok, T} = tidemark:open_named(<<"direct">>, memory, #{}),
    tidemark:close(T),
    ?assertNot(lists:member(<<"direct">>, tidemark:stores())),
    ?assertEqual({error, not_found}, tidemark:whereis_store(<<"direct">>)).
