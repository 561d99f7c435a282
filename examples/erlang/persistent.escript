#!/usr/bin/env escript
%% -*- erlang -*-
%% Persistent subscriptions from Erlang: a durable subscription, two competing consumer
%% processes that ack what they handle, one event that always fails and is parked after
%% max_retry, the subscription list, and a replay of the parked event.
%%
%% Run from anywhere after `make -C bindings/erlang`:
%%     escript examples/erlang/persistent.escript
-mode(compile).

main(_) ->
    Here = filename:dirname(filename:absname(escript:script_name())),
    true = code:add_patha(filename:join([Here, "..", "..", "bindings", "erlang", "ebin"])),
    try run() of
        ok -> io:format("~npersistent: ok~n"), halt(0)
    catch
        C:R:St -> io:format(standard_error, "persistent failed: ~p:~p~n~p~n", [C, R, St]), halt(1)
    end.

run() ->
    {ok, S} = tidemark:open(memory, #{}),
    ok = tidemark:subscription_create(S, <<"billing">>,
                                      #{selector => {prefix, <<"order-">>}, max_retry => 2,
                                        max_in_flight => 2}),
    Events = [#{type => <<"placed">>, data => integer_to_binary(I)} || I <- lists:seq(1, 10)],
    {ok, _} = tidemark:append_events(S, <<"order-1">>, Events, no_stream),
    Parent = self(),
    Workers = [spawn_link(fun() -> worker(S, Name, Parent) end) || Name <- [a, b]],
    %% 9 events are handled once; event "7" fails twice and is parked.
    Handled = [receive {handled, W, Data} -> {W, Data} end || _ <- lists:seq(1, 9)],
    io:format("handled: ~p~n", [lists:sort([binary_to_integer(D) || {_, D} <- Handled])]),
    %% Consumers compete: each takes what is due when it asks (no fairness between them).
    io:format("per worker: ~p~n", [[{W, length([x || {W2, _} <- Handled, W2 =:= W])} || W <- [a, b]]]),
    wait_parked(S, 1),
    {ok, [#{data := <<"7">>, delivery_count := 2}]} = tidemark:subscription_parked(S, <<"billing">>, 0),
    {ok, [Info]} = tidemark:subscription_list(S),
    io:format("subscription: ~p~n", [maps:with([name, checkpoint, lag, in_flight, parked], Info)]),
    [W ! fixed || W <- Workers],
    {ok, 1} = tidemark:subscription_replay_parked(S, <<"billing">>),
    receive {handled, _, <<"7">>} -> io:format("replayed 7: handled~n") end,
    wait_parked(S, 0),
    ok = tidemark:close(S).

wait_parked(S, N) ->
    case tidemark:subscription_list(S) of
        {ok, [#{parked := N, in_flight := 0}]} -> ok;
        _ -> timer:sleep(10), wait_parked(S, N)
    end.

worker(S, Name, Parent) ->
    {ok, Sub} = tidemark:subscription_connect(S, <<"billing">>, #{active => 5}),
    loop(Sub, Name, Parent, false).

loop(Sub, Name, Parent, Fixed) ->
    receive
        fixed -> loop(Sub, Name, Parent, true);
        {tidemark_sub_event, Sub, #{data := <<"7">>} = E} when not Fixed ->
            ok = tidemark:nack(Sub, E, retry), % the bug: parked after max_retry deliveries
            loop(Sub, Name, Parent, Fixed);
        {tidemark_sub_event, Sub, #{data := Data} = E} when is_map(E) ->
            ok = tidemark:ack(Sub, E),
            Parent ! {handled, Name, Data},
            loop(Sub, Name, Parent, Fixed);
        {tidemark_sub_event, Sub, closed} -> ok;
        {tidemark_sub_passive, Sub} ->
            ok = tidemark:subscription_activate(Sub, 5),
            loop(Sub, Name, Parent, Fixed)
    end.
