//! `tidemark`: the command-line tool. Keys and values at a terminal, the change log, watches,
//! and lockstep over HTTP (serve a store, follow a feed into a store). See docs/lockstep.md.
//!
//! Exit codes: 0 success, 1 failure, 2 bad usage, 3 key not found.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidemark::lockstep::{http, FollowEvent, FollowOptions, Follower, Server, ServerOptions};
use tidemark::{Error, Event, EventKind, Selector, Store, WatchOptions};

const MAIN_HELP: &str = "\
tidemark: an embeddable change-feed engine, at the command line.

Usage: tidemark <command> [options] [arguments]

Commands:
  put       set a key:                 tidemark put --store DIR KEY [VALUE|-]
  get       print a key's value:        tidemark get --store DIR KEY
  delete    delete a key:               tidemark delete --store DIR KEY
  changes   print the change log:       tidemark changes --store DIR [--from N] [--prefix P]
  watch     print changes as they come: tidemark watch --store DIR | --url URL
  compact   drop old log entries:       tidemark compact --store DIR --keep REV
  status    print the store's status:   tidemark status --store DIR
  serve     serve lockstep feeds:       tidemark serve --store DIR --addr 127.0.0.1:4567
  follow    mirror a lockstep feed:     tidemark follow --store DIR --url URL --into PREFIX
  bench     quick core benchmarks:      tidemark bench [--quick]

`tidemark <command> --help` describes each command. --store DIR is a directory holding a
durable store (created if missing); only one process can open it at a time.
Exit codes: 0 success, 1 failure, 2 bad usage, 3 key not found.";

const STORE_OPTS: &str = "\
  --store DIR        the store's directory (created if missing)
  --options JSON     store options, e.g. '{\"sync\":\"none\"}'";

struct Cmd {
    name: &'static str,
    usage: &'static str,
    /// Flags that take a value.
    valued: &'static [&'static str],
    /// Flags without a value.
    switches: &'static [&'static str],
}

