defmodule Tidemark.Lockstep do
  @moduledoc """
  lockstep over HTTP: serve a store's keys as an NDJSON feed, or mirror such a feed into a
  store (the Erlang `lockstep` client's job, with the revision as the cursor).

      {:ok, server} = Tidemark.Lockstep.serve(store, :default, token: "s3cret")
      url = "http://\#{Tidemark.Lockstep.server_addr(server)}/servers/"
      {:ok, follower} = Tidemark.Lockstep.follow(mirror, url, prefix: "/mirror/", token: "s3cret")

      receive do
        {:tidemark_lockstep, ^follower, %{kind: :resync_done}} -> :in_sync
        {:tidemark_lockstep, ^follower, %{kind: :error, message: msg, retry_ms: ms}} -> {:retrying, msg, ms}
      end

  The follower commits its cursor with the records, so a follower of a durable store
  resumes exactly where its data is after a restart, and it reconnects with backoff
  forever. Both handles are owned by the garbage collector (see docs/erlang.md); stop them
  with `stop_server/1` and `stop_follower/1`. Options are those of docs/lockstep.md, as a
  keyword list.
  """

  alias Tidemark.Store

  @opaque server :: :tidemark.server()
  @opaque follower :: :tidemark.follower()
  @typedoc "What a follower sends as `{:tidemark_lockstep, follower, event}`."
  @type event :: :tidemark.lockstep_event()

  @doc """
  Serves `store` at `addr` (`"host:port"`, port 0 picks a free one; `:default` is
  `"127.0.0.1:0"`). `GET /<path>/<since>` answers the records under `/<path>/`;
  `?follow=true` keeps streaming live changes. Options: `:writable`, `:token`,
  `:heartbeat_ms`, `:max_connections`, `:max_follows`, `:tls_cert`, `:tls_key`,
  `:allow_remote`, ... (unknown ones are `{:error, {:invalid_argument, msg}}`).
  """
  @spec serve(Tidemark.store(), :default | String.t(), keyword()) ::
          {:ok, server} | Tidemark.error()
  def serve(store, addr \\ :default, opts \\ []) when is_list(opts),
    do: :tidemark.serve(Store.handle(store), addr, Map.new(opts))

  @doc "The address the server listens on, e.g. `\"127.0.0.1:38123\"`."
  @spec server_addr(server) :: String.t()
  def server_addr(server), do: :tidemark.server_addr(server)

  @doc "The port the server listens on."
  @spec server_port(server) :: :inet.port_number()
  def server_port(server), do: :tidemark.server_port(server)

  @doc "The server's counters (`:connections`, `:following`, `:requests`, ...); `{:error, :closed}` once stopped."
  @spec server_status(server) :: map() | {:error, :closed}
  def server_status(server), do: :tidemark.server_status(server)

  @doc "Stops the server; every server thread has ended when it returns. Idempotent."
  @spec stop_server(server) :: :ok
  def stop_server(server), do: :tidemark.stop_server(server)

  @doc """
  Mirrors the feed at `url` into `store`: a record is put at `prefix <> id` as the JSON line
  received, a tombstone deletes that key. Options: `:pid` (who gets the
  `{:tidemark_lockstep, follower, event}` messages; default `self()`, `:none` for none),
  `:prefix` (default: the URL's path), `:token`, `:follow`, `:poll_ms`, `:adopt`,
  `:backoff_initial_ms`, `:backoff_max_ms`, ... (docs/lockstep.md).
  """
  @spec follow(Tidemark.store(), String.t(), keyword()) :: {:ok, follower} | Tidemark.error()
  def follow(store, url, opts \\ []) when is_list(opts),
    do: :tidemark.follow(Store.handle(store), url, Map.new(opts))

  @doc "The follower's state (`:state`, `:cursor`, `:records`, `:errors`, ...); `{:error, :closed}` once stopped."
  @spec follower_status(follower) :: map() | {:error, :closed}
  def follower_status(follower), do: :tidemark.follower_status(follower)

  @doc "Stops the follower; no message for it is sent after it returns. Idempotent."
  @spec stop_follower(follower) :: :ok
  def stop_follower(follower), do: :tidemark.stop_follower(follower)
end
