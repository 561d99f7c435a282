defmodule Tidemark do
  @moduledoc """
  tidemark for Elixir: an embeddable change-feed engine (one revision log and one watch
  registry per store) behind the shapes of the Elixir libraries it replaces.

  | module | shape of |
  |---|---|
  | `Tidemark.Store` | stores (in memory or a directory), named stores, keys, batches |
  | `Tidemark.Sync` | `Concord.Sync`: `changes/4`, `compact/2`, `watch/4`, `watch_stream/3` |
  | `Tidemark.Streams` | `ExESDBGater.API`: append with expected version, read, snapshots, subscriptions |
  | `Tidemark.Context` | `Chord`: versioned contexts, `sync/3` → full / delta / no change |
  | `Tidemark.Subscription` | ExESDB persistent subscriptions: competing consumers, ack, nack, parking |
  | `Tidemark.Tracker` | `reckon_db_tracker_group`: join/leave/members, `{:feature_created, f, data}` |
  | `Tidemark.Lockstep` | lockstep: serve a store over HTTP, follow such a feed |

  Every call is a translation of the Erlang application `:tidemark` (`bindings/erlang`),
  which is a NIF over the C API: keyword options become the Erlang maps, results become
  structs (`Tidemark.Event`, `Tidemark.KV`, `Tidemark.Changes`, `Tidemark.StreamEvent`,
  `Tidemark.Snapshot`, `Tidemark.Delivery`, `Tidemark.SubscriptionInfo`), and errors are `{:error, reason}` exactly as the Erlang API returns
  them (see `t:reason/0`). Wrong argument types raise `ArgumentError`.

  Wherever a function takes a `t:store/0`, a store handle or the name of a store opened with
  `Tidemark.Store.open/2`'s `:name` option is accepted.
  """

  @typedoc "A store handle (`Tidemark.Store.open/2`) or the name of an open named store."
  @type store :: Tidemark.Store.t() | Tidemark.Store.name()
  @typedoc "Keys, values and stream names are binaries; iodata is accepted as input."
  @type key :: iodata()
  @typedoc "A position in a store's log: unique, gap-free, from 1 (0 = nothing yet)."
  @type revision :: non_neg_integer()
  @typedoc "Which user keys a read or a watch covers; `{:range, start, stop}` is half-open."
  @type selector :: :all | {:key, key} | {:prefix, key} | {:range, key, key | :infinity}
  @typedoc "Why a call failed (the C API's status codes, named)."
  @type reason ::
          :not_found
          | :closed
          | :timeout
          | :noproc
          | :already_registered
          | {:compacted, earliest :: revision}
          | {:conflict, current_mod_revision :: revision}
          | {:future_revision, current :: revision}
          | {:wrong_expected_version, current :: integer}
          | {:invalid_argument | :null_argument | :locked | :io | :corrupt | :too_large | :panic,
             message :: binary}
          | {:unknown, code :: non_neg_integer, message :: binary}
  @type error :: {:error, reason}

  @doc "The version of the tidemark library, e.g. `\"0.1.0\"`."
  @spec version() :: String.t()
  def version, do: :tidemark.version()
end
