# What the Elixir layer costs over calling :tidemark directly: puts, and changes pages of
# 1000 events (turned into %Tidemark.Event{} structs). Each round runs both sides, one after
# the other; median, min and max over 5 rounds.
#     cd bindings/elixir && mix run bench/wrapper_bench.exs
alias Tidemark.{Store, Sync}

rounds = 5
puts = 50_000
pages = 200
{:ok, s} = Store.open(:memory)
{:ok, _} = Store.open(:memory, name: :bench)
for i <- 1..2000, do: {:ok, _} = Store.put(s, "k#{i}", "v")
from = Store.current_revision(s) - 999

cases = [
  {":tidemark.put", puts, fn -> for i <- 1..puts, do: {:ok, _} = :tidemark.put(s, "k#{rem(i, 1000)}", "v") end},
  {"Tidemark.Store.put", puts, fn -> for i <- 1..puts, do: {:ok, _} = Store.put(s, "k#{rem(i, 1000)}", "v") end},
  {"Tidemark.Store.put (by name)", puts,
   fn -> for i <- 1..puts, do: {:ok, _} = Store.put(:bench, "k#{rem(i, 1000)}", "v") end},
  {":tidemark.changes (events)", pages * 1000,
   fn -> for _ <- 1..pages, do: {:ok, _} = :tidemark.changes(s, from, from + 999, %{limit: 1000}) end},
  {"Tidemark.Sync.changes (events)", pages * 1000,
   fn -> for _ <- 1..pages, do: {:ok, _} = Sync.changes(s, from, from + 999, limit: 1000) end}
]

times =
  for _ <- 1..rounds, {name, _, fun} <- cases do
    {us, _} = :timer.tc(fun)
    {name, us}
  end

for {name, n, _} <- cases do
  sorted = for({^name, us} <- times, do: us) |> Enum.sort()
  rate = fn us -> round(n / (us / 1_000_000)) end
  med = Enum.at(sorted, div(rounds, 2))
  IO.puts("#{name}: median #{rate.(med)}/s (min #{rate.(List.last(sorted))}, max #{rate.(hd(sorted))})")
end
