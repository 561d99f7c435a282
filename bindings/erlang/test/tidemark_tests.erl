%% EUnit tests of the tidemark Erlang binding. No assertion depends on timing: waits only
%% bound how long a broken build can hang (?WAIT), they never decide a result.
-module(tidemark_tests).

-include_lib("eunit/include/eunit.hrl").

-define(WAIT, 4000). % below EUnit's 5 s per test, so a failure names its cause
-define(POLL_MS, 2).

%%% Helpers

-include("tidemark_test_helpers.hrl").

with_store(Fun) ->
    S = store(),
    try Fun(S) after tidemark:close(S), flush_all() end.

%% Drops every watch message left in the mailbox (EUnit runs tests in one process).
flush_all() ->
    receive
        {tidemark_event, _, _} -> flush_all();
        {tidemark_passive, _} -> flush_all()
    after 0 -> ok
    end.

%% The next watch message for Ref (fails the test after ?WAIT instead of hanging).
next(Ref) ->
    receive {tidemark_event, Ref, Body} -> Body
    after ?WAIT -> error({no_message_for, Ref})
    end.

%% N key events for Ref, in arrival order.
events(Ref, N) -> [next(Ref) || _ <- lists:seq(1, N)].

revs(Events) -> [R || #{revision := R} <- Events].

%% No message for Ref is in the mailbox right now.
no_message(Ref) ->
    receive {tidemark_event, Ref, Body} -> error({unexpected, Body}) after 0 -> ok end.

%% A terminal message (closed, compacted) is sent just before drop_userdata runs, and a watch
%% removed because its process died ends on another thread, so "the watch has ended" is
%% awaited there rather than asserted at once.
wait_ended(Ref) -> wait_until(fun() -> tidemark_nif:watch_ended_nif(Ref) end, true).

put_n(S, Prefix, N) ->
    [begin {ok, R} = tidemark:put(S, [Prefix, integer_to_binary(I)], <<"v">>), R end
     || I <- lists:seq(1, N)].

%%% Stores

version_test() ->
    V = tidemark:version(),
    ?assert(is_binary(V) andalso byte_size(V) > 0).

open_close_test() ->
    {ok, S} = tidemark:open(memory, #{}),
    ?assert(is_reference(S)),
    ?assertEqual(0, tidemark:current_revision(S)),
    ?assertEqual(1, tidemark:earliest_revision(S)),
    ?assertEqual(0, tidemark:watcher_count(S)),
    ?assertEqual(ok, tidemark:close(S)),
    ?assertEqual(ok, tidemark:close(S)).

open_options_test() ->
    {ok, S} = tidemark:open(memory, #{dispatch_threads => 2, <<"max_value_size">> => 8}),
    {ok, St} = tidemark:status(S),
    ?assertMatch(#{dispatch_threads := 2, max_value_size := 8}, St),
    ?assertMatch({error, {too_large, <<_/binary>>}}, tidemark:put(S, <<"k">>, <<"123456789">>)),
    ?assertMatch({ok, _}, tidemark:put(S, <<"k">>, <<"12345678">>)),
    tidemark:close(S).

open_errors_test() ->
    ?assertMatch({error, {invalid_argument, <<_/binary>>}}, tidemark:open(memory, #{nope => 1})),
    ?assertMatch({error, {invalid_argument, _}}, tidemark:open(memory, #{max_key_size => 0})),
    ?assertMatch({error, {invalid_argument, _}}, tidemark:open(memory, #{max_key_size => <<"x">>})),
    %% Durable directory stores are not in this build yet: the error is passed through.
    Dir = filename:join(tmp_dir(), "tidemark-erlang-test-" ++ os:getpid()),
    case tidemark:open(Dir, #{}) of
        {ok, D} ->
            ?assertMatch({error, {locked, _}}, tidemark:open(Dir, #{})),
            tidemark:close(D),
            rm_rf(Dir);
        Err ->
            ?assertMatch({error, {invalid_argument, <<_/binary>>}}, Err)
    end,
    %% A path that cannot be a store directory.
    ?assertMatch({error, {_, <<_/binary>>}}, tidemark:open("/proc/version/x", #{})),
    ?assertError(badarg, tidemark:open(memory, [])),
    ?assertError(badarg, tidemark:open(42, #{})),
    ?assertError(badarg, tidemark:open("", #{})),
    ?assertError(badarg, tidemark:open(<<"a", 0, "b">>, #{})),
    ?assertError(badarg, tidemark:open(memory, #{self() => 1})).

closed_store_test() ->
    S = store(),
    {ok, _} = tidemark:put(S, <<"a">>, <<"1">>),
    {ok, Ref} = tidemark:watch(S, all),
    ok = tidemark:close(S),
    ?assertEqual(closed, next(Ref)),
    C = {error, closed},
    ?assertEqual(C, tidemark:put(S, <<"a">>, <<"1">>)),
    ?assertEqual(C, tidemark:put(S, <<"a">>, <<"1">>, #{expected_mod_revision => 1})),
    ?assertEqual(C, tidemark:get(S, <<"a">>)),
    ?assertEqual(C, tidemark:delete(S, <<"a">>)),
    ?assertEqual(C, tidemark:batch(S, [{put, <<"a">>, <<"1">>}])),
    ?assertEqual(C, tidemark:range(S, all, 10)),
    ?assertEqual(C, tidemark:range(S, all, 0)),
    ?assertEqual(C, tidemark:changes(S, 1, 0)),
    ?assertEqual(C, tidemark:changes(S, 1, 0, #{limit => 5000})),
    ?assertEqual(C, tidemark:compact(S, 1)),
    ?assertEqual(C, tidemark:status(S)),
    ?assertEqual(C, tidemark:current_revision(S)),
    ?assertEqual(C, tidemark:earliest_revision(S)),
    ?assertEqual(C, tidemark:watcher_count(S)),
    ?assertEqual(C, tidemark:watch(S, all)),
    ?assertEqual(C, tidemark:unwatch(S, Ref)),
    ?assertEqual(C, tidemark:activate(Ref, 1)),
    ?assert(tidemark_nif:watch_ended_nif(Ref)).

status_test() ->
    with_store(fun(S) ->
        put_n(S, <<"k">>, 3),
        {ok, _} = tidemark:watch(S, all),
        {ok, St} = tidemark:status(S),
        ?assertMatch(#{revision := 3, earliest_revision := 1, keys := 3, watchers := 1,
                       durable := false}, St)
    end).

%% A directory store: writes run on dirty I/O schedulers, data survives a reopen, a second
%% open is refused with {locked, _}, and a garbage-collected store releases its directory.
durable_store_test_() ->
    {timeout, 60, fun() ->
        Dir = filename:join(tmp_dir(), "tidemark-erlang-" ++ os:getpid() ++ "-"
                            ++ integer_to_list(erlang:unique_integer([positive]))),
        try durable_store(Dir) after rm_rf(Dir) end
    end}.

durable_store(Dir) ->
    case tidemark:open(Dir, #{sync => always}) of
        {error, {invalid_argument, _}} ->
            ok; % a build without directory stores
        {ok, S} ->
            ?assertMatch({ok, #{durable := true}}, tidemark:status(S)),
            ?assertEqual(none, tidemark:tail_repair(S)),
            ?assertMatch({error, {locked, <<_/binary>>}}, tidemark:open(Dir, #{})),
            ?assertMatch({error, {invalid_argument, _}},
                         tidemark:open(Dir ++ "-other", #{sync => sometimes})),
            {ok, Ref} = tidemark:watch(S, all),
            Self = self(),
            %% Concurrent writers on a durable store share fsyncs (group commit).
            Ws = [spawn_link(fun() -> Self ! {wrote, self(), put_n(S, [<<"w">>, integer_to_binary(I), <<"/">>], 50)} end)
                  || I <- lists:seq(1, 4)],
            Written = lists:append([receive {wrote, W, Rs} -> Rs end || W <- Ws]),
            ?assertEqual(lists:seq(1, 200), lists:sort(Written)),
            {ok, 201} = tidemark:batch(S, [{put, <<"b">>, <<"1">>}, {delete, <<"w1/1">>}]),
            ?assertEqual({ok, 203}, tidemark:put(S, <<"b">>, <<"2">>, #{expected_mod_revision => 201})),
            ?assertEqual({error, not_found}, tidemark:delete(S, <<"nope">>)),
            {ok, 204} = tidemark:delete(S, <<"w2/1">>),
            ?assertEqual(lists:seq(1, 204), revs(events(Ref, 204))),
            {ok, #{events := Es}} = tidemark:changes(S, 1, 0, #{limit => 5000}),
            ?assertEqual(204, length(Es)),
            ok = tidemark:close(S),
            ?assertEqual(closed, next(Ref)),
            %% Reopen: everything is there.
            {ok, S2} = tidemark:open(Dir, #{}),
            ?assertEqual(204, tidemark:current_revision(S2)),
            ?assertMatch({ok, #{value := <<"2">>, version := 2, create_revision := 201}},
                         tidemark:get(S2, <<"b">>)),
            ?assertEqual({error, not_found}, tidemark:get(S2, <<"w1/1">>)),
            {ok, #{events := Es2}} = tidemark:changes(S2, 1, 0, #{limit => 5000}),
            ?assertEqual(Es, Es2),
            ?assertMatch({ok, _}, tidemark:compact(S2, 100)),
            ?assertEqual({error, {compacted, 100}}, tidemark:changes(S2, 1, 0)),
            {ok, 205} = tidemark:put(S2, <<"t">>, <<"after the checkpoint">>),
            ok = tidemark:close(S2),
            ?assertEqual({error, closed}, tidemark:tail_repair(S2)),
            %% A torn last commit (its last byte lost in a crash) is cut on open and reported.
            Seg = filename:join(Dir, lists:last(lists:sort(filelib:wildcard("seg-*.log", Dir)))),
            {ok, Bin} = file:read_file(Seg),
            End = data_end(Bin, byte_size(Bin)),
            ok = file:write_file(Seg, [binary:part(Bin, 0, End - 1), <<0>>, binary:part(Bin, End, byte_size(Bin) - End)]),
            {ok, S4} = tidemark:open(Dir, #{}),
            ?assertMatch(#{commits := 1, revisions := 1, first_revision := 205}, tidemark:tail_repair(S4)),
            ?assertEqual(204, tidemark:current_revision(S4)),
            ok = tidemark:close(S4),
            %% A store that is garbage-collected releases the directory.
            P = spawn(fun() -> {ok, _} = tidemark:open(Dir, #{}) end),
            M = monitor(process, P),
            receive {'DOWN', M, process, P, normal} -> ok end,
            wait_until(fun() ->
                               case tidemark:open(Dir, #{}) of
                                   {ok, S3} -> tidemark:close(S3);
                                   Locked -> Locked
                               end
                       end, ok)
    end.

%% Where a segment's records end: after its last non-zero byte (zero padding follows).
data_end(Bin, N) when N > 0 ->
    case binary:at(Bin, N - 1) of
        0 -> data_end(Bin, N - 1);
        _ -> N
    end.

tmp_dir() ->
    case os:getenv("TMPDIR") of
        false -> "/tmp";
        "" -> "/tmp";
        T -> T
    end.

rm_rf(Dir) ->
    case file:list_dir(Dir) of
        {ok, Names} ->
            [rm_rf(filename:join(Dir, N)) || N <- Names],
            file:del_dir(Dir);
        {error, enotdir} ->
            file:delete(Dir);
        {error, _} ->
            ok
    end.

%%% Keys

put_get_delete_test() ->
    with_store(fun(S) ->
        ?assertEqual({ok, 1}, tidemark:put(S, <<"a">>, <<"1">>)),
        ?assertEqual({ok, 2}, tidemark:put(S, <<"a">>, <<"2">>)),
        ?assertEqual({ok, #{value => <<"2">>, create_revision => 1, mod_revision => 2, version => 2}},
                     tidemark:get(S, <<"a">>)),
        ?assertEqual({error, not_found}, tidemark:get(S, <<"b">>)),
        ?assertEqual({ok, 3}, tidemark:delete(S, <<"a">>)),
        ?assertEqual({error, not_found}, tidemark:get(S, <<"a">>)),
        ?assertEqual({error, not_found}, tidemark:delete(S, <<"a">>)),
        ?assertEqual(3, tidemark:current_revision(S)),
        %% Recreated: a new life with version 1.
        ?assertEqual({ok, 4}, tidemark:put(S, "a", ["x", <<"y">>])),
        ?assertEqual({ok, #{value => <<"xy">>, create_revision => 4, mod_revision => 4, version => 1}},
                     tidemark:get(S, [<<"a">>])),
        %% Arbitrary bytes, empty values.
        ?assertMatch({ok, 5}, tidemark:put(S, <<1, 0, 255, 10>>, <<>>)),
        ?assertMatch({ok, #{value := <<>>}}, tidemark:get(S, <<1, 0, 255, 10>>)),
        %% Keys starting with the byte 0 are tidemark's own (the reserved namespace).
        ?assertMatch({error, {invalid_argument, <<_/binary>>}}, tidemark:put(S, <<0, "s/x">>, <<"v">>)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:get(S, <<0>>)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:delete(S, <<0, 1>>)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:range(S, {prefix, <<0>>}, 1)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:watch(S, {key, <<0, 1>>})),
        ?assertMatch({error, {invalid_argument, <<_/binary>>}}, tidemark:put(S, <<>>, <<"v">>)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:get(S, <<>>)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:delete(S, <<>>)),
        ?assertEqual(5, tidemark:current_revision(S))
    end).

conditional_put_test() ->
    with_store(fun(S) ->
        P = fun(K, V, E) -> tidemark:put(S, K, V, #{expected_mod_revision => E}) end,
        ?assertEqual({ok, 1}, P(<<"a">>, <<"1">>, 0)),
        ?assertEqual({error, {conflict, 1}}, P(<<"a">>, <<"x">>, 0)),
        ?assertEqual({error, {conflict, 1}}, P(<<"a">>, <<"x">>, 7)),
        ?assertEqual({ok, 2}, P(<<"a">>, <<"2">>, 1)),
        ?assertEqual({error, {conflict, 0}}, P(<<"b">>, <<"x">>, 2)),
        ?assertEqual({ok, 3}, tidemark:put(S, <<"c">>, <<"3">>, #{})),
        ?assertMatch({ok, #{value := <<"2">>, version := 2}}, tidemark:get(S, <<"a">>)),
        ?assertEqual(3, tidemark:current_revision(S)),
        ?assertError(badarg, tidemark:put(S, <<"a">>, <<"1">>, #{expected_mod_revision => -1})),
        ?assertError(badarg, tidemark:put(S, <<"a">>, <<"1">>, #{bogus => 1})),
        ?assertError(badarg, tidemark:put(S, <<"a">>, <<"1">>, [])),
        ?assertError(badarg, tidemark:put(S, <<"a">>, <<"1">>, #{expected_mod_revision => 1, x => 2}))
    end).

batch_test() ->
    with_store(fun(S) ->
        {ok, 1} = tidemark:put(S, <<"x">>, <<"0">>),
        ?assertEqual({ok, 2}, tidemark:batch(S, [{put, <<"a">>, <<"1">>}, {put, <<"b">>, <<"2">>},
                                                {delete, <<"x">>}, {require, <<"c">>, 0}])),
        ?assertEqual(4, tidemark:current_revision(S)),
        ?assertEqual({error, not_found}, tidemark:get(S, <<"x">>)),
        %% A failed requirement applies nothing and names the key's current mod_revision.
        ?assertEqual({error, {conflict, 2}},
                     tidemark:batch(S, [{put, <<"c">>, <<"3">>}, {require, <<"a">>, 1}])),
        ?assertEqual({error, not_found}, tidemark:get(S, <<"c">>)),
        ?assertEqual({error, not_found}, tidemark:batch(S, [{put, <<"c">>, <<"3">>}, {delete, <<"zz">>}])),
        ?assertEqual({error, not_found}, tidemark:get(S, <<"c">>)),
        ?assertEqual(4, tidemark:current_revision(S)),
        ?assertEqual({ok, 0}, tidemark:batch(S, [{require, <<"a">>, 2}])),
        ?assertEqual({ok, 0}, tidemark:batch(S, [])),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:batch(S, [{put, <<>>, <<"v">>}])),
        ?assertError(badarg, tidemark:batch(S, [{put, <<"a">>}])),
        ?assertError(badarg, tidemark:batch(S, [{update, <<"a">>, <<"1">>}])),
        ?assertError(badarg, tidemark:batch(S, [{require, <<"a">>, -1}])),
        ?assertError(badarg, tidemark:batch(S, not_a_list)),
        ?assertEqual(4, tidemark:current_revision(S))
    end).

range_test() ->
    with_store(fun(S) ->
        [tidemark:put(S, K, <<K/binary, "!">>) || K <- [<<"b/2">>, <<"a/1">>, <<"b/1">>, <<"c">>, <<"b0">>]],
        Keys = fun(Sel, Limit) ->
                       {ok, #{entries := Es, has_more := More}} = tidemark:range(S, Sel, Limit),
                       {[K || #{key := K} <- Es], More}
               end,
        ?assertEqual({[<<"a/1">>, <<"b/1">>, <<"b/2">>, <<"b0">>, <<"c">>], false}, Keys(all, 0)),
        ?assertEqual({[<<"a/1">>, <<"b/1">>], true}, Keys(all, 2)),
        ?assertEqual({[<<"b/1">>, <<"b/2">>], false}, Keys({prefix, <<"b/">>}, 10)),
        ?assertEqual({[<<"c">>], false}, Keys({key, <<"c">>}, 10)),
        ?assertEqual({[], false}, Keys({key, <<"zz">>}, 10)),
        ?assertEqual({[<<"b/1">>, <<"b/2">>, <<"b0">>], false}, Keys({range, <<"b">>, <<"c">>}, 10)),
        ?assertEqual({[<<"b0">>, <<"c">>], false}, Keys({range, <<"b0">>, infinity}, 5000)),
        {ok, #{entries := [E]}} = tidemark:range(S, {key, <<"c">>}, 1),
        ?assertEqual(#{key => <<"c">>, value => <<"c!">>, create_revision => 4, mod_revision => 4,
                       version => 1}, E),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:range(S, {range, <<"b">>, <<"a">>}, 1)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:range(S, {key, <<>>}, 1)),
        ?assertEqual({[<<"a/1">>, <<"b/1">>], true}, Keys({prefix, <<>>}, 2)),
        ?assertError(badarg, tidemark:range(S, {prefix}, 1)),
        ?assertError(badarg, tidemark:range(S, {bogus, <<"a">>}, 1)),
        ?assertError(badarg, tidemark:range(S, all, -1)),
        ?assertError(badarg, tidemark:range(S, all, many))
    end).

changes_test() ->
    with_store(fun(S) ->
        {ok, 1} = tidemark:put(S, <<"a">>, <<"1">>),
        {ok, 2} = tidemark:put(S, <<"b">>, <<"2">>),
        {ok, 3} = tidemark:put(S, <<"a">>, <<"3">>),
        {ok, 4} = tidemark:delete(S, <<"a">>),
        {ok, #{events := All, has_more := false, next_revision := 5}} = tidemark:changes(S, 1, 0),
        ?assertEqual([1, 2, 3, 4], revs(All)),
        ?assertEqual([#{revision => 3, type => put, key => <<"a">>, value => <<"3">>, version => 2,
                        create_revision => 1},
                      #{revision => 4, type => delete, key => <<"a">>, value => <<>>, version => 0,
                        create_revision => 0}],
                     lists:nthtail(2, All)),
        {ok, #{events := E23}} = tidemark:changes(S, 2, 3),
        ?assertEqual([2, 3], revs(E23)),
        {ok, #{events := E12, has_more := true, next_revision := 3}} =
            tidemark:changes(S, 1, 0, #{limit => 2}),
        ?assertEqual([1, 2], revs(E12)),
        {ok, #{events := EA}} = tidemark:changes(S, 1, 0, #{selector => {key, <<"a">>}}),
        ?assertEqual([1, 3, 4], revs(EA)),
        %% From 0 is read as 1; from current + 1 is empty.
        {ok, #{events := E0}} = tidemark:changes(S, 0, 0),
        ?assertEqual(4, length(E0)),
        ?assertMatch({ok, #{events := [], has_more := false, next_revision := 5}},
                     tidemark:changes(S, 5, 0)),
        ?assertEqual({error, {future_revision, 4}}, tidemark:changes(S, 6, 0)),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:changes(S, 3, 2)),
        ?assertError(badarg, tidemark:changes(S, -1, 0)),
        ?assertError(badarg, tidemark:changes(S, 1, 0, #{limit => x})),
        ?assertError(badarg, tidemark:changes(S, 1, 0, #{bogus => 1})),
        ?assertError(badarg, tidemark:changes(S, 1, 0, #{selector => nope})),
        ?assertError(badarg, tidemark:changes(S, 1, 0, [])),
        ?assertError(badarg, tidemark:changes(make_ref(), 1, 0))
    end).

changes_paging_test() ->
    with_store(fun(S) ->
        put_n(S, <<"k">>, 2500),
        {ok, _} = tidemark:batch(S, [{put, <<"b", I>>, <<>>} || I <- lists:seq(1, 10)]),
        Page = fun Page(From, Acc) ->
                       {ok, #{events := Es, has_more := More, next_revision := Next}} =
                           tidemark:changes(S, From, 0, #{limit => 700}),
                       case More of
                           true -> Page(Next, Acc ++ Es);
                           false -> Acc ++ Es
                       end
               end,
        ?assertEqual(lists:seq(1, 2510), revs(Page(1, []))),
        %% A limit above 1000 runs on a dirty scheduler; the result is the same.
        {ok, #{events := Big, has_more := false}} = tidemark:changes(S, 1, 0, #{limit => 100000}),
        ?assertEqual(2510, length(Big)),
        %% A commit is never split by the limit.
        {ok, #{events := Cut}} = tidemark:changes(S, 2495, 0, #{limit => 8}),
        ?assertEqual(lists:seq(2495, 2510), revs(Cut))
    end).

compact_test() ->
    with_store(fun(S) ->
        put_n(S, <<"k">>, 10),
        {ok, 11} = tidemark:put(S, <<"k1">>, <<"new">>),
        ?assertEqual({ok, 5}, tidemark:compact(S, 6)),
        ?assertEqual(6, tidemark:earliest_revision(S)),
        ?assertEqual({ok, 0}, tidemark:compact(S, 3)),
        ?assertEqual({error, {compacted, 6}}, tidemark:changes(S, 5, 0)),
        ?assertEqual({error, {compacted, 6}}, tidemark:watch(S, all, #{start_revision => 2})),
        {ok, #{events := Es}} = tidemark:changes(S, 6, 0),
        ?assertEqual(lists:seq(6, 11), revs(Es)),
        %% The keys' current state is never lost.
        ?assertMatch({ok, #{value := <<"v">>, mod_revision := 2}}, tidemark:get(S, <<"k2">>)),
        ?assertMatch({ok, #{value := <<"new">>, version := 2}}, tidemark:get(S, <<"k1">>)),
        ?assertEqual({error, {future_revision, 11}}, tidemark:compact(S, 13)),
        ?assertEqual({ok, 6}, tidemark:compact(S, 12)),
        ?assertEqual(12, tidemark:earliest_revision(S)),
        ?assertMatch({ok, #{events := []}}, tidemark:changes(S, 12, 0)),
        ?assertError(badarg, tidemark:compact(S, -1))
    end).

badarg_test() ->
    with_store(fun(S) ->
        NotStore = make_ref(),
        ?assertError(badarg, tidemark:put(NotStore, <<"a">>, <<"1">>)),
        ?assertError(badarg, tidemark:put(S, a, <<"1">>)),
        ?assertError(badarg, tidemark:put(S, <<"a">>, 1)),
        ?assertError(badarg, tidemark:get(S, 1)),
        ?assertError(badarg, tidemark:delete(S, {})),
        ?assertError(badarg, tidemark:current_revision(NotStore)),
        ?assertError(badarg, tidemark:earliest_revision(self())),
        ?assertError(badarg, tidemark:watcher_count(1)),
        ?assertError(badarg, tidemark:status(NotStore)),
        ?assertError(badarg, tidemark:close(NotStore)),
        ?assertError(badarg, tidemark:watch(S, {prefix, 1})),
        ?assertError(badarg, tidemark:watch(S, all, #{active => 0})),
        ?assertError(badarg, tidemark:watch(S, all, #{active => false})),
        ?assertError(badarg, tidemark:watch(S, all, #{pid => not_a_pid})),
        ?assertError(badarg, tidemark:watch(S, all, #{start_revision => -1})),
        ?assertError(badarg, tidemark:watch(S, all, #{bogus => 1})),
        ?assertError(badarg, tidemark:watch(S, all, #{progress_interval_ms => 1 bsl 40})),
        ?assertError(badarg, tidemark:watch(S, all, [])),
        ?assertError(badarg, tidemark:unwatch(S, make_ref())),
        ?assertError(badarg, tidemark:unwatch(S, S)),
        ?assertError(badarg, tidemark:activate(make_ref(), 1)),
        {ok, Ref} = tidemark:watch(S, all, #{active => 1}),
        ?assertError(badarg, tidemark:activate(Ref, 0)),
        ?assertError(badarg, tidemark:activate(Ref, -3)),
        ?assertError(badarg, tidemark:activate(Ref, false)),
        ?assertEqual(0, tidemark:current_revision(S))
    end).

json_test() ->
    ?assertEqual(<<"{\"a\":1,\"b\":[true,false,null],\"c\":\"x\\\"y\"}">>,
                 tidemark_json:encode(#{a => 1, b => [true, false, null], c => <<"x\"y">>})),
    ?assertEqual(#{<<"a">> => 1.5, <<"b">> => <<"\t">>},
                 maps:from_list([{atom_to_binary(K), V} || {K, V} <- maps:to_list(
                     tidemark_json:decode(tidemark_json:encode(#{<<"a">> => 1.5, "b" => <<"\t">>})))])),
    ?assertError(badarg, tidemark_json:encode(#{a => self()})),
    ?assertEqual(#{a => 1, b => [true, false, null], c => <<"x\"y\n">>, d => 1.5, e => -2,
                   f => #{}, g => 1.0e3},
                 tidemark_json:decode(<<" {\"a\": 1, \"b\": [true, false, null], \"c\": \"x\\\"y\\n\","
                                        " \"d\": 1.5, \"e\": -2, \"f\": {}, \"g\": 1e3} ">>)).

%%% Watches

watch_basics_test() ->
    with_store(fun(S) ->
        {ok, Ref} = tidemark:watch(S, {prefix, <<"/tasks/">>}),
        ?assert(is_reference(Ref)),
        ?assertEqual(1, tidemark:watcher_count(S)),
        {ok, 1} = tidemark:put(S, <<"/tasks/1">>, <<"todo">>),
        {ok, 2} = tidemark:put(S, <<"/other">>, <<"x">>),
        {ok, 3} = tidemark:put(S, <<"/tasks/1">>, <<"done">>),
        {ok, 4} = tidemark:delete(S, <<"/tasks/1">>),
        ?assertEqual(#{revision => 1, type => put, key => <<"/tasks/1">>, value => <<"todo">>,
                       version => 1, create_revision => 1}, next(Ref)),
        ?assertEqual(#{revision => 3, type => put, key => <<"/tasks/1">>, value => <<"done">>,
                       version => 2, create_revision => 1}, next(Ref)),
        ?assertEqual(#{revision => 4, type => delete, key => <<"/tasks/1">>, value => <<>>,
                       version => 0, create_revision => 0}, next(Ref)),
        ?assertEqual(ok, tidemark:unwatch(S, Ref)),
        ?assertEqual(0, tidemark:watcher_count(S)),
        %% unwatch returns after drop_userdata: the watch has ended.
        ?assert(tidemark_nif:watch_ended_nif(Ref)),
        ?assertEqual({error, not_found}, tidemark:unwatch(S, Ref)),
        ?assertEqual({error, not_found}, tidemark:activate(Ref, 1)),
        %% After unwatch returns, nothing more is sent for Ref.
        {ok, Ref2} = tidemark:watch(S, all),
        {ok, 5} = tidemark:put(S, <<"/tasks/2">>, <<"x">>),
        ?assertMatch(#{revision := 5}, next(Ref2)),
        no_message(Ref)
    end).

%% The `struct' option (for Elixir): event maps carry '__struct__'; notices stay as they are.
watch_struct_option_test() ->
    with_store(fun(S) ->
        {ok, Ref} = tidemark:watch(S, all, #{struct => 'Elixir.Tidemark.Event'}),
        {ok, 1} = tidemark:put(S, <<"k">>, <<"v">>),
        ?assertEqual(#{'__struct__' => 'Elixir.Tidemark.Event', revision => 1, type => put,
                       key => <<"k">>, value => <<"v">>, version => 1, create_revision => 1},
                     next(Ref)),
        ?assertError(badarg, tidemark:watch(S, all, #{struct => "Tidemark.Event"})),
        ok = tidemark:close(S),
        ?assertEqual(closed, next(Ref))
    end).

watch_selectors_test() ->
    with_store(fun(S) ->
        {ok, RKey} = tidemark:watch(S, {key, <<"b">>}),
        {ok, RRange} = tidemark:watch(S, {range, <<"b">>, <<"d">>}),
        {ok, ROpen} = tidemark:watch(S, {range, <<"c">>, infinity}),
        {ok, RAll} = tidemark:watch(S, all),
        [{ok, _} = tidemark:put(S, K, <<>>) || K <- [<<"a">>, <<"b">>, <<"bb">>, <<"c">>, <<"d">>, <<"e">>]],
        ?assertEqual([2], revs(events(RKey, 1))),
        ?assertEqual([2, 3, 4], revs(events(RRange, 3))),
        ?assertEqual([4, 5, 6], revs(events(ROpen, 3))),
        ?assertEqual([1, 2, 3, 4, 5, 6], revs(events(RAll, 6))),
        {ok, 7} = tidemark:put(S, <<"zz">>, <<>>),
        ?assertMatch(#{revision := 7}, next(ROpen)),
        no_message(RKey),
        no_message(RRange),
        ?assertMatch({error, {invalid_argument, _}}, tidemark:watch(S, {key, <<>>}))
    end).

watch_pid_option_test() ->
    with_store(fun(S) ->
        Self = self(),
        Pid = spawn_link(fun() ->
                                 receive {ref, Ref} -> ok end,
                                 Self ! {got, next(Ref)}
                         end),
        {ok, Ref} = tidemark:watch(S, all, #{pid => Pid}),
        Pid ! {ref, Ref},
        {ok, 1} = tidemark:put(S, <<"k">>, <<"v">>),
        receive {got, E} -> ?assertMatch(#{revision := 1, key := <<"k">>}, E)
        after ?WAIT -> error(timeout)
        end,
        no_message(Ref)
    end).

watch_dead_pid_test() ->
    with_store(fun(S) ->
        {Pid, MRef} = spawn_monitor(fun() -> ok end),
        receive {'DOWN', MRef, process, Pid, _} -> ok end,
        ?assertEqual({error, noproc}, tidemark:watch(S, all, #{pid => Pid})),
        ?assertEqual(0, tidemark:watcher_count(S))
    end).

watch_replay_test() ->
    with_store(fun(S) ->
        put_n(S, <<"k">>, 5),
        {ok, Ref} = tidemark:watch(S, all, #{start_revision => 3}),
        {ok, 6} = tidemark:put(S, <<"k6">>, <<>>),
        ?assertEqual([3, 4, 5, 6], revs(events(Ref, 4))),
        {ok, Now} = tidemark:watch(S, all, #{start_revision => 7}),
        {ok, 7} = tidemark:put(S, <<"k7">>, <<>>),
        ?assertEqual([7], revs(events(Now, 1))),
        ?assertEqual({error, {future_revision, 7}}, tidemark:watch(S, all, #{start_revision => 9})),
        ?assertEqual(2, tidemark:watcher_count(S))
    end).

watch_progress_test() ->
    with_store(fun(S) ->
        {ok, 1} = tidemark:put(S, <<"a">>, <<>>),
        {ok, Ref} = tidemark:watch(S, {key, <<"b">>}, #{progress_interval_ms => 5}),
        ?assertEqual({progress, 1}, next(Ref)),
        {ok, 2} = tidemark:put(S, <<"a">>, <<>>),
        %% Progress catches up with the store revision even if no key of the watch changed.
        wait_progress(Ref, 2)
    end).

wait_progress(Ref, Rev) ->
    case next(Ref) of
        {progress, Rev} -> ok;
        {progress, R} when R < Rev -> wait_progress(Ref, Rev)
    end.

watch_close_test() ->
    S = store(),
    Refs = [begin {ok, R} = tidemark:watch(S, all), R end || _ <- lists:seq(1, 5)],
    {ok, 1} = tidemark:put(S, <<"a">>, <<"1">>),
    ok = tidemark:close(S),
    %% Every watch receives its queued events, then closed, and ends.
    [begin
         ?assertMatch(#{revision := 1}, next(R)),
         ?assertEqual(closed, next(R)),
         ?assert(tidemark_nif:watch_ended_nif(R))
     end || R <- Refs].

watch_refs_are_stable_test() ->
    with_store(fun(S) ->
        {ok, Ref} = tidemark:watch(S, all),
        {ok, _} = tidemark:put(S, <<"a">>, <<>>),
        receive {tidemark_event, Ref, _} -> ok after ?WAIT -> error(timeout) end,
        {ok, _} = tidemark:put(S, <<"a">>, <<>>),
        receive {tidemark_event, R2, #{revision := 2}} -> ?assert(R2 =:= Ref), ?assertEqual(Ref, R2)
        after ?WAIT -> error(timeout)
        end
    end).

%% Ordered, gap-free delivery of the same stream to several processes at once.
fanout_test_() ->
    {timeout, 60, fun() ->
        {ok, S} = tidemark:open(memory, #{dispatch_threads => 2}),
        N = 6000,
        Self = self(),
        Consumers = [spawn_link(fun() ->
                                        {ok, Ref} = tidemark:watch(S, {prefix, <<"k">>}),
                                        Self ! {ready, self()},
                                        Self ! {done, self(), revs(events(Ref, N))}
                                end) || _ <- lists:seq(1, 6)],
        [receive {ready, C} -> ok end || C <- Consumers],
        %% Single puts and batches mixed: batches arrive whole.
        write_mixed(S, N),
        [receive {done, C, Revs} -> ?assertEqual(lists:seq(1, N), Revs) end || C <- Consumers],
        tidemark:close(S)
    end}.

write_mixed(S, N) -> write_mixed(S, 1, N).
write_mixed(_S, I, N) when I > N -> ok;
write_mixed(S, I, N) when I rem 100 =:= 1, I + 9 =< N ->
    {ok, I} = tidemark:batch(S, [{put, <<"k", (integer_to_binary(J))/binary>>, <<"v">>}
                                 || J <- lists:seq(I, I + 9)]),
    write_mixed(S, I + 10, N);
write_mixed(S, I, N) ->
    {ok, I} = tidemark:put(S, <<"k", (integer_to_binary(I))/binary>>, <<"v">>),
    write_mixed(S, I + 1, N).

%% {active, N}: a slow reader's mailbox stays bounded and it still gets everything in order.
%% The writer finishes all its writes before the reader reads anything, so everything past
%% the credit must be held by the store, not the mailbox.
active_flow_control_test_() ->
    {timeout, 60, fun() ->
        flow_control(20, 20000, 1),  % single puts: at most Active messages
        flow_control(5, 8000, 8)     % batches of 8: a commit is never split
    end}.

flow_control(Active, N, BatchSize) ->
    flush_all(),
    S = store(),
    {ok, Ref} = tidemark:watch(S, all, #{active => Active, max_queue => 100}),
    %% Linked, not monitored: the mailbox holds nothing but the watch's messages.
    Writer = spawn_link(fun() -> write_batches(S, N, BatchSize) end),
    wait_until(fun() -> is_process_alive(Writer) end, false),
    ?assertEqual(N, tidemark:current_revision(S)),
    %% The credit, the rest of a commit that started within it, and the passive notice.
    Bound = Active + BatchSize - 1 + 1,
    {Revs, MaxQueue} = slow_read(Ref, N, Active),
    ?assertEqual(lists:seq(1, N), Revs),
    ?assert(MaxQueue =< Bound),
    tidemark:close(S).

write_batches(S, N, 1) ->
    put_n(S, <<"k">>, N);
write_batches(S, N, B) ->
    [{ok, _} = tidemark:batch(S, [{put, <<"k", (integer_to_binary(I + J))/binary>>, <<"v">>}
                                  || J <- lists:seq(0, B - 1)])
     || I <- lists:seq(1, N, B)].

%% The true mailbox length. Messages sent from tidemark's threads wait in the process's outer
%% signal queue, which process_info/2 on self() does not count until a receive has fetched
%% them (OTP 25), so fetch first with a receive that matches nothing.
mailbox_len() ->
    receive '$tidemark_tests_never' -> ok after 0 -> ok end,
    {message_queue_len, L} = process_info(self(), message_queue_len),
    L.

%% Reads slowly; grants Active more whenever the watch reports {tidemark_passive, Ref}.
slow_read(Ref, N, Active) -> slow_read(Ref, N, Active, [], 0).

slow_read(_Ref, 0, _Active, Acc, Max) ->
    {lists:reverse(Acc), Max};
slow_read(Ref, N, Active, Acc, Max) ->
    Q = mailbox_len(),
    receive
        {tidemark_event, Ref, #{revision := R}} ->
            N rem 2000 =:= 0 andalso timer:sleep(1), % read slowly
            slow_read(Ref, N - 1, Active, [R | Acc], max(Max, Q));
        {tidemark_passive, Ref} ->
            ok = tidemark:activate(Ref, Active),
            slow_read(Ref, N, Active, Acc, max(Max, Q))
    after ?WAIT -> error(stalled)
    end.

passive(Ref) ->
    receive {tidemark_passive, Ref} -> ok
    after ?WAIT -> error({no_passive, Ref})
    end.

no_passive(Ref) ->
    receive {tidemark_passive, Ref} -> error({unexpected_passive, Ref}) after 0 -> ok end.

active_paused_until_activated_test() ->
    with_store(fun(S) ->
        {ok, Ref} = tidemark:watch(S, all, #{active => once}),
        {ok, Other} = tidemark:watch(S, all),
        put_n(S, <<"k">>, 5),
        %% The unpaced watch has seen all 5; the paced one exactly 1, then the passive notice.
        ?assertEqual([1, 2, 3, 4, 5], revs(events(Other, 5))),
        ?assertEqual([1], revs(events(Ref, 1))),
        passive(Ref),
        {ok, 6} = tidemark:put(S, <<"sync">>, <<>>),
        ?assertMatch(#{revision := 6}, next(Other)),
        no_message(Ref),
        no_passive(Other),
        ok = tidemark:activate(Ref, 2),
        ?assertEqual([2, 3], revs(events(Ref, 2))),
        passive(Ref),
        ok = tidemark:activate(Ref, once),
        ?assertEqual([4], revs(events(Ref, 1))),
        passive(Ref),
        %% A batch is never split: credit 1 delivers the whole commit, then passive.
        {ok, 7} = tidemark:batch(S, [{put, <<"b", I>>, <<>>} || I <- lists:seq(1, 4)]),
        ok = tidemark:activate(Ref, 1),
        ?assertEqual([5], revs(events(Ref, 1))),
        passive(Ref),
        ok = tidemark:activate(Ref, 1),
        ?assertEqual([6], revs(events(Ref, 1))),
        passive(Ref),
        ok = tidemark:activate(Ref, 1),
        ?assertEqual([7, 8, 9, 10], revs(events(Ref, 4))),
        passive(Ref),
        %% true lifts the limit for good.
        ok = tidemark:activate(Ref, true),
        {ok, 11} = tidemark:put(S, <<"k">>, <<>>),
        ?assertMatch(#{revision := 11}, next(Ref)),
        {ok, _} = tidemark:batch(S, [{put, <<"c", I>>, <<>>} || I <- lists:seq(1, 4)]),
        ?assertEqual([12, 13, 14, 15], revs(events(Ref, 4))),
        {ok, 16} = tidemark:put(S, <<"sync">>, <<>>),
        ?assertEqual([7, 8, 9, 10, 11, 12, 13, 14, 15, 16], revs(events(Other, 10))),
        ?assertMatch(#{revision := 16}, next(Ref)),
        no_passive(Ref),
        %% activate on an unpaced watch is accepted and changes nothing.
        ?assertEqual(ok, tidemark:activate(Other, 3)),
        no_passive(Other)
    end).

active_commit_not_split_test() ->
    with_store(fun(S) ->
        {ok, Ref} = tidemark:watch(S, all, #{active => 2}),
        {ok, 1} = tidemark:batch(S, [{put, <<"b", I>>, <<>>} || I <- lists:seq(1, 5)]),
        {ok, 6} = tidemark:put(S, <<"after">>, <<>>),
        ?assertEqual([1, 2, 3, 4, 5], revs(events(Ref, 5))),
        passive(Ref),
        {ok, Other} = tidemark:watch(S, all, #{start_revision => 6}),
        ?assertMatch(#{revision := 6}, next(Other)),
        no_message(Ref),
        ok = tidemark:activate(Ref, 3),
        ?assertMatch(#{revision := 6}, next(Ref)),
        {ok, 7} = tidemark:put(S, <<"after">>, <<>>),
        ?assertMatch(#{revision := 7}, next(Ref)),
        {ok, 8} = tidemark:put(S, <<"after">>, <<>>),
        ?assertMatch(#{revision := 8}, next(Ref)),
        passive(Ref)
    end).

%% Paced watch over a selector that matches part of each commit: every matching event comes,
%% in order, driven by passive notices (however many commits one delivery holds).
active_selector_partial_commits_test() ->
    with_store(fun(S) ->
        [{ok, _} = tidemark:batch(S, [{put, <<"a", I>>, <<>>}, {put, <<"b", I>>, <<>>}])
         || I <- lists:seq(1, 5)],
        {ok, Ref} = tidemark:watch(S, {prefix, <<"a">>}, #{active => 1, start_revision => 1}),
        ?assertEqual([1, 3, 5, 7, 9], paced(Ref, 5, []))
    end).

paced(_Ref, 0, Acc) -> lists:reverse(Acc);
paced(Ref, N, Acc) ->
    receive
        {tidemark_event, Ref, #{revision := R}} -> paced(Ref, N - 1, [R | Acc]);
        {tidemark_passive, Ref} -> ok = tidemark:activate(Ref, 1), paced(Ref, N, Acc)
    after ?WAIT -> error({stalled, lists:reverse(Acc)})
    end.

%% A process that dies with live watches: they are removed and watcher_count drops.
dead_owner_test_() ->
    {timeout, 60, fun() ->
        S = store(),
        Self = self(),
        {ok, Mine} = tidemark:watch(S, all),
        Owner = spawn(fun() ->
                              Refs = [begin {ok, R} = tidemark:watch(S, {prefix, <<"k">>}), R end
                                      || _ <- lists:seq(1, 3)],
                              Self ! {refs, Refs},
                              receive never -> ok end
                      end),
        Refs = receive {refs, Rs} -> Rs end,
        {ok, Target} = tidemark:watch(S, all, #{pid => Owner, active => 1}),
        ?assertEqual(5, tidemark:watcher_count(S)),
        put_n(S, <<"k">>, 100),
        exit(Owner, kill),
        wait_until(fun() -> tidemark:watcher_count(S) end, 1),
        [wait_ended(R) || R <- [Target | Refs]],
        ?assertNot(tidemark_nif:watch_ended_nif(Mine)),
        %% The store is unaffected.
        {ok, 101} = tidemark:put(S, <<"k">>, <<>>),
        ?assertEqual(lists:seq(1, 101), revs(events(Mine, 101))),
        [?assertEqual({error, not_found}, tidemark:unwatch(S, R)) || R <- Refs],
        tidemark:close(S)
    end}.

%% A store handle that is garbage-collected is closed: its watches get `closed' and end.
store_gc_closes_test_() ->
    {timeout, 60, fun() ->
        Self = self(),
        %% 1. The owning process exits.
        Pid = spawn(fun() ->
                            {ok, S} = tidemark:open(memory, #{}),
                            Refs = [begin {ok, R} = tidemark:watch(S, all, #{pid => Self}), R end
                                    || _ <- lists:seq(1, 3)],
                            {ok, 1} = tidemark:put(S, <<"a">>, <<"1">>),
                            Self ! {refs, Refs}
                    end),
        MRef = monitor(process, Pid),
        Refs = receive {refs, Rs} -> Rs end,
        receive {'DOWN', MRef, process, Pid, normal} -> ok end,
        [begin
             ?assertMatch(#{revision := 1}, next(R)),
             ?assertEqual(closed, next(R)),
             wait_ended(R),
             %% The handle outlives its store.
             ?assertEqual({error, closed}, tidemark:activate(R, 1))
         end || R <- Refs],
        %% 2. A live process drops its last reference and collects garbage.
        Holder = spawn(fun() ->
                               {ok, S} = tidemark:open(memory, #{}),
                               {ok, R} = tidemark:watch(S, all, #{pid => Self}),
                               {ok, R2} = tidemark:watch(S, all, #{active => 1}),
                               Self ! {ref, R},
                               {ok, _} = tidemark:put(S, <<"a">>, <<"1">>),
                               {ok, _} = tidemark:put(S, <<"a">>, <<"2">>),
                               hold(R2)
                       end),
        R = receive {ref, R0} -> R0 end,
        ?assertMatch(#{revision := 1}, next(R)),
        ?assertMatch(#{revision := 2}, next(R)),
        Holder ! gc,
        ?assertEqual(closed, next(R)),
        exit(Holder, kill)
    end}.

hold(R2) ->
    receive
        gc ->
            erlang:garbage_collect(),
            hold(R2)
    end.

%% Garbage-collecting many stores with live, paused watches neither leaks nor deadlocks.
store_gc_many_test_() ->
    {timeout, 60, fun() ->
        Self = self(),
        [begin
             P = spawn(fun() ->
                               {ok, S} = tidemark:open(memory, #{dispatch_threads => 2}),
                               {ok, R} = tidemark:watch(S, all, #{pid => Self, active => 1}),
                               put_n(S, <<"k">>, 10),
                               Self ! {ref, self(), R}
                       end),
             R = receive {ref, P, R0} -> R0 end,
             ?assertMatch(#{revision := 1}, next(R)),
             %% Paused: the terminal notice comes without more credit.
             ?assertEqual(closed, next(R))
         end || _ <- lists:seq(1, 50)],
        ok
    end}.

%% Compaction overtaking a paused watch ends it with {compacted, Earliest}.
compaction_overtakes_paused_watch_test() ->
    with_store(fun(S) ->
        {ok, Ref} = tidemark:watch(S, {prefix, <<"k">>}, #{active => 1, max_queue => 5}),
        {ok, Safe} = tidemark:watch(S, {prefix, <<"other">>}, #{active => 1, max_queue => 5}),
        {ok, Live} = tidemark:watch(S, all),
        put_n(S, <<"k">>, 30),
        ?assertEqual([1], revs(events(Ref, 1))),
        ?assertEqual(3, tidemark:watcher_count(S)),
        %% The paused watch has not delivered 2..30; it buffered 5 and then fell back to the log.
        {ok, 29} = tidemark:compact(S, 30),
        ?assertEqual({compacted, 30}, next(Ref)),
        wait_ended(Ref),
        ?assertEqual(2, tidemark:watcher_count(S)),
        ?assertEqual({error, not_found}, tidemark:activate(Ref, 10)),
        ?assertEqual({error, not_found}, tidemark:unwatch(S, Ref)),
        %% A watch whose events were not compacted away keeps going.
        ?assertEqual(lists:seq(1, 30), revs(events(Live, 30))),
        {ok, 31} = tidemark:put(S, <<"other">>, <<>>),
        ?assertEqual([31], revs(events(Safe, 1))),
        no_message(Ref),
        %% Resync from the earliest revision the notice named.
        ?assertMatch({ok, #{events := [#{revision := 30}, #{revision := 31}]}},
                     tidemark:changes(S, 30, 0))
    end).

%% Many processes writing at once: unique, gap-free revisions, every one delivered in order.
concurrent_writers_test_() ->
    {timeout, 60, fun() ->
        {ok, S} = tidemark:open(memory, #{dispatch_threads => 2}),
        W = 8,
        N = 1500,
        {ok, Ref} = tidemark:watch(S, all),
        Self = self(),
        Writers = [spawn_link(fun() ->
                                      P = <<"w", (integer_to_binary(I))/binary, "/">>,
                                      Self ! {wrote, self(), put_n(S, P, N)}
                              end) || I <- lists:seq(1, W)],
        Written = [receive {wrote, Pid, Rs} -> Rs end || Pid <- Writers],
        %% Each writer sees its own revisions increase.
        [?assertEqual(Rs, lists:sort(Rs)) || Rs <- Written],
        ?assertEqual(lists:seq(1, W * N), lists:sort(lists:append(Written))),
        ?assertEqual(W * N, tidemark:current_revision(S)),
        ?assertEqual(lists:seq(1, W * N), revs(events(Ref, W * N))),
        {ok, #{entries := Es, has_more := false}} = tidemark:range(S, all, 0),
        ?assertEqual(W * N, length(Es)),
        tidemark:close(S)
    end}.

%% Unwatching while events flow: the callback never runs after unwatch returns.
unwatch_while_busy_test_() ->
    {timeout, 60, fun() ->
        {ok, S} = tidemark:open(memory, #{dispatch_threads => 2}),
        Writer = spawn_link(fun() -> put_n(S, <<"k">>, 20000) end),
        WRef = monitor(process, Writer),
        Loop = fun Loop(0) -> ok;
                   Loop(I) ->
                       {ok, R} = tidemark:watch(S, all),
                       ok = tidemark:unwatch(S, R),
                       ?assert(tidemark_nif:watch_ended_nif(R)),
                       flush(R),
                       Loop(I - 1)
               end,
        Loop(300),
        ?assertEqual(0, tidemark:watcher_count(S)),
        receive {'DOWN', WRef, process, Writer, normal} -> ok end,
        tidemark:close(S)
    end}.

flush(Ref) ->
    receive {tidemark_event, Ref, _} -> flush(Ref) after 0 -> ok end.

%% Closing a store while other processes use it: they get {error, closed}, nothing crashes.
close_while_busy_test_() ->
    {timeout, 60, fun() ->
        {ok, S} = tidemark:open(memory, #{}),
        Self = self(),
        Users = [spawn_link(fun() -> Self ! {stopped, self(), busy(S, 0)} end) || _ <- lists:seq(1, 4)],
        {ok, Ref} = tidemark:watch(S, all, #{active => 10}),
        wait_until(fun() -> tidemark:current_revision(S) > 1000 end, true),
        ok = tidemark:close(S),
        [receive {stopped, U, Why} -> ?assertEqual(closed, Why) end || U <- Users],
        wait_closed(Ref)
    end}.

busy(S, I) ->
    case tidemark:put(S, <<"k", (integer_to_binary(I rem 50))/binary>>, <<"v">>) of
        {ok, _} ->
            _ = tidemark:get(S, <<"k1">>),
            busy(S, I + 1);
        {error, closed} ->
            closed
    end.

wait_closed(Ref) ->
    case next(Ref) of
        closed -> ok;
        #{} -> wait_closed(Ref)
    end.

%%% Issue 18: the binding's promises

%% 18.4: every malformed batch (or conditional put) is badarg and changes nothing.
malformed_batch_commits_nothing_test() ->
    with_store(fun(S) ->
        Put = {put, <<"k">>, <<"v">>},
        Bad = [[Put | improper],
               [Put, Put | <<"tail">>],
               [Put, {put, <<"k">>}],
               [Put, {put, <<"k">>, <<"v">>, extra}],
               [Put, {put, <<"k">>, 1}],
               [Put, {put, k, <<"v">>}],
               [Put, {delete, 1}],
               [Put, {delete, <<"k">>, <<"v">>}],
               [Put, {require, <<"k">>, -1}],
               [Put, {require, <<"k">>, 1 bsl 64}],
               [Put, {require, <<"k">>, <<"1">>}],
               [Put, {bogus, <<"k">>}],
               [Put, put],
               [Put, [<<"k">>]],
               not_a_list,
               #{}],
        [?assertError(badarg, tidemark:batch(S, Ops)) || Ops <- Bad],
        %% The same for a batch big enough to run on a dirty scheduler.
        Many = lists:duplicate(5000, Put),
        ?assertError(badarg, tidemark:batch(S, Many ++ [{put, <<"k">>}])),
        ?assertError(badarg, tidemark:batch(S, Many ++ improper)),
        ?assertError(badarg, tidemark:put(S, <<"k">>, <<"v">>, #{expected_mod_revision => -1})),
        ?assertError(badarg, tidemark:put(S, <<"k">>, <<"v">>, #{expected_mod_revision => 1 bsl 64})),
        ?assertError(badarg, tidemark:put(S, <<"k">>, <<"v">>, #{expected_mod_revision => <<"0">>})),
        ?assertError(badarg, tidemark:compact(S, -1)),
        ?assertError(badarg, tidemark:changes(S, -1, 0)),
        ?assertError(badarg, tidemark:changes(S, 1, 0, #{limit => -1})),
        ?assertError(badarg, tidemark:changes(S, 1, 0, #{limit => 1 bsl 64})),
        ?assertError(badarg, tidemark:range(S, {range, <<"a">>, 1}, 0)),
        ?assertEqual(0, tidemark:current_revision(S)),
        ?assertMatch({ok, #{keys := 0}}, tidemark:status(S)),
        %% A conditional put on any 64-bit revision is accepted (it conflicts here).
        ?assertEqual({error, {conflict, 0}},
                     tidemark:put(S, <<"k">>, <<"v">>, #{expected_mod_revision => (1 bsl 64) - 1})),
        ?assertEqual({ok, 1}, tidemark:batch(S, [Put])),
        ?assertEqual({ok, 2}, tidemark:batch(S, Many)),
        ?assertEqual(5001, tidemark:current_revision(S))
    end).

%% 18.5: a big in-memory batch, a changes call that may return many events and a range of
%% many keys run on a dirty CPU scheduler, not the caller's normal one. Observed through the
%% dirty CPU schedulers' active time (scheduler_wall_time), which only grows when they run:
%% no timing is compared.
big_calls_leave_the_normal_scheduler_test_() ->
    {timeout, 60, fun() ->
        with_store(fun(S) ->
            Ops = [{put, <<"k", I:32>>, <<"v">>} || I <- lists:seq(1, 20000)],
            ?assert(dirty_cpu_ran(fun() -> {ok, 1} = tidemark:batch(S, Ops) end)),
            ?assert(dirty_cpu_ran(fun() -> {ok, _} = tidemark:changes(S, 1, 0, #{limit => 10}) end)),
            ?assert(dirty_cpu_ran(fun() -> {ok, _} = tidemark:range(S, all, 0) end)),
            ?assert(dirty_cpu_ran(fun() -> {ok, _} = tidemark:range(S, all, 5000) end)),
            %% Still correct there; a commit is never split, whatever the limit.
            {ok, #{events := Events, has_more := false}} = tidemark:changes(S, 1, 0, #{limit => 10}),
            ?assertEqual(lists:seq(1, 20000), revs(Events)),
            {ok, #{entries := Entries}} = tidemark:range(S, {prefix, <<"k">>}, 0),
            ?assertEqual(20000, length(Entries))
        end)
    end}.

%% True if a dirty CPU scheduler was active while Fun ran.
dirty_cpu_ran(Fun) ->
    Dirty = lists:seq(erlang:system_info(schedulers) + 1,
                      erlang:system_info(schedulers) + erlang:system_info(dirty_cpu_schedulers)),
    Active = fun() ->
                 lists:sum([A || {Id, A, _} <- erlang:statistics(scheduler_wall_time_all),
                                 lists:member(Id, Dirty)])
             end,
    Was = erlang:system_flag(scheduler_wall_time, true),
    try
        garbage_collect(), % no dirty GC of this process's heap during Fun
        A0 = Active(),
        Fun(),
        Active() > A0
    after
        erlang:system_flag(scheduler_wall_time, Was)
    end.

%% 18.2: a watch replaying from revision 1 of a store closed before it caught up still gets
%% every matching event up to the revision current at close, then closed (5 rounds: whether
%% the replay had started is a race).
closed_store_replaying_watch_gets_the_backlog_test() ->
    [begin
         S = store(),
         [{ok, _} = tidemark:put(S, <<"t/", I>>, <<I>>) || I <- lists:seq(1, 4)],
         {ok, _} = tidemark:put(S, <<"other">>, <<>>),
         {ok, Ref} = tidemark:watch(S, {prefix, <<"t/">>}, #{start_revision => 1}),
         ok = tidemark:close(S),
         ?assertEqual([1, 2, 3, 4], until_closed(Ref)),
         wait_ended(Ref),
         no_message(Ref)
     end || _ <- lists:seq(1, 5)].

%% The one exception: a watch out of credit gets closed without what it was not granted.
closed_store_passive_watch_gets_closed_only_test() ->
    S = store(),
    {ok, Ref} = tidemark:watch(S, all, #{active => 1}),
    put_n(S, <<"k">>, 4),
    ?assertEqual([1], revs(events(Ref, 1))),
    passive(Ref),
    ok = tidemark:close(S),
    ?assertEqual([], until_closed(Ref)),
    wait_ended(Ref).

%% The revisions of Ref's events up to its closed message.
until_closed(Ref) ->
    case next(Ref) of
        closed -> [];
        #{revision := R} -> [R | until_closed(Ref)]
    end.

%% A live watch gets every event that was queued for it, then closed.
closed_store_live_watch_gets_its_queued_events_test() ->
    S = store(),
    {ok, Ref} = tidemark:watch(S, {prefix, <<"t/">>}),
    [{ok, _} = tidemark:put(S, <<"t/", I>>, <<I>>) || I <- lists:seq(1, 4)],
    ok = tidemark:close(S),
    ?assertEqual([1, 2, 3, 4], revs(events(Ref, 4))),
    ?assertEqual(closed, next(Ref)),
    wait_ended(Ref).

%% 19.1: every status code of include/tidemark.h has its reason, named after the code, and
%% that reason is in the documented error() type.
status_codes_match_the_header_test() ->
    Header = filename:join([filename:dirname(code:which(tidemark)), "..", "..", "..",
                            "include", "tidemark.h"]),
    case file:read_file(Header) of
        {error, enoent} -> ok; % not a source checkout
        {ok, Text} ->
            {match, [Body]} = re:run(Text, "enum tidemark_status\\b[^{]*\\{(.*?)\\};",
                                     [dotall, {capture, all_but_first, binary}]),
            {match, Codes} = re:run(Body, "\\b(TIDEMARK_\\w+)\\s*=\\s*(\\d+)",
                                    [global, {capture, all_but_first, binary}]),
            ?assert(length(Codes) > 10),
            Documented = error_type_atoms(),
            [begin
                 Expected = binary_to_atom(string:lowercase(Name), utf8),
                 Reason = tidemark_nif:status_reason_nif(binary_to_integer(Code)),
                 Atom = case Reason of A when is_atom(A) -> A; T -> element(1, T) end,
                 ?assertEqual({Name, Expected}, {Name, Atom}),
                 ?assert(lists:member(Atom, Documented))
             end || [<<"TIDEMARK_ERR_", Name/binary>>, Code] <- Codes],
            ?assertMatch({unknown, 100000, <<>>}, tidemark_nif:status_reason_nif(100000))
    end.

%% The atoms of the error() type of tidemark.erl (from its debug_info).
error_type_atoms() ->
    {ok, {_, [{abstract_code, {raw_abstract_v1, Forms}}]}} =
        beam_lib:chunks(code:which(tidemark), [abstract_code]),
    [Type] = [T || {attribute, _, type, {error, T, []}} <- Forms],
    atoms(Type).

atoms({atom, _, A}) -> [A];
atoms(T) when is_tuple(T) -> lists:append([atoms(E) || E <- tuple_to_list(T)]);
atoms(L) when is_list(L) -> lists:append([atoms(E) || E <- L]);
atoms(_) -> [].
