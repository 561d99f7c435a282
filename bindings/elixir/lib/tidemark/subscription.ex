defmodule Tidemark.Subscription do
  @moduledoc """
  Persistent subscriptions: durable, named, shared by competing consumers, with ack, retry
  and parking (ExESDB's persistent subscriptions; `Tidemark.Streams.save_subscription/6`
  and friends are the same calls in ExESDB's shapes).

      :ok = Tidemark.Subscription.create(store, "billing", selector: {:prefix, "order-"})
      {:ok, sub} = Tidemark.Subscription.connect(store, "billing")

      receive do
        {:tidemark_sub_event, ^sub, %Tidemark.Delivery{} = d} -> :ok = Tidemark.Subscription.ack(sub, d)
        {:tidemark_sub_passive, ^sub} -> :ok = Tidemark.Subscription.activate(sub, 100)
        {:tidemark_sub_event, ^sub, ended} -> ended # :deleted | :closed | {:compacted, e} | {:error, r}
      end

  The subscription (its definition, checkpoint and parked events) is in the store: a
  consumer that reconnects, after a crash or a restart, gets every event not acked yet.
  Consumers of one subscription share its events (round robin, or by stream when
  `pinned: true`); one that exits is disconnected and its unacked events go to the others.
  An event not acked within `:message_timeout_ms` (by the store clock) is delivered again;
  after `:max_retry` deliveries it is parked.
  """

  alias Tidemark.Store

  @typedoc "A connected consumer (`connect/4`)."
  @type t :: :tidemark.sub_ref()
  @type create_option ::
          {:selector, Tidemark.Streams.stream_selector()}
          | {:start, :beginning | :end | Tidemark.revision()}
          | {:max_in_flight, pos_integer()}
          | {:message_timeout_ms, pos_integer()}
          | {:max_retry, pos_integer()}
          | {:pinned, boolean()}

  @doc """
  Creates the subscription `name` (1 to 1024 bytes) in one commit. Options: `:selector` (as
  for `Tidemark.Streams.subscribe/4`, default `:all`), `:start` (`:beginning`, the default,
  `:end`, or a revision), `:max_in_flight` (unacked events per consumer, default 100),
  `:message_timeout_ms` (default 30000), `:max_retry` (deliveries before parking, default
  10), `:pinned` (each stream's events to one consumer, in order; default false). A name in
  use is `{:error, {:conflict, _}}`.
  """
  @spec create(Tidemark.store(), Tidemark.key(), [create_option]) :: :ok | Tidemark.error()
  def create(store, name, opts \\ []) when is_list(opts),
    do: :tidemark.subscription_create(Store.handle(store), name, Map.new(opts))

  @doc """
  Deletes the subscription (definition, checkpoint, parked events); its consumers get
  `{:tidemark_sub_event, sub, :deleted}` and end. Unknown: `{:error, :not_found}`.
  """
  @spec delete(Tidemark.store(), Tidemark.key()) :: :ok | Tidemark.error()
  def delete(store, name), do: :tidemark.subscription_delete(Store.handle(store), name)

  @doc "Every subscription, in name order, as `%Tidemark.SubscriptionInfo{}`."
  @spec list(Tidemark.store()) :: {:ok, [Tidemark.SubscriptionInfo.t()]} | Tidemark.error()
  def list(store) do
    with {:ok, infos} <- :tidemark.subscription_list(Store.handle(store)) do
      {:ok, Enum.map(infos, &struct!(Tidemark.SubscriptionInfo, &1))}
    end
  end

  @doc """
  Up to `limit` (0, the default: all) parked events, in revision order, each with the
  `delivery_count` it had when it was parked.
  """
  @spec parked(Tidemark.store(), Tidemark.key(), non_neg_integer()) ::
          {:ok, [Tidemark.Delivery.t()]} | Tidemark.error()
  def parked(store, name, limit \\ 0) do
    with {:ok, ds} <- :tidemark.subscription_parked(Store.handle(store), name, limit) do
      {:ok, Enum.map(ds, &Map.put(&1, :__struct__, Tidemark.Delivery))}
    end
  end

  @doc "Delivers every parked event again (counts start over); returns how many."
  @spec replay_parked(Tidemark.store(), Tidemark.key()) ::
          {:ok, non_neg_integer()} | Tidemark.error()
  def replay_parked(store, name),
    do: :tidemark.subscription_replay_parked(Store.handle(store), name)

  @doc """
  Delivery starts again at `revision` (1 to the current revision + 1): earlier delivers
  events again, later skips them; parked events stay parked. Connected consumers get
  `{:tidemark_sub_event, sub, {:error, {:conflict, _}}}` (their subscription ended) and
  connect again. Returns the revision of the commit that moved the checkpoint.
  """
  @spec reset(Tidemark.store(), Tidemark.key(), pos_integer()) ::
          {:ok, non_neg_integer()} | Tidemark.error()
  def reset(store, name, revision),
    do: :tidemark.subscription_reset(Store.handle(store), name, revision)

  @doc """
  Connects `pid` (monitored) as a consumer of `name`: it receives `{:tidemark_sub_event,
  sub, %Tidemark.Delivery{}}` (at most `:max_in_flight` unacked) and acks or nacks each.
  Option `:active`: `true` (default: limited by `:max_in_flight` only), `n` / `:once`, or
  `false` (nothing until `activate/2`); when the grant is used up `{:tidemark_sub_passive,
  sub}` arrives. The last message, when the subscription ends by itself, is
  `{:tidemark_sub_event, sub, :deleted | :closed | {:compacted, e} | {:error, reason}}`.
  Unknown name: `{:error, :not_found}`; a dead `pid`: `{:error, :noproc}`.
  """
  @spec connect(Tidemark.store(), Tidemark.key(), pid(), active: boolean() | :once | pos_integer()) ::
          {:ok, t} | Tidemark.error()
  def connect(store, name, pid \\ self(), opts \\ []) when is_pid(pid) and is_list(opts) do
    opts = opts |> Map.new() |> Map.merge(%{pid: pid, struct: Tidemark.Delivery})
    :tidemark.subscription_connect(Store.handle(store), name, opts)
  end

  @doc "Lets the consumer receive `n` more deliveries (`:once` = 1, `true` = no limit)."
  @spec activate(t, pos_integer() | :once | true) :: :ok
  def activate(sub, n), do: :tidemark.subscription_activate(sub, n)

  @doc """
  Acks deliveries (a `%Tidemark.Delivery{}`, its revision, or a list) in one commit. One not
  in flight to this consumer is `{:error, {:invalid_argument, _}}` and nothing is acked;
  after `disconnect/1`, `{:error, :closed}`.
  """
  @spec ack(
          t,
          Tidemark.Delivery.t()
          | Tidemark.revision()
          | [Tidemark.Delivery.t() | Tidemark.revision()]
        ) ::
          :ok | Tidemark.error()
  def ack(sub, deliveries), do: :tidemark.ack(sub, deliveries)

  @doc "Gives a delivery back: `:retry` (again; parked after `:max_retry`), `:park` or `:skip` (as an ack)."
  @spec nack(t, Tidemark.Delivery.t() | Tidemark.revision(), :retry | :park | :skip) ::
          :ok | Tidemark.error()
  def nack(sub, delivery, action), do: :tidemark.nack(sub, delivery, action)

  @doc """
  Disconnects the consumer: no message for `sub` after it returns; its unacked events go to
  the other consumers. Idempotent.
  """
  @spec disconnect(t) :: :ok
  def disconnect(sub), do: :tidemark.subscription_disconnect(sub)
