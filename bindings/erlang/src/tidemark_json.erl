%% @private The JSON codec of the binding (Debian's OTP 25 has no `json' module): encodes store
%% and lockstep options and context documents, decodes the status JSON the C API returns
%% (atom keys) and context documents (binary keys, see `decode/2').
-module(tidemark_json).

-export([encode/1, decode/1, decode/2]).

%% @doc A small JSON encoder: maps (atom or binary keys), lists, integers, floats, booleans,
%% `null' (and Elixir's `nil') as null, binaries and other atoms as strings.
-spec encode(term()) -> binary().
encode(Term) -> iolist_to_binary(enc(Term)).

enc(true) -> <<"true">>;
enc(false) -> <<"false">>;
enc(null) -> <<"null">>;
enc(nil) -> <<"null">>;
enc(I) when is_integer(I) -> integer_to_binary(I);
enc(F) when is_float(F) -> float_to_binary(F, [short]);
enc(A) when is_atom(A) -> enc_string(atom_to_binary(A, utf8));
enc(B) when is_binary(B) -> enc_string(B);
enc(L) when is_list(L) -> [$[, join([enc(E) || E <- L]), $]];
enc(M) when is_map(M) ->
    [${, join([[enc_key(K), $:, enc(V)] || {K, V} <- lists:sort(maps:to_list(M))]), $}];
enc(_) -> erlang:error(badarg).

enc_key(K) when is_atom(K) -> enc_string(atom_to_binary(K, utf8));
enc_key(K) when is_binary(K) -> enc_string(K);
enc_key(K) when is_list(K) -> enc_string(unicode:characters_to_binary(K));
enc_key(_) -> erlang:error(badarg).

enc_string(B) -> [$", [esc(C) || <<C>> <= B], $"].

esc($") -> <<"\\\"">>;
esc($\\) -> <<"\\\\">>;
esc($\n) -> <<"\\n">>;
esc($\r) -> <<"\\r">>;
esc($\t) -> <<"\\t">>;
esc(C) when C < 16#20 -> io_lib:format("\\u~4.16.0b", [C]);
esc(C) -> C.

join([]) -> [];
join([H | T]) -> [H | [[$, | E] || E <- T]].

%% @doc A small JSON decoder for status: objects become maps with atom keys.
-spec decode(binary()) -> term().
decode(Bin) -> decode(Bin, atom).

%% @doc Decodes JSON the library wrote; object keys become atoms (`atom', only for the
%% library's own fixed keys) or binaries (`binary', for user documents).
-spec decode(binary(), atom | binary) -> term().
decode(Bin, Keys) ->
    {Value, Rest} = dec(skip_ws(Bin), Keys),
    <<>> = skip_ws(Rest),
    Value.

dec(<<${, R/binary>>, Keys) -> dec_object(skip_ws(R), #{}, Keys);
dec(<<$[, R/binary>>, Keys) -> dec_array(skip_ws(R), [], Keys);
dec(<<$", R/binary>>, _) -> dec_string(R, <<>>);
dec(<<"true", R/binary>>, _) -> {true, R};
dec(<<"false", R/binary>>, _) -> {false, R};
dec(<<"null", R/binary>>, _) -> {null, R};
dec(B, _) -> dec_number(B).

dec_object(<<$}, R/binary>>, M, _) -> {M, R};
dec_object(<<$", R0/binary>>, M, Keys) ->
    {K, R1} = dec_string(R0, <<>>),
    <<$:, R2/binary>> = skip_ws(R1),
    {V, R3} = dec(skip_ws(R2), Keys),
    M1 = M#{key(K, Keys) => V},
    case skip_ws(R3) of
        <<$,, R4/binary>> -> dec_object(skip_ws(R4), M1, Keys);
        <<$}, R4/binary>> -> {M1, R4}
    end.

key(K, atom) -> binary_to_atom(K, utf8);
key(K, binary) -> K.

dec_array(<<$], R/binary>>, Acc, _) -> {lists:reverse(Acc), R};
dec_array(B, Acc, Keys) ->
    {V, R1} = dec(B, Keys),
    case skip_ws(R1) of
        <<$,, R2/binary>> -> dec_array(skip_ws(R2), [V | Acc], Keys);
        <<$], R2/binary>> -> {lists:reverse([V | Acc]), R2}
    end.

dec_string(<<$", R/binary>>, Acc) -> {Acc, R};
dec_string(<<$\\, C, R/binary>>, Acc) when C =/= $u ->
    Ch = case C of $n -> $\n; $t -> $\t; $r -> $\r; $b -> $\b; $f -> $\f; _ -> C end,
    dec_string(R, <<Acc/binary, Ch>>);
dec_string(<<$\\, $u, H:4/binary, R/binary>>, Acc) ->
    Cp = binary_to_integer(H, 16),
    dec_string(R, <<Acc/binary, Cp/utf8>>);
dec_string(<<C, R/binary>>, Acc) -> dec_string(R, <<Acc/binary, C>>).

dec_number(B) ->
    {Num, R} = take_number(B, <<>>),
    V = case binary:match(Num, [<<".">>, <<"e">>, <<"E">>]) of
            nomatch -> binary_to_integer(Num);
            _ -> binary_to_float(normalize_float(Num))
        end,
    {V, R}.

take_number(<<C, R/binary>>, Acc)
  when (C >= $0 andalso C =< $9) orelse C =:= $- orelse C =:= $+ orelse C =:= $.
       orelse C =:= $e orelse C =:= $E ->
    take_number(R, <<Acc/binary, C>>);
take_number(R, Acc) -> {Acc, R}.

%% binary_to_float/1 wants digits on both sides of the point and a point before an exponent.
normalize_float(Num) ->
    case binary:match(Num, <<".">>) of
        nomatch ->
            [M, E] = binary:split(Num, [<<"e">>, <<"E">>]),
            <<M/binary, ".0e", E/binary>>;
        _ -> Num
    end.

skip_ws(<<C, R/binary>>) when C =:= $\s; C =:= $\t; C =:= $\n; C =:= $\r -> skip_ws(R);
skip_ws(B) -> B.
