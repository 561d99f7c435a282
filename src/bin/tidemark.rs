//! `tidemark`: the command-line tool. Keys and values at a terminal, the change log, watches,
//! and lockstep over HTTP (serve a store, follow a feed into a store). See docs/lockstep.md.
//!
//! Exit codes: 0 success, 1 failure, 2 bad usage, 3 key not found.

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use tidemark::lockstep::{http, FollowEvent, FollowOptions, Follower, Server, ServerOptions};
use tidemark::{Error, Event, EventKind, Selector, Store, WatchOptions};

/// tidemark: an embeddable change-feed engine, at the command line.
#[derive(Parser)]
#[command(
    name = "tidemark",
    version,
    arg_required_else_help = true,
    after_help = "--store DIR is a directory holding a durable store (created if missing); only one process can \
                  open it at a time. --store redis://host:port/db?store=NAME is a store in Redis that any number \
                  of processes share (docs/redis.md).\nExit codes: 0 success, 1 failure, 2 bad usage, 3 key not found."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The store a command works on.
#[derive(Args)]
struct StoreArgs {
    /// The store's directory (created if missing), or redis://host:port/db?store=NAME
    #[arg(long, value_name = "DIR", value_parser = NonEmptyStringValueParser::new())]
    store: String,
    /// Store options, e.g. '{"sync":"none"}'
    #[arg(long, value_name = "JSON")]
    options: Option<String>,
}

impl StoreArgs {
    fn open(&self) -> Result<Store, Fail> {
        self.open_with(self.options.clone())
    }

    /// Opens the store read-only (for the commands that only read: get, changes, status), so
    /// they never change the directory.
    fn open_read_only(&self) -> Result<Store, Fail> {
        let mut o: serde_json::Map<String, Value> = match self.options.as_deref() {
            None | Some("") => serde_json::Map::new(),
            Some(text) => serde_json::from_str(text).map_err(|e| Fail(2, format!("--options: {e}")))?,
        };
        o.entry("read_only").or_insert(Value::Bool(true));
        self.open_with(Some(Value::Object(o).to_string()))
    }

