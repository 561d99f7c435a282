# No assertion depends on timing: the waits below only bound how long a broken build can
# hang (@wait), they never decide a result.
defmodule TidemarkTest.Helpers do
  import ExUnit.Assertions

  @wait 10_000

  @doc "An in-memory store closed when the test ends."
  def store(opts \\ []) do
    {:ok, store} = Tidemark.Store.open(:memory, opts)
    ExUnit.Callbacks.on_exit(fn -> Tidemark.Store.close(store) end)
    store
  end

  @doc "The next watch message body for ref."
  def next(ref) do
    receive do
      {:tidemark_event, ^ref, body} -> body
    after
      @wait -> flunk("no message for #{inspect(ref)}")
    end
  end

  @doc "n watch bodies for ref, in arrival order."
  def events(ref, n), do: for(_ <- 1..n//1, do: next(ref))

  @doc "Nothing for ref is in the mailbox now."
  def no_message(ref) do
    refute_received {:tidemark_event, ^ref, _}
    refute_received {:tidemark_passive, ^ref}
  end

  @doc "A stream that halted early left no watch and no message (tag: its event tag) behind."
  def nothing_left(store, tag) do
    assert Tidemark.Sync.watcher_count(store) == 0
    refute_received {^tag, _, _}
    refute_received {:tidemark_passive, _}
  end

  @doc "Polls fun until it returns expected (for things another thread finishes)."
  def wait_until(fun, expected, left \\ 1000) do
    case fun.() do
      ^expected ->
        :ok

      other when left == 0 ->
        flunk("still #{inspect(other)}, expected #{inspect(expected)}")

      _ ->
        Process.sleep(10)
        wait_until(fun, expected, left - 1)
    end
  end

  @doc "n puts of key prefix <> i, values \"i\"; returns their revisions."
  def put_n(store, prefix, n) do
    for i <- 1..n//1 do
      {:ok, rev} = Tidemark.Store.put(store, prefix <> Integer.to_string(i), Integer.to_string(i))
      rev
    end
  end

  def revs(events), do: Enum.map(events, & &1.revision)
end

ExUnit.start()