const COMMANDS: &[Cmd] = &[
    Cmd {
        name: "put",
        usage: "tidemark put --store DIR KEY [VALUE]\n\nSets KEY to VALUE (read from standard input when VALUE is omitted or '-') and\nprints the new revision.\n\n  --expect REV       only if the key's mod_revision is REV (0 = the key must not exist)",
        valued: &["store", "options", "expect"],
        switches: &[],
    },
    Cmd {
        name: "get",
        usage: "tidemark get --store DIR KEY\n\nPrints KEY's value. Exit code 3 when the key does not exist.\n\n  --meta             print a JSON object with the value and its revisions instead",
        valued: &["store", "options"],
        switches: &["meta"],
    },
    Cmd {
        name: "delete",
        usage: "tidemark delete --store DIR KEY\n\nDeletes KEY and prints the revision of the delete. Exit code 3 when it does not exist.",
        valued: &["store", "options"],
        switches: &[],
    },
    Cmd {
        name: "changes",
        usage: "tidemark changes --store DIR [--from N] [--to N] [--limit N] [--prefix P | --key K]\n\nPrints the changes in [from, to] as NDJSON, one event per line:\n{\"revision\":..,\"kind\":\"put\"|\"delete\",\"key\":..,\"value\":..,\"version\":..,\"create_revision\":..}\n\n  --from N           first revision (default: the earliest retained)\n  --to N             last revision (default: the current one)\n  --limit N          at most N events (default: all)\n  --prefix P         only keys starting with P\n  --key K            only the key K",
        valued: &["store", "options", "from", "to", "limit", "prefix", "key"],
        switches: &[],
    },
    Cmd {
        name: "watch",
        usage: "tidemark watch --store DIR [--prefix P] [--from N]\ntidemark watch --url URL [--token T]\n\nPrints changes as NDJSON until interrupted (like tail -f).\nWith --store: the store's events (replayed from --from, then live). A directory store can\nbe open in one process only, so to watch a store another process writes, serve it\n(tidemark serve) and watch its feed with --url.\nWith --url: the records of a lockstep feed, e.g. http://127.0.0.1:4567/servers/, as they\nchange, resuming from the last updated_at after a dropped connection.\n\n  --prefix P         only keys starting with P\n  --from N           replay from revision N first (default: only new changes)\n  --url URL          a lockstep feed\n  --token T          bearer token for the feed",
        valued: &["store", "options", "prefix", "from", "url", "token"],
        switches: &[],
    },
    Cmd {
        name: "compact",
        usage: "tidemark compact --store DIR (--keep REV | --retain N)\n\nDrops log entries below revision REV (or all but the last N revisions); the keys' current\nstate is kept. Prints the number of entries dropped.",
        valued: &["store", "options", "keep", "retain"],
        switches: &[],
    },
    Cmd {
        name: "status",
        usage: "tidemark status --store DIR\n\nPrints the store's status as JSON (revisions, keys, disk use, options).",
        valued: &["store", "options"],
        switches: &[],
    },
    Cmd {
        name: "serve",
        usage: "tidemark serve (--store DIR | --memory) [--addr 127.0.0.1:4567] [--writable] [--token T]\n\nServes lockstep feeds over HTTP until interrupted: GET /<path>/<since> (or ?since=N)\nanswers the records of the keys under /<path>/ as NDJSON; add follow=true for live changes.\nPrints `listening on http://ADDR` once ready.\n\n  --addr HOST:PORT   where to listen (default 127.0.0.1:4567; port 0 = any free port)\n  --memory           serve an empty in-memory store (with --writable: a sidecar)\n  --writable         accept PUT /<path>/<id> (JSON body) and DELETE /<path>/<id>\n  --token T          require Authorization: Bearer T (or set TIDEMARK_TOKEN)\n  --heartbeat-ms N   heartbeat after N ms of silence in follow mode (default 10000)\n  --max-connections N  concurrent connections (default 64)\n  --allow-remote     allow a non-loopback --addr",
        valued: &["store", "options", "addr", "token", "heartbeat-ms", "max-connections"],
        switches: &["memory", "writable", "allow-remote"],
    },
    Cmd {
        name: "follow",
        usage: "tidemark follow --store DIR --url URL [--into PREFIX]\n\nMirrors a lockstep feed into the store until interrupted: a record with deleted_at set\ndeletes PREFIX+id, any other record is stored there as JSON. The cursor is committed with\nthe data, so a restarted follow resumes exactly where it stopped. Prints one NDJSON line\nper event (applied batches, errors, resyncs) unless --quiet.\n\n  --url URL          the feed, e.g. http://127.0.0.1:4567/servers/\n  --into PREFIX      where records go (default: the URL's path)\n  --id-field F       the record field naming it (default id)\n  --order-by F       the field the feed is sorted by (default updated_at)\n  --token T          bearer token for the feed (or set TIDEMARK_TOKEN)\n  --no-follow        poll with finite requests instead of follow=true\n  --poll-ms N        wait between finite requests (default 1000)\n  --follow-options JSON  more follower options (see docs/lockstep.md)\n  --quiet            print nothing but errors",
        valued: &["store", "options", "url", "into", "id-field", "order-by", "token", "poll-ms", "follow-options"],
        switches: &["no-follow", "quiet"],
    },
    Cmd {
        name: "bench",
        usage: "tidemark bench [--quick]\n\nRuns quick core benchmarks (in-memory puts, gets, changes scan, put -> watch latency,\ndurable puts, lockstep catch-up) with a progress bar, and prints a table.\n\n  --quick            a smaller run (a few seconds)",
        valued: &[],
        switches: &["quick"],
    },
];

/// A failure with its exit code.
struct Fail(u8, String);

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        let code = if matches!(e, Error::NotFound(_)) { 3 } else { 1 };
        Fail(code, e.to_string())
    }
}

