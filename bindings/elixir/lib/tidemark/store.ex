defmodule Tidemark.Store do
  @moduledoc """
  Stores, named stores, keys and batches.

      {:ok, store} = Tidemark.Store.open(:memory)
      {:ok, 1} = Tidemark.Store.put(store, "/tasks/1", "todo")
      {:ok, %Tidemark.KV{value: "todo", version: 1}} = Tidemark.Store.get(store, "/tasks/1")
      {:error, {:conflict, 1}} = Tidemark.Store.put(store, "/tasks/1", "x", expected_mod_revision: 0)
      {:ok, 2} = Tidemark.Store.batch(store, [{:put, "/tasks/2", "a"}, {:delete, "/tasks/1"}])
      :ok = Tidemark.Store.close(store)

  Named stores (ExESDB's `store` atoms): `open(:memory, name: :orders)` registers the store
  for the whole node, and every function of this package then accepts `:orders` where it
  takes a store. A name that is not registered raises `ArgumentError`.

  A store handle is owned by the garbage collector: a store nobody references is closed
  (its watches get `:closed`). A named store is referenced by its registration until
  `close/1`.
  """

  @typedoc "A store handle."
  @type t :: :tidemark.store()
  @typedoc "The name of a named store."
  @type name :: atom() | String.t()
  @type batch_op ::
          {:put, Tidemark.key(), iodata()}
          | {:delete, Tidemark.key()}
          | {:require, Tidemark.key(), Tidemark.revision()}

  @doc """
  Opens a store: `:memory`, or a directory path for a durable store (a directory that is
  already open gives `{:error, {:locked, msg}}`).

  Options: `:name` registers the store under that name (`{:error, :already_registered}` if
  an open store has it); every other option is a store option of the C API (`:sync`,
  `:sync_interval_ms`, `:dispatch_threads`, `:max_key_size`, `:max_value_size`,
  `:delta_threshold`, `:context_ttl_ms`, ...), see docs/abi.md.
  """
  @spec open(:memory | Path.t(), keyword()) :: {:ok, t} | Tidemark.error()
  def open(path, opts \\ []) when is_list(opts) do
    {name, store_opts} = Keyword.pop(opts, :name)

    case name do
      nil -> :tidemark.open(path, Map.new(store_opts))
      _ -> :tidemark.open_named(name, path, Map.new(store_opts))
    end
  end

  @doc """
  Closes a store (a handle or a name: then the name is released too). Every watch gets
  `:closed` and ends. Closing a handle twice is `:ok`; an unknown name is
  `{:error, :not_found}`.
  """
  @spec close(t | name) :: :ok | {:error, :not_found}
  def close(name) when is_atom(name) or is_binary(name), do: :tidemark.close_named(name)
  def close(store), do: :tidemark.close(store)

  @doc "The open store registered under `name`."
  @spec whereis(name) :: {:ok, t} | {:error, :not_found}
  def whereis(name), do: :tidemark.whereis_store(name)

  @doc "The names of the open named stores, sorted (as binaries)."
  @spec names() :: [String.t()]
  def names, do: :tidemark.stores()

  @doc """
  The handle of `store`: a handle is returned as it is, a name is looked up
  (`ArgumentError` when no open store has it).
  """
  @spec handle(Tidemark.store()) :: t
  def handle(store) when is_reference(store), do: store

  def handle(name) when is_atom(name) or is_binary(name) do
    case :tidemark.whereis_store(name) do
      {:ok, store} -> store
      {:error, :not_found} -> raise ArgumentError, "no open tidemark store named #{inspect(name)}"
    end
  end

  def handle(other), do: raise(ArgumentError, "not a tidemark store: #{inspect(other)}")

  @doc """
  Sets `key` to `value`; returns the new revision. With `expected_mod_revision: n` only if
  the key's mod_revision is `n` (0: the key must not exist), else
  `{:error, {:conflict, current}}`. Keys starting with the byte 0 are tidemark's own
  (`{:error, {:invalid_argument, _}}`).
  """
  @spec put(Tidemark.store(), Tidemark.key(), iodata(), expected_mod_revision: Tidemark.revision()) ::
          {:ok, Tidemark.revision()} | Tidemark.error()
  def put(store, key, value, opts \\ []) when is_list(opts),
    do: :tidemark.put(handle(store), key, value, Map.new(opts))

  @doc "The key's value and revisions, or `{:error, :not_found}`."
  @spec get(Tidemark.store(), Tidemark.key()) :: {:ok, Tidemark.KV.t()} | Tidemark.error()
  def get(store, key) do
    with {:ok, entry} <- :tidemark.get(handle(store), key) do
      {:ok, struct!(Tidemark.KV, Map.put(entry, :key, IO.iodata_to_binary(key)))}
    end
  end

  @doc "Deletes `key`; returns the delete's revision. A missing key is `{:error, :not_found}`."
  @spec delete(Tidemark.store(), Tidemark.key()) :: {:ok, Tidemark.revision()} | Tidemark.error()
  def delete(store, key), do: :tidemark.delete(handle(store), key)

  @doc """
  Applies `ops` atomically at consecutive revisions, all or nothing; returns the first
  write's revision (0 if there were only requirements). `{:require, key, rev}` demands that
  the key's mod_revision is `rev` (0: it must not exist), else `{:error, {:conflict, current}}`.
  """
  @spec batch(Tidemark.store(), [batch_op]) :: {:ok, Tidemark.revision()} | Tidemark.error()
  def batch(store, ops) when is_list(ops), do: :tidemark.batch(handle(store), ops)

  @doc """
  The current keys matching `selector`, in byte order: `{:ok, entries, has_more}`.
  Option `:limit` (default 0: all).
  """
  @spec range(Tidemark.store(), Tidemark.selector(), limit: non_neg_integer()) ::
          {:ok, [Tidemark.KV.t()], has_more :: boolean()} | Tidemark.error()
  def range(store, selector \\ :all, opts \\ []) when is_list(opts) do
    case :tidemark.range(handle(store), selector, Keyword.get(opts, :limit, 0)) do
      {:ok, %{entries: entries, has_more: more}} ->
        {:ok, Enum.map(entries, &Map.put(&1, :__struct__, Tidemark.KV)), more}

      error ->
        error
    end
  end

  @doc "The store's state: `:revision`, `:earliest_revision`, `:keys`, `:watchers`, ..."
  @spec status(Tidemark.store()) :: {:ok, map()} | Tidemark.error()
  def status(store), do: :tidemark.status(handle(store))

  @doc "The revision of the last write (0 for an empty store)."
  @spec current_revision(Tidemark.store()) :: Tidemark.revision() | {:error, :closed}
  def current_revision(store), do: :tidemark.current_revision(handle(store))

  @doc """
  What opening a directory store cut off the end of its log (a torn tail): `:none` or
  `%{bytes:, commits:, revisions:, first_revision:}`.
  """
  @spec tail_repair(Tidemark.store()) :: :none | map() | Tidemark.error()
  def tail_repair(store), do: :tidemark.tail_repair(handle(store))

  @doc """
  Sets the store's clock, from which every timestamp and TTL comes: `{:manual, ms}` installs
  a clock that only `advance_clock/2` moves (tests use it instead of sleeping); `:system`
  goes back to the system clock.
  """
  @spec set_clock(Tidemark.store(), {:manual, non_neg_integer()} | :system) ::
          :ok | Tidemark.error()
  def set_clock(store, clock), do: :tidemark.set_clock(handle(store), clock)

  @doc "Moves the manual clock forward by `ms`; returns its new time."
  @spec advance_clock(Tidemark.store(), non_neg_integer()) ::
          {:ok, non_neg_integer()} | Tidemark.error()
  def advance_clock(store, ms), do: :tidemark.advance_clock(handle(store), ms)
end
