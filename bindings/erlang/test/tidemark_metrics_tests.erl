%% Store metrics from Erlang: the map form and the Prometheus text form.
-module(tidemark_metrics_tests).
-include_lib("eunit/include/eunit.hrl").

metrics_test() ->
    %% Every write call timed (the default times one in 64, the first included).
    {ok, S} = tidemark:open(memory, #{metrics_sample_every => 1}),
    {ok, _} = tidemark:put(S, <<"a">>, <<"1">>),
    ?assertEqual({error, not_found}, tidemark:delete(S, <<"missing">>)),
    {ok, M} = tidemark:metrics(S),
    ?assertMatch(#{tidemark_revision := 1, tidemark_commits_total := 1}, M),
    ?assertMatch(#{count := 2}, maps:get(tidemark_commit_duration_seconds, M)),
    [NotFound] = [V || #{labels := #{status := <<"not_found">>}, value := V}
                           <- maps:get(tidemark_write_errors_total, M)],
    ?assertEqual(1, NotFound),
    {ok, Text} = tidemark:metrics_text(S),
    ?assertNotEqual(nomatch, binary:match(Text, <<"\ntidemark_commits_total 1\n">>)),
    ?assertNotEqual(nomatch, binary:match(Text, <<"# TYPE tidemark_commit_duration_seconds histogram\n">>)),
    tidemark:close(S),
    ?assertEqual({error, closed}, tidemark:metrics(S)).

bad_format_test() ->
    {ok, S} = tidemark:open(memory, #{}),
    ?assertError(badarg, tidemark_nif:metrics_nif(S, xml)),
    tidemark:close(S).
