defmodule Tidemark.Context do
  @moduledoc """
  Versioned contexts with deltas, with the shapes of `Chord`.

      {:ok, %{context: ctx, delta: delta, version: 1}} = Tidemark.Context.set(store, "call:123", %{status: "active"})
      {:ok, %{context: _, version: 2}} = Tidemark.Context.update(store, "call:123", %{status: "ended"})

      case Tidemark.Context.sync(store, "call:123", client_version) do
        {:full_context, %{context: ctx, version: v}} -> send_full(ctx, v)
        {:delta, %{delta: patch, version: v}} -> send_delta(patch, v)
        {:no_change, v} -> :up_to_date
      end

  Documents are maps; they come back with string keys (JSON), atom keys and `nil` are
  accepted as input. A delta is an RFC 6902 JSON Patch (a list of operation maps);
  `update/3` takes an RFC 7386 merge patch (`nil` removes a field).

  Unlike Chord, `sync/3` serves a delta only when the retained deltas turn exactly the
  client's version into the current one (otherwise the full context), and concurrent
  updates each get their own version: none is lost. Thresholds and TTLs are store options
  (`:delta_threshold`, `:delta_ttl_ms`, `:context_ttl_ms`, `:context_auto_delete`) read by
  the store's clock (`Tidemark.Store.set_clock/2`).
  """

  alias Tidemark.Store

  @type id :: Tidemark.key()
  @type document :: map()
  @type json_patch :: [map()]
  @typedoc "What a write returns (Chord's `%{context:, delta:}` plus the version and revision)."
  @type write_result :: %{
          context: document,
          delta: json_patch,
          version: pos_integer(),
          revision: Tidemark.revision()
        }
  @typedoc "A stored context (Chord's `get_context` map; times by the store clock, in ms)."
  @type record :: %{
          context_id: binary(),
          context: document,
          version: pos_integer(),
          created_ms: non_neg_integer(),
          updated_ms: non_neg_integer(),
          revision: Tidemark.revision()
        }
  @type delta_record :: %{
          version: pos_integer(),
          timestamp_ms: non_neg_integer(),
          patch: json_patch
        }
  @type list_option ::
          {:limit, non_neg_integer()} | {:offset, non_neg_integer()} | {:order, :asc | :desc}

  @doc """
  Replaces the context `id` with `document` (a map, or JSON object text). The first write
  is version 1; a document equal to the current one writes nothing (`delta: []`,
  `revision: 0`).
  """
  @spec set(Tidemark.store(), id, document | binary()) :: {:ok, write_result} | Tidemark.error()
  def set(store, id, document),
    do: write(:tidemark.context_set(Store.handle(store), id, document))

  @doc "Applies the merge patch `changes` to the context `id` (an absent one is `%{}`)."
  @spec update(Tidemark.store(), id, document | binary()) ::
          {:ok, write_result} | Tidemark.error()
  def update(store, id, changes),
    do: write(:tidemark.context_update(Store.handle(store), id, changes))

  @doc "The context `id`, or `{:error, :not_found}`."
  @spec get(Tidemark.store(), id) :: {:ok, record} | Tidemark.error()
  def get(store, id) do
    with {:ok, record} <- :tidemark.context_get(Store.handle(store), id),
         do: {:ok, record(record)}
  end

  @doc "Deletes the context and all its deltas in one commit; returns its revision."
  @spec delete(Tidemark.store(), id) :: {:ok, Tidemark.revision()} | Tidemark.error()
  def delete(store, id), do: :tidemark.context_delete(Store.handle(store), id)

  @doc """
  What a client at `client_version` (`nil` or below 1: it has nothing) needs to reach the
  current version `v`: `{:no_change, v}`, `{:delta, %{context_id:, delta:, version: v}}`
  (one patch that turns exactly the client's version into `v`) or
  `{:full_context, %{context_id:, context:, version: v}}` whenever the retained deltas
  cannot do that exactly (too old, pruned, expired, unknown or a future version).
  """
  @spec sync(Tidemark.store(), id, integer() | nil) ::
          {:full_context, %{context_id: binary(), context: document, version: pos_integer()}}
          | {:delta, %{context_id: binary(), delta: json_patch, version: pos_integer()}}
          | {:no_change, pos_integer()}
          | Tidemark.error()
  def sync(store, id, client_version) do
    case :tidemark.context_sync(Store.handle(store), id, client_version) do
      {:full_context, doc, v} -> {:full_context, %{context_id: bin(id), context: doc, version: v}}
      {:delta, patch, v} -> {:delta, %{context_id: bin(id), delta: patch, version: v}}
      other -> other
    end
  end

  @doc "Contexts in id order (`get/2`'s maps). Options `:limit` (0: 1000), `:offset`, `:order`."
  @spec list(Tidemark.store(), [list_option]) :: {:ok, [record]} | Tidemark.error()
  def list(store, opts \\ []) when is_list(opts) do
    with {:ok, records} <- :tidemark.context_list(Store.handle(store), Map.new(opts)) do
      {:ok, Enum.map(records, &record/1)}
    end
  end

  @doc "The retained deltas of `id` by version. Options as for `list/2` (`:limit` 0: all)."
  @spec deltas(Tidemark.store(), id, [list_option]) :: {:ok, [delta_record]} | Tidemark.error()
  def deltas(store, id, opts \\ []) when is_list(opts),
    do: :tidemark.context_deltas(Store.handle(store), id, Map.new(opts))

  @doc """
  One cleanup pass by the store's clock (expired contexts with `:context_auto_delete`,
  expired deltas), changing at most `:limit` contexts (default 0: no limit). Returns
  `{:ok, {contexts_deleted, deltas_deleted}}`.
  """
  @spec cleanup(Tidemark.store(), limit: non_neg_integer()) ::
          {:ok, {non_neg_integer(), non_neg_integer()}} | Tidemark.error()
  def cleanup(store, opts \\ []) when is_list(opts),
    do: :tidemark.context_cleanup(Store.handle(store), Keyword.get(opts, :limit, 0))

  @doc """
  Starts the store's cleanup thread (Chord's cleanup server): a `cleanup/2` pass every
  `:interval` ms (required), at most `:limit` contexts each, until `stop_cleaner/1` or close.
  When it runs already, sets its interval and limit.
  """
  @spec start_cleaner(Tidemark.store(), interval: pos_integer(), limit: non_neg_integer()) ::
          :ok | Tidemark.error()
  def start_cleaner(store, opts) when is_list(opts),
    do:
      :tidemark.context_cleaner_start(
        Store.handle(store),
        Keyword.fetch!(opts, :interval),
        Keyword.get(opts, :limit, 0)
      )

  @doc "Changes the running cleanup thread's interval; `{:error, :not_found}` when none runs."
  @spec set_cleaner_interval(Tidemark.store(), pos_integer()) :: :ok | Tidemark.error()
  def set_cleaner_interval(store, interval_ms),
    do: :tidemark.context_cleaner_set_interval(Store.handle(store), interval_ms)

  @doc "Stops the cleanup thread and waits for it: `{:ok, was_running}`."
  @spec stop_cleaner(Tidemark.store()) :: {:ok, boolean()} | Tidemark.error()
  def stop_cleaner(store), do: :tidemark.context_cleaner_stop(Store.handle(store))

  defp write({:ok, %{document: doc} = result}),
    do: {:ok, result |> Map.delete(:document) |> Map.put(:context, doc)}

  defp write(error), do: error

  defp record(%{id: id, document: doc} = record),
    do: record |> Map.drop([:id, :document]) |> Map.merge(%{context_id: id, context: doc})

  defp bin(id), do: IO.iodata_to_binary(id)
end
