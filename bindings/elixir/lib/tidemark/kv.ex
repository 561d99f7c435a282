defmodule Tidemark.KV do
  @moduledoc "A key's current state, as `Tidemark.Store.get/2` and `Tidemark.Store.range/3` return it."
  @enforce_keys [:key, :value, :create_revision, :mod_revision, :version]
  defstruct @enforce_keys

  @typedoc "`version` counts the puts since the key was created (a new life starts at 1)."
  @type t :: %__MODULE__{
          key: binary(),
          value: binary(),
          create_revision: Tidemark.revision(),
          mod_revision: Tidemark.revision(),
          version: pos_integer()
        }
end
