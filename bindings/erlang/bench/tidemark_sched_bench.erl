%% The longest gap a tidemark call leaves in a normal scheduler (issue 18.5), measured as
%% Erlang's guidance suggests: a ticker process asks to wake every 1 ms and records the
%% longest time between two wake-ups while another process makes the call. Run with one
%% normal scheduler (`make bench-scheduler': erl +S 1:1), so the call and the ticker share it.
%% Prints one line per call: the call, its wall time and the longest gap the ticker saw.
-module(tidemark_sched_bench).

-export([main/0]).

main() ->
    io:format("tidemark ~s, OTP ~s, ~p normal scheduler(s) online, ~p dirty cpu~n",
              [tidemark:version(), erlang:system_info(otp_release),
               erlang:system_info(schedulers_online), erlang:system_info(dirty_cpu_schedulers_online)]),
    V = binary:copy(<<"v">>, 100),
    Ops = fun(N) -> [{put, key(I), V} || I <- lists:seq(1, N)] end,
    {ok, S} = tidemark:open(memory, #{}),
    measure("idle (no call)", fun() -> timer:sleep(50) end),
    Batches = [{"batch/2 of 200 puts", Ops(200)},
               {"batch/2 of 1,000 puts", Ops(1000)},
               {"batch/2 of 10,000 puts", Ops(10000)},
               {"batch/2 of 100,000 puts", Ops(100000)}],
    [measure(Name, fun() -> {ok, _} = tidemark:batch(S, B) end) || {Name, B} <- Batches],
    tidemark:close(S),
    %% One store holding 100 single puts, then one commit of 100,000 puts (revisions 101..).
    {ok, R} = tidemark:open(memory, #{}),
    [{ok, _} = tidemark:put(R, key(I), V) || I <- lists:seq(1, 100)],
    {ok, 101} = tidemark:batch(R, Ops(100000)),
    measure("changes/4 of 100 events", fun() -> {ok, _} = tidemark:changes(R, 1, 100) end),
    measure("changes/4 of 1,000 events (default limit)",
            fun() -> {ok, _} = tidemark:changes(R, 1, 1000) end),
    %% A commit is never split: limit 10 still returns all 100,000 events.
    measure("changes/4 limit 10 into the 100,000-put commit",
            fun() -> {ok, #{events := E}} = tidemark:changes(R, 101, 0, #{limit => 10}),
                     100000 = length(E) end),
    measure("range/3 limit 200", fun() -> {ok, _} = tidemark:range(R, all, 200) end),
    measure("range/3 limit 1,000", fun() -> {ok, _} = tidemark:range(R, all, 1000) end),
    measure("range/3 of every key (100,000, limit 0)", fun() -> {ok, _} = tidemark:range(R, all, 0) end),
    tidemark:close(R),
    ok.

key(I) -> <<"key-", (integer_to_binary(I))/binary>>.

%% Best (smallest) of 3 runs of the longest gap, so that one unrelated hiccup of a busy
%% machine does not count; the wall time is of the same run.
measure(Name, Call) ->
    Runs = [run(Call) || _ <- lists:seq(1, 3)],
    {Gap, Wall} = lists:min(Runs),
    io:format("~-52s call ~8.2f ms   longest scheduler gap ~8.2f ms~n", [Name, Wall / 1000, Gap / 1000]).

run(Call) ->
    Self = self(),
    Ticker = spawn_link(fun() -> Self ! {ticking, self()}, tick(now_us(), 0) end),
    receive {ticking, Ticker} -> ok end,
    T0 = now_us(),
    Call(),
    Wall = now_us() - T0,
    timer:sleep(5), % let the ticker run once after the call
    Ticker ! {stop, Self},
    receive {gap, Ticker, Gap} -> {Gap, Wall} end.

tick(Last, Max) ->
    receive
        {stop, From} -> From ! {gap, self(), Max}
    after 1 ->
        Now = now_us(),
        tick(Now, max(Max, Now - Last))
    end.

now_us() -> erlang:monotonic_time(microsecond).