fn usage(msg: impl Into<String>) -> Fail {
    Fail(2, msg.into())
}

struct Args {
    cmd: &'static Cmd,
    flags: HashMap<String, String>,
    pos: Vec<String>,
}

impl Args {
    fn get(&self, k: &str) -> Option<&str> {
        self.flags.get(k).map(String::as_str)
    }

    fn has(&self, k: &str) -> bool {
        self.flags.contains_key(k)
    }

    fn num(&self, k: &str) -> Result<Option<u64>, Fail> {
        self.get(k)
            .map(|v| {
                v.parse::<u64>().map_err(|_| usage(format!("--{k} needs a non-negative integer, not {v:?}")))
            })
            .transpose()
    }

    fn positional(&self, n: usize, names: &str) -> Result<(), Fail> {
        if self.pos.len() != n {
            return Err(usage(format!("{} expects {names}\n\nUsage: {}", self.cmd.name, self.cmd.usage)));
        }
        Ok(())
    }

    /// Opens `--store`: read-only for the commands that only read (get, changes, status), so
    /// they never change the directory. A tail cut on open is reported on stderr.
    fn store(&self) -> Result<Store, Fail> {
        let dir = self.get("store").ok_or_else(|| usage(format!("{} needs --store DIR", self.cmd.name)))?;
        let mut options = self.get("options").map(str::to_owned);
        if matches!(self.cmd.name, "get" | "changes" | "status") {
            let mut o: serde_json::Map<String, serde_json::Value> = match options.as_deref() {
                None | Some("") => serde_json::Map::new(),
                Some(text) => serde_json::from_str(text).map_err(|e| usage(format!("--options: {e}")))?,
            };
            o.entry("read_only").or_insert(serde_json::Value::Bool(true));
            options = Some(serde_json::Value::Object(o).to_string());
        }
        let store = Store::open(Some(dir), options.as_deref())
            .map_err(|e| Fail(1, format!("cannot open store {dir}: {e}")))?;
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

fn parse(argv: &[String]) -> Result<Option<Args>, Fail> {
    let Some(name) = argv.first() else {
        return Err(usage(MAIN_HELP));
    };
    if name == "--help" || name == "-h" || name == "help" {
        println!("{MAIN_HELP}");
        return Ok(None);
    }
    if name == "--version" || name == "-V" {
        println!("tidemark {}", env!("CARGO_PKG_VERSION"));
        return Ok(None);
    }
    let cmd = COMMANDS
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| usage(format!("unknown command {name:?}\n\n{MAIN_HELP}")))?;
    let mut flags = HashMap::new();
    let mut pos = Vec::new();
    let mut it = argv[1..].iter();
    let mut only_pos = false;
    while let Some(a) = it.next() {
        if only_pos || !a.starts_with("--") || a == "-" {
            if a == "-h" && !only_pos {
                println!(
                    "Usage: {}\n\n{}",
                    cmd.usage,
                    if cmd.valued.contains(&"store") { STORE_OPTS } else { "" }
                );
                return Ok(None);
            }
            pos.push(a.clone());
            continue;
        }
        if a == "--" {
            only_pos = true;
            continue;
        }
        let (k, inline) = match a[2..].split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (a[2..].to_string(), None),
        };
        if k == "help" {
            println!(
                "Usage: {}\n\n{}",
                cmd.usage,
                if cmd.valued.contains(&"store") { STORE_OPTS } else { "" }
            );
            return Ok(None);
        }
        if cmd.valued.contains(&k.as_str()) {
            let v = match inline {
                Some(v) => v,
                None => it.next().cloned().ok_or_else(|| usage(format!("--{k} needs a value")))?,
            };
            flags.insert(k, v);
        } else if cmd.switches.contains(&k.as_str()) && inline.is_none() {
            flags.insert(k, String::new());
        } else {
            return Err(usage(format!("{name}: unknown option --{k}\n\nUsage: {}", cmd.usage)));
        }
    }
    Ok(Some(Args { cmd, flags, pos }))
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
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = parse(&argv).and_then(|args| match args {
        None => Ok(()),
        Some(a) => run(&a),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, msg)) => {
            eprintln!("tidemark: {msg}");
            ExitCode::from(code)
        }
    }
}