    /// A tail cut on open is reported on stderr.
    fn open_with(&self, options: Option<String>) -> Result<Store, Fail> {
        let store = Store::open(Some(&self.store), options.as_deref())
            .map_err(|e| Fail(1, format!("cannot open store {}: {e}", self.store)))?;
        if let Ok(Some(r)) = store.tail_repair() {
            eprintln!(
                "tidemark: {}: a torn tail ({} bytes, {} commit(s), revisions from {} on) {} at byte {}",
                r.segment,
                r.bytes,
                r.commits,
                r.first_revision,
                if r.cut { "was cut" } else { "is ignored (read-only open)" },
                r.offset
            );
        }
        Ok(store)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Sets a key: prints the new revision.
    ///
    /// VALUE is read from standard input when omitted or '-'.
    Put {
        #[command(flatten)]
        store: StoreArgs,
        /// Only if the key's mod_revision is REV (0 = the key must not exist)
        #[arg(long, value_name = "REV")]
        expect: Option<u64>,
        key: String,
        value: Option<String>,
    },
    /// Prints KEY's value. Exit code 3 when the key does not exist.
    Get {
        #[command(flatten)]
        store: StoreArgs,
        /// Print a JSON object with the value and its revisions instead
        #[arg(long)]
        meta: bool,
        key: String,
    },
    /// Deletes KEY and prints the revision of the delete. Exit code 3 when it does not exist.
    Delete {
        #[command(flatten)]
        store: StoreArgs,
        key: String,
    },
    /// Prints the change log as NDJSON.
    ///
    /// The changes in [from, to], one event per line:
    /// {"revision":..,"kind":"put"|"delete","key":..,"value":..,"version":..,"create_revision":..}
    Changes {
        #[command(flatten)]
        store: StoreArgs,
        /// First revision (default: the earliest retained)
        #[arg(long, value_name = "N")]
        from: Option<u64>,
        /// Last revision (default: the current one)
        #[arg(long, value_name = "N")]
        to: Option<u64>,
        /// At most N events (default: all)
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Only keys starting with P
        #[arg(long, value_name = "P", conflicts_with = "key")]
        prefix: Option<String>,
        /// Only the key K
        #[arg(long, value_name = "K")]
        key: Option<String>,
    },
    /// Prints changes as NDJSON until interrupted (like tail -f).
    ///
    /// With --store: the store's
    /// events (replayed from --from, then live). A store in Redis (--store redis://...) may be
    /// watched here while other processes write it; a directory store can be open in one process
    /// only, so to watch a directory store another process writes, serve it and watch its feed with
    /// --url: the records of a lockstep feed (e.g. http://127.0.0.1:4567/servers/) as they
    /// change, resuming from the last updated_at after a dropped connection.
    Watch {
        /// The store's directory, or redis://host:port/db?store=NAME
        #[arg(long, value_name = "DIR", value_parser = NonEmptyStringValueParser::new(),
              required_unless_present = "url", conflicts_with = "url")]
        store: Option<String>,
        /// Store options, e.g. '{"sync":"none"}'
        #[arg(long, value_name = "JSON")]
        options: Option<String>,
        /// Only keys starting with P
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// Replay from revision N first (default: only new changes)
        #[arg(long, value_name = "N")]
        from: Option<u64>,
        /// A lockstep feed (http:// or https://)
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Bearer token for the feed (or set TIDEMARK_TOKEN)
        #[arg(long, value_name = "T")]
        token: Option<String>,
        /// PEM file of the certificates trusted for https:// (default: the Mozilla roots)
        #[arg(long, value_name = "FILE")]
        tls_ca_file: Option<String>,
    },
    /// Drops old log entries: below revision REV, or all but the last N revisions.
    ///
    /// The keys' current state is kept. Prints the number of entries dropped.
    Compact {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_name = "REV", required_unless_present = "retain", conflicts_with = "retain")]
        keep: Option<u64>,
        #[arg(long, value_name = "N")]
        retain: Option<u64>,
    },
    /// Prints the store's status as JSON (revisions, keys, disk use, options).
    Status {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Serves lockstep feeds over HTTP (or HTTPS) until interrupted.
    ///
    /// GET /<path>/<since> (or ?since=N)
    /// answers the records of the keys under /<path>/ as NDJSON; add follow=true for live
    /// changes. Prints `listening on http://ADDR` once ready.
    Serve(ServeArgs),
    /// Mirrors a lockstep feed into the store until interrupted.
    ///
    /// A record with deleted_at set
    /// deletes PREFIX+id, any other record is stored there as JSON. The cursor is committed
    /// with the data, so a restarted follow resumes exactly where it stopped. Prints one
    /// NDJSON line per event (applied batches, errors, resyncs) unless --quiet.
    Follow(FollowArgs),
    /// Runs quick core benchmarks and prints a table.
    ///
    /// In-memory puts, gets, changes scan, put -> watch latency, durable puts, lockstep
    /// catch-up, with a progress bar.
    Bench {
        /// A smaller run (a few seconds)
        #[arg(long)]
        quick: bool,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// The store's directory (created if missing), or redis://host:port/db?store=NAME
    #[arg(long, value_name = "DIR", value_parser = NonEmptyStringValueParser::new(),
          required_unless_present = "memory", conflicts_with = "memory")]
    store: Option<String>,
    /// Serve an empty in-memory store instead (with --writable: a sidecar)
    #[arg(long)]
    memory: bool,
    /// Store options, e.g. '{"sync":"none"}'
    #[arg(long, value_name = "JSON")]
    options: Option<String>,
    /// Where to listen (port 0 = any free port)
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:4567")]
    addr: String,
    /// Accept PUT /<path>/<id> (JSON body) and DELETE /<path>/<id>
    #[arg(long)]
    writable: bool,
    /// Require Authorization: Bearer T (or set TIDEMARK_TOKEN)
    #[arg(long, value_name = "T")]
    token: Option<String>,
    /// Turn on the admin actions (POST /admin/...: compact, replay parked, reset a
    /// subscription) for requests with Authorization: Bearer T (or set TIDEMARK_ADMIN_TOKEN)
    #[arg(long, value_name = "T")]
    admin_token: Option<String>,
    /// Heartbeat after N ms of silence in follow mode (default 10000)
    #[arg(long, value_name = "N")]
    heartbeat_ms: Option<u64>,
    /// Finite requests served at once (default 64)
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Follow streams served at once (default 10000)
    #[arg(long, value_name = "N")]
    max_follows: Option<usize>,
    /// PEM certificate chain: serve HTTPS (with --tls-key)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<String>,
    /// PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<String>,
    /// More server options as JSON (see docs/lockstep.md); the flags above win
    #[arg(long, value_name = "JSON")]
    server_options: Option<String>,
    /// Allow a non-loopback --addr
    #[arg(long)]
    allow_remote: bool,
}

