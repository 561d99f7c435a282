defmodule Tidemark.ContextTest do
  use ExUnit.Case, async: true
  import TidemarkTest.Helpers
  alias Tidemark.{Context, Store}

  # RFC 6902, the operations tidemark's deltas use.
  defp apply_patch(doc, patch), do: Enum.reduce(patch, doc, &apply_op/2)
  defp apply_op(%{"op" => "remove", "path" => "/" <> k}, doc), do: Map.delete(doc, k)

  defp apply_op(%{"op" => op, "path" => "/" <> k, "value" => v}, doc)
       when op in ["add", "replace"],
       do: Map.put(doc, k, v)

  test "set, update, get, delete" do
    s = store()

    assert {:ok, %{context: %{"status" => "active"}, version: 1, delta: delta, revision: r}} =
             Context.set(s, "call:123", %{status: "active", n: 1})

    assert is_list(delta) and r > 0

    assert {:ok, %{context: %{"status" => "ended", "n" => 1}, version: 2}} =
             Context.update(s, "call:123", %{status: "ended"})

    assert {:ok, %{context: %{"status" => "ended"} = c, version: 3}} =
             Context.update(s, "call:123", %{n: nil})

    refute Map.has_key?(c, "n")
    # Setting what is there writes nothing.
    assert {:ok, %{delta: [], revision: 0, version: 3}} =
             Context.set(s, "call:123", %{status: "ended"})

    assert {:ok,
            %{
              context_id: "call:123",
              context: %{"status" => "ended"},
              version: 3,
              created_ms: t0,
              updated_ms: t1
            }} = Context.get(s, "call:123")

    assert t1 >= t0
    assert {:ok, _} = Context.set(s, "json", ~s({"a": [1, null]}))
    assert {:ok, %{context: %{"a" => [1, :null]}}} = Context.get(s, "json")
    assert {:ok, _rev} = Context.delete(s, "call:123")
    assert {:error, :not_found} = Context.get(s, "call:123")
    assert {:error, {:invalid_argument, _}} = Context.set(s, "x", "[1]")
  end

  test "sync: full context, delta, no change" do
    s = store()
    docs = for i <- 1..5, do: elem(Context.update(s, "c", %{"f#{i}" => i}), 1).context
    assert {:no_change, 5} = Context.sync(s, "c", 5)
    assert {:delta, %{context_id: "c", delta: patch, version: 5}} = Context.sync(s, "c", 2)
    assert apply_patch(Enum.at(docs, 1), patch) == Enum.at(docs, 4)

    for v <- [nil, 0, -3, 6, Bitwise.bsl(1, 70)] do
      assert {:full_context, %{context_id: "c", context: doc, version: 5}} =
               Context.sync(s, "c", v)

      assert doc == Enum.at(docs, 4)
    end
  end

  # Chord: pruning keeps the oldest deltas and sync merges non-contiguous deltas. Here a
  # delta is served only when it is exactly right.
  test "Chord's defects: old clients get the full context, merged deltas are exact" do
    s = store()

    docs =
      for i <- 1..150 do
        {:ok, %{context: d}} = Context.update(s, "c", %{"f#{rem(i, 7)}" => i, last: i})
        d
      end

    assert {:delta, %{delta: p, version: 150}} = Context.sync(s, "c", 120)
    assert apply_patch(Enum.at(docs, 119), p) == Enum.at(docs, 149)
    assert {:full_context, %{version: 150}} = Context.sync(s, "c", 10)
    {:ok, _} = Context.set(s, "k", %{k: "old"})
    {:ok, _} = Context.update(s, "k", %{k: nil})
    {:ok, _} = Context.update(s, "k", %{k: "new"})
    assert {:delta, %{delta: p2, version: 3}} = Context.sync(s, "k", 1)
    assert apply_patch(%{"k" => "old"}, p2) == %{"k" => "new"}
  end

  # Chord: concurrent updates lose writes.
  test "concurrent updates from many processes lose nothing" do
    s = store()

    1..8
    |> Enum.map(fn t ->
      Task.async(fn ->
        for i <- 1..25, do: {:ok, _} = Context.update(s, "shared", %{"f#{t}_#{i}" => i})
      end)
    end)
    |> Enum.each(&Task.await(&1, 60_000))

    assert {:ok, %{version: 200, context: d}} = Context.get(s, "shared")
    assert map_size(d) == 200
  end

  test "list and deltas" do
    s = store(delta_threshold: 2)
    for id <- ["b", "a", "c"], do: {:ok, _} = Context.set(s, id, %{id: id})
    for v <- 1..3, do: {:ok, _} = Context.update(s, "a", %{v: v})
    assert {:ok, [%{context_id: "a"}, %{context_id: "b"}, %{context_id: "c"}]} = Context.list(s)

    assert {:ok, [%{context_id: "c"}, %{context_id: "b"}]} =
             Context.list(s, order: :desc, limit: 2)

    assert {:ok, [%{context_id: "b"}]} = Context.list(s, offset: 1, limit: 1)

    assert {:ok, [%{version: 3, patch: _, timestamp_ms: _}, %{version: 4}]} =
             Context.deltas(s, "a")

    assert {:ok, [%{version: 4}]} = Context.deltas(s, "a", order: :desc, limit: 1)
    assert_raise ArgumentError, fn -> Context.list(s, order: :sideways) end
  end

  test "cleanup and TTLs by the manual clock (no sleeping)" do
    s = store(delta_ttl_ms: 100, context_ttl_ms: 1000, context_auto_delete: true)
    :ok = Store.set_clock(s, {:manual, 5000})
    {:ok, _} = Context.set(s, "a", %{v: 1})
    {:ok, _} = Context.update(s, "a", %{v: 2})
    assert {:ok, %{created_ms: 5000, updated_ms: 5000}} = Context.get(s, "a")
    assert {:delta, %{version: 2}} = Context.sync(s, "a", 1)
    {:ok, 5100} = Store.advance_clock(s, 100)
    assert {:full_context, %{version: 2}} = Context.sync(s, "a", 1)
    assert {:ok, {0, 1}} = Context.cleanup(s)
    {:ok, 6000} = Store.advance_clock(s, 900)
    assert {:ok, {1, 0}} = Context.cleanup(s, limit: 10)
    assert {:error, :not_found} = Context.get(s, "a")
  end

  test "the cleaner thread" do
    s = store()
    assert {:error, :not_found} = Context.set_cleaner_interval(s, 1000)
    assert :ok = Context.start_cleaner(s, interval: 60_000, limit: 5)

    assert {:ok, %{context_cleaner: %{running: true, interval_ms: 60_000, limit: 5}}} =
             Store.status(s)

    assert :ok = Context.set_cleaner_interval(s, 30_000)
    assert {:ok, true} = Context.stop_cleaner(s)
    assert {:ok, false} = Context.stop_cleaner(s)
    assert_raise KeyError, fn -> Context.start_cleaner(s, limit: 1) end
  end
end
