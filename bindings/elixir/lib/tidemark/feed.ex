defmodule Tidemark.Feed do
  @moduledoc false
  # One paced watch as a `Stream`. `Tidemark.Sync.watch_stream/3` (`:tidemark_event`
  # messages, `%Tidemark.Event{}`) and `Tidemark.Streams.subscribe_stream/3`
  # (`:tidemark_sub_event`, `%Tidemark.StreamEvent{}`) are this with their own opener; both
  # are watches, so `:tidemark.unwatch/2` ends either and `{:tidemark_passive, ref}` paces both.

  @doc """
  `open` gets the watch options (`:active` set to the grant) and returns `{:ok, ref}` or an
  error; `opts` are those options plus `:active` (the grant, default 100) and `:end_notice`.
  """
  @spec stream(
          :tidemark.store(),
          (keyword() -> {:ok, reference()} | Tidemark.error()),
          atom(),
          module(),
          keyword()
        ) :: Enumerable.t()
  def stream(handle, open, tag, struct, opts) do
    {credit, opts} = Keyword.pop(opts, :active, 100)
    {end_notice, opts} = Keyword.pop(opts, :end_notice, false)

    Stream.resource(
      fn ->
        case open.([{:active, credit} | opts]) do
          {:ok, ref} -> ref
          {:error, {:compacted, e}} when end_notice -> {:notice, {:compacted, e}}
          {:error, {:compacted, e}} -> raise Tidemark.CompactedError, earliest: e
          {:error, reason} -> raise ArgumentError, "cannot start the stream: #{inspect(reason)}"
        end
      end,
      fn
        {:notice, notice} ->
          {[notice], {:ended, nil}}

        {:ended, ref} ->
          {:halt, {:ended, ref}}

        ref ->
          receive do
            {^tag, ^ref, %{__struct__: ^struct} = event} -> {[event], ref}
            {^tag, ^ref, {:progress, _}} -> {[], ref}
            {^tag, ^ref, notice} when end_notice -> {[notice], {:ended, ref}}
            {^tag, ^ref, :closed} -> {:halt, {:ended, ref}}
            {^tag, ^ref, {:compacted, e}} -> raise Tidemark.CompactedError, earliest: e
            {:tidemark_passive, ^ref} -> {[], activated(ref, credit)}
          end
      end,
      fn
        # After its terminal notice the watch is being removed by the store; unwatch waits
        # for that, so the watcher count is exact when the stream returns.
        {:ended, ref} when is_reference(ref) ->
          _ = :tidemark.unwatch(handle, ref)
          :ok

        {state, _} when state in [:ended, :notice] ->
          :ok

        ref ->
          _ = :tidemark.unwatch(handle, ref)
          flush(tag, ref)
      end
    )
  end

  defp activated(ref, credit) do
    # A watch that has just ended answers not_found; its terminal notice is on the way.
    _ = :tidemark.activate(ref, credit)
    ref
  end

  defp flush(tag, ref) do
    receive do
      {^tag, ^ref, _} -> flush(tag, ref)
      {:tidemark_passive, ^ref} -> flush(tag, ref)
    after
      0 -> :ok
    end
  end
end
