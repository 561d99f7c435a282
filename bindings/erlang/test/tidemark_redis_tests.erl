%% EUnit tests of the Redis backend through the Erlang binding: URL errors, an unreachable
%% server, and two handles (each with its own connections, as two processes would have) on one
%% store in a redis-server of the test's own (127.0.0.1, a free port, a temporary directory).
-module(tidemark_redis_tests).

-include_lib("eunit/include/eunit.hrl").

-define(WAIT, 4000).

bad_urls_test() ->
    [begin
         {error, {invalid_argument, Msg}} = tidemark:open(U, #{}),
         ?assertNotEqual(nomatch, binary:match(Msg, <<"bad Redis store URL">>))
     end || U <- ["redis://127.0.0.1:1", "redis://127.0.0.1:1?store=", <<"rediss://h?store=a&ca=/nonexistent/ca.pem">>]].

unreachable_test() ->
    {error, {io, Msg}} = tidemark:open("redis://127.0.0.1:1/0?store=a", #{}),
    ?assertNotEqual(nomatch, binary:match(Msg, <<"Redis at redis://127.0.0.1:1/0">>)).

shared_store_test_() ->
    {setup, fun start_server/0, fun stop_server/1,
     fun({_, Port, _}) -> [?_test(two_handles(Port)), ?_test(own_keys(Port))] end}.

two_handles(Port) ->
    Url = "redis://127.0.0.1:" ++ integer_to_list(Port) ++ "/0?store=erl",
    {ok, A} = tidemark:open(Url, #{}),
    {ok, B} = tidemark:open(Url, #{}),
    {ok, Ref} = tidemark:watch(B, all, #{start_revision => 1}),
    ?assertEqual({ok, 1}, tidemark:put(A, <<"k">>, <<"1">>)),
    %% B has not applied revision 1 when it plans: it catches up and appends after it.
    ?assertEqual({ok, 2}, tidemark:put(B, <<"k">>, <<"2">>)),
    ?assertEqual({error, {conflict, 2}}, tidemark:put(A, <<"k">>, <<"x">>, #{expected_mod_revision => 1})),
    ?assertEqual({ok, 3}, tidemark:batch(A, [{require, <<"k">>, 2}, {put, <<"k">>, <<"3">>}])),
    ?assertEqual([1, 2, 3], [R || #{revision := R} <- [next(Ref) || _ <- [1, 2, 3]]]),
    ok = tidemark:close(A),
    ok = tidemark:close(B).

%% Erlang processes on two handles writing keys of their own at once: the server places each
%% commit after the others' (they touch different keys), so every write gets a revision of its
%% own, the log is gap-free, and creation revisions and versions follow from it.
own_keys(Port) ->
    Url = "redis://127.0.0.1:" ++ integer_to_list(Port) ++ "/0?store=erl-own",
    {ok, A} = tidemark:open(Url, #{}),
    {ok, B} = tidemark:open(Url, #{}),
    Parent = self(),
    Writers = [{S, N} || {S, N} <- [{A, 0}, {A, 1}, {B, 2}, {B, 3}]],
    [spawn_link(fun() ->
                    Key = fun(I) -> iolist_to_binary(io_lib:format("w~b/~b", [N, I rem 5])) end,
                    Revs = [begin {ok, R} = tidemark:put(S, Key(I), integer_to_binary(I)), R end
                            || I <- lists:seq(1, 40)],
                    Parent ! {done, Revs}
                end) || {S, N} <- Writers],
    Revs = lists:sort(lists:append([receive {done, R} -> R after 30000 -> error(timeout) end
                                    || _ <- Writers])),
    ?assertEqual(lists:seq(1, 160), Revs),
    {ok, C} = tidemark:open(Url, #{}),
    {ok, #{events := Log, has_more := false}} = tidemark:changes(C, 1, 0, #{limit => 1000}),
    ?assertEqual(lists:seq(1, 160), [R || #{revision := R} <- Log]),
    lists:foldl(fun(#{key := K, revision := R, create_revision := Cr, version := V}, Seen) ->
                        {First, N} = maps:get(K, Seen, {R, 0}),
                        ?assertEqual({First, N + 1}, {Cr, V}),
                        Seen#{K => {First, N + 1}}
                end, #{}, Log),
    [ok = tidemark:close(S) || S <- [A, B, C]].

next(Ref) ->
    receive {tidemark_event, Ref, Body} -> Body
    after ?WAIT -> error({no_message_for, Ref})
    end.

start_server() ->
    {ok, L} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(L),
    gen_tcp:close(L),
    Dir = string:trim(os:cmd("mktemp -d")),
    Exe = os:find_executable("redis-server"),
    P = open_port({spawn_executable, Exe},
                  [{args, ["--bind", "127.0.0.1", "--port", integer_to_list(Port), "--dir", Dir,
                           "--save", "", "--appendonly", "yes", "--appendfsync", "always"]},
                   exit_status]),
    wait_up(Port, 300),
    {P, Port, Dir}.

wait_up(Port, 0) -> error({redis_server_not_up, Port});
wait_up(Port, N) ->
    case gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}], 1000) of
        {ok, S} -> gen_tcp:close(S);
        _ -> timer:sleep(20), wait_up(Port, N - 1)
    end.

stop_server({P, _Port, Dir}) ->
    {os_pid, Pid} = erlang:port_info(P, os_pid),
    os:cmd("kill " ++ integer_to_list(Pid)),
    receive {P, {exit_status, _}} -> ok after 10000 -> ok end,
    os:cmd("rm -rf " ++ Dir).
