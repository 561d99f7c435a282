defmodule Tidemark.StreamsTest do
  use ExUnit.Case, async: true
  import TidemarkTest.Helpers
  alias Tidemark.{Snapshot, Store, StreamEvent, Streams}

  defp ev(type, data), do: %{type: type, data: data}

  test "append with expected versions; read forward and backward" do
    s = store()
    assert {:ok, -1} = Streams.version(s, "orders")

    assert {:ok, 1} =
             Streams.append(
               s,
               "orders",
               [ev("created", "1"), %{type: "paid", data: ["2"], metadata: "m"}],
               :no_stream
             )

    assert {:ok, 2} = Streams.append(s, "orders", [ev("shipped", "3")], 1)
    assert {:ok, 3} = Streams.append(s, "orders", [ev("x", "")], :stream_exists)
    assert {:ok, 4} = Streams.append(s, "orders", [ev("x", "")])
    assert {:ok, 4} = Streams.version(s, "orders")
    assert {:ok, evs} = Streams.read_forward(s, "orders")
    assert Enum.map(evs, & &1.version) == [0, 1, 2, 3, 4]

    assert [
             _,
             %StreamEvent{
               stream: "orders",
               type: "paid",
               data: "2",
               metadata: "m",
               revision: 2,
               id: <<_::128>>
             }
             | _
           ] = evs

    assert {:ok, [%StreamEvent{version: 4}, %StreamEvent{version: 3}]} =
             Streams.read_backward(s, "orders", -1, 2)

    assert {:ok, [%StreamEvent{version: 2}, %StreamEvent{version: 1}, %StreamEvent{version: 0}]} =
             Streams.read_backward(s, "orders", 2)

    assert {:ok, [%StreamEvent{version: 1}]} = Streams.read(s, "orders", 1, 1, :forward)
    assert {:ok, []} = Streams.read_forward(s, "orders", 9)
    assert {:error, :not_found} = Streams.read_forward(s, "none")
    # The user's :all never shows stream events.
    assert {:ok, %Tidemark.Changes{events: []}} = Tidemark.Sync.changes(s, 1)
  end

  # ExESDB: appends are not atomic. Here a failed append writes nothing at all.
  test "wrong expected version writes nothing" do
    s = store()

    assert {:error, {:wrong_expected_version, -1}} =
             Streams.append(s, "s", [ev("t", "")], :stream_exists)

    {:ok, 1} = Streams.append(s, "s", [ev("t", ""), ev("t", "")], :any)
    rev = Store.current_revision(s)

    assert {:error, {:wrong_expected_version, 1}} =
             Streams.append(s, "s", [ev("t", ""), ev("t", "")], 0)

    assert {:error, {:wrong_expected_version, 1}} =
             Streams.append(s, "s", [ev("t", "")], :no_stream)

    assert Store.current_revision(s) == rev
    assert {:ok, 1} = Streams.version(s, "s")
  end

  test "concurrent appends with the same expected version: exactly one wins" do
    s = store()
    {:ok, 0} = Streams.append(s, "s", [ev("t", "")], :no_stream)

    results =
      1..8
      |> Enum.map(fn i ->
        Task.async(fn -> Streams.append(s, "s", [ev("t", "#{i}"), ev("t", "#{i}")], 0) end)
      end)
      |> Enum.map(&Task.await(&1, 30_000))

    assert Enum.count(results, &(&1 == {:ok, 2})) == 1
    assert Enum.count(results, &(&1 == {:error, {:wrong_expected_version, 2}})) == 7
    {:ok, [_, a, b]} = Streams.read_forward(s, "s")
    assert a.data == b.data
  end

  test "a retried append (same ids) duplicates nothing" do
    s = store()

    evs = [
      %{type: "t", data: "a", id: :binary.copy(<<1>>, 16)},
      %{type: "t", data: "b", id: :binary.copy(<<2>>, 16)}
    ]

    {:ok, 1} = Streams.append(s, "s", evs, :no_stream)
    rev = Store.current_revision(s)
    assert {:ok, 1} = Streams.append(s, "s", evs, :no_stream)
    assert Store.current_revision(s) == rev
  end

  test "stream events survive compaction and list/delete" do
    s = store()
    for n <- ["a", "b/1", "b/2"], do: {:ok, 0} = Streams.append(s, n, [ev("t", "")])
    assert {:ok, [{"a", 0}, {"b/1", 0}, {"b/2", 0}], false} = Streams.list(s)
    assert {:ok, [{"b/1", 0}], true} = Streams.list(s, prefix: "b/", limit: 1)
    assert {:ok, [{"b/2", 0}], false} = Streams.list(s, prefix: "b/", after: "b/1")
    {:ok, _} = Tidemark.Sync.compact(s, Store.current_revision(s) + 1)
    assert {:ok, [%StreamEvent{stream: "a"}]} = Streams.read_forward(s, "a")
    assert {:ok, _rev} = Streams.delete(s, "a")
    assert {:error, :not_found} = Streams.read_forward(s, "a")
    assert {:ok, 0} = Streams.append(s, "a", [ev("t", "")], :no_stream)
  end

  test "snapshots" do
    s = store()
    assert {:error, :not_found} = Streams.read_snapshot(s, "src", "s")
    {:ok, _} = Streams.record_snapshot(s, "src", "s", 3, "three")
    {:ok, _} = Streams.record_snapshot(s, "src", "s", 7, ["sev", "en"])

    assert {:ok, %Snapshot{version: 7, data: "seven", source: "src", stream: "s"}} =
             Streams.read_snapshot(s, "src", "s")

    assert {:ok, %Snapshot{version: 3, data: "three"}} = Streams.read_snapshot(s, "src", "s", 6)
    assert {:error, :not_found} = Streams.read_snapshot(s, "src", "s", 2)

    assert {:ok, [%Snapshot{version: 3}, %Snapshot{version: 7}]} =
             Streams.list_snapshots(s, "src", "s")

    assert {:ok, _} = Streams.delete_snapshot(s, "src", "s", 7)
    assert {:ok, [%Snapshot{version: 3}]} = Streams.list_snapshots(s, "src", "s")
  end

  test "bad inputs" do
    s = store()
    e = [ev("t", "")]
    assert {:error, {:invalid_argument, _}} = Streams.append(s, "", e)
    assert {:error, {:too_large, _}} = Streams.append(s, :binary.copy("x", 1025), e)
    assert {:error, {:invalid_argument, _}} = Streams.append(s, "s", [])

    assert {:error, {:invalid_argument, _}} =
             Streams.append(s, "s", [%{type: "t", data: "", id: "short"}])

    assert_raise ArgumentError, fn -> Streams.append(s, "s", e, :maybe) end
    assert_raise ArgumentError, fn -> Streams.append(s, "s", [%{type: "t"}]) end
    assert_raise ArgumentError, fn -> Streams.read(s, "s", 0, 0, :sideways) end
    assert {:error, {:invalid_argument, _}} = Streams.read_forward(s, "s", -1)
    assert_raise ArgumentError, fn -> Streams.record_snapshot(s, "src", "s", -1, "") end
    assert Store.current_revision(s) == 0
    :ok = Store.close(s)
    assert {:error, :closed} = Streams.append(s, "s", e)
  end
end
