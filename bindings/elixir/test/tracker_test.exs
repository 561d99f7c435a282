defmodule Tidemark.TrackerTest do
  use ExUnit.Case, async: true
  import TidemarkTest.Helpers
  alias Tidemark.{Context, Store, Streams, Tracker}

  defp next_tracked do
    receive do
      {action, feature, %{id: id, revision: rev, data: json}}
      when action in [:feature_created, :feature_updated, :feature_deleted] ->
        {action, feature, id, rev, Tracker.decode_data(json)}

      {:feature_tracker_ended, _, _} = ended ->
        ended
    after
      10_000 -> flunk("no tracker notification")
    end
  end

  # reckon_db: only subscriptions ever notify. Here every feature does.
  test "every feature notifies its lifecycle, each in revision order" do
    s = store()

    for f <- [:streams, :snapshots, :contexts, "keys/u/", :jobs],
        do: :ok = Tracker.join(s, f, self())

    {:ok, _} = Streams.append(s, "orders", [%{type: "t", data: "1"}])
    {:ok, _} = Streams.append(s, "orders", [%{type: "t", data: "2"}])
    {:ok, _} = Streams.record_snapshot(s, "agg", "orders", 1, "state")
    {:ok, _} = Context.set(s, "cart", %{n: 1})
    {:ok, _} = Context.delete(s, "cart")
    {:ok, _} = Store.put(s, "u/a", "1")
    {:ok, _} = Store.delete(s, "u/a")
    {:ok, _} = Streams.delete(s, "orders")
    {:ok, rev} = Tracker.notify_created(s, :jobs, "j1", %{step: 1})
    got = for _ <- 1..9, do: next_tracked()

    expect = [
      {:feature_created, :streams, "orders", %{"version" => 0}},
      {:feature_updated, :streams, "orders", %{"version" => 1}},
      {:feature_deleted, :streams, "orders", %{}},
      {:feature_created, :snapshots, "orders",
       %{"source" => "agg", "stream" => "orders", "version" => 1}},
      {:feature_created, :contexts, "cart", %{"version" => 1}},
      {:feature_deleted, :contexts, "cart", %{}},
      {:feature_created, "keys/u/", "u/a", %{"version" => 1}},
      {:feature_deleted, "keys/u/", "u/a", %{}},
      {:feature_created, :jobs, "j1", %{"step" => 1}}
    ]

    for feature <- [:streams, :snapshots, :contexts, "keys/u/", :jobs] do
      assert for({_, ^feature, _, _} = e <- expect, do: e) ==
               for({a, ^feature, id, _, d} <- got, do: {a, feature, id, d})
    end

    assert [{_, :jobs, _, ^rev, _}] = for({_, :jobs, _, _, _} = g <- got, do: g)
  end

  test "user features: replay, members, leave" do
    s = store()
    {:ok, _} = Tracker.notify(s, "jobs", :created, "a", [1, 2])
    {:ok, _} = Tracker.notify(s, "jobs", :updated, "a", ~s({"raw":true}))
    me = self()
    :ok = Tracker.join(s, "jobs", me, start_revision: 1)
    assert {:feature_created, "jobs", "a", _, [1, 2]} = next_tracked()
    assert {:feature_updated, "jobs", "a", _, %{"raw" => true}} = next_tracked()
    assert Tracker.members(s, :jobs) == [me]
    :ok = Tracker.join(s, :jobs, [me])
    {:ok, _} = Tracker.notify_deleted(s, :jobs, "a", nil)
    assert {:feature_deleted, "jobs", "a", _, :null} = next_tracked()
    :ok = Tracker.leave(s, :jobs, me)
    assert Tracker.members(s, :jobs) == []
    # After leave returns nothing more arrives: rejoined, the first notification is "c".
    {:ok, _} = Tracker.notify_updated(s, :jobs, "b", 1)
    :ok = Tracker.join(s, :jobs, me)
    {:ok, _} = Tracker.notify_updated(s, :jobs, "c", 2)
    assert {:feature_updated, :jobs, "c", _, 2} = next_tracked()
  end

  # reckon_db's notifications go to whoever is in the pg group at that moment and are gone:
  # here they are commits, so a tracker that joins later (even after a restart) replays them.
  test "notifications are durable and replay, with their revisions, after a reopen" do
    dir = Path.join(System.tmp_dir!(), "tidemark_ex_trk_#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf!(dir) end)
    {:ok, s} = Store.open(dir)
    revs = for i <- 1..3, do: elem(Tracker.notify_updated(s, :jobs, "j#{i}", i), 1)
    :ok = Store.close(s)
    {:ok, s} = Store.open(dir)
    on_exit(fn -> Store.close(s) end)
    :ok = Tracker.join(s, :jobs, self(), start_revision: 1)
    got = for _ <- 1..3, do: next_tracked()

    assert got ==
             for({r, i} <- Enum.zip(revs, 1..3), do: {:feature_updated, :jobs, "j#{i}", r, i})
  end

  test "many members each get every notification once, in order" do
    s = store()
    parent = self()
    n = 300

    member = fn ->
      receive do
        :go -> :ok
      end

      ids =
        for _ <- 1..n do
          receive do
            {:feature_updated, :load, %{id: id}} -> id
          end
        end

      send(parent, {:done, self(), ids})
    end

    pids = for _ <- 1..20, do: spawn_link(member)
    :ok = Tracker.join(s, :load, pids)
    Enum.each(pids, &send(&1, :go))
    for i <- 1..n, do: {:ok, _} = Tracker.notify_updated(s, :load, Integer.to_string(i), i)
    want = for i <- 1..n, do: Integer.to_string(i)

    for pid <- pids do
      assert_receive {:done, ^pid, ^want}, 60_000
    end
  end

  test "a member that dies leaves; the group ends with its last member" do
    s = store()
    me = self()
    [p | rest] = pids = for _ <- 1..3, do: spawn(fn -> Process.sleep(:infinity) end)
    :ok = Tracker.join(s, :streams, [me | pids])
    assert Enum.sort(Tracker.members(s, :streams)) == Enum.sort([me | pids])
    ref = Process.monitor(p)
    Process.exit(p, :kill)
    assert_receive {:DOWN, ^ref, :process, ^p, :killed}, 10_000
    wait_until(fn -> Enum.sort(Tracker.members(s, :streams)) end, Enum.sort([me | rest]))
    Enum.each(rest, &Process.exit(&1, :kill))
    wait_until(fn -> Tracker.members(s, :streams) end, [me])
    # The survivor still gets notifications.
    {:ok, _} = Streams.append(s, "after", [%{type: "t", data: "1"}])
    assert {:feature_created, :streams, "after", _, _} = next_tracked()
    :ok = Tracker.leave(s, :streams, me)
    # The last member gone, the tracker is gone.
    assert Tidemark.Sync.watcher_count(s) == 0
    # A process already dead when it joins is no member.
    :ok = Tracker.join(s, :streams, spawn(fn -> :ok end))
    wait_until(fn -> Tidemark.Sync.watcher_count(s) end, 0)
    assert Tracker.members(s, :streams) == []
  end

  test "a closed store ends the group; bad input" do
    {:ok, s} = Store.open(:memory)
    assert {:error, {:invalid_argument, _}} = Tracker.join(s, "", self())
    assert {:error, {:invalid_argument, _}} = Tracker.notify(s, :streams, :created, "x", 1)
    assert_raise ArgumentError, fn -> Tracker.notify(s, :jobs, :renamed, "x", 1) end
    assert {:error, {:invalid_argument, _}} = Tracker.notify(s, :jobs, :created, "", 1)
    assert {:error, {:invalid_argument, _}} = Tracker.notify(s, :jobs, :created, "x", "{bad")
    assert_raise ArgumentError, fn -> Tracker.join(s, :jobs, [:not_a_pid]) end
    assert_raise ArgumentError, fn -> Tracker.join(s, 42, self()) end
    assert {:error, {:future_revision, _}} = Tracker.join(s, :jobs, self(), start_revision: 99)
    :ok = Tracker.join(s, :contexts, self())
    :ok = Store.close(s)
    assert {:feature_tracker_ended, :contexts, :closed} = next_tracked()
    assert {:error, :closed} = Tracker.join(s, :contexts, self())
  end
end
