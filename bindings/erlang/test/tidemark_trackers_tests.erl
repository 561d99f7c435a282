%% EUnit tests of tracker groups in the Erlang binding: every feature's lifecycle as
%% {feature_created | feature_updated | feature_deleted, Feature, Data}, user features,
%% replay, members (a dead member leaves), many members, terminal messages and bad input.
-module(tidemark_trackers_tests).

-include_lib("eunit/include/eunit.hrl").

-define(WAIT, 60000).
-define(POLL_MS, 5).
-include("tidemark_test_helpers.hrl").

with_store(Fun) ->
    S = store(),
    try Fun(S) after tidemark:close(S), flush() end.

%% Drops what a closed store's groups sent last ({feature_tracker_ended, _, closed}).
flush() ->
    receive {feature_tracker_ended, _, closed} -> flush() after 100 -> ok end.

%% The next tracker message in the mailbox, its data decoded.
next() ->
    receive
        {Action, Feature, #{id := Id, revision := Rev, data := Json}}
          when Action =:= feature_created; Action =:= feature_updated; Action =:= feature_deleted ->
            {Action, Feature, Id, Rev, tidemark_json:decode(Json)};
        {feature_tracker_ended, _, _} = Ended ->
            Ended
    after ?WAIT -> error(no_notification)
    end.

next(N) -> [begin {A, F, Id, _, D} = next(), {A, F, Id, D} end || _ <- lists:seq(1, N)].

every_feature_notifies_its_lifecycle_test() ->
    with_store(fun(S) ->
        Me = self(),
        [ok = tidemark:join(S, F, Me) || F <- [streams, snapshots, contexts, <<"keys/u/">>, jobs]],
        {ok, _} = tidemark:append_events(S, <<"orders">>, [#{type => <<"t">>, data => <<"1">>}], any),
        {ok, _} = tidemark:append_events(S, <<"orders">>, [#{type => <<"t">>, data => <<"2">>}], any),
        {ok, _} = tidemark:record_snapshot(S, <<"agg">>, <<"orders">>, 1, <<"state">>),
        {ok, _} = tidemark:context_set(S, <<"cart">>, #{n => 1}),
        {ok, _} = tidemark:context_delete(S, <<"cart">>),
        {ok, _} = tidemark:put(S, <<"u/a">>, <<"1">>),
        {ok, _} = tidemark:delete(S, <<"u/a">>),
        {ok, _} = tidemark:delete_stream(S, <<"orders">>),
        {ok, Rev} = tidemark:notify_created(S, jobs, <<"j1">>, #{step => 1}),
        Got = [next() || _ <- lists:seq(1, 9)],
        Expect = [{feature_created, streams, <<"orders">>, #{version => 0}},
                  {feature_updated, streams, <<"orders">>, #{version => 1}},
                  {feature_deleted, streams, <<"orders">>, #{}},
                  {feature_created, snapshots, <<"orders">>,
                   #{source => <<"agg">>, stream => <<"orders">>, version => 1}},
                  {feature_created, contexts, <<"cart">>, #{version => 1}},
                  {feature_deleted, contexts, <<"cart">>, #{}},
                  {feature_created, <<"keys/u/">>, <<"u/a">>, #{version => 1}},
                  {feature_deleted, <<"keys/u/">>, <<"u/a">>, #{}},
                  {feature_created, jobs, <<"j1">>, #{step => 1}}],
        %% Each feature's notifications arrive in order; features may interleave.
        [?assertEqual([E || {_, F, _, _} = E <- Expect, F =:= Feature],
                      [{A, F, Id, D} || {A, F, Id, _, D} <- Got, F =:= Feature])
         || Feature <- [streams, snapshots, contexts, <<"keys/u/">>, jobs]],
        ?assertMatch([{_, jobs, _, Rev, _}], [G || {_, jobs, _, _, _} = G <- Got])
    end).

user_feature_replay_and_members_test() ->
    with_store(fun(S) ->
        {ok, _} = tidemark:notify(S, <<"jobs">>, created, <<"a">>, [1, 2]),
        {ok, _} = tidemark:notify(S, <<"jobs">>, updated, "a", <<"{\"raw\":true}">>),
        Me = self(),
        ok = tidemark:join(S, <<"jobs">>, Me, #{start_revision => 1}),
        ?assertEqual([{feature_created, <<"jobs">>, <<"a">>, [1, 2]},
                      {feature_updated, <<"jobs">>, <<"a">>, #{raw => true}}], next(2)),
        ?assertEqual([Me], tidemark:members(S, <<"jobs">>)),
        ?assertEqual([Me], tidemark:members(S, jobs)), %% one group per name, atom or binary
        ok = tidemark:join(S, jobs, Me), %% joining twice is one membership
        {ok, _} = tidemark:notify_deleted(S, jobs, <<"a">>, null),
        ?assertEqual([{feature_deleted, <<"jobs">>, <<"a">>, null}], next(1)),
        ok = tidemark:leave(S, jobs, Me),
        ?assertEqual([], tidemark:members(S, jobs)),
        {ok, _} = tidemark:notify_updated(S, jobs, <<"b">>, 1),
        receive {feature_updated, _, _} = M -> error({after_leave, M}) after 50 -> ok end
    end).

a_member_that_dies_leaves_test() ->
    with_store(fun(S) ->
        Me = self(),
        Pids = [spawn(fun() -> receive stop -> ok end end) || _ <- lists:seq(1, 3)],
        ok = tidemark:join(S, streams, [Me | Pids]),
        ?assertEqual(lists:sort([Me | Pids]), lists:sort(tidemark:members(S, streams))),
        [P | _] = Pids,
        Ref = monitor(process, P),
        P ! stop,
        receive {'DOWN', Ref, process, P, _} -> ok end,
        wait_until(fun() -> lists:sort(tidemark:members(S, streams)) end, lists:sort([Me | tl(Pids)])),
        [Q ! stop || Q <- tl(Pids)],
        wait_until(fun() -> tidemark:members(S, streams) end, [Me]),
        ok = tidemark:leave(S, streams, Me),
        ?assertEqual(0, tidemark:watcher_count(S)), %% the last member gone: untracked
        ?assertEqual(ok, tidemark:join(S, streams, spawn(fun() -> ok end))), %% dead: no member
        wait_until(fun() -> tidemark:watcher_count(S) end, 0)
    end).

many_members_get_every_notification_once_in_order_test_() ->
    {timeout, 120, fun() ->
        with_store(fun(S) ->
            Parent = self(),
            N = 100, Changes = 1000,
            Member = fun() ->
                         receive go -> ok end,
                         Ids = [receive {feature_updated, load, #{id := Id}} -> Id end
                                || _ <- lists:seq(1, Changes)],
                         Parent ! {done, self(), Ids}
                     end,
            Pids = [spawn_link(Member) || _ <- lists:seq(1, N)],
            ok = tidemark:join(S, load, Pids),
            [P ! go || P <- Pids],
            [{ok, _} = tidemark:notify_updated(S, load, integer_to_binary(I), I) || I <- lists:seq(1, Changes)],
            Want = [integer_to_binary(I) || I <- lists:seq(1, Changes)],
            [receive {done, P, Ids} -> ?assertEqual(Want, Ids) after ?WAIT -> error(timeout) end || P <- Pids]
        end)
    end}.

terminal_messages_test() ->
    S = store(),
    ok = tidemark:join(S, contexts, self()),
    tidemark:close(S),
    ?assertEqual({feature_tracker_ended, contexts, closed}, next()),
    ?assertEqual({error, closed}, tidemark:join(S, contexts, self())).

bad_input_test() ->
    with_store(fun(S) ->
        ?assertMatch({error, {invalid_argument, _}}, tidemark:join(S, <<>>, self())),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:notify(S, <<>>, created, <<"x">>, 1)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:notify(S, streams, created, <<"x">>, 1)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:notify(S, jobs, created, <<>>, 1)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:notify(S, jobs, created, <<"x">>, <<"{bad">>)),
        ?assertError(badarg, tidemark:notify(S, jobs, renamed, <<"x">>, 1)),
        ?assertError(badarg, tidemark:join(S, 42, self())),
        ?assertError(badarg, tidemark:join(S, jobs, [not_a_pid])),
        ?assertMatch({error, {future_revision, _}}, tidemark:join(S, jobs, self(), #{start_revision => 99})),
        ?assertEqual([], tidemark:members(S, jobs)),
        ?assertEqual(0, tidemark:watcher_count(S))
    end).
