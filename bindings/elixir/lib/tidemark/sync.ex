defmodule Tidemark.Sync do
  @moduledoc """
  The revision log and its watches, with the shapes of `Concord.Sync`.

  Pull what changed (`changes/4`), or be pushed every change as a message (`watch/4`):

      {:ok, ref} = Tidemark.Sync.watch(store, {:prefix, "/tasks/"}, self(), active: 100)

      receive do
        {:tidemark_event, ^ref, %Tidemark.Event{type: :put, key: k, value: v}} -> {k, v}
        {:tidemark_event, ^ref, {:compacted, earliest}} -> resync_from(earliest)
        {:tidemark_event, ^ref, :closed} -> :store_closed
        {:tidemark_passive, ^ref} -> :ok = Tidemark.Sync.activate(ref, 100)
      end

  Watch messages, all `{:tidemark_event, ref, body}`:

    * `%Tidemark.Event{}`: one change, in revision order, gap-free;
    * `{:progress, revision}`: everything up to `revision` has been seen (only with
      `:progress_interval_ms`);
    * `{:compacted, earliest}`: compaction removed revisions the watch had not delivered
      yet; the watch has ended;
    * `:closed`: the store was closed; the watch has ended.

  Unlike Concord, a watch that falls behind loses nothing: past `:max_queue` it reads from
  the log instead of its queue. Flow control is `{active, N}` as on sockets: with
  `active: n` the watch delivers `n` events (plus the rest of a commit it started), sends
  `{:tidemark_passive, ref}` and waits, the rest kept in the store, until `activate/2`.
  """

  alias Tidemark.Store

  @type watch_ref :: reference()
  @type watch_option ::
          {:start_revision, Tidemark.revision()}
          | {:active, true | :once | pos_integer()}
          | {:max_queue, pos_integer()}
          | {:progress_interval_ms, non_neg_integer()}
  @type notice :: {:progress, Tidemark.revision()} | {:compacted, Tidemark.revision()} | :closed

  @doc """
  The changes with revision in `[from, to]` (`to` 0: up to the current revision),
  ascending. Options: `:limit` (default 1000; a commit is never split), `:selector`
  (default `:all`).

  A range that compaction has cut is `{:error, {:compacted, earliest}}`, never a silently
  partial list; `from` beyond the current revision + 1 is `{:error, {:future_revision, current}}`.
  """
  @spec changes(Tidemark.store(), Tidemark.revision(), Tidemark.revision(),
          limit: pos_integer(),
          selector: Tidemark.selector()
        ) :: {:ok, Tidemark.Changes.t()} | Tidemark.error()
  def changes(store, from, to \\ 0, opts \\ []) when is_list(opts) do
    case :tidemark.changes(Store.handle(store), from, to, Map.new(opts)) do
      {:ok, %{events: events, has_more: more, next_revision: next}} ->
        {:ok,
         %Tidemark.Changes{
           events: Enum.map(events, &Map.put(&1, :__struct__, Tidemark.Event)),
           has_more: more,
           next_revision: next
         }}

      error ->
        error
    end
  end

  @doc """
  Drops log entries below `keep_revision`; returns how many. Every key's current state is
  kept. A watch that had not delivered a dropped event it matches ends with
  `{:compacted, earliest}`.
  """
  @spec compact(Tidemark.store(), Tidemark.revision()) ::
          {:ok, non_neg_integer()} | Tidemark.error()
  def compact(store, keep_revision), do: :tidemark.compact(Store.handle(store), keep_revision)

  @doc "The earliest revision still in the log."
  @spec earliest_revision(Tidemark.store()) :: Tidemark.revision() | {:error, :closed}
  def earliest_revision(store), do: :tidemark.earliest_revision(Store.handle(store))

  @doc """
  Sends every change matching `selector` to `pid` as `{:tidemark_event, ref, body}`
  (see the module doc). `pid` is monitored: the watch ends when it exits.

  Options: `:start_revision` (0, the default: only changes after this call; `n`: replay
  from `n`), `:active` (`true`, the default, or `n` / `:once`: flow control, see
  `activate/2`), `:max_queue` (events held in memory before the watch reads from the log;
  default 1000), `:progress_interval_ms`.
  """
  @spec watch(Tidemark.store(), Tidemark.selector(), pid(), [watch_option]) ::
          {:ok, watch_ref} | Tidemark.error()
  def watch(store, selector, pid \\ self(), opts \\ []) when is_pid(pid) and is_list(opts) do
    opts = opts |> Map.new() |> Map.merge(%{pid: pid, struct: Tidemark.Event})
    :tidemark.watch(Store.handle(store), selector, opts)
  end

  @doc """
  Ends a watch. Once it returns no further message for `ref` is sent (messages already in
  the mailbox stay). `{:error, :not_found}` if the watch had already ended.
  """
  @spec unwatch(Tidemark.store(), watch_ref) :: :ok | Tidemark.error()
  def unwatch(store, ref), do: :tidemark.unwatch(Store.handle(store), ref)

  @doc """
  Lets a watch opened with `active: n` deliver `n` more events (`:once` = 1, `true` = no
  limit from now on). Call it when `{:tidemark_passive, ref}` arrives.
  """
  @spec activate(watch_ref, pos_integer() | :once | true) :: :ok | Tidemark.error()
  def activate(ref, n), do: :tidemark.activate(ref, n)

  @doc "How many watches have not ended."
  @spec watcher_count(Tidemark.store()) :: non_neg_integer() | {:error, :closed}
  def watcher_count(store), do: :tidemark.watcher_count(Store.handle(store))

  @doc """
  A `Stream` of the changes matching `selector`, watched by the process that runs it.

  It yields `%Tidemark.Event{}`s and, unlike Concord's, it ends: when the store is closed
  (the stream halts), or when compaction overtakes it or its `:start_revision` was already
  compacted (it raises `Tidemark.CompactedError`, or, with `end_notice: true`, yields
  `:closed` / `{:compacted, earliest}` as its last element instead). The watch is paced
  (`:active`, default 100 events per grant), so a slow consumer's mailbox stays bounded;
  halting the stream early (`Enum.take/2`) ends the watch and drops its messages left in
  the mailbox. A store closed while the stream waits for its next grant ends it without
  the events not granted yet (as for any paced watch).

  Options: `:start_revision`, `:max_queue` as for `watch/4`, `:active`, `:end_notice`.
  """
  @spec watch_stream(Tidemark.store(), Tidemark.selector(), keyword()) :: Enumerable.t()
  def watch_stream(store, selector, opts \\ []) when is_list(opts) do
    handle = Store.handle(store)
    open = &watch(handle, selector, self(), &1)
    Tidemark.Feed.stream(handle, open, :tidemark_event, Tidemark.Event, opts)
  end
end
