defmodule Tidemark.SyncTest do
  use ExUnit.Case, async: true
  import TidemarkTest.Helpers
  alias Tidemark.{Changes, Event, Store, Sync}

  describe "changes/4" do
    test "events as structs, paging with has_more, selectors" do
      s = store()
      put_n(s, "k", 5)
      {:ok, 6} = Store.delete(s, "k1")

      assert {:ok,
              %Changes{
                events:
                  [%Event{revision: 1, type: :put, key: "k1", value: "1", version: 1} | _] = evs,
                has_more: false,
                next_revision: 7
              }} = Sync.changes(s, 1)

      assert length(evs) == 6
      # The structs made from the Erlang maps have exactly the struct's fields.
      for e <- evs, do: assert(struct!(Event, Map.from_struct(e)) == e)

      assert %Event{type: :delete, key: "k1", value: "", version: 0, create_revision: 0} =
               List.last(evs)

      assert {:ok, %Changes{events: [_, _], has_more: true, next_revision: 3}} =
               Sync.changes(s, 1, 0, limit: 2)

      assert {:ok, %Changes{events: [%Event{revision: 2}, %Event{revision: 3}]}} =
               Sync.changes(s, 2, 3)

      assert {:ok, %Changes{events: [%Event{revision: 4}]}} =
               Sync.changes(s, 1, 0, selector: {:key, "k4"})

      assert {:ok, %Changes{events: [], next_revision: 7}} = Sync.changes(s, 7)
      assert {:error, {:future_revision, 6}} = Sync.changes(s, 8)
      assert_raise ArgumentError, fn -> Sync.changes(s, 1, 0, bogus: 1) end
    end

    # Concord.Sync: reading a compacted range silently returns a partial list.
    test "a compacted range is an error naming the earliest revision" do
      s = store()
      put_n(s, "k", 10)
      assert Sync.earliest_revision(s) == 1
      assert {:ok, 4} = Sync.compact(s, 5)
      assert Sync.earliest_revision(s) == 5
      assert {:error, {:compacted, 5}} = Sync.changes(s, 2, 8)
      assert {:ok, %Changes{events: evs}} = Sync.changes(s, 5, 8)
      assert revs(evs) == [5, 6, 7, 8]
      # Current state is never compacted away.
      assert {:ok, %Tidemark.KV{value: "1"}} = Store.get(s, "k1")
    end
  end

  describe "watch/4" do
    test "sends %Tidemark.Event{} messages; unwatch stops them" do
      s = store()
      {:ok, ref} = Sync.watch(s, {:prefix, "/tasks/"})
      assert Sync.watcher_count(s) == 1
      {:ok, 1} = Store.put(s, "/tasks/1", "todo")
      {:ok, 2} = Store.put(s, "/other", "x")
      {:ok, 3} = Store.delete(s, "/tasks/1")

      assert %Event{
               revision: 1,
               type: :put,
               key: "/tasks/1",
               value: "todo",
               version: 1,
               create_revision: 1
             } = next(ref)

      assert %Event{revision: 3, type: :delete} = e = next(ref)
      assert struct!(Event, Map.from_struct(e)) == e
      assert :ok = Sync.unwatch(s, ref)
      assert Sync.watcher_count(s) == 0
      assert {:error, :not_found} = Sync.unwatch(s, ref)
      assert {:error, :not_found} = Sync.activate(ref, 1)
      {:ok, _} = Store.put(s, "/tasks/2", "x")
      no_message(ref)
    end

    test "another pid, replay from a revision, progress notices" do
      s = store()
      put_n(s, "k", 3)
      me = self()

      pid =
        spawn_link(fn ->
          receive do
            {:tidemark_event, ref, %Event{} = e} -> send(me, {:got, ref, e})
          end
        end)

      {:ok, ref} = Sync.watch(s, :all, pid, start_revision: 2)
      assert_receive {:got, ^ref, %Event{revision: 2}}, 10_000
      {:ok, ref2} = Sync.watch(s, :all, self(), start_revision: 1, progress_interval_ms: 1)
      # Progress notices may come between the replayed events; they end at the current revision.
      assert until_progress(ref2, 3, []) == [1, 2, 3]
    end

    test "a store closed under a watch sends :closed; the watch has ended" do
      {:ok, s} = Store.open(:memory)
      {:ok, ref} = Sync.watch(s, :all)
      {:ok, 1} = Store.put(s, "k", "v")
      :ok = Store.close(s)
      assert %Event{revision: 1} = next(ref)
      assert :closed = next(ref)
      assert {:error, :closed} = Sync.watcher_count(s)
      assert {:error, :closed} = Sync.watch(s, :all)
    end

    test "bad arguments raise" do
      s = store()
      assert_raise ArgumentError, fn -> Sync.watch(s, :bogus) end
      assert_raise ArgumentError, fn -> Sync.watch(s, :all, self(), active: 0) end
      assert_raise ArgumentError, fn -> Sync.watch(s, :all, self(), bogus: 1) end
      assert_raise FunctionClauseError, fn -> Sync.watch(s, :all, :not_a_pid) end
      assert Sync.watcher_count(s) == 0
    end
  end

  describe "flow control ({active, N})" do
    test "a paced watch stops at its credit, says so, and resumes on activate" do
      s = store()
      {:ok, ref} = Sync.watch(s, :all, self(), active: 3)
      put_n(s, "k", 10)
      assert revs(events(ref, 3)) == [1, 2, 3]
      assert_receive {:tidemark_passive, ^ref}, 10_000
      # Everything past the credit is held by the store, not the mailbox.
      no_message(ref)
      assert :ok = Sync.activate(ref, 100)
      assert revs(events(ref, 7)) == Enum.to_list(4..10)
      assert :ok = Sync.activate(ref, :once)
      assert :ok = Sync.activate(ref, true)
      assert_raise ArgumentError, fn -> Sync.activate(ref, 0) end
    end

    test "a batch is never split by the credit" do
      s = store()
      {:ok, ref} = Sync.watch(s, :all, self(), active: :once)
      {:ok, 1} = Store.batch(s, [{:put, "a", ""}, {:put, "b", ""}, {:put, "c", ""}])
      assert revs(events(ref, 3)) == [1, 2, 3]
      assert_receive {:tidemark_passive, ^ref}, 10_000
    end

    # Concord.Sync: a watcher past max_queue loses events forever.
    test "a slow consumer past max_queue still gets everything, in order" do
      s = store()
      {:ok, ref} = Sync.watch(s, :all, self(), active: 5, max_queue: 2)
      put_n(s, "k", 300)
      assert paced(ref, 5, 300, []) == Enum.to_list(1..300)
    end

    test "compaction overtaking a paused watch ends it with {:compacted, earliest}" do
      s = store()
      {:ok, ref} = Sync.watch(s, {:prefix, "k"}, self(), active: 1, max_queue: 5)
      {:ok, live} = Sync.watch(s, :all)
      put_n(s, "k", 30)
      assert revs(events(ref, 1)) == [1]
      {:ok, 29} = Sync.compact(s, 30)
      assert {:compacted, 30} = next(ref)
      wait_until(fn -> Sync.watcher_count(s) end, 1)
      assert revs(events(live, 30)) == Enum.to_list(1..30)
      assert {:ok, %Changes{events: [%Event{revision: 30}]}} = Sync.changes(s, 30)
    end
  end

  describe "process death" do
    test "the watches of a process that dies are removed" do
      s = store()
      me = self()

      owner =
        spawn(fn ->
          for _ <- 1..3, do: {:ok, _} = Sync.watch(s, {:prefix, "k"})
          send(me, :watching)
          Process.sleep(:infinity)
        end)

      assert_receive :watching, 10_000
      {:ok, mine} = Sync.watch(s, :all)
      {:ok, _} = Sync.watch(s, :all, owner, active: 1)
      assert Sync.watcher_count(s) == 5
      put_n(s, "k", 50)
      Process.exit(owner, :kill)
      wait_until(fn -> Sync.watcher_count(s) end, 1)
      assert revs(events(mine, 50)) == Enum.to_list(1..50)
      assert {:ok, _} = Store.put(s, "k", "still fine")
    end

    test "a store whose owner dies is garbage-collected and closed: watches get :closed" do
      me = self()

      spawn(fn ->
        {:ok, s} = Store.open(:memory)
        {:ok, ref} = Sync.watch(s, :all, me)
        {:ok, _} = Store.put(s, "k", "v")
        send(me, {:ref, ref})
      end)

      assert_receive {:ref, ref}, 10_000
      assert %Event{revision: 1} = next(ref)
      # The store handle is gone with its process; collecting it closes the store.
      wait_until(fn -> :erlang.garbage_collect() and receive_closed(ref) end, true)
    end
  end

  describe "watch_stream/3" do
    test "yields events and ends when the store is closed (Concord's never ends)" do
      {:ok, s} = Store.open(:memory)
      me = self()

      reader =
        spawn_link(fn ->
          send(me, {:events, s |> Sync.watch_stream({:prefix, "k"}) |> Enum.to_list()})
        end)

      wait_until(fn -> Sync.watcher_count(s) end, 1)
      put_n(s, "k", 7)
      {:ok, _} = Store.put(s, "other", "x")
      wait_until(fn -> Store.current_revision(s) end, 8)
      :ok = Store.close(s)
      assert_receive {:events, evs}, 10_000
      assert [%Event{} | _] = evs
      assert revs(evs) == Enum.to_list(1..7)
      refute Process.alive?(reader)
    end

    test "halting early ends the watch and leaves no message behind" do
      s = store()
      {:ok, _} = Store.batch(s, for(i <- 1..10, do: {:put, "k#{i}", ""}))

      assert s |> Sync.watch_stream(:all, start_revision: 1, active: 3) |> Enum.take(4) |> revs() ==
               [1, 2, 3, 4]

      nothing_left(s, :tidemark_event)
    end

    test "compaction overtaking the stream raises, or is its last element with end_notice" do
      s = store()
      put_n(s, "k", 10)
      {:ok, 9} = Sync.compact(s, 10)

      assert_raise Tidemark.CompactedError, ~r/revision 10/, fn ->
        s |> Sync.watch_stream(:all, start_revision: 1) |> Enum.to_list()
      end

      assert [{:compacted, 10}] =
               s |> Sync.watch_stream(:all, start_revision: 1, end_notice: true) |> Enum.to_list()

      assert Sync.watcher_count(s) == 0
    end

    test "compaction overtaking a running stream ends it" do
      s = store()
      put_n(s, "k", 30)

      compact_after_first = fn
        %Event{revision: 1} -> {:ok, 29} = Sync.compact(s, 30)
        _ -> :ok
      end

      items =
        s
        |> Sync.watch_stream(:all, start_revision: 1, active: 1, max_queue: 5, end_notice: true)
        |> Stream.each(compact_after_first)
        |> Enum.to_list()

      # What the watch had buffered before the compaction still comes, in order; then the end.
      {events, [last]} = Enum.split(items, -1)
      assert last == {:compacted, 30}
      assert revs(events) == Enum.to_list(1..length(events))
      assert length(events) < 30

      assert Sync.watcher_count(s) == 0
    end

    test "the watch of a stream consumer that dies is removed" do
      s = store()
      pid = spawn(fn -> s |> Sync.watch_stream(:all) |> Stream.run() end)
      wait_until(fn -> Sync.watcher_count(s) end, 1)
      Process.exit(pid, :kill)
      wait_until(fn -> Sync.watcher_count(s) end, 0)
    end

    test "a bad selector raises when the stream starts" do
      s = store()
      assert_raise ArgumentError, fn -> s |> Sync.watch_stream(:bogus) |> Enum.take(1) end
    end
  end

  defp until_progress(ref, rev, acc) do
    case next(ref) do
      %Event{revision: r} -> until_progress(ref, rev, [r | acc])
      {:progress, ^rev} -> Enum.reverse(acc)
      {:progress, r} when r < rev -> until_progress(ref, rev, acc)
    end
  end

  defp receive_closed(ref) do
    receive do
      {:tidemark_event, ^ref, :closed} -> true
    after
      0 -> false
    end
  end

  # Reads n events, granting `grant` more whenever the watch reports passive.
  defp paced(_ref, _grant, 0, acc), do: Enum.reverse(acc)

  defp paced(ref, grant, n, acc) do
    receive do
      {:tidemark_event, ^ref, %Event{revision: r}} ->
        paced(ref, grant, n - 1, [r | acc])

      {:tidemark_passive, ^ref} ->
        :ok = Sync.activate(ref, grant)
        paced(ref, grant, n, acc)
    after
      10_000 -> flunk("stalled after #{inspect(Enum.reverse(acc))}")
    end
  end
end
