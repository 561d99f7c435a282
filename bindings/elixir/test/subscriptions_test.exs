defmodule Tidemark.SubscriptionsTest do
  use ExUnit.Case, async: true
  import TidemarkTest.Helpers
  alias Tidemark.{Store, StreamEvent, Streams, Sync}

  defp ev(type, data), do: %{type: type, data: data}

  defp populate(s) do
    {:ok, _} = Streams.append(s, "order-1", [ev("created", "a"), ev("paid", "b")], :no_stream)
    {:ok, _} = Store.put(s, "user", "v")
    {:ok, _} = Streams.append(s, "cart-1", [ev("created", "c")])
    {:ok, _} = Streams.append(s, "order-2", [ev("created", "d")])
  end

  defp recv(ref, n) do
    for _ <- 1..n//1 do
      receive do
        {:tidemark_sub_event, ^ref, body} -> body
      after
        10_000 -> flunk("no subscription message")
      end
    end
  end

  defp names(bodies),
    do: for(%StreamEvent{stream: s, version: v, type: t} <- bodies, do: {s, v, t})

  # What nothing else will follow: the subscription is unsubscribed, so no message is late.
  defp no_more(s, ref) do
    :ok = Streams.unsubscribe(s, ref)
    refute_received {:tidemark_sub_event, ^ref, _}
  end

  test "replay from the beginning, every selector; events are %StreamEvent{} as read returns them" do
    cases = [
      {:all,
       [
         {"order-1", 0, "created"},
         {"order-1", 1, "paid"},
         {"cart-1", 0, "created"},
         {"order-2", 0, "created"}
       ]},
      {{:stream, "order-1"}, [{"order-1", 0, "created"}, {"order-1", 1, "paid"}]},
      {{:prefix, "order-"},
       [{"order-1", 0, "created"}, {"order-1", 1, "paid"}, {"order-2", 0, "created"}]},
      {{:event_type, "created"},
       [{"order-1", 0, "created"}, {"cart-1", 0, "created"}, {"order-2", 0, "created"}]},
      {{:prefix, "order", "created"}, [{"order-1", 0, "created"}, {"order-2", 0, "created"}]},
      {{:stream, "cart-1", "paid"}, []}
    ]

    for {selector, want} <- cases do
      s = store()
      populate(s)
      {:ok, ref} = Streams.subscribe(s, selector, self(), start_revision: 1)
      assert names(recv(ref, length(want))) == want
      # A marker appended after the replay, one the selector takes, arrives next: nothing
      # else was on its way.
      {stream, type} =
        if selector == {:stream, "cart-1", "paid"},
          do: {"cart-1", "paid"},
          else: {"order-1", "created"}

      {:ok, _} = Streams.append(s, stream, [ev(type, "m")])
      assert [%StreamEvent{stream: ^stream, data: "m"}] = recv(ref, 1)
      no_more(s, ref)
    end

    s = store()
    populate(s)
    {:ok, ref} = Streams.subscribe(s, {:stream, "order-1"}, self(), start_revision: 1)
    [first | _] = recv(ref, 2)
    {:ok, [read | _]} = Streams.read_forward(s, "order-1")
    assert first == read
    no_more(s, ref)
  end

  test "live events, flow control with credit, then the store closes" do
    {:ok, s} = Store.open(:memory)
    {:ok, ref} = Streams.subscribe(s, {:prefix, "s"}, self(), active: 2)

    for {name, i} <- [{"s1", 1}, {"x", 0}, {"s2", 2}, {"s1", 3}],
        do: {:ok, _} = Streams.append(s, name, [ev("t", Integer.to_string(i))])

    assert Enum.map(recv(ref, 2), & &1.data) == ["1", "2"]
    assert_receive {:tidemark_passive, ^ref}, 10_000
    # Out of credit: the third event waits in the store, not in the mailbox.
    refute_received {:tidemark_sub_event, ^ref, _}
    :ok = Streams.activate(ref, :once)
    assert [%StreamEvent{data: "3", version: 1}] = recv(ref, 1)
    :ok = Streams.activate(ref, true)
    {:ok, _} = Streams.append(s, "s3", [ev("t", "4")])
    assert [%StreamEvent{data: "4"}] = recv(ref, 1)
    :ok = Store.close(s)
    assert recv(ref, 1) == [:closed]
  end

  test "a slow subscriber past max_queue loses nothing, in order" do
    s = store()
    {:ok, ref} = Streams.subscribe(s, {:stream, "s"}, self(), max_queue: 2, active: 1)
    for i <- 1..300, do: {:ok, _} = Streams.append(s, "s", [ev("t", Integer.to_string(i))])

    got =
      for _ <- 1..300 do
        [%StreamEvent{} = e] = recv(ref, 1)
        assert_receive {:tidemark_passive, ^ref}, 10_000
        :ok = Streams.activate(ref, 1)
        e.version
      end

    assert got == Enum.to_list(0..299)
    no_more(s, ref)
  end

  # ExESDB's catch-up subscription reads the past, then subscribes: what is appended in
  # between is lost or doubled. Here one subscription replays and goes live gap-free.
  test "replay while appends race: every event once, in order" do
    s = store()
    for i <- 1..100, do: {:ok, _} = Streams.append(s, "o", [ev("t", Integer.to_string(i))])

    writer =
      Task.async(fn -> for _ <- 1..100, do: {:ok, _} = Streams.append(s, "o", [ev("t", "")]) end)

    {:ok, ref} = Streams.subscribe(s, {:stream, "o"}, self(), start_revision: 1)
    Task.await(writer, 60_000)
    assert Enum.map(recv(ref, 200), & &1.version) == Enum.to_list(0..199)
    no_more(s, ref)
  end

  test "compaction ends a subscription that fell behind; a compacted start is an error" do
    s = store()
    {:ok, ref} = Streams.subscribe(s, {:stream, "s"}, self(), max_queue: 1, active: 1)
    for _ <- 1..3, do: {:ok, _} = Streams.append(s, "s", [ev("t", "")])
    assert [%StreamEvent{version: 0}] = recv(ref, 1)
    rev = Store.current_revision(s)
    {:ok, _} = Sync.compact(s, rev)
    # Out of credit it may already have ended (not_found); what was queued may come first.
    assert Streams.activate(ref, 10) in [:ok, {:error, :not_found}]
    bodies = recv_to_end(ref)
    assert List.last(bodies) == {:compacted, rev}
    assert Enum.all?(Enum.drop(bodies, -1), &match?(%StreamEvent{version: 1}, &1))
    assert Streams.subscribe(s, :all, self(), start_revision: 1) == {:error, {:compacted, rev}}
  end

  defp recv_to_end(ref) do
    case recv(ref, 1) do
      [b] when b == :closed or elem(b, 0) == :compacted -> [b]
      [b] -> [b | recv_to_end(ref)]
    end
  end

  test "a subscriber that dies ends its subscription" do
    s = store()
    pid = spawn(fn -> Process.sleep(:infinity) end)
    {:ok, _ref} = Streams.subscribe(s, :all, pid)
    assert Sync.watcher_count(s) == 1
    Process.exit(pid, :kill)
    wait_until(fn -> Sync.watcher_count(s) end, 0)
  end

  test "bad input" do
    s = store()
    long = String.duplicate("x", 1025)
    assert {:error, {:invalid_argument, _}} = Streams.subscribe(s, {:stream, ""})
    assert {:error, {:invalid_argument, _}} = Streams.subscribe(s, {:prefix, "", "t"})
    assert {:error, {:too_large, _}} = Streams.subscribe(s, {:stream, long})
    assert {:error, {:too_large, _}} = Streams.subscribe(s, {:prefix, long})
    assert_raise ArgumentError, fn -> Streams.subscribe(s, {:event_type, ""}) end
    assert_raise ArgumentError, fn -> Streams.subscribe(s, {:key, "a"}) end
    assert_raise ArgumentError, fn -> Streams.subscribe(s, {:stream, 42}) end
    assert_raise ArgumentError, fn -> Streams.subscribe(s, :all, self(), bogus: 1) end
    assert_raise ArgumentError, fn -> Streams.subscribe(s, :all, self(), active: 0) end
    assert {:error, {:future_revision, _}} = Streams.subscribe(s, :all, self(), start_revision: 5)
    {:ok, ref} = Streams.subscribe(s, :all)
    :ok = Streams.unsubscribe(s, ref)
    assert {:error, :not_found} = Streams.unsubscribe(s, ref)
    assert Sync.watcher_count(s) == 0
  end

  describe "subscribe_stream/3" do
    test "replays, goes live, ends when the store closes" do
      {:ok, s} = Store.open(:memory)
      {:ok, _} = Streams.append(s, "a", [ev("t", "1"), ev("t", "2")])
      me = self()

      spawn_link(fn ->
        send(
          me,
          {:events,
           s |> Streams.subscribe_stream({:stream, "a"}, start_revision: 1) |> Enum.to_list()}
        )
      end)

      wait_until(fn -> Sync.watcher_count(s) end, 1)
      {:ok, _} = Streams.append(s, "a", [ev("t", "3")])
      {:ok, _} = Streams.append(s, "b", [ev("t", "x")])
      :ok = Store.close(s)
      assert_receive {:events, events}, 10_000
      assert Enum.map(events, & &1.data) == ["1", "2", "3"]
    end

    test "an early halt unsubscribes and leaves no message behind" do
      s = store()
      for i <- 1..10, do: {:ok, _} = Streams.append(s, "a", [ev("t", Integer.to_string(i))])

      assert s
             |> Streams.subscribe_stream(:all, start_revision: 1, active: 3)
             |> Enum.take(4)
             |> Enum.map(& &1.data) == ["1", "2", "3", "4"]

      nothing_left(s, :tidemark_sub_event)
    end

    test "compaction raises, or is the last element with end_notice" do
      s = store()
      {:ok, _} = Streams.append(s, "a", [ev("t", "1")])
      {:ok, _} = Streams.append(s, "a", [ev("t", "2")])
      {:ok, _} = Sync.compact(s, 2)

      assert_raise Tidemark.CompactedError, fn ->
        s |> Streams.subscribe_stream(:all, start_revision: 1) |> Enum.to_list()
      end

      assert s
             |> Streams.subscribe_stream(:all, start_revision: 1, end_notice: true)
             |> Enum.to_list() ==
               [{:compacted, 2}]
    end
  end
end
