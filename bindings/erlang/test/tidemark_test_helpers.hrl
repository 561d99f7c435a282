%% Helpers shared by tidemark_tests and tidemark_lockstep_tests. The including module defines
%% ?WAIT (the longest a wait may last, in ms) and ?POLL_MS (the step between two polls).

store() -> conformance_store(#{}).

%% In memory, or with TIDEMARK_TEST_REDIS=redis://host:port set (`make test-redis`) a store of
%% its own in that Redis: the same tests then run on the Redis backend.
conformance_store(Opts) ->
    Where = case os:getenv("TIDEMARK_TEST_REDIS") of
                V when V =:= false; V =:= "" -> memory;
                Server -> Server ++ "/0?store=erl-" ++ os:getpid() ++ "-"
                              ++ integer_to_list(erlang:unique_integer([positive]))
                              ++ "-" ++ integer_to_list(os:system_time())
            end,
    {ok, S} = tidemark:open(Where, Opts),
    S.

%% Polls until Fun() returns Expected (the deadline only stops a broken build from hanging).
wait_until(Fun, Expected) -> wait_until(Fun, Expected, ?WAIT).
wait_until(Fun, Expected, Left) ->
    case Fun() of
        Expected -> ok;
        Other when Left =< 0 -> error({still, Other, expected, Expected});
        _ -> timer:sleep(?POLL_MS), wait_until(Fun, Expected, Left - ?POLL_MS)
    end.
