defmodule Tidemark.Tracker do
  @moduledoc """
  Tracker groups, with the shapes of `reckon_db_tracker_group`: processes join the group of
  a feature of a store and are told when an instance of it is created, updated or deleted.

      :ok = Tidemark.Tracker.join(store, :streams, self())
      {:ok, 0} = Tidemark.Streams.append(store, "order-7", [%{type: "created", data: "{}"}])

      receive do
        {:feature_created, :streams, %{id: "order-7", revision: _, data: json}} -> json
      end

  Features: `:streams`, `:snapshots`, `:contexts`, `:keys` (every user key),
  `"keys/<prefix>"` (the user keys under a prefix), or any other name, a user feature that
  `notify/5` reports on. Unlike reckon_db's, every built-in feature notifies, not only
  subscriptions. Messages, in revision order:

    * `{:feature_created | :feature_updated | :feature_deleted, feature, %{id:, revision:, data:}}`
      (`data` is JSON text: `decode_data/1`);
    * `{:feature_tracker_ended, feature, {:compacted, earliest} | :closed}` when the group's
      tracker ends by itself.

  Members are monitored: one that exits leaves, and the group ends with its last member.
  """

  alias Tidemark.Store

  @type feature :: atom() | String.t()
  @type pids :: pid() | [pid()]

  @doc """
  Joins `pids` to the group of `feature`. Option `:start_revision` (default 0: from now)
  replays the feature's history from that revision when the group is new.
  """
  @spec join(Tidemark.store(), feature, pids, start_revision: Tidemark.revision()) ::
          :ok | Tidemark.error()
  def join(store, feature, pids, opts \\ []) when is_list(opts),
    do: :tidemark.join(Store.handle(store), feature, pids, Map.new(opts))

  @doc "Removes `pids` from the group; no further notification reaches them once it returns."
  @spec leave(Tidemark.store(), feature, pids) :: :ok
  def leave(store, feature, pids), do: :tidemark.leave(Store.handle(store), feature, pids)

  @doc "The member processes of the group of `feature` (`[]` when there is none)."
  @spec members(Tidemark.store(), feature) :: [pid()]
  def members(store, feature), do: :tidemark.members(Store.handle(store), feature)

  @doc """
  Tells the trackers of the user feature `feature` that `id` was `action`ed, with `data` (a
  map, or JSON text): one commit, replayed to groups that start at or before it.
  """
  @spec notify(Tidemark.store(), feature, :created | :updated | :deleted, Tidemark.key(), term()) ::
          {:ok, Tidemark.revision()} | Tidemark.error()
  def notify(store, feature, action, id, data),
    do: :tidemark.notify(Store.handle(store), feature, action, id, data)

  @doc "`notify/5` with `:created`."
  @spec notify_created(Tidemark.store(), feature, Tidemark.key(), term()) ::
          {:ok, Tidemark.revision()} | Tidemark.error()
  def notify_created(store, feature, id, data), do: notify(store, feature, :created, id, data)

  @doc "`notify/5` with `:updated`."
  @spec notify_updated(Tidemark.store(), feature, Tidemark.key(), term()) ::
          {:ok, Tidemark.revision()} | Tidemark.error()
  def notify_updated(store, feature, id, data), do: notify(store, feature, :updated, id, data)

  @doc "`notify/5` with `:deleted`."
  @spec notify_deleted(Tidemark.store(), feature, Tidemark.key(), term()) ::
          {:ok, Tidemark.revision()} | Tidemark.error()
  def notify_deleted(store, feature, id, data), do: notify(store, feature, :deleted, id, data)

  @doc """
  Decodes the `data` of a notification (JSON text): objects become maps with string keys,
  arrays lists, JSON null `:null`, as `Tidemark.Context` returns documents.
  """
  @spec decode_data(binary()) :: term()
  def decode_data(json) when is_binary(json), do: :tidemark_json.decode(json, :binary)
end
