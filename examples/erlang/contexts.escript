#!/usr/bin/env escript
%% -*- erlang -*-
%% Contexts from Erlang: a call's state as a versioned JSON document (a map with binary
%% keys), clients kept in sync with exact deltas, and TTL cleanup by a manual clock that
%% hands each expired context to an exporter process first (docs/contexts.md).
%%
%% Run from anywhere after `make -C bindings/erlang`:
%%     escript examples/erlang/contexts.escript
-mode(compile).

main(_) ->
    Here = filename:dirname(filename:absname(escript:script_name())),
    Ebin = filename:join([Here, "..", "..", "bindings", "erlang", "ebin"]),
    true = code:add_patha(Ebin),
    case code:ensure_loaded(tidemark) of
        {module, tidemark} -> ok;
        Err -> fail("cannot load tidemark from ~s (~p); run `make -C bindings/erlang` first", [Ebin, Err])
    end,
    try run() of
        ok -> io:format("~ncontexts: ok~n"), halt(0)
    catch
        C:R:St -> fail("~p:~p~n~p", [C, R, St])
    end.

fail(Fmt, Args) ->
    io:format(standard_error, "contexts example failed: " ++ Fmt ++ "~n", Args),
    halt(1).

say(Fmt, Args) -> io:format(Fmt ++ "~n", Args).

run() ->
    %% Contexts idle for 60 s are deleted by cleanup; deltas are kept 10 s.
    {ok, S} = tidemark:open(memory, #{context_ttl_ms => 60000, delta_ttl_ms => 10000,
                                      context_auto_delete => true}),
    ok = tidemark:set_clock(S, {manual, 1000000}),
    Id = <<"call:123">>,

    %% set: version 1; a client keeps the document and its version.
    {ok, #{version := 1, document := Doc1}} =
        tidemark:context_set(S, Id, #{<<"status">> => <<"ringing">>, <<"participants">> => [<<"ann">>],
                                      <<"muted">> => true}),
    say("set      -> version 1, ~p", [Doc1]),

    %% update: RFC 7386 merge patches (null removes a field); each returns its RFC 6902 delta.
    {ok, #{version := 2}} = tidemark:context_update(S, Id, #{<<"status">> => <<"active">>}),
    {ok, #{version := 3, delta := Delta3}} =
        tidemark:context_update(S, Id, #{<<"participants">> => [<<"ann">>, <<"bob">>], <<"muted">> => null}),
    say("update   -> version 3, delta ~p", [Delta3]),

    %% sync: the client at version 1 gets one patch that turns its version 1 into version 3.
    {delta, Patch, 3} = tidemark:context_sync(S, Id, 1),
    say("sync v1  -> {delta, ~p, 3}", [Patch]),
    {no_change, 3} = tidemark:context_sync(S, Id, 3),
    {full_context, Doc3, 3} = tidemark:context_sync(S, Id, undefined),
    say("sync new -> {full_context, ~p, 3}", [Doc3]),
    {ok, Deltas} = tidemark:context_deltas(S, Id, #{}),
    say("deltas   -> versions ~p", [[V || #{version := V} <- Deltas]]),

    %% 11 s later the deltas have expired: cleanup drops them, and the old client gets FULL.
    {ok, _} = tidemark:advance_clock(S, 11000),
    {ok, {0, 2}} = tidemark:context_cleanup(S, 0),
    {full_context, Doc3, 3} = tidemark:context_sync(S, Id, 1),
    say("11 s on  -> cleanup dropped 2 deltas; sync v1 -> full_context", []),

    %% 60 s idle: cleanup exports the context to this process, then deletes it.
    ok = tidemark:context_set_exporter(S, self()),
    {ok, _} = tidemark:advance_clock(S, 60000),
    {ok, {1, 0}} = tidemark:context_cleanup(S, 0),
    receive
        {tidemark_context_export, Id, Json, 3} ->
            #{<<"document">> := Doc3} = tidemark_json:decode(Json, binary),
            say("60 s on  -> exported ~s at version 3, then deleted", [Id])
    after 5000 -> erlang:error(no_export)
    end,
    {error, not_found} = tidemark:context_get(S, Id),
    ok = tidemark:close(S).