#[derive(Args)]
struct FollowArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The feed, e.g. http://127.0.0.1:4567/servers/ (or https://)
    #[arg(long, value_name = "URL")]
    url: String,
    /// Where records go (default: the URL's path)
    #[arg(long, value_name = "PREFIX", value_parser = NonEmptyStringValueParser::new())]
    into: Option<String>,
    /// The record field naming it (default id)
    #[arg(long, value_name = "F")]
    id_field: Option<String>,
    /// The field the feed is sorted by (default updated_at)
    #[arg(long, value_name = "F")]
    order_by: Option<String>,
    /// Bearer token for the feed (or set TIDEMARK_TOKEN)
    #[arg(long, value_name = "T")]
    token: Option<String>,
    /// Poll with finite requests instead of follow=true
    #[arg(long)]
    no_follow: bool,
    /// Wait between finite requests (default 1000)
    #[arg(long, value_name = "N")]
    poll_ms: Option<u64>,
    /// Let the first sync own (and sweep) keys already under the prefix
    #[arg(long)]
    adopt: bool,
    /// PEM file of the certificates trusted for https:// (default: the Mozilla roots)
    #[arg(long, value_name = "FILE")]
    tls_ca_file: Option<String>,
    /// More follower options as JSON (see docs/lockstep.md)
    #[arg(long, value_name = "JSON")]
    follow_options: Option<String>,
    /// Print nothing but errors
    #[arg(long)]
    quiet: bool,
}

/// A failure with its exit code.
struct Fail(u8, String);

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        let code = if matches!(e, Error::NotFound(_)) { 3 } else { 1 };
        Fail(code, e.to_string())
    }
}

fn token(flag: &Option<String>) -> Option<String> {
    token_from(flag, "TIDEMARK_TOKEN")
}

/// The flag's value, else the environment variable's (an empty one is none).
fn token_from(flag: &Option<String>, var: &str) -> Option<String> {
    flag.clone().or_else(|| std::env::var(var).ok()).filter(|t| !t.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Interruption (SIGINT / SIGTERM): long-running commands stop cleanly and close the store.

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn catch_signals() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

// ---------------------------------------------------------------------------------------------

fn main() -> ExitCode {
    // clap reports bad usage (unknown flags, missing or empty values, arguments that are not
    // UTF-8) itself, with exit code 2; --help and --version exit 0.
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, msg)) => {
            eprintln!("tidemark: {msg}");
            ExitCode::from(code)
        }
    }
}

