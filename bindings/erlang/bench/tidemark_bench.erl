%% Benchmarks of the Erlang binding (`make bench`). Prints one line per measurement; the
%% numbers go to docs/benchmarks.md (section "Erlang binding"). Workload as the core's targets: 16-byte keys over
%% 100k distinct keys, 100-byte values, in-memory store.
-module(tidemark_bench).

-export([main/0, main/1]).

-define(KEYS, 100000).

main() -> main([all]).

%% `erl -s tidemark_bench main durable watch' runs some sections only.
main(Sections) ->
    Run = fun(Name) -> lists:member(all, Sections) orelse lists:member(Name, Sections) end,
    io:format("tidemark ~s, OTP ~s, ~p schedulers, ~p dirty io schedulers~n",
              [tidemark:version(), erlang:system_info(otp_release),
               erlang:system_info(schedulers_online), erlang:system_info(dirty_io_schedulers)]),
    Keys = list_to_tuple([iolist_to_binary(io_lib:format("key-~12..0B", [I]))
                          || I <- lists:seq(0, ?KEYS - 1)]),
    Value = binary:copy(<<"v">>, 100),
    Run(calls) andalso nif_overhead(),
    Run(puts) andalso puts(Keys, Value),
    Run(puts) andalso puts_parallel(Keys, Value, 2),
    Run(puts) andalso puts_parallel(Keys, Value, 4),
    Run(puts) andalso batch_puts(Keys, Value),
    Run(reads) andalso gets(Keys, Value),
    Run(reads) andalso changes_scan(Keys, Value),
    Run(watch) andalso erlang_messaging_baseline(Value),
    Run(watch) andalso watch_delivery(Keys, Value, unlimited),
    Run(watch) andalso watch_delivery(Keys, Value, {active, 1000}),
    Run(watch) andalso watch_fanout(Keys, Value, 4),
    Run(watch) andalso latency(Value),
    Run(durable) andalso durable_puts(Keys, Value),
    ok.

ns() -> erlang:monotonic_time(nanosecond).

report(Name, Ops, Ns) ->
    io:format("~-58s ~9.1f ns/op ~12w ops/s~n", [Name, Ns / Ops, round(Ops * 1.0e9 / Ns)]).

best_of(N, Fun) -> lists:min([Fun() || _ <- lists:seq(1, N)]).

%% The cost of crossing into the NIF and back: a call that does nearly nothing.
nif_overhead() ->
    {ok, S} = tidemark:open(memory, #{}),
    N = 2000000,
    Loop = fun L(0) -> ok; L(I) -> _ = tidemark:current_revision(S), L(I - 1) end,
    Empty = fun L(0) -> ok; L(I) -> _ = id(S), L(I - 1) end,
    T = best_of(3, fun() -> T0 = ns(), Loop(N), ns() - T0 end),
    E = best_of(3, fun() -> T0 = ns(), Empty(N), ns() - T0 end),
    report("current_revision/1 (trivial NIF call)", N, T),
    report("  same loop calling an Erlang function", N, E),
    tidemark:close(S).

id(X) -> X.

put_loop(_S, _Keys, _V, I, N) when I >= N -> ok;
put_loop(S, Keys, V, I, N) ->
    {ok, _} = tidemark:put(S, element(I rem ?KEYS + 1, Keys), V),
    put_loop(S, Keys, V, I + 1, N).

puts(Keys, Value) ->
    N = 1000000,
    T = best_of(3, fun() ->
                           {ok, S} = tidemark:open(memory, #{}),
                           T0 = ns(),
                           put_loop(S, Keys, Value, 0, N),
                           D = ns() - T0,
                           tidemark:close(S),
                           D
                   end),
    report("put/3, 1 process", N, T).

puts_parallel(Keys, Value, P) ->
    N = 400000,
    T = best_of(3, fun() ->
                           {ok, S} = tidemark:open(memory, #{}),
                           D = parallel_put_loops(S, Keys, Value, P, N),
                           tidemark:close(S),
                           D
                   end),
    report(io_lib:format("put/3, ~p processes (total)", [P]), P * N, T).

%% P processes each put N keys into S at once; the nanoseconds until the last has finished.
parallel_put_loops(S, Keys, Value, P, N) ->
    Self = self(),
    T0 = ns(),
    Pids = [spawn_link(fun() ->
                               put_loop(S, Keys, Value, J * N, (J + 1) * N),
                               Self ! {done, self()}
                       end) || J <- lists:seq(0, P - 1)],
    [receive {done, Pid} -> ok end || Pid <- Pids],
    ns() - T0.

batch_puts(Keys, Value) ->
    N = 1000000,
    B = 100,
    Batches = [[{put, element((J * B + K) rem ?KEYS + 1, Keys), Value} || K <- lists:seq(0, B - 1)]
               || J <- lists:seq(0, 99)],
    T = best_of(3, fun() ->
                           {ok, S} = tidemark:open(memory, #{}),
                           T0 = ns(),
                           batch_loop(S, Batches, Batches, N div B),
                           D = ns() - T0,
                           tidemark:close(S),
                           D
                   end),
    report("batch/2 of 100 puts (per put)", N, T).

batch_loop(_S, _All, _Bs, 0) -> ok;
batch_loop(S, All, [], I) -> batch_loop(S, All, All, I);
batch_loop(S, All, [B | Bs], I) ->
    {ok, _} = tidemark:batch(S, B),
    batch_loop(S, All, Bs, I - 1).

gets(Keys, Value) ->
    {ok, S} = tidemark:open(memory, #{}),
    put_loop(S, Keys, Value, 0, ?KEYS),
    N = 1000000,
    Loop = fun L(I) when I >= N -> ok;
               L(I) -> {ok, _} = tidemark:get(S, element(I rem ?KEYS + 1, Keys)), L(I + 1)
           end,
    T = best_of(3, fun() -> T0 = ns(), Loop(0), ns() - T0 end),
    report("get/2", N, T),
    tidemark:close(S).

changes_scan(Keys, Value) ->
    {ok, S} = tidemark:open(memory, #{}),
    N = 1000000,
    put_loop(S, Keys, Value, 0, N),
    lists:foreach(
      fun(Limit) ->
              Scan = fun Scan(From, Acc) ->
                             {ok, #{events := Es, has_more := More, next_revision := Next}} =
                                 tidemark:changes(S, From, 0, #{limit => Limit}),
                             case More of
                                 true -> Scan(Next, Acc + length(Es));
                                 false -> Acc + length(Es)
                             end
                     end,
              T = best_of(3, fun() -> T0 = ns(), N = Scan(1, 0), ns() - T0 end),
              report(io_lib:format("changes/4 scan, limit ~p (per event)", [Limit]), N, T)
      end, [1000, 10000]),
    tidemark:close(S).

%% Events/s delivered to one process: a writer commits batches of 100, the reader receives
%% one message per event; the clock stops at the last event received.
watch_delivery(Keys, Value, Mode) ->
    N = 500000,
    T = best_of(3, fun() ->
                           {ok, S} = tidemark:open(memory, #{}),
                           Opts = case Mode of unlimited -> #{}; {active, A} -> #{active => A} end,
                           {ok, Ref} = tidemark:watch(S, all, Opts#{max_queue => 10000}),
                           T0 = ns(),
                           spawn_link(fun() -> write_batches(S, Keys, Value, N) end),
                           receive_n(Ref, N, Mode),
                           D = ns() - T0,
                           tidemark:close(S),
                           flush(Ref),
                           D
                   end),
    Name = case Mode of
               unlimited -> "watch -> 1 process, active => true";
               {active, A} -> io_lib:format("watch -> 1 process, active => ~p", [A])
           end,
    report(io_lib:format("~s (per event)", [Name]), N, T).

write_batches(S, Keys, Value, N) -> write_batches(S, Keys, Value, 0, N).
write_batches(_S, _Keys, _Value, I, N) when I >= N -> ok;
write_batches(S, Keys, Value, I, N) ->
    {ok, _} = tidemark:batch(S, [{put, element((I + K) rem ?KEYS + 1, Keys), Value}
                                 || K <- lists:seq(0, 99)]),
    write_batches(S, Keys, Value, I + 100, N).

%% For scale: the same messages sent by an Erlang process instead of the NIF.
erlang_messaging_baseline(Value) ->
    N = 500000,
    Ref = make_ref(),
    Self = self(),
    T = best_of(3, fun() ->
                           T0 = ns(),
                           spawn_link(fun() -> send_n(Self, Ref, Value, 1, N) end),
                           receive_unlimited(Ref, N),
                           ns() - T0
                   end),
    report("Erlang process -> process, same messages (per event)", N, T).

send_n(_To, _Ref, _Value, I, N) when I > N -> ok;
send_n(To, Ref, Value, I, N) ->
    To ! {tidemark_event, Ref, #{revision => I, type => put, key => <<"key-", I:96>>,
                                 value => binary:copy(Value), version => 1, create_revision => I}},
    send_n(To, Ref, Value, I + 1, N).

receive_n(Ref, N, unlimited) -> receive_unlimited(Ref, N);
receive_n(Ref, N, {active, A}) -> receive_active(Ref, N, A).

receive_unlimited(_Ref, 0) -> ok;
receive_unlimited(Ref, N) ->
    receive {tidemark_event, Ref, #{}} -> receive_unlimited(Ref, N - 1) end.

receive_active(_Ref, 0, _A) -> ok;
receive_active(Ref, N, A) ->
    receive
        {tidemark_event, Ref, #{}} -> receive_active(Ref, N - 1, A);
        {tidemark_passive, Ref} -> ok = tidemark:activate(Ref, A), receive_active(Ref, N, A)
    end.

flush(Ref) ->
    receive
        {tidemark_event, Ref, _} -> flush(Ref);
        {tidemark_passive, Ref} -> flush(Ref)
    after 0 -> ok
    end.

%% The same stream to P processes at once (events/s summed over the receivers).
watch_fanout(Keys, Value, P) ->
    N = 200000,
    T = best_of(3, fun() ->
                           {ok, S} = tidemark:open(memory, #{dispatch_threads => 2}),
                           Self = self(),
                           Rs = [spawn_link(fun() ->
                                                    {ok, Ref} = tidemark:watch(S, all, #{max_queue => 10000}),
                                                    Self ! {ready, self()},
                                                    receive_unlimited(Ref, N),
                                                    Self ! {done, self()}
                                            end) || _ <- lists:seq(1, P)],
                           [receive {ready, R} -> ok end || R <- Rs],
                           T0 = ns(),
                           spawn_link(fun() -> write_batches(S, Keys, Value, N) end),
                           [receive {done, R} -> ok end || R <- Rs],
                           D = ns() - T0,
                           tidemark:close(S),
                           D
                   end),
    report(io_lib:format("watch -> ~p processes, dispatch_threads 2 (per event, total)", [P]),
           P * N, T).

%% put -> message latency, one put at a time (the writer waits for its own event).
latency(Value) ->
    {ok, S} = tidemark:open(memory, #{}),
    {ok, Ref} = tidemark:watch(S, all),
    N = 20000,
    Ls = lists:sort([begin
                         T0 = ns(),
                         {ok, R} = tidemark:put(S, <<"latency-key-0001">>, Value),
                         receive {tidemark_event, Ref, #{revision := R}} -> ns() - T0 end
                     end || _ <- lists:seq(1, N)]),
    P = fun(Q) -> lists:nth(max(1, round(Q * N)), Ls) / 1000 end,
    io:format("~-58s p50 ~.1f us, p99 ~.1f us, p99.9 ~.1f us~n",
              ["put -> {tidemark_event, ...} received", P(0.5), P(0.99), P(0.999)]),
    tidemark:close(S).

%% Durable directory stores: puts run on dirty I/O schedulers; concurrent writers share
%% fsyncs (group commit), up to the number of dirty I/O schedulers at once.
durable_puts(Keys, Value) ->
    Base = filename:join("/tmp", "tidemark-erlang-bench-" ++ os:getpid()),
    try
        [durable_run(Base, Keys, Value, Sync, P, N)
         || {Sync, P, N} <- [{always, 1, 2000}, {always, 8, 1000}, {always, 64, 200},
                             {none, 1, 100000}]]
    after
        os:cmd("rm -rf " ++ Base ++ "*")
    end.

durable_run(Base, Keys, Value, Sync, P, N) ->
    Dir = Base ++ "-" ++ integer_to_list(erlang:unique_integer([positive])),
    case tidemark:open(Dir, #{sync => Sync}) of
        {ok, S} ->
            D = parallel_put_loops(S, Keys, Value, P, N),
            tidemark:close(S),
            report(io_lib:format("durable put/3, sync ~p, ~p process(es) (total)", [Sync, P]), P * N, D);
        {error, Reason} ->
            io:format("durable put/3: not available (~p)~n", [Reason])
    end.