end

defmodule Tidemark.Delivery do
  @moduledoc """
  An event delivered by a persistent subscription: the stream event's fields and how many
  times it has been delivered (`delivery_count`, from 1).
  """
  @enforce_keys [
    :stream,
    :id,
    :type,
    :data,
    :metadata,
    :version,
    :revision,
    :timestamp_ms,
    :delivery_count
  ]
  defstruct @enforce_keys

  @type t :: %__MODULE__{
          stream: binary(),
          id: <<_::128>>,
          type: binary(),
          data: binary(),
          metadata: binary(),
          version: non_neg_integer(),
          revision: Tidemark.revision(),
          timestamp_ms: non_neg_integer(),
          delivery_count: pos_integer()
        }
end

defmodule Tidemark.SubscriptionInfo do
  @moduledoc """
  A persistent subscription's definition and state (`Tidemark.Subscription.list/1`):
  `checkpoint` is the highest revision below which every event is acked, `lag` the matching
  events after it.
  """
  @enforce_keys [
    :name,
    :selector,
    :max_in_flight,
    :message_timeout_ms,
    :max_retry,
    :pinned,
    :checkpoint,
    :lag,
    :in_flight,
    :parked,
    :consumers
  ]
  defstruct @enforce_keys

  @type t :: %__MODULE__{
          name: binary(),
          selector: Tidemark.Streams.stream_selector(),
          max_in_flight: pos_integer(),
          message_timeout_ms: pos_integer(),
          max_retry: pos_integer(),
          pinned: boolean(),
          checkpoint: Tidemark.revision(),
          lag: non_neg_integer(),
          in_flight: non_neg_integer(),
          parked: non_neg_integer(),
          consumers: non_neg_integer()
        }
end
