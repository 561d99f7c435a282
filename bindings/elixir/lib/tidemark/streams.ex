defmodule Tidemark.Streams do
  @moduledoc """
  Event streams and snapshots, with the shapes of `ExESDBGater.API`.

      {:ok, 1} = Tidemark.Streams.append(store, "order-7", [%{type: "created", data: "{}"},
                                                            %{type: "paid", data: "{}"}], :no_stream)
      {:ok, [%Tidemark.StreamEvent{version: 0}, _]} = Tidemark.Streams.read_forward(store, "order-7")
      {:error, {:wrong_expected_version, 1}} = Tidemark.Streams.append(store, "order-7", events, 0)

  Transient subscriptions push the events of matching streams as they are appended (or
  replay them from a revision), in global revision order, gap-free:

      {:ok, ref} = Tidemark.Streams.subscribe(store, {:prefix, "order-"}, self(), start_revision: 1)

      receive do
        {:tidemark_sub_event, ^ref, %Tidemark.StreamEvent{stream: s, version: v}} -> {s, v}
        {:tidemark_passive, ^ref} -> :ok = Tidemark.Streams.activate(ref, 100)
      end

  An append is one commit: all its events or none (ExESDB's are not atomic). Appending
  events whose ids all equal those of the stream's previous append returns that append's
  version and writes nothing, so a retry after a lost reply duplicates nothing. Stream
  events live in tidemark's own key space: `Tidemark.Sync` with `:all` never shows them.
  """

  alias Tidemark.Store

  @typedoc """
  Which stream events a subscription delivers: every stream's, one stream's, those of the
  streams under a prefix, or those of one event type (`{:stream, name, type}` and
  `{:prefix, p, type}`: of that type only).
  """
  @type stream_selector ::
          :all
          | {:stream, iodata()}
          | {:prefix, iodata()}
          | {:event_type, iodata()}
          | {:stream, iodata(), iodata()}
          | {:prefix, iodata(), iodata()}
  @typedoc "Options of `subscribe/4`, as for `Tidemark.Sync.watch/4`."
  @type subscribe_option ::
          {:start_revision, Tidemark.revision()}
          | {:active, true | :once | pos_integer()}
          | {:max_queue, pos_integer()}
          | {:progress_interval_ms, non_neg_integer()}

  @typedoc "`:any`, `:no_stream`, `:stream_exists` or the exact current version."
  @type expected_version :: :any | :no_stream | :stream_exists | non_neg_integer()
  @typedoc "An event to append: `:type` and `:data` (iodata), optional `:metadata` and `:id` (16 bytes, generated when absent)."
  @type new_event :: %{
          required(:type) => iodata(),
          required(:data) => iodata(),
          optional(:metadata) => iodata(),
          optional(:id) => <<_::128>>
        }

  @doc """
  Appends `events` to `stream` if its version is what `expected` says; returns the
  stream's version after the append (its first event is version 0), or
  `{:error, {:wrong_expected_version, current}}` (-1: no stream).
  """
  @spec append(Tidemark.store(), Tidemark.key(), [new_event], expected_version) ::
          {:ok, non_neg_integer()} | Tidemark.error()
  def append(store, stream, events, expected \\ :any) when is_list(events),
    do: :tidemark.append_events(Store.handle(store), stream, events, expected)

  @doc """
  Up to `count` events (0: all) of `stream` from version `from` on, in `direction`:
  `:forward` in version order, `:backward` down to version 0 (`from` -1: from the last).
  A stream that does not exist is `{:error, :not_found}`.
  """
  @spec read(Tidemark.store(), Tidemark.key(), integer(), non_neg_integer(), :forward | :backward) ::
          {:ok, [Tidemark.StreamEvent.t()]} | Tidemark.error()
  def read(store, stream, from, count, direction) do
    with {:ok, events} <-
           :tidemark.read_stream(Store.handle(store), stream, from, count, direction) do
      {:ok, Enum.map(events, &Map.put(&1, :__struct__, Tidemark.StreamEvent))}
    end
  end

  @doc "`read/5` forward, by default every event from version 0."
  @spec read_forward(Tidemark.store(), Tidemark.key(), non_neg_integer(), non_neg_integer()) ::
          {:ok, [Tidemark.StreamEvent.t()]} | Tidemark.error()
  def read_forward(store, stream, from \\ 0, count \\ 0),
    do: read(store, stream, from, count, :forward)

  @doc "`read/5` backward, by default every event from the last version down."
  @spec read_backward(Tidemark.store(), Tidemark.key(), integer(), non_neg_integer()) ::
          {:ok, [Tidemark.StreamEvent.t()]} | Tidemark.error()
  def read_backward(store, stream, from \\ -1, count \\ 0),
    do: read(store, stream, from, count, :backward)

  @doc "The stream's last version; -1 when it does not exist."
  @spec version(Tidemark.store(), Tidemark.key()) :: {:ok, integer()} | Tidemark.error()
  def version(store, stream), do: :tidemark.stream_version(Store.handle(store), stream)

  @doc """
  One page of `{name, version}` in name order: `{:ok, streams, has_more}`. Options:
  `:prefix` (default `""`), `:after` (exclusive, default `""`: from the first), `:limit`
  (default 0: 1000).
  """
  @spec list(Tidemark.store(),
          prefix: Tidemark.key(),
          after: Tidemark.key(),
          limit: non_neg_integer()
        ) ::
          {:ok, [{binary(), integer()}], boolean()} | Tidemark.error()
  def list(store, opts \\ []) when is_list(opts) do
    :tidemark.list_streams(
      Store.handle(store),
      Keyword.get(opts, :prefix, ""),
      Keyword.get(opts, :after, ""),
      Keyword.get(opts, :limit, 0)
    )
  end

  @doc "Deletes the stream's events and the stream in one commit; returns its revision."
  @spec delete(Tidemark.store(), Tidemark.key()) :: {:ok, Tidemark.revision()} | Tidemark.error()
  def delete(store, stream), do: :tidemark.delete_stream(Store.handle(store), stream)

  @doc "Records `data` as `source`'s snapshot of `stream` at `version` (replacing one at that version)."
  @spec record_snapshot(
          Tidemark.store(),
          Tidemark.key(),
          Tidemark.key(),
          non_neg_integer(),
          iodata()
        ) ::
          {:ok, Tidemark.revision()} | Tidemark.error()
  def record_snapshot(store, source, stream, version, data),
    do: :tidemark.record_snapshot(Store.handle(store), source, stream, version, data)

  @doc """
  The snapshot with the greatest version at or below `max_version` (default: the latest),
  or `{:error, :not_found}`.
  """
  @spec read_snapshot(Tidemark.store(), Tidemark.key(), Tidemark.key(), non_neg_integer()) ::
          {:ok, Tidemark.Snapshot.t()} | Tidemark.error()
  def read_snapshot(store, source, stream, max_version \\ 0xFFFFFFFFFFFFFFFF) do
    with {:ok, snap} <- :tidemark.read_snapshot(Store.handle(store), source, stream, max_version) do
      {:ok, struct!(Tidemark.Snapshot, snap)}
    end
  end

  @doc "Deletes the snapshot at exactly `version`; returns the revision of the delete."
  @spec delete_snapshot(Tidemark.store(), Tidemark.key(), Tidemark.key(), non_neg_integer()) ::
          {:ok, Tidemark.revision()} | Tidemark.error()
  def delete_snapshot(store, source, stream, version),
    do: :tidemark.delete_snapshot(Store.handle(store), source, stream, version)

  @doc "Every snapshot of `stream` by `source`, by version ascending."
  @spec list_snapshots(Tidemark.store(), Tidemark.key(), Tidemark.key()) ::
          {:ok, [Tidemark.Snapshot.t()]} | Tidemark.error()
  def list_snapshots(store, source, stream) do
    with {:ok, snaps} <- :tidemark.list_snapshots(Store.handle(store), source, stream) do
      {:ok, Enum.map(snaps, &struct!(Tidemark.Snapshot, &1))}
    end
  end

  @doc """
  Sends the stream events `selector` matches to `pid` (monitored: the subscription ends
  when it exits) as `{:tidemark_sub_event, ref, body}`, in global revision order,
  gap-free. `body` is a `%Tidemark.StreamEvent{}` (as `read/5` returns it), `{:progress,
  revision}` (with `:progress_interval_ms`), or, last, `{:compacted, earliest}` or
  `:closed`.

  Options as for `Tidemark.Sync.watch/4`: `:start_revision` (0, the default: appended from
  now on; 1: from the beginning; `n`: from revision `n`), `:active` (`true` or `n` /
  `:once`: flow control counted in stream events; `{:tidemark_passive, ref}` then
  `activate/2`), `:max_queue` (past it the subscription reads from the log: a slow
  subscriber loses nothing), `:progress_interval_ms`. A stream name that is empty is
  `{:error, {:invalid_argument, _}}`, one over 1024 bytes `{:error, {:too_large, _}}`; a
  malformed selector raises `ArgumentError`.
  """
  @spec subscribe(Tidemark.store(), stream_selector, pid(), [subscribe_option]) ::
          {:ok, reference()} | Tidemark.error()
  def subscribe(store, selector, pid \\ self(), opts \\ []) when is_pid(pid) and is_list(opts) do
    opts = opts |> Map.new() |> Map.merge(%{pid: pid, struct: Tidemark.StreamEvent})
    :tidemark.subscribe(Store.handle(store), selector, opts)
  end

  @doc """
  Ends a subscription. Once it returns no further message for `ref` is sent (messages
  already in the mailbox stay). `{:error, :not_found}` if it had already ended.
  """
  @spec unsubscribe(Tidemark.store(), reference()) :: :ok | Tidemark.error()
  def unsubscribe(store, ref), do: :tidemark.unsubscribe(Store.handle(store), ref)

  @doc """
  Lets a subscription opened with `active: n` deliver `n` more events (`:once` = 1, `true`
  = no limit from now on): call it when `{:tidemark_passive, ref}` arrives.
  """
  @spec activate(reference(), pos_integer() | :once | true) :: :ok | Tidemark.error()
  def activate(ref, n), do: :tidemark.activate(ref, n)

  @doc """
  A `Stream` of the `%Tidemark.StreamEvent{}`s `selector` matches, subscribed by the
  process that runs it; it behaves as `Tidemark.Sync.watch_stream/3`: paced (`:active`,
  default 100 per grant), it halts when the store is closed and raises
  `Tidemark.CompactedError` when compaction overtakes it (with `end_notice: true` it yields
  `:closed` / `{:compacted, earliest}` last instead); halting it early unsubscribes.

  Options: those of `subscribe/4`, `:end_notice`.
  """
  @spec subscribe_stream(Tidemark.store(), stream_selector, keyword()) :: Enumerable.t()
  def subscribe_stream(store, selector, opts \\ []) when is_list(opts) do
    handle = Store.handle(store)
    open = &subscribe(handle, selector, self(), &1)
    Tidemark.Feed.stream(handle, open, :tidemark_sub_event, Tidemark.StreamEvent, opts)
  end

  @doc """
  ExESDB's `save_subscription/6`: creates the persistent subscription `name` over `selector`
  as `type` says (`:by_stream` with a stream name, or `"$all"` for every stream;
  `:by_event_type` with a type), from revision `start_from` (0: from the beginning), and
  connects `subscriber` when one is given (then `{:ok, sub}`, see
  `Tidemark.Subscription.connect/4`). ExESDB's transient name `"transient"` has no meaning
  here: use `subscribe/4`. Other types raise `ArgumentError`.
  """
  @spec save_subscription(
          Tidemark.store(),
          :by_stream | :by_event_type,
          String.t(),
          Tidemark.key(),
          Tidemark.revision(),
          pid() | nil
        ) :: :ok | {:ok, Tidemark.Subscription.t()} | Tidemark.error()
  def save_subscription(store, type, selector, name, start_from \\ 0, subscriber \\ nil) do
    start = if start_from == 0, do: :beginning, else: start_from
    opts = [selector: exesdb_selector(type, selector), start: start]

    with :ok <- Tidemark.Subscription.create(store, name, opts) do
      if subscriber, do: Tidemark.Subscription.connect(store, name, subscriber), else: :ok
    end
  end

  @doc """
  ExESDB's `remove_subscription/4`: deletes the persistent subscription `name` (`type` and
  `selector` are checked for shape only; the name alone identifies it here).
  """
  @spec remove_subscription(
          Tidemark.store(),
          :by_stream | :by_event_type,
          String.t(),
          Tidemark.key()
        ) ::
          :ok | Tidemark.error()
  def remove_subscription(store, type, selector, name) do
    _ = exesdb_selector(type, selector)
    Tidemark.Subscription.delete(store, name)
  end

  @doc "ExESDB's `get_subscriptions/1`: `Tidemark.Subscription.list/1`."
  @spec get_subscriptions(Tidemark.store()) ::
          {:ok, [Tidemark.SubscriptionInfo.t()]} | Tidemark.error()
  def get_subscriptions(store), do: Tidemark.Subscription.list(store)

  @doc """
  Acks deliveries (`Tidemark.Subscription.ack/2`). ExESDB's `ack_event(store, name, pid,
  event)` names the consumer by subscription and pid; here the consumer's handle does.
  """
  @spec ack_event(Tidemark.Subscription.t(), Tidemark.Delivery.t() | [Tidemark.Delivery.t()]) ::
          :ok | Tidemark.error()
  def ack_event(sub, deliveries), do: Tidemark.Subscription.ack(sub, deliveries)

  defp exesdb_selector(:by_stream, "$all"), do: :all
  defp exesdb_selector(:by_stream, stream) when is_binary(stream), do: {:stream, stream}
  defp exesdb_selector(:by_event_type, type) when is_binary(type), do: {:event_type, type}

  defp exesdb_selector(type, selector),
    do: raise(ArgumentError, "unsupported subscription #{inspect(type)} #{inspect(selector)}")
end

defmodule Tidemark.StreamEvent do
  @moduledoc "An event of a stream, as `Tidemark.Streams.read/5` returns it and a subscription pushes it."
  @enforce_keys [:stream, :id, :type, :data, :metadata, :version, :revision, :timestamp_ms]
  defstruct @enforce_keys

  @typedoc "`version` is the event's place in its stream (from 0), `revision` its commit's in the store's log."
  @type t :: %__MODULE__{
          stream: binary(),
          id: <<_::128>>,
          type: binary(),
          data: binary(),
          metadata: binary(),
          version: non_neg_integer(),
          revision: Tidemark.revision(),
          timestamp_ms: non_neg_integer()
        }
end

defmodule Tidemark.Snapshot do
  @moduledoc "A recorded snapshot (`Tidemark.Streams.read_snapshot/4`)."
  @enforce_keys [:source, :stream, :version, :revision, :timestamp_ms, :data]
  defstruct @enforce_keys

  @type t :: %__MODULE__{
          source: binary(),
          stream: binary(),
          version: non_neg_integer(),
          revision: Tidemark.revision(),
          timestamp_ms: non_neg_integer(),
          data: binary()
        }
end