fn run(command: Command) -> Result<(), Fail> {
    match command {
        Command::Put { store, expect, key, value } => put(&store, expect, &key, value.as_deref()),
        Command::Get { store, meta, key } => get(&store, meta, &key),
        Command::Delete { store, key } => delete(&store, &key),
        Command::Changes { store, from, to, limit, prefix, key } => {
            changes(&store, from, to, limit, selector(prefix, key))
        }
        Command::Watch { store: Some(dir), options, prefix, from, .. } => {
            watch(&StoreArgs { store: dir, options }, prefix, from)
        }
        Command::Watch { url, token: t, tls_ca_file, .. } => {
            watch_url(url.as_deref().unwrap_or_default(), token(&t), tls_ca_file.as_deref())
        }
        Command::Compact { store, keep, retain } => compact(&store, keep, retain),
        Command::Status { store } => status(&store),
        Command::Serve(a) => serve(&a),
        Command::Follow(a) => follow(&a),
        Command::Bench { quick } => bench(quick),
    }
}

fn out_line(s: &str) -> Result<(), Fail> {
    let mut o = io::stdout().lock();
    writeln!(o, "{s}").and_then(|()| o.flush()).map_err(|e| Fail(1, format!("cannot write to stdout: {e}")))
}

fn put(store: &StoreArgs, expect: Option<u64>, key: &str, value: Option<&str>) -> Result<(), Fail> {
    let value = match value {
        None | Some("-") => {
            let mut v = Vec::new();
            io::stdin()
                .read_to_end(&mut v)
                .map_err(|e| Fail(1, format!("cannot read standard input: {e}")))?;
            v
        }
        Some(v) => v.as_bytes().to_vec(),
    };
    let store = store.open()?;
    let rev = match expect {
        Some(expected) => store.put_if(key.as_bytes(), &value, expected)?,
        None => store.put(key.as_bytes(), &value)?,
    };
    out_line(&rev.to_string())
}

fn get(store: &StoreArgs, meta: bool, key: &str) -> Result<(), Fail> {
    let store = store.open_read_only()?;
    let e = store.get(key.as_bytes())?;
    if meta {
        return out_line(
            &json!({
                "key": key,
                "value": String::from_utf8_lossy(&e.value),
                "create_revision": e.create_revision,
                "mod_revision": e.mod_revision,
                "version": e.version,
            })
            .to_string(),
        );
    }
    let mut o = io::stdout().lock();
    o.write_all(&e.value).and_then(|()| o.write_all(b"\n")).map_err(|e| Fail(1, e.to_string()))
}

fn delete(store: &StoreArgs, key: &str) -> Result<(), Fail> {
    let store = store.open()?;
    let rev = store.delete(key.as_bytes())?;
    out_line(&rev.to_string())
}

fn selector(prefix: Option<String>, key: Option<String>) -> Selector {
    match (prefix, key) {
        (Some(p), _) => Selector::Prefix(p.into_bytes()),
        (None, Some(k)) => Selector::Key(k.into_bytes()),
        (None, None) => Selector::All,
    }
}

fn event_json(e: &Event) -> Value {
    let kind = match e.kind {
        EventKind::Put => "put",
        EventKind::Delete => "delete",
        EventKind::Progress => "progress",
        EventKind::Compacted => "compacted",
        EventKind::Closed => "closed",
    };
    json!({
        "revision": e.revision,
        "kind": kind,
        "key": String::from_utf8_lossy(&e.key),
        "value": String::from_utf8_lossy(&e.value),
        "version": e.version,
        "create_revision": e.create_revision,
    })
}

fn changes(
    store: &StoreArgs,
    from: Option<u64>,
    to: Option<u64>,
    limit: Option<u64>,
    sel: Selector,
) -> Result<(), Fail> {
    let store = store.open_read_only()?;
    let mut from = from.unwrap_or_else(|| store.earliest_revision());
    let to = to.unwrap_or(0);
    let mut left = limit.unwrap_or(u64::MAX);
    let stdout = io::stdout();
    let mut o = io::BufWriter::new(stdout.lock());
    while left > 0 {
        let page = left.min(1000) as usize;
        let c = store.changes(&sel, from, to, page)?;
        for e in c.events.iter().take(left as usize) {
            writeln!(o, "{}", event_json(e)).map_err(|e| Fail(1, e.to_string()))?;
        }
        left = left.saturating_sub(c.events.len() as u64);
        if !c.has_more {
            break;
        }
        from = c.next_revision;
    }
    o.flush().map_err(|e| Fail(1, e.to_string()))
}

