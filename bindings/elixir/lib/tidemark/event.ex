defmodule Tidemark.Event do
  @moduledoc """
  One change of a key: what `Tidemark.Sync.changes/4` returns and what a watch sends as
  `{:tidemark_event, ref, %Tidemark.Event{}}`.

  A delete has `value: ""`, `version: 0` and `create_revision: 0`.
  """
  @enforce_keys [:revision, :type, :key, :value, :version, :create_revision]
  defstruct @enforce_keys

  @type t :: %__MODULE__{
          revision: Tidemark.revision(),
          type: :put | :delete,
          key: binary(),
          value: binary(),
          version: non_neg_integer(),
          create_revision: Tidemark.revision()
        }
end

defmodule Tidemark.Changes do
  @moduledoc """
  One page of `Tidemark.Sync.changes/4`: when `has_more` is true, ask again from
  `next_revision`.
  """
  @enforce_keys [:events, :has_more, :next_revision]
  defstruct @enforce_keys

  @type t :: %__MODULE__{
          events: [Tidemark.Event.t()],
          has_more: boolean(),
          next_revision: Tidemark.revision()
        }
end

defmodule Tidemark.CompactedError do
  @moduledoc """
  Raised by a `Tidemark.Sync.watch_stream/3` stream when compaction removed revisions it
  had not delivered yet: resync from `earliest` (`Tidemark.Store.range/3`, then
  `Tidemark.Sync.changes/4` or a new watch from there).
  """
  defexception [:earliest]

  @impl true
  def message(%{earliest: earliest}),
    do: "the watch fell behind compaction; resync from revision #{earliest}"
end
