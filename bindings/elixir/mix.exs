# The Elixir package of tidemark: a thin layer over the Erlang application in ../erlang
# (a path dependency built by rebar3, whose hook builds the NIF from the checkout's
# target/release/libtidemark.a). Nothing is fetched: no Hex package is needed to build or test.
defmodule Tidemark.MixProject do
  use Mix.Project

  def project do
    [
      app: :tidemark_ex,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      deps: deps(),
      description:
        "tidemark change feeds for Elixir: Concord.Sync, ExESDB, Chord and lockstep shapes",
      docs: [main: "Tidemark"]
    ]
  end

  def application, do: [extra_applications: [:logger]]

  defp deps do
    [{:tidemark, path: "../erlang", manager: :rebar3}]
  end
end