fn watch(store: &StoreArgs, prefix: Option<String>, from: Option<u64>) -> Result<(), Fail> {
    catch_signals();
    let store = store.open()?;
    let sel = match prefix {
        Some(p) => Selector::Prefix(p.into_bytes()),
        None => Selector::All,
    };
    let opts = WatchOptions { start_revision: from.unwrap_or(0), ..WatchOptions::default() };
    let w = store.watch_pull(sel, &opts)?;
    while !interrupted() {
        match w.next(Duration::from_millis(200)) {
            Ok(events) => {
                let mut o = io::stdout().lock();
                for e in &events {
                    if writeln!(o, "{}", event_json(e)).is_err() {
                        return Ok(()); // stdout closed (e.g. piped into head)
                    }
                }
                let _ = o.flush();
                if events.iter().any(Event::is_terminal) {
                    return Ok(());
                }
            }
            Err(Error::Timeout) => {}
            Err(Error::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Follows a lockstep feed and prints its records, resuming from the last `updated_at`.
fn watch_url(url: &str, token: Option<String>, tls_ca_file: Option<&str>) -> Result<(), Fail> {
    catch_signals();
    let mut base = http::Url::parse(url).map_err(|e| Fail(2, e))?;
    if !base.path.ends_with('/') {
        base.path.push('/');
    }
    let stop = AtomicBool::new(false);
    let client = http::Client::new(tls_ca_file, Duration::from_secs(2))?;
    let mut cursor = Value::Null;
    let mut backoff = 100u64;
    let auth = token.map(|t| format!("Bearer {t}"));
    while !interrupted() {
        let mut u = base.clone();
        u.path.push_str(&http::encode_component(&tidemark::lockstep::record::cursor_text(&cursor)));
        u.query = if u.query.is_empty() { "follow=true".into() } else { format!("{}&follow=true", u.query) };
        let mut headers = vec![("Accept", "application/x-ndjson")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let resp = client.request("GET", &u, &headers, b"", Duration::from_secs(30), &stop);
        let mut resp = match resp {
            Ok(r) if r.status == 200 => r,
            Ok(mut r) => {
                let body = r.read_all(4096, Duration::from_secs(2)).unwrap_or_default();
                if r.status == 410 {
                    eprintln!("tidemark: the feed answered 410 Gone; starting over from 0");
                    cursor = Value::Null;
                    continue;
                }
                return Err(Fail(1, format!("HTTP {}: {}", r.status, String::from_utf8_lossy(&body).trim())));
            }
            Err(e) => {
                eprintln!("tidemark: {e}; retrying in {backoff} ms");
                std::thread::sleep(Duration::from_millis(backoff));
                backoff = (backoff * 2).min(10_000);
                continue;
            }
        };
        backoff = 100;
        let mut splitter = tidemark::lockstep::record::LineSplitter::new(16 << 20);
        let mut body = Vec::new();
        loop {
            if interrupted() {
                return Ok(());
            }
            body.clear();
            match resp.read_body(&mut body) {
                Ok(http::BodyRead::Data(_)) => {}
                Ok(http::BodyRead::Idle) => continue,
                Ok(http::BodyRead::End) | Err(_) => break,
            }
            let mut o = io::stdout().lock();
            let mut closed = false;
            splitter.feed(&body, &mut |line| {
                if let tidemark::lockstep::record::Line::Text(t) = line {
                    if let Ok(v) = serde_json::from_slice::<Value>(t) {
                        if v.get("heartbeat").is_some() {
                            return;
                        }
                        if let Some(u) = v.get("updated_at") {
                            if tidemark::lockstep::record::compare_order(u, &cursor).is_gt() {
                                cursor = u.clone();
                            }
                        }
                    }
                    closed |= o.write_all(t).and_then(|()| o.write_all(b"\n")).is_err();
                }
            });
            if closed || o.flush().is_err() {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn compact(store: &StoreArgs, keep: Option<u64>, retain: Option<u64>) -> Result<(), Fail> {
    let store = store.open()?;
    let keep = match (keep, retain) {
        (Some(k), _) => k,
        (None, n) => (store.current_revision() + 1).saturating_sub(n.unwrap_or(0)).max(1),
    };
    let removed = store.compact(keep)?;
    out_line(&removed.to_string())
}

fn status(store: &StoreArgs) -> Result<(), Fail> {
    let store = store.open_read_only()?;
    let s = store.status()?;
    out_line(&serde_json::to_string_pretty(&s).expect("JSON"))
}

fn serve(a: &ServeArgs) -> Result<(), Fail> {
    let store = match &a.store {
        Some(dir) => StoreArgs { store: dir.clone(), options: a.options.clone() }.open()?,
        None => Store::memory(a.options.as_deref())?,
    };
    let mut o = ServerOptions::from_json(a.server_options.as_deref())?;
    o.writable |= a.writable;
    o.allow_remote |= a.allow_remote;
    if let Some(t) = token(&a.token) {
        o.token = Some(t);
    }
    if let Some(t) = token_from(&a.admin_token, "TIDEMARK_ADMIN_TOKEN") {
        o.admin_token = Some(t);
    }
    if let Some(h) = a.heartbeat_ms {
        o.heartbeat_ms = h.max(1);
    }
    if let Some(m) = a.max_connections {
        o.max_connections = m.max(1);
    }
    if let Some(m) = a.max_follows {
        o.max_follows = m.max(1);
    }
    if a.tls_cert.is_some() {
        o.tls_cert = a.tls_cert.clone();
        o.tls_key = a.tls_key.clone();
    }
    let scheme = if o.tls_cert.is_some() { "https" } else { "http" };
    let store = Arc::new(store);
    catch_signals();
    let server = Server::start(store.clone(), &a.addr, o)?;
    out_line(&format!("listening on {scheme}://{}", server.addr()))?;
    eprintln!(
        "tidemark: status page {scheme}://{}/ui, metrics {scheme}://{}/metrics",
        server.addr(),
        server.addr()
    );
    while !interrupted() {
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("tidemark: stopping");
    server.stop();
    store.close();
    Ok(())
}

fn follow(a: &FollowArgs) -> Result<(), Fail> {
    let mut opts = FollowOptions::from_json(a.follow_options.as_deref())?;
    if let Some(p) = &a.into {
        opts.prefix = Some(p.as_bytes().to_vec());
    }
    if let Some(f) = &a.id_field {
        opts.id_field = f.clone();
    }
    if let Some(f) = &a.order_by {
        opts.order_by = f.clone();
    }
    if let Some(t) = token(&a.token) {
        opts.token = Some(t);
    }
    if a.tls_ca_file.is_some() {
        opts.tls_ca_file = a.tls_ca_file.clone();
    }
    opts.follow &= !a.no_follow;
    opts.adopt |= a.adopt;
    if let Some(p) = a.poll_ms {
        opts.poll_ms = p.max(1);
    }
    let quiet = a.quiet;
    let url = a.url.as_str();
    let store = Arc::new(a.store.open()?);
    catch_signals();
    let callback = Box::new(move |ev: &FollowEvent<'_>| {
        let line = match ev {
            FollowEvent::Connected { url } => json!({"event": "connected", "url": url}),
            FollowEvent::Applied { records, writes, revision, cursor } => {
                json!({"event": "applied", "records": records, "writes": writes, "revision": revision, "cursor": cursor})
            }
            FollowEvent::Malformed { line, reason } => {
                json!({"event": "malformed", "reason": reason, "line": String::from_utf8_lossy(line)})
            }
            FollowEvent::Error { message, retry_ms } => {
                json!({"event": "error", "message": message, "retry_ms": retry_ms})
            }
            FollowEvent::ResyncStarted { reason } => json!({"event": "resync_started", "reason": reason}),
            FollowEvent::ResyncDone { deleted, cursor } => {
                json!({"event": "resync_done", "deleted": deleted, "cursor": cursor})
            }
        };
        let is_error = matches!(ev, FollowEvent::Error { .. } | FollowEvent::Malformed { .. });
        if is_error {
            eprintln!("tidemark: {line}");
        }
        if !quiet {
            let mut o = io::stdout().lock();
            let _ = writeln!(o, "{line}").and_then(|()| o.flush());
        }
    });
    let follower = Follower::start(store.clone(), url, opts, Some(callback))?;
    while !interrupted() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = follower.status();
    follower.stop();
    store.close();
    eprintln!("tidemark: stopped: {status}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// bench

struct Progress {
    label: &'static str,
    total: u64,
    last: Instant,
}

impl Progress {
    fn new(label: &'static str, total: u64) -> Progress {
        let p = Progress { label, total: total.max(1), last: Instant::now() - Duration::from_secs(1) };
        p.draw(0);
        p
    }

    fn tick(&mut self, done: u64) {
        if self.last.elapsed() >= Duration::from_millis(50) {
            self.last = Instant::now();
            self.draw(done);
        }
    }

    fn draw(&self, done: u64) {
        let frac = (done as f64 / self.total as f64).min(1.0);
        let filled = (frac * 30.0) as usize;
        eprint!(
            "\r{:<28} [{}{}] {:>3}%",
            self.label,
            "#".repeat(filled),
            ".".repeat(30 - filled),
            (frac * 100.0) as u32
        );
        let _ = io::stderr().flush();
    }

    fn done(self) {
        self.draw(self.total);
        eprintln!();
    }
}

fn rate(n: u64, d: Duration) -> String {
    let r = n as f64 / d.as_secs_f64().max(1e-9);
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k/s", r / 1e3)
    } else {
        format!("{r:.0} /s")
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn bench(quick: bool) -> Result<(), Fail> {
    let scale: u64 = if quick { 1 } else { 10 };
    let mut results: Vec<(String, String)> = Vec::new();
    let key = |i: u64| format!("k{:015}", i % 100_000).into_bytes();
    let value = vec![b'v'; 100];

    // 1. puts, in memory.
    let store = Store::memory(None)?;
    let n = 100_000 * scale;
    let mut p = Progress::new("in-memory put", n);
    let t = Instant::now();
    for i in 0..n {
        store.put(&key(i), &value)?;
        if i % 4096 == 0 {
            p.tick(i);
        }
    }
    let el = t.elapsed();
    p.done();
    results.push(("in-memory put (16 B keys, 100 B values)".into(), rate(n, el)));

    // 2. gets.
    let mut p = Progress::new("in-memory get", n);
    let t = Instant::now();
    for i in 0..n {
        store.get(&key(i))?;
        if i % 4096 == 0 {
            p.tick(i);
        }
    }
    let el = t.elapsed();
    p.done();
    results.push(("in-memory get".into(), rate(n, el)));

    // 3. changes scan.
    let mut p = Progress::new("changes scan", n);
    let t = Instant::now();
    let mut from = 1;
    let mut seen = 0u64;
    loop {
        let (more, next) = store.changes_visit(&Selector::All, from, 0, 10_000, &mut |_| seen += 1)?;
        p.tick(seen);
        if !more {
            break;
        }
        from = next;
    }
    let el = t.elapsed();
    p.done();
    results.push(("changes scan (events)".into(), rate(seen, el)));

    // 4. put -> watch callback latency.
    let received = Arc::new(AtomicU64::new(0));
    let at = Arc::new(Mutex::new(Instant::now()));
    let (r2, at2) = (received.clone(), at.clone());
    let id = store.watch(
        Selector::Prefix(b"lat/".to_vec()),
        &WatchOptions::default(),
        Box::new(move |evs: &[Event]| {
            if let Some(e) = evs.last() {
                *at2.lock().expect("lock") = Instant::now();
                r2.store(e.revision, Ordering::Release);
            }
        }),
    )?;
    let m = 2_000 * scale;
    let mut lat = Vec::with_capacity(m as usize);
    let mut p = Progress::new("put -> watch latency", m);
    for i in 0..m {
        let t0 = Instant::now();
        let rev = store.put(b"lat/x", &value)?;
        let wait = Instant::now();
        while received.load(Ordering::Acquire) < rev {
            if wait.elapsed() > Duration::from_secs(5) {
                return Err(Fail(1, "watch callback did not arrive".into()));
            }
            std::hint::spin_loop();
        }
        lat.push(at.lock().expect("lock").duration_since(t0));
        if i % 64 == 0 {
            p.tick(i);
        }
    }
    p.done();
    store.unwatch(id)?;
    lat.sort();
    results.push((
        "put -> watch callback latency".into(),
        format!(
            "p50 {:.1} µs, p99 {:.1} µs",
            percentile(&lat, 0.5).as_secs_f64() * 1e6,
            percentile(&lat, 0.99).as_secs_f64() * 1e6
        ),
    ));

    // 5. durable puts (sync always), one writer.
    let dir = std::env::temp_dir().join(format!("tidemark-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = 300 * scale;
    {
        let durable = Store::open(Some(dir.to_str().unwrap_or(".")), Some(r#"{"sync":"always"}"#))?;
        let mut p = Progress::new("durable put (sync always)", d);
        let t = Instant::now();
        for i in 0..d {
            durable.put(&key(i), &value)?;
            p.tick(i);
        }
        let el = t.elapsed();
        p.done();
        results.push(("durable put, sync always, 1 writer".into(), rate(d, el)));
    }
    let _ = std::fs::remove_dir_all(&dir);

    // 6. lockstep catch-up over HTTP.
    let feed = Arc::new(Store::memory(None)?);
    let r = 20_000 * scale;
    let mut p = Progress::new("lockstep catch-up", r * 2);
    for i in 0..r {
        feed.put(format!("/servers/{i}").as_bytes(), br#"{"ip":"10.0.0.1","port":1234,"role":"web"}"#)?;
        if i % 1024 == 0 {
            p.tick(i);
        }
    }
    let server = Server::start(feed.clone(), "127.0.0.1:0", ServerOptions::default())?;
    let url = http::Url::parse(&format!("http://{}/servers/0", server.addr())).map_err(|e| Fail(1, e))?;
    let stop = AtomicBool::new(false);
    let client = http::Client::new(None, Duration::from_secs(2))?;
    let t = Instant::now();
    let mut resp = client
        .request("GET", &url, &[], b"", Duration::from_secs(30), &stop)
        .map_err(|e| Fail(1, e.to_string()))?;
    let mut body = Vec::new();
    let mut lines = 0u64;
    loop {
        body.clear();
        match resp.read_body(&mut body).map_err(|e| Fail(1, e.to_string()))? {
            http::BodyRead::End => break,
            http::BodyRead::Idle => {}
            http::BodyRead::Data(_) => {
                lines += body.iter().filter(|&&b| b == b'\n').count() as u64;
                p.tick(r + lines);
            }
        }
    }
    let el = t.elapsed();
    p.done();
    server.stop();
    results.push(("lockstep catch-up served (records)".into(), rate(lines, el)));

    println!("\n{:<44} result", "benchmark");
    println!("{}", "-".repeat(70));
    for (name, r) in results {
        println!("{name:<44} {r}");
    }
    Ok(())
}