fn run(a: &Args) -> Result<(), Fail> {
    match a.cmd.name {
        "put" => put(a),
        "get" => get(a),
        "delete" => delete(a),
        "changes" => changes(a),
        "watch" => watch(a),
        "compact" => compact(a),
        "status" => status(a),
        "serve" => serve(a),
        "follow" => follow(a),
        "bench" => bench(a),
        _ => unreachable!("every command is dispatched"),
    }
}

fn out_line(s: &str) -> Result<(), Fail> {
    let mut o = io::stdout().lock();
    writeln!(o, "{s}").and_then(|()| o.flush()).map_err(|e| Fail(1, format!("cannot write to stdout: {e}")))
}

fn put(a: &Args) -> Result<(), Fail> {
    if a.pos.is_empty() || a.pos.len() > 2 {
        return a.positional(2, "KEY and VALUE (or VALUE on standard input)");
    }
    let value = match a.pos.get(1).map(String::as_str) {
        None | Some("-") => {
            let mut v = Vec::new();
            io::stdin()
                .read_to_end(&mut v)
                .map_err(|e| Fail(1, format!("cannot read standard input: {e}")))?;
            v
        }
        Some(v) => v.as_bytes().to_vec(),
    };
    let store = a.store()?;
    let key = a.pos[0].as_bytes();
    let rev = match a.num("expect")? {
        Some(expected) => store.put_if(key, &value, expected)?,
        None => store.put(key, &value)?,
    };
    out_line(&rev.to_string())
}

