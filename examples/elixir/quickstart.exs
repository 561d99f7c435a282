# tidemark from Elixir in five minutes: keys and revisions, changes, a watch with {active, N}
# flow control, a watch_stream that ends, event streams with expected versions, contexts
# with Chord's sync, and lockstep over HTTP.
#
# Run from bindings/elixir (`make demo` does):
#     mix run ../../examples/elixir/quickstart.exs
alias Tidemark.{Context, Event, Lockstep, Store, Streams, Sync}

IO.puts("tidemark #{Tidemark.version()}")

# 1. A named in-memory store (a directory path opens a durable one).
{:ok, store} = Store.open(:memory, name: :quickstart, dispatch_threads: 1)

# 2. Keys: every write gets the next revision; conditional writes and atomic batches.
{:ok, 1} = Store.put(:quickstart, "/tasks/1", "write docs")
{:ok, 2} = Store.put(store, "/tasks/2", "ship it")
{:ok, kv} = Store.get(store, "/tasks/1")
IO.puts("\n== get -> #{inspect(kv)}")
{:error, {:conflict, 1}} = Store.put(store, "/tasks/1", "stale", expected_mod_revision: 0)

{:ok, 3} =
  Store.batch(store, [
    {:put, "/tasks/3", "test"},
    {:delete, "/tasks/2"},
    {:require, "/tasks/1", 1}
  ])

IO.puts("batch: revisions 3 and 4, all or nothing")

# 3. Pull: what changed since a revision (has_more pages; a compacted range is an error).
{:ok, %Tidemark.Changes{events: events, has_more: false}} =
  Sync.changes(store, 1, 0, selector: {:prefix, "/tasks/"})

IO.puts("\n== changes from 1:")
for %Event{revision: r, type: t, key: k} <- events, do: IO.puts("  #{r} #{t} #{k}")

# 4. Push: a paced watch ({active, N}) sends %Tidemark.Event{} messages.
{:ok, ref} = Sync.watch(store, {:prefix, "/tasks/"}, self(), active: 2)
for i <- 4..7, do: {:ok, _} = Store.put(store, "/tasks/#{i}", "task #{i}")

take = fn take, got ->
  receive do
    {:tidemark_event, ^ref, %Event{revision: r}} ->
      take.(take, [r | got])

    {:tidemark_passive, ^ref} when length(got) < 4 ->
      :ok = Sync.activate(ref, 2)
      take.(take, got)

    {:tidemark_passive, ^ref} ->
      Enum.reverse(got)
  after
    5000 -> raise "no watch message"
  end
end

IO.puts("\n== watch (active: 2) delivered revisions #{inspect(take.(take, []))}, two at a time")
:ok = Sync.unwatch(store, ref)

# 5. A watch_stream, unlike Concord's, ends: here when the store is closed.
me = self()
{:ok, feed} = Store.open(:memory)
spawn_link(fn -> send(me, {:streamed, feed |> Sync.watch_stream(:all) |> Enum.map(& &1.key)}) end)

wait = fn wait ->
  if Sync.watcher_count(feed) == 1,
    do: :ok,
    else:
      (
        Process.sleep(5)
        wait.(wait)
      )
end

wait.(wait)
{:ok, _} = Store.put(feed, "a", "1")
{:ok, _} = Store.put(feed, "b", "2")
:ok = Store.close(feed)

receive do
  {:streamed, keys} -> IO.puts("\n== watch_stream ended on close after #{inspect(keys)}")
end

# 6. Event streams (ExESDB): atomic appends with an expected version.
{:ok, 1} =
  Streams.append(
    store,
    "order-7",
    [%{type: "created", data: "{}"}, %{type: "paid", data: "{}"}],
    :no_stream
  )

{:error, {:wrong_expected_version, 1}} =
  Streams.append(store, "order-7", [%{type: "x", data: ""}], 0)

{:ok, back} = Streams.read_backward(store, "order-7")
IO.puts("\n== stream order-7 backward: #{inspect(Enum.map(back, &{&1.version, &1.type}))}")

# 7. Contexts (Chord): a client at an old version gets exactly the delta it needs.
{:ok, %{version: 1}} = Context.set(store, "call:123", %{status: "ringing"})
{:ok, %{version: 2}} = Context.update(store, "call:123", %{status: "active", agent: "ada"})
{:delta, %{delta: patch, version: 2}} = Context.sync(store, "call:123", 1)
{:no_change, 2} = Context.sync(store, "call:123", 2)
{:full_context, %{context: ctx}} = Context.sync(store, "call:123", nil)
IO.puts("\n== context sync from 1: #{inspect(patch)}; full: #{inspect(ctx)}")

# 8. lockstep over HTTP: serve /tasks/ and follow it into another store.
{:ok, server} = Lockstep.serve(store)
{:ok, mirror} = Store.open(:memory)

{:ok, follower} =
  Lockstep.follow(mirror, "http://#{Lockstep.server_addr(server)}/tasks/", prefix: "/mirror/")

receive do
  {:tidemark_lockstep, ^follower, %{kind: :resync_done}} -> :ok
after
  10_000 -> raise "the follower did not sync"
end

{:ok, mirrored, _} = Store.range(mirror, {:prefix, "/mirror/"})

IO.puts(
  "\n== lockstep mirrored #{length(mirrored)} records: #{inspect(Enum.map(mirrored, & &1.key))}"
)

:ok = Lockstep.stop_follower(follower)
:ok = Lockstep.stop_server(server)

:ok = Store.close(:quickstart)
IO.puts("\nquickstart: ok")
