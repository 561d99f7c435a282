defmodule Tidemark.StoreTest do
  use ExUnit.Case, async: true
  import TidemarkTest.Helpers
  alias Tidemark.{KV, Store}

  test "version" do
    assert Tidemark.version() =~ ~r/^\d+\.\d+\.\d+/
  end

  test "open, close, options" do
    {:ok, s} = Store.open(:memory, dispatch_threads: 1, max_value_size: 4)
    assert {:ok, 1} = Store.put(s, "k", "1234")
    assert {:error, {:too_large, _}} = Store.put(s, "k", "12345")
    assert :ok = Store.close(s)
    assert :ok = Store.close(s)
    assert {:error, :closed} = Store.put(s, "k", "v")
    assert {:error, :closed} = Store.get(s, "k")
    assert {:error, {:invalid_argument, _}} = Store.open(:memory, no_such_option: 1)
  end

  test "a durable store keeps its data and is locked while open" do
    dir = Path.join(System.tmp_dir!(), "tidemark_ex_#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf!(dir) end)
    {:ok, s} = Store.open(dir, sync: "always")
    {:ok, 1} = Store.put(s, "k", "v")
    assert {:error, {:locked, _}} = Store.open(dir)
    assert Store.tail_repair(s) == :none
    :ok = Store.close(s)
    {:ok, s} = Store.open(String.to_charlist(dir))
    assert {:ok, %KV{value: "v", mod_revision: 1}} = Store.get(s, "k")
    :ok = Store.close(s)
  end

  test "put, get, delete, conditional put" do
    s = store()
    assert {:ok, 1} = Store.put(s, "/tasks/1", "todo")
    assert {:ok, 2} = Store.put(s, ["/tasks/", "1"], "done")

    assert {:ok,
            %KV{key: "/tasks/1", value: "done", create_revision: 1, mod_revision: 2, version: 2}} =
             Store.get(s, "/tasks/1")

    assert {:error, {:conflict, 2}} = Store.put(s, "/tasks/1", "x", expected_mod_revision: 1)
    assert {:error, {:conflict, 2}} = Store.put(s, "/tasks/1", "x", expected_mod_revision: 0)
    assert {:ok, 3} = Store.put(s, "/tasks/1", "x", expected_mod_revision: 2)
    assert {:ok, 4} = Store.put(s, "/tasks/2", "y", expected_mod_revision: 0)
    assert {:ok, 5} = Store.delete(s, "/tasks/1")
    assert {:error, :not_found} = Store.delete(s, "/tasks/1")
    assert {:error, :not_found} = Store.get(s, "/tasks/1")
    # Keys starting with byte 0 are tidemark's own.
    assert {:error, {:invalid_argument, _}} = Store.put(s, <<0, "s/x">>, "v")
    assert Store.current_revision(s) == 5
    assert_raise ArgumentError, fn -> Store.put(s, "k", "v", bogus: 1) end
  end

  test "batch is atomic and all or nothing" do
    s = store()
    assert {:ok, 1} = Store.batch(s, [{:put, "a", "1"}, {:put, "b", "2"}])
    assert {:ok, 3} = Store.batch(s, [{:require, "a", 1}, {:delete, "b"}, {:put, "c", "3"}])
    assert {:error, {:conflict, 1}} = Store.batch(s, [{:put, "d", "x"}, {:require, "a", 7}])
    assert {:error, :not_found} = Store.get(s, "d")
    assert {:ok, 0} = Store.batch(s, [{:require, "a", 1}])
    assert Store.current_revision(s) == 4
    assert_raise ArgumentError, fn -> Store.batch(s, [{:put, "a"}]) end
    assert Store.current_revision(s) == 4
  end

  test "range" do
    s = store()
    put_n(s, "k", 3)
    {:ok, _} = Store.put(s, "other", "x")

    assert {:ok, [%KV{key: "k1"}, %KV{key: "k2"}, %KV{key: "k3"}], false} =
             Store.range(s, {:prefix, "k"})

    assert {:ok, [%KV{key: "k1"}], true} = Store.range(s, {:prefix, "k"}, limit: 1)
    assert {:ok, [%KV{key: "k2"}, %KV{key: "k3"}], false} = Store.range(s, {:range, "k2", "k4"})
    assert {:ok, [_, _, %KV{key: "other"}], false} = Store.range(s, {:range, "k2", :infinity})
    assert {:ok, all, false} = Store.range(s)
    assert length(all) == 4
  end

  test "status" do
    s = store()
    put_n(s, "k", 2)
    assert {:ok, %{revision: 2, keys: 2, watchers: 0}} = Store.status(s)
  end

  test "named stores" do
    {:ok, s} = Store.open(:memory, name: :tidemark_ex_orders)
    assert {:ok, ^s} = Store.whereis(:tidemark_ex_orders)
    assert {:ok, ^s} = Store.whereis("tidemark_ex_orders")
    assert "tidemark_ex_orders" in Store.names()
    assert {:error, :already_registered} = Store.open(:memory, name: :tidemark_ex_orders)
    # Every function takes the name where it takes a store.
    assert {:ok, 1} = Store.put(:tidemark_ex_orders, "k", "v")
    assert {:ok, %KV{value: "v"}} = Store.get("tidemark_ex_orders", "k")
    assert {:ok, %Tidemark.Changes{events: [_]}} = Tidemark.Sync.changes(:tidemark_ex_orders, 1)
    assert :ok = Store.close(:tidemark_ex_orders)
    assert {:error, :not_found} = Store.close(:tidemark_ex_orders)
    assert {:error, :not_found} = Store.whereis(:tidemark_ex_orders)
    assert {:error, :closed} = Store.get(s, "k")

    assert_raise ArgumentError, ~r/no open tidemark store/, fn ->
      Store.get(:tidemark_ex_orders, "k")
    end

    assert_raise ArgumentError, fn -> Store.get(42, "k") end
  end

  test "manual clock" do
    s = store()
    assert :ok = Store.set_clock(s, {:manual, 1000})
    assert {:ok, 1500} = Store.advance_clock(s, 500)
    assert :ok = Store.set_clock(s, :system)
    assert_raise ArgumentError, fn -> Store.set_clock(s, :bogus) end
  end
end