fn get(a: &Args) -> Result<(), Fail> {
    a.positional(1, "KEY")?;
    let store = a.store()?;
    let e = store.get(a.pos[0].as_bytes())?;
    if a.has("meta") {
        return out_line(
            &json!({
                "key": a.pos[0],
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

fn delete(a: &Args) -> Result<(), Fail> {
    a.positional(1, "KEY")?;
    let store = a.store()?;
    let rev = store.delete(a.pos[0].as_bytes())?;
    out_line(&rev.to_string())
}

fn selector(a: &Args) -> Result<Selector, Fail> {
    match (a.get("prefix"), a.get("key")) {
        (Some(_), Some(_)) => Err(usage("--prefix and --key exclude each other")),
        (Some(p), None) => Ok(Selector::Prefix(p.as_bytes().to_vec())),
        (None, Some(k)) => Ok(Selector::Key(k.as_bytes().to_vec())),
        (None, None) => Ok(Selector::All),
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

fn changes(a: &Args) -> Result<(), Fail> {
    a.positional(0, "no arguments")?;
    let store = a.store()?;
    let sel = selector(a)?;
    let mut from = a.num("from")?.unwrap_or_else(|| store.earliest_revision());
    let to = a.num("to")?.unwrap_or(0);
    let mut left = a.num("limit")?.unwrap_or(u64::MAX);
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

fn watch(a: &Args) -> Result<(), Fail> {
    a.positional(0, "no arguments")?;
    catch_signals();
    if let Some(url) = a.get("url") {
        if a.has("store") {
            return Err(usage("watch takes --store or --url, not both"));
        }
        return watch_url(
            url,
            a.get("token").map(str::to_string).or_else(|| std::env::var("TIDEMARK_TOKEN").ok()),
        );
    }
    let store = a.store()?;
    let sel = match a.get("prefix") {
        Some(p) => Selector::Prefix(p.as_bytes().to_vec()),
        None => Selector::All,
    };
    let opts = WatchOptions { start_revision: a.num("from")?.unwrap_or(0), ..WatchOptions::default() };
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
fn watch_url(url: &str, token: Option<String>) -> Result<(), Fail> {
    let mut base = http::Url::parse(url).map_err(usage)?;
    if !base.path.ends_with('/') {
        base.path.push('/');
    }
    let stop = AtomicBool::new(false);
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
        let resp = http::connect(&u, Duration::from_secs(2), &stop)
            .and_then(|s| http::request(s, "GET", &u, &headers, b"", Duration::from_secs(30), &stop));
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

fn compact(a: &Args) -> Result<(), Fail> {
    a.positional(0, "no arguments")?;
    let store = a.store()?;
    let keep = match (a.num("keep")?, a.num("retain")?) {
        (Some(k), None) => k,
        (None, Some(n)) => (store.current_revision() + 1).saturating_sub(n).max(1),
        _ => return Err(usage("compact needs exactly one of --keep REV and --retain N")),
    };
    let removed = store.compact(keep)?;
    out_line(&removed.to_string())
}

fn status(a: &Args) -> Result<(), Fail> {
    a.positional(0, "no arguments")?;
    let store = a.store()?;
    let s = store.status()?;
    out_line(&serde_json::to_string_pretty(&s).expect("JSON"))
}

fn serve(a: &Args) -> Result<(), Fail> {
    a.positional(0, "no arguments")?;
    let store = if a.has("memory") {
        if a.has("store") {
            return Err(usage("serve takes --store DIR or --memory, not both"));
        }
        Store::memory(a.get("options"))?
    } else {
        a.store()?
    };
    let mut o = ServerOptions {
        writable: a.has("writable"),
        allow_remote: a.has("allow-remote"),
        token: a.get("token").map(str::to_string).or_else(|| std::env::var("TIDEMARK_TOKEN").ok()),
        ..ServerOptions::default()
    };
    if let Some(h) = a.num("heartbeat-ms")? {
        o.heartbeat_ms = h.max(1);
    }
    if let Some(m) = a.num("max-connections")? {
        o.max_connections = m.max(1) as usize;
    }
    let store = Arc::new(store);
    catch_signals();
    let server = Server::start(store.clone(), a.get("addr").unwrap_or("127.0.0.1:4567"), o)?;
    out_line(&format!("listening on http://{}", server.addr()))?;
    while !interrupted() {
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("tidemark: stopping");
    server.stop();
    store.close();
    Ok(())
}

fn follow(a: &Args) -> Result<(), Fail> {
    a.positional(0, "no arguments")?;
    let url = a.get("url").ok_or_else(|| usage("follow needs --url URL"))?;
    let mut opts = FollowOptions::from_json(a.get("follow-options"))?;
    if let Some(p) = a.get("into") {
        opts.prefix = Some(p.as_bytes().to_vec());
    }
    if let Some(f) = a.get("id-field") {
        opts.id_field = f.to_string();
    }
    if let Some(f) = a.get("order-by") {
        opts.order_by = f.to_string();
    }
    if let Some(t) = a.get("token").map(str::to_string).or_else(|| std::env::var("TIDEMARK_TOKEN").ok()) {
        opts.token = Some(t);
    }
    if a.has("no-follow") {
        opts.follow = false;
    }
    if let Some(p) = a.num("poll-ms")? {
        opts.poll_ms = p.max(1);
    }
    let quiet = a.has("quiet");
    let store = Arc::new(a.store()?);
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

fn bench(a: &Args) -> Result<(), Fail> {
    a.positional(0, "no arguments")?;
    let scale: u64 = if a.has("quick") { 1 } else { 10 };
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
    let t = Instant::now();
    let stream = http::connect(&url, Duration::from_secs(2), &stop).map_err(|e| Fail(1, e.to_string()))?;
    let mut resp = http::request(stream, "GET", &url, &[], b"", Duration::from_secs(30), &stop)
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
