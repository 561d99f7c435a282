%% EUnit tests of contexts through the Erlang binding: maps in and out, the sync tuples,
%% Chord's defects, concurrent updates from many processes, cleanup and bad input.
-module(tidemark_contexts_tests).

-include_lib("eunit/include/eunit.hrl").

-define(WAIT, 4000).
-define(POLL_MS, 2).

-include("tidemark_test_helpers.hrl").

with_store(Fun) -> with_store(#{}, Fun).
with_store(Opts, Fun) ->
    {ok, S} = tidemark:open(memory, Opts),
    try Fun(S) after tidemark:close(S) end.

%% Applies an RFC 6902 patch of add/remove/replace on object members (what the deltas of
%% these tests hold) to a map.
apply_patch(Doc, Patch) -> lists:foldl(fun apply_op/2, Doc, Patch).

apply_op(#{<<"op">> := Op, <<"path">> := Path} = O, Doc) ->
    [<<>> | Parts] = binary:split(Path, <<"/">>, [global]),
    at(Doc, Parts, Op, maps:get(<<"value">>, O, undefined)).

at(M, [K], <<"remove">>, _) -> maps:remove(K, M);
at(M, [K], _, V) -> M#{K => V};
at(M, [K | Rest], Op, V) -> M#{K => at(maps:get(K, M), Rest, Op, V)}.

set_update_get_delete_test() ->
    with_store(fun(S) ->
        {ok, #{version := 1, document := D1, delta := _}} =
            tidemark:context_set(S, <<"call:1">>, #{status => <<"ringing">>, n => 1}),
        ?assertEqual(#{<<"status">> => <<"ringing">>, <<"n">> => 1}, D1),
        {ok, #{version := 2, document := D2, delta := Delta}} =
            tidemark:context_update(S, <<"call:1">>, #{<<"status">> => <<"active">>, n => nil}),
        ?assertEqual(#{<<"status">> => <<"active">>}, D2),
        ?assertEqual(D2, apply_patch(D1, Delta)),
        {ok, #{version := 2, delta := [], revision := 0}} =
            tidemark:context_update(S, <<"call:1">>, <<"{\"status\":\"active\"}">>),
        {ok, #{id := <<"call:1">>, document := D2, version := 2, created_ms := C, updated_ms := U}} =
            tidemark:context_get(S, "call:1"),
        ?assert(C =< U),
        {ok, _} = tidemark:context_set(S, <<255, "bin">>, #{}),
        {ok, [#{id := <<"call:1">>}, #{id := <<255, "bin">>}]} = tidemark:context_list(S, #{}),
        {ok, [#{id := <<255, "bin">>}]} = tidemark:context_list(S, #{limit => 1, order => desc}),
        {ok, [#{version := 2, patch := Delta, timestamp_ms := _}]} = tidemark:context_deltas(S, <<"call:1">>, #{}),
        {ok, _Rev} = tidemark:context_delete(S, <<"call:1">>),
        ?assertEqual({error, not_found}, tidemark:context_get(S, <<"call:1">>)),
        ?assertEqual({error, not_found}, tidemark:context_delete(S, <<"call:1">>)),
        ?assertEqual({error, not_found}, tidemark:context_sync(S, <<"call:1">>, 1)),
        %% Re-created, it goes on from the deleted one's version: its old clients get FULL.
        {ok, #{version := 3}} = tidemark:context_set(S, <<"call:1">>, #{again => 1}),
        ?assertEqual({full_context, #{<<"again">> => 1}, 3}, tidemark:context_sync(S, <<"call:1">>, 2))
    end).

sync_tuples_test() ->
    with_store(fun(S) ->
        Docs = [begin
                    {ok, #{document := D}} = tidemark:context_update(S, <<"c">>, #{integer_to_binary(I) => I}),
                    D
                end || I <- lists:seq(1, 5)],
        ?assertEqual({no_change, 5}, tidemark:context_sync(S, <<"c">>, 5)),
        {delta, Patch, 5} = tidemark:context_sync(S, <<"c">>, 2),
        ?assertEqual(lists:nth(5, Docs), apply_patch(lists:nth(2, Docs), Patch)),
        [?assertEqual({full_context, lists:nth(5, Docs), 5}, tidemark:context_sync(S, <<"c">>, V))
         || V <- [undefined, nil, 0, -3, 6, 1 bsl 70]]
    end).

chord_defects_test() ->
    with_store(fun(S) ->
        Docs = list_to_tuple([begin
                                  K = <<"f", (integer_to_binary(I rem 7))/binary>>,
                                  {ok, #{document := D}} =
                                      tidemark:context_update(S, <<"c">>, #{K => I, last => I}),
                                  D
                              end || I <- lists:seq(1, 150)]),
        {delta, P, 150} = tidemark:context_sync(S, <<"c">>, 120),
        ?assertEqual(element(150, Docs), apply_patch(element(120, Docs), P)),
        {full_context, _, 150} = tidemark:context_sync(S, <<"c">>, 10),
        {ok, _} = tidemark:context_set(S, <<"k">>, #{k => <<"old">>}),
        {ok, _} = tidemark:context_update(S, <<"k">>, #{k => null}),
        {ok, _} = tidemark:context_update(S, <<"k">>, #{k => <<"new">>}),
        {delta, P2, 3} = tidemark:context_sync(S, <<"k">>, 1),
        ?assertEqual(#{<<"k">> => <<"new">>}, apply_patch(#{<<"k">> => <<"old">>}, P2))
    end).

concurrent_updates_test() ->
    with_store(fun(S) ->
        Self = self(),
        Pids = [spawn_link(fun() ->
                               [{ok, _} = tidemark:context_update(S, <<"shared">>,
                                                                  #{iolist_to_binary(io_lib:format("f~b_~b", [T, I])) => I})
                                || I <- lists:seq(1, 25)],
                               Self ! {done, self()}
                           end) || T <- lists:seq(1, 8)],
        [receive {done, P} -> ok after 20000 -> error(timeout) end || P <- Pids],
        {ok, #{version := 200, document := D}} = tidemark:context_get(S, <<"shared">>),
        ?assertEqual(200, map_size(D))
    end).

cleanup_test() ->
    with_store(#{delta_threshold => 2, delta_ttl_ms => 1, context_ttl_ms => 1,
                 context_auto_delete => true}, fun(S) ->
        [{ok, _} = tidemark:context_update(S, <<"a">>, #{v => I}) || I <- lists:seq(1, 4)],
        {ok, [#{version := 4}, #{version := 3}]} = tidemark:context_deltas(S, <<"a">>, #{order => desc}),
        % The system clock moves on; a later pass removes the expired context.
        wait_until(fun() -> {ok, _} = tidemark:context_cleanup(S, 0), tidemark:context_get(S, <<"a">>) end,
                   {error, not_found}),
        ?assertEqual({ok, {0, 0}}, tidemark:context_cleanup(S, 10))
    end).

manual_clock_test() ->
    with_store(#{delta_ttl_ms => 100, context_ttl_ms => 1000, context_auto_delete => true}, fun(S) ->
        ok = tidemark:set_clock(S, {manual, 5000}),
        {ok, _} = tidemark:context_set(S, <<"a">>, #{v => 1}),
        {ok, _} = tidemark:context_update(S, <<"a">>, #{v => 2}),
        {ok, #{created_ms := 5000, updated_ms := 5000}} = tidemark:context_get(S, <<"a">>),
        {delta, _, 2} = tidemark:context_sync(S, <<"a">>, 1),
        {ok, 5100} = tidemark:advance_clock(S, 100),
        {full_context, _, 2} = tidemark:context_sync(S, <<"a">>, 1),
        ?assertEqual({ok, {0, 1}}, tidemark:context_cleanup(S, 0)),
        {ok, 6000} = tidemark:advance_clock(S, 900),
        ?assertEqual({ok, {1, 0}}, tidemark:context_cleanup(S, 0)),
        {ok, _} = tidemark:context_set(S, <<"t">>, #{}),
        ?assertEqual({error, not_found}, tidemark:context_cleaner_set_interval(S, 5)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:context_cleaner_start(S, 0, 0)),
        ok = tidemark:context_cleaner_start(S, 1, 0),
        ok = tidemark:context_cleaner_set_interval(S, 2),
        {ok, _} = tidemark:advance_clock(S, 100000),
        wait_until(fun() -> tidemark:context_get(S, <<"t">>) end, {error, not_found}),
        ?assertEqual({ok, true}, tidemark:context_cleaner_stop(S)),
        ?assertEqual({ok, false}, tidemark:context_cleaner_stop(S)),
        ok = tidemark:context_cleaner_start(S, 60000, 0),
        ok = tidemark:set_clock(S, system),
        {ok, _} = tidemark:context_set(S, <<"b">>, #{}),
        {ok, #{created_ms := Now}} = tidemark:context_get(S, <<"b">>),
        ?assert(Now > 1600000000000),
        ?assertError(badarg, tidemark:set_clock(S, {manual, -1})),
        ?assertError(badarg, tidemark:advance_clock(S, -1)),
        tidemark:close(S),
        ?assertEqual({error, closed}, tidemark:set_clock(S, system))
    end).

bad_input_test() ->
    with_store(#{max_value_size => 1024}, fun(S) ->
        {ok, _} = tidemark:context_set(S, <<"a">>, #{x => 1}),
        Rev = tidemark:current_revision(S),
        [?assertMatch({error, {invalid_argument, _}}, tidemark:context_set(S, <<"a">>, Bad))
         || Bad <- [<<"[1]">>, <<"{">>, <<"null">>, <<"{\"a\":1}", 0, "x">>, <<"\"s\"">>]],
        ?assertMatch({error, {invalid_argument, _}}, tidemark:context_update(S, <<"a">>, <<"7">>)),
        ?assertMatch({error, {too_large, _}},
                     tidemark:context_set(S, <<"a">>, #{x => binary:copy(<<"y">>, 2000)})),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:context_set(S, <<>>, #{})),
        ?assertError(badarg, tidemark:context_set(S, <<"a">>, [1])),
        ?assertError(badarg, tidemark:context_sync(S, <<"a">>, <<"1">>)),
        ?assertError(badarg, tidemark:context_list(S, #{order => sideways})),
        ?assertError(badarg, tidemark:context_list(S, #{nope => 1})),
        ?assertError(badarg, tidemark:context_cleanup(S, -1)),
        ?assertEqual(Rev, tidemark:current_revision(S)),
        {ok, #{document := #{<<"x">> := 1}}} = tidemark:context_get(S, <<"a">>)
    end).
