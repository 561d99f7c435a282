%% Helpers shared by tidemark_tests and tidemark_lockstep_tests. The including module defines
%% ?WAIT (the longest a wait may last, in ms) and ?POLL_MS (the step between two polls).

store() ->
    {ok, S} = tidemark:open(memory, #{}),
    S.

%% Polls until Fun() returns Expected (the deadline only stops a broken build from hanging).
wait_until(Fun, Expected) -> wait_until(Fun, Expected, ?WAIT).
wait_until(Fun, Expected, Left) ->
    case Fun() of
        Expected -> ok;
        Other when Left =< 0 -> error({still, Other, expected, Expected});
        _ -> timer:sleep(?POLL_MS), wait_until(Fun, Expected, Left - ?POLL_MS)
    end.
