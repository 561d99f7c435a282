defmodule Tidemark.PersistentSubscriptionTest do
  use ExUnit.Case, async: true
  import TidemarkTest.Helpers
  alias Tidemark.{Delivery, Store, Streams, Subscription, SubscriptionInfo}

  defp append(s, stream, n) do
    {:ok, _} =
      Streams.append(s, stream, for(i <- 1..n, do: %{type: "t", data: Integer.to_string(i)}))

    :ok
  end

  defp recv(sub, n) do
    for _ <- 1..n//1 do
      receive do
        {:tidemark_sub_event, ^sub, %Delivery{} = d} -> d
      after
        20_000 -> flunk("no delivery")
      end
    end
  end

  # Nothing for sub now and, once disconnected, nothing later: a negative check that can
  # miss a bug but never fails a correct build.
  defp nothing(sub) do
    refute_received {:tidemark_sub_event, ^sub, _}
  end

  defp datas(ds), do: Enum.map(ds, & &1.data)

  defp info(s, name) do
    {:ok, infos} = Subscription.list(s)
    [info] = for %SubscriptionInfo{name: ^name} = i <- infos, do: i
    info
  end

  test "replays the past to a consumer; ack moves the checkpoint" do
    s = store()
    :ok = append(s, "order-1", 3)
    :ok = append(s, "cart-1", 2)
    :ok = Subscription.create(s, "orders", selector: {:prefix, "order-"})
    {:ok, sub} = Subscription.connect(s, "orders")
    ds = recv(sub, 3)
    assert datas(ds) == ["1", "2", "3"]
    assert Enum.all?(ds, &match?(%Delivery{delivery_count: 1, stream: "order-1"}, &1))

    assert %SubscriptionInfo{in_flight: 3, lag: 3, consumers: 1, selector: {:prefix, "order-"}} =
             info(s, "orders")

    :ok = Subscription.ack(sub, ds)
    assert %SubscriptionInfo{in_flight: 0, lag: 0, parked: 0, checkpoint: cp} = info(s, "orders")
    assert cp >= List.last(ds).revision
    :ok = Subscription.disconnect(sub)
    :ok = Subscription.disconnect(sub)
    nothing(sub)
  end

  test "a reopened store resumes at the first unacked event" do
    dir = Path.join(System.tmp_dir!(), "tidemark_ex_psub_#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf!(dir) end)
    {:ok, s} = Store.open(dir)
    :ok = Subscription.create(s, "work", start: :beginning)
    :ok = append(s, "jobs", 10)
    {:ok, sub} = Subscription.connect(s, "work")
    ds = recv(sub, 10)
    :ok = Subscription.ack(sub, Enum.take(ds, 5))
    :ok = Store.close(s)
    assert_receive {:tidemark_sub_event, ^sub, :closed}, 20_000
    {:ok, s} = Store.open(dir)
    on_exit(fn -> Store.close(s) end)
    {:ok, sub} = Subscription.connect(s, "work")
    again = recv(sub, 5)
    assert datas(again) == for(i <- 6..10, do: Integer.to_string(i))
    :ok = Subscription.ack(sub, again)
    assert %SubscriptionInfo{lag: 0, in_flight: 0} = info(s, "work")
  end

  # A consumer that acks what it gets and reports each ack; after `stop` deliveries it
  # holds the last one unacked and waits to be killed.
  defp consumer(s, parent, stop) do
    spawn(fn ->
      {:ok, sub} = Subscription.connect(s, "shared", self(), active: 4)
      send(parent, {:connected, self()})
      consume(sub, parent, stop)
    end)
  end

  defp consume(_sub, parent, 0) do
    send(parent, {:holding, self()})
    Process.sleep(:infinity)
  end

  defp consume(sub, parent, left) do
    receive do
      {:tidemark_sub_event, ^sub, %Delivery{} = d} ->
        if left != 1 do
          :ok = Subscription.ack(sub, d)
          send(parent, {:acked, self(), d.revision})
        end

        consume(sub, parent, left - 1)

      {:tidemark_sub_passive, ^sub} ->
        :ok = Subscription.activate(sub, 4)
        consume(sub, parent, left)
    end
  end

  test "competing consumers: a dead one's unacked event goes to the other, each acked once" do
    s = store()
    :ok = Subscription.create(s, "shared", max_in_flight: 3)
    me = self()
    # The second consumer connects only once the first holds an unacked event: delivery is
    # not strict round robin, so a fast consumer could otherwise take every event.
    dying = consumer(s, me, 5)
    assert_receive {:connected, ^dying}, 20_000
    :ok = append(s, "s", 40)
    assert_receive {:holding, ^dying}, 20_000
    steady = consumer(s, me, -1)
    assert_receive {:connected, ^steady}, 20_000
    Process.exit(dying, :kill)

    acks =
      for _ <- 1..40 do
        assert_receive {:acked, from, rev}, 20_000
        {rev, from}
      end

    revs = Enum.map(acks, &elem(&1, 0))
    assert length(Enum.uniq(revs)) == 40
    assert length(for {_, ^dying} <- acks, do: 1) == 4
    Process.exit(steady, :kill)
    assert %SubscriptionInfo{lag: 0} = info(s, "shared")
  end

  test "nack retry, park and skip; parked events replay" do
    s = store()
    :ok = Subscription.create(s, "n", max_retry: 2)
    {:ok, sub} = Subscription.connect(s, "n")
    :ok = append(s, "s", 4)
    [d1, d2, d3, d4] = recv(sub, 4)
    :ok = Subscription.nack(sub, d1, :retry)
    [%Delivery{delivery_count: 2} = d1b] = recv(sub, 1)
    assert d1b.revision == d1.revision
    :ok = Subscription.nack(sub, d1b, :retry)
    :ok = Subscription.nack(sub, d2, :park)
    :ok = Subscription.nack(sub, d3.revision, :skip)
    :ok = Subscription.ack(sub, d4.revision)
    {:ok, parked} = Subscription.parked(s, "n")
    assert [%Delivery{delivery_count: 2}, %Delivery{delivery_count: 1}] = parked
    assert Enum.map(parked, & &1.revision) == [d1.revision, d2.revision]
    assert {:ok, [_]} = Subscription.parked(s, "n", 1)
    assert %SubscriptionInfo{parked: 2} = info(s, "n")
    assert {:ok, 2} = Subscription.replay_parked(s, "n")
    again = recv(sub, 2)
    assert Enum.map(again, & &1.revision) == [d1.revision, d2.revision]
    assert Enum.all?(again, &(&1.delivery_count == 1))
    :ok = Subscription.ack(sub, again)
    assert {:ok, []} = Subscription.parked(s, "n")
    assert %SubscriptionInfo{parked: 0, lag: 0, in_flight: 0} = info(s, "n")
  end

  test "an unacked event is redelivered after the timeout, by the store clock" do
    s = store()
    :ok = Store.set_clock(s, {:manual, 1000})
    :ok = Subscription.create(s, "t", message_timeout_ms: 60_000)
    {:ok, sub} = Subscription.connect(s, "t")
    :ok = append(s, "s", 1)
    [%Delivery{delivery_count: 1, revision: r}] = recv(sub, 1)
    {:ok, 61_001} = Store.advance_clock(s, 60_001)
    [%Delivery{delivery_count: 2, revision: ^r} = d] = recv(sub, 1)
    :ok = Subscription.ack(sub, d)
  end

  test "flow control: active n, passive, active false" do
    s = store()
    :ok = Subscription.create(s, "a")
    {:ok, sub} = Subscription.connect(s, "a", self(), active: 2)
    :ok = append(s, "s", 5)
    assert datas(recv(sub, 2)) == ["1", "2"]
    assert_receive {:tidemark_sub_passive, ^sub}, 20_000
    nothing(sub)
    :ok = Subscription.activate(sub, 3)
    assert datas(recv(sub, 3)) == ["3", "4", "5"]
    assert_receive {:tidemark_sub_passive, ^sub}, 20_000
    {:ok, off} = Subscription.connect(s, "a", self(), active: false)
    # Its five unacked go to `off`, which gets nothing until activated.
    :ok = Subscription.disconnect(sub)
    nothing(off)
    :ok = Subscription.activate(off, true)
    again = recv(off, 5)
    assert Enum.sort(datas(again)) == ["1", "2", "3", "4", "5"]
    :ok = Subscription.ack(off, again)
  end

  test "delete and close end the consumers" do
    {:ok, s} = Store.open(:memory)
    :ok = Subscription.create(s, "d")
    :ok = Subscription.create(s, "c")
    {:ok, d} = Subscription.connect(s, "d")
    {:ok, c} = Subscription.connect(s, "c")
    :ok = append(s, "s", 1)
    [_] = recv(d, 1)
    :ok = Subscription.delete(s, "d")
    assert_receive {:tidemark_sub_event, ^d, :deleted}, 20_000
    assert {:error, :not_found} = Subscription.delete(s, "d")
    [delivery] = recv(c, 1)
    :ok = Store.close(s)
    assert_receive {:tidemark_sub_event, ^c, :closed}, 20_000
    assert {:error, :closed} = Subscription.ack(c, delivery)
    assert {:error, :closed} = Subscription.list(s)
    :ok = Subscription.disconnect(c)
  end

  test "bad input" do
    s = store()
    assert {:error, :not_found} = Subscription.connect(s, "none")
    assert {:error, :not_found} = Subscription.parked(s, "none")
    assert {:error, :not_found} = Subscription.replay_parked(s, "none")
    :ok = Subscription.create(s, "x")
    assert {:error, {:conflict, _}} = Subscription.create(s, "x")
    assert {:error, {:invalid_argument, _}} = Subscription.create(s, "")
    assert {:error, {:invalid_argument, _}} = Subscription.create(s, "y", max_in_flight: 0)
    assert {:error, {:future_revision, _}} = Subscription.create(s, "y", start: 99)
    assert_raise ArgumentError, fn -> Subscription.create(s, "y", selector: {:nope, 1}) end
    assert_raise ArgumentError, fn -> Subscription.create(s, "y", colour: :red) end
    assert_raise ArgumentError, fn -> Subscription.connect(s, "x", self(), active: -1) end
    dead = spawn(fn -> :ok end)
    ref = Process.monitor(dead)
    assert_receive {:DOWN, ^ref, _, _, _}
    assert {:error, :noproc} = Subscription.connect(s, "x", dead)
    {:ok, sub} = Subscription.connect(s, "x")
    assert_raise ArgumentError, fn -> Subscription.nack(sub, 1, :later) end
    assert {:error, {:invalid_argument, _}} = Subscription.ack(sub, 12_345)
    :ok = append(s, "s", 1)
    [d] = recv(sub, 1)
    {:ok, other} = Subscription.connect(s, "x")
    assert {:error, {:invalid_argument, _}} = Subscription.ack(other, d)
    :ok = Subscription.ack(sub, d)
    assert {:error, {:invalid_argument, _}} = Subscription.ack(sub, d)
    :ok = Subscription.disconnect(sub)
    assert {:error, :closed} = Subscription.nack(sub, d, :skip)
  end

  test "ExESDB shapes: save_subscription, get_subscriptions, ack_event, remove_subscription" do
    s = store()
    :ok = append(s, "order-1", 2)
    {:ok, sub} = Streams.save_subscription(s, :by_stream, "order-1", "billing", 0, self())
    :ok = Streams.save_subscription(s, :by_event_type, "t", "audit")
    :ok = Streams.save_subscription(s, :by_stream, "$all", "everything", 2)

    assert {:ok,
            [
              %SubscriptionInfo{name: "audit", selector: {:event_type, "t"}},
              %SubscriptionInfo{name: "billing", selector: {:stream, "order-1"}},
              %SubscriptionInfo{name: "everything", selector: :all}
            ]} = Streams.get_subscriptions(s)

    ds = recv(sub, 2)
    :ok = Streams.ack_event(sub, ds)
    :ok = Streams.remove_subscription(s, :by_stream, "order-1", "billing")
    assert_receive {:tidemark_sub_event, ^sub, :deleted}, 20_000

    assert_raise ArgumentError, fn ->
      Streams.save_subscription(s, :by_event_pattern, %{}, "p")
    end
  end

  test "reset backwards redelivers, forwards skips; bad input changes nothing" do
    s = store()
    :ok = append(s, "s", 3)
    :ok = Subscription.create(s, "r", start: :beginning)
    {:ok, sub} = Subscription.connect(s, "r")
    [d1, d2, d3] = recv(sub, 3)
    :ok = Subscription.ack(sub, [d1, d2, d3])
    current = Store.current_revision(s)
    assert {:error, {:invalid_argument, _}} = Subscription.reset(s, "r", 0)
    assert {:error, :not_found} = Subscription.reset(s, "none", 1)
    assert Store.current_revision(s) == current
    next = current + 1
    assert {:ok, ^next} = Subscription.reset(s, "r", d2.revision)
    assert_receive {:tidemark_sub_event, ^sub, {:error, {:conflict, _}}}, 20_000
    {:ok, again} = Subscription.connect(s, "r")
    assert Enum.map(recv(again, 2), & &1.revision) == [d2.revision, d3.revision]
    :ok = Subscription.disconnect(again)
    assert {:ok, _} = Subscription.reset(s, "r", d3.revision)
    {:ok, fwd} = Subscription.connect(s, "r")
    assert [%Delivery{revision: r}] = recv(fwd, 1)
    assert r == d3.revision
  end
end
