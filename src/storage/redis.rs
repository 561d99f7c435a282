//! The Redis log: one store's log shared by every process that opens the same
//! `redis://host:port/db?store=NAME`. Redis holds the truth; each process keeps a copy of
//! the log's recent part (for `scan`) and its own key state, and catches up on what the others
//! appended.
//!
//! Keys, all with the hash tag `{NAME}` so that a Redis Cluster keeps a store on one shard:
//! - `tidemark:{NAME}:log`, a stream with one entry per commit, id `<last revision>-0`, field
//!   `c` = the commit in the directory log's record format (`codec::encode_commit`, with its
//!   checksum);
//! - `tidemark:{NAME}:meta`, a hash: `last` (the log's last revision), `earliest` (the first
//!   retained revision), `ckpt` (the revision of the checkpoint);
//! - `tidemark:{NAME}:ckpt`, the derived state at `ckpt` (`codec::encode_checkpoint`);
//! - `tidemark:{NAME}:readers` (sorted set: each open store's last seen revision) and
//!   `tidemark:{NAME}:seen` (hash: when, in server seconds, it last said so). Compaction
//!   keeps what a live reader has not seen yet, so that no open store falls into a gap; a
//!   reader silent for `STALE_S` (a killed process) no longer counts.
//!
//! - `tidemark:{NAME}:idx` (hash: each key's last change, `rev` for a put and `-rev` for a
//!   delete, from the meta hash's `seq_from` on) and `tidemark:{NAME}:tomb` (sorted set: the
//!   deleted keys by revision, so that compaction can drop their entries).
//!
//! Every change is one server-side script, so it is atomic on the server and in its AOF:
//! append checks `last` (compare-and-append) or, when other processes appended since the
//! commit was planned, that none of them changed a key the commit touches, and then puts the
//! commit after theirs; a checkpoint only replaces an older one, and compaction trims only
//! what a checkpoint covers (several processes may compact at once).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::{Client, Connection, RedisError, Script};
use parking_lot::Mutex;

use super::codec::{self, Frame};
use super::memory::MemoryLog;
use super::{Placed, StateVisitor, Storage, StorageStats, Tail};
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::options::Options;
use crate::selector::Selector;

/// Commits read per round trip when catching up or scanning.
const BATCH: usize = 512;
/// Events kept in this process's copy of the log; older ones are read from Redis.
const CACHE_MAX: usize = 1 << 20;
/// Events appended by this process after which it writes a checkpoint (bounds a new
/// process's replay).
const CHECKPOINT_EVERY: u64 = 100_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Seconds after which a reader that did not report its position is taken for gone (it
/// reports about every second, from its tail thread).
const STALE_S: u64 = 15;
/// How often `pull` reads the log itself rather than the entries the tail read, so that the
/// position is reported (well within `STALE_S`) and a compaction by another process is seen.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How long the tail rests between reads while the log is busy.
const BUSY_PAUSE: Duration = Duration::from_micros(250);

/// Reports a reader's position: KEYS readers, seen; ARGV position, reader.
const SEEN: &str = "
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], redis.call('TIME')[1])
";

/// Appends a commit planned against revision `planned`: KEYS log, meta, idx, tomb, readers,
/// seen; ARGV planned, the commit's last revision as planned, the record, whether it may
/// move (1/0), the largest move whose entries the reply carries, the reader (whose position,
/// `planned`, it reports as `SEEN` does), then pairs of a key the commit touches
/// and what it does there (`p<n>` / `d<n>`: put or delete at `planned + n`; `r`: only
/// required). When the log is at `planned` the commit goes
/// there. When other processes appended since, it may still go after their commits if none
/// of them changed a touched key (the key index, complete from `seq_from` on, and after the
/// earliest revision since compaction drops deleted keys' entries below it): its revisions
/// move up by `shift`, stored beside the record (field `s`). Returns {1, first revision}
/// (and, when it moved, the entries after `planned`, its own the last, so that the process
/// catches up without another round trip), or {0, the log's last revision} when refused.
const APPEND: &str = r"
local last = tonumber(redis.call('HGET', KEYS[2], 'last') or '0')
local planned = tonumber(ARGV[1])
local shift = 0
if last ~= planned then
  if last < planned or ARGV[4] ~= '1' then return {0, last, false} end
  local from = tonumber(redis.call('HGET', KEYS[2], 'seq_from') or '0')
  local earliest = tonumber(redis.call('HGET', KEYS[2], 'earliest') or '1')
  if planned < from or planned + 1 < earliest then return {0, last, false} end
  for i = 7, #ARGV, 2 do
    local m = redis.call('HGET', KEYS[3], ARGV[i])
    if m and math.abs(tonumber(m)) > planned then return {0, last, false} end
  end
  shift = last - planned
end
local id = string.format('%d-0', tonumber(ARGV[2]) + shift)
if shift == 0 then
  redis.call('XADD', KEYS[1], id, 'c', ARGV[3])
else
  redis.call('XADD', KEYS[1], id, 'c', ARGV[3], 's', string.format('%d', shift))
end
redis.call('HSET', KEYS[2], 'last', string.format('%d', tonumber(ARGV[2]) + shift))
redis.call('ZADD', KEYS[5], planned, ARGV[6])
redis.call('HSET', KEYS[6], ARGV[6], redis.call('TIME')[1])
for i = 7, #ARGV, 2 do
  local what = string.sub(ARGV[i + 1], 1, 1)
  if what ~= 'r' then
    local rev = planned + shift + tonumber(string.sub(ARGV[i + 1], 2))
    if what == 'p' then
      local old = redis.call('HGET', KEYS[3], ARGV[i])
      if old and tonumber(old) < 0 then redis.call('ZREM', KEYS[4], ARGV[i]) end
      redis.call('HSET', KEYS[3], ARGV[i], string.format('%d', rev))
    else
      redis.call('HSET', KEYS[3], ARGV[i], string.format('%d', -rev))
      redis.call('ZADD', KEYS[4], rev, ARGV[i])
    end
  end
end
if shift == 0 or shift > tonumber(ARGV[5]) then return {1, planned + 1, false} end
return {1, planned + shift + 1, redis.call('XRANGE', KEYS[1], string.format('(%d-0', planned), '+')}
";

/// Starts the key index of a store that has none (a new one: from revision 0; one written
/// by an earlier version: from its last revision, before which commits never move). KEYS meta.
const SEQ_FROM: &str = r"
if redis.call('HEXISTS', KEYS[1], 'seq_from') == 0 then
  redis.call('HSET', KEYS[1], 'seq_from', redis.call('HGET', KEYS[1], 'last') or '0')
end
";

const CHECKPOINT: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[1], 'ckpt') or '0')
if tonumber(ARGV[1]) <= cur then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'ckpt', ARGV[1])
return 1
";

/// KEYS log, meta, readers, seen, tomb, idx; ARGV keep, stale seconds, the caller (who has
/// seen all it compacts). Returns {dropped, new earliest}. Deleted keys' index entries below
/// `keep` go too: a key without one was last changed before the earliest revision.
const COMPACT: &str = r"
local keep = tonumber(ARGV[1])
local ckpt = tonumber(redis.call('HGET', KEYS[2], 'ckpt') or '0')
if ckpt + 1 < keep then return redis.error_reply('no checkpoint covers the revisions below ' .. ARGV[1]) end
local now = tonumber(redis.call('TIME')[1])
local readers = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
for i = 1, #readers, 2 do
  local t = tonumber(redis.call('HGET', KEYS[4], readers[i]) or '0')
  if readers[i] == ARGV[3] then
  elseif now - t > tonumber(ARGV[2]) then
    redis.call('ZREM', KEYS[3], readers[i])
    redis.call('HDEL', KEYS[4], readers[i])
  elseif tonumber(readers[i + 1]) + 1 < keep then
    keep = tonumber(readers[i + 1]) + 1
  end
end
local earliest = tonumber(redis.call('HGET', KEYS[2], 'earliest') or '1')
if keep <= earliest then return {0, earliest} end
redis.call('XTRIM', KEYS[1], 'MINID', keep .. '-0')
redis.call('HSET', KEYS[2], 'earliest', keep)
local gone = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', '(' .. keep)
for i = 1, #gone do
  local m = tonumber(redis.call('HGET', KEYS[6], gone[i]) or '0')
  if m < 0 and -m < keep then redis.call('HDEL', KEYS[6], gone[i]) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. keep)
return {keep - earliest, keep}
";

/// Where a store lives: the server (for the client) and the store's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    /// The URL without `store=`, as the client takes it.
    pub server: String,
    /// The URL with any password hidden, for messages and `status`.
    pub shown: String,
    pub name: String,
    /// `ca=PATH`: the CA certificate (PEM) that signed a `rediss://` server's, instead of the
    /// system's trust store.
    pub ca: Option<String>,
    /// `replicas=N`: replicas that must acknowledge a commit (`WAIT`) before it returns.
    pub replicas: u32,
    /// `wait_ms=T`: how long a commit waits for them.
    pub wait_ms: u64,
}

/// How long a commit waits for `replicas=N` without `wait_ms=`.
const WAIT_MS: u64 = 1000;

/// The last revision of a log entry's commit: its id is `<revision>-0`.
fn entry_revision(id: &str) -> Option<u64> {
    id.split_once('-').and_then(|(rev, _)| rev.parse().ok())
}

/// True when `path` names a Redis store rather than a directory.
pub fn is_url(path: &str) -> bool {
    path.starts_with("redis://") || path.starts_with("rediss://")
}

/// Parses `redis[s]://[user:password@]host[:port][/db]?store=NAME[&replicas=N][&wait_ms=T][&ca=PATH]`.
pub(crate) fn parse_url(url: &str) -> Result<Location> {
    let bad =
        |why: &str| Error::InvalidArgument(format!("bad Redis store URL {}: {why}", hide_password(url)));
    let (scheme, rest) =
        url.split_once("://").ok_or_else(|| bad("it must start with redis:// or rediss://"))?;
    if scheme != "redis" && scheme != "rediss" {
        return Err(bad("it must start with redis:// or rediss://"));
    }
    let (server, query) = rest.split_once('?').ok_or_else(|| bad("it needs ?store=NAME"))?;
    let (mut name, mut ca, mut replicas, mut wait_ms) = (None, None, None, None);
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').ok_or_else(|| bad(&format!("parameter {pair:?} has no value")))?;
        let slot = match k {
            "store" => &mut name,
            "ca" => &mut ca,
            "replicas" => &mut replicas,
            "wait_ms" => &mut wait_ms,
            _ => return Err(bad(&format!("unknown parameter {pair:?} (store=, replicas=, wait_ms=, ca=)"))),
        };
        if slot.replace(v).is_some() {
            return Err(bad(&format!("{k}= is given twice")));
        }
    }
    let name = name.ok_or_else(|| bad("it needs ?store=NAME"))?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
        return Err(bad("the store name must be non-empty and use only A-Z a-z 0-9 - _ . :"));
    }
    let number = |k: &str, v: Option<&str>| -> Result<Option<u64>> {
        v.map(|v| v.parse::<u64>().map_err(|_| bad(&format!("{k}= must be a whole number")))).transpose()
    };
    let replicas = number("replicas", replicas)?.unwrap_or(0);
    let replicas = u32::try_from(replicas).map_err(|_| bad("replicas= is too large"))?;
    let wait_ms = number("wait_ms", wait_ms)?;
    if wait_ms.is_some() && replicas == 0 {
        return Err(bad("wait_ms= needs replicas=N"));
    }
    if ca.is_some() && scheme != "rediss" {
        return Err(bad("ca= needs rediss://"));
    }
    let host = server.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with('/') {
        return Err(bad("it needs a host"));
    }
    let server = format!("{scheme}://{server}");
    let loc = Location {
        shown: hide_password(&server),
        server,
        name: name.to_string(),
        ca: ca.map(str::to_string),
        replicas,
        wait_ms: wait_ms.unwrap_or(WAIT_MS),
    };
    loc.client().map_err(|e| bad(&e))?;
    Ok(loc)
}

impl Location {
    /// A client for the server: over TLS for `rediss://` (trusting `ca=` or the system's roots).
    fn client(&self) -> std::result::Result<Client, String> {
        match &self.ca {
            None => Client::open(self.server.as_str()).map_err(|e| e.to_string()),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("cannot read ca={path}: {e}"))?;
                let certs = ::redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
                Client::build_with_tls(self.server.as_str(), certs).map_err(|e| e.to_string())
            }
        }
    }
}

/// Reads the store's checkpoint, applies its key state to `apply` and returns the shared
/// earliest revision, the checkpoint's revision (0 = none) and the revision the log goes on at.
fn load_checkpoint(
    loc: &Location,
    keys: &Keys,
    link: &Link,
    apply: &mut dyn FnMut(&Event),
) -> Result<(u64, u64, u64)> {
    let (meta, ckpt): (Meta, Option<Vec<u8>>) = link.with("read the store", |c| {
        ::redis::pipe()
            .atomic()
            .cmd("HMGET")
            .arg(&keys.meta)
            .arg("earliest")
            .arg("ckpt")
            .cmd("GET")
            .arg(&keys.ckpt)
            .query(c)
    })?;
    let earliest = meta.0.unwrap_or(1);
    let mut base = 1;
    if let Some(bytes) = ckpt {
        let header = codec::decode_checkpoint(&bytes, &mut |e| apply(&e)).map_err(|why| {
            Error::Corrupt(format!("the checkpoint of store {} in {}: {why}", loc.name, loc.shown))
        })?;
        base = header.revision + 1;
    } else if earliest > 1 {
        return Err(Error::Corrupt(format!(
            "store {} in {} starts at revision {earliest} but has no checkpoint",
            loc.name, loc.shown
        )));
    }
    Ok((earliest, meta.1.unwrap_or(0), base))
}

/// A name for this open store among a log's readers: the host's process id and a counter.
fn reader_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}-{}-{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn hide_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// The names of a store's keys.
#[derive(Clone)]
struct Keys {
    log: String,
    meta: String,
    ckpt: String,
    readers: String,
    seen: String,
    idx: String,
    tomb: String,
}

impl Keys {
    fn new(name: &str) -> Keys {
        Keys {
            log: format!("tidemark:{{{name}}}:log"),
            meta: format!("tidemark:{{{name}}}:meta"),
            ckpt: format!("tidemark:{{{name}}}:ckpt"),
            readers: format!("tidemark:{{{name}}}:readers"),
            seen: format!("tidemark:{{{name}}}:seen"),
            idx: format!("tidemark:{{{name}}}:idx"),
            tomb: format!("tidemark:{{{name}}}:tomb"),
        }
    }
}

/// One connection, opened on first use and dropped after a failure so that the next call
/// reconnects.
struct Link {
    client: Client,
    shown: String,
    conn: Mutex<Option<Connection>>,
}

impl Link {
    fn new(loc: &Location) -> Result<Link> {
        let client = loc
            .client()
            .map_err(|e| Error::InvalidArgument(format!("bad Redis store URL {}: {e}", loc.shown)))?;
        Ok(Link { client, shown: loc.shown.clone(), conn: Mutex::new(None) })
    }

    fn with<T>(&self, what: &str, f: impl FnOnce(&mut Connection) -> ::redis::RedisResult<T>) -> Result<T> {
        let mut guard = self.conn.lock();
        if guard.is_none() {
            let conn =
                self.client.get_connection_with_timeout(CONNECT_TIMEOUT).map_err(|e| self.io(what, e))?;
            conn.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| self.io(what, e))?;
            conn.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| self.io(what, e))?;
            *guard = Some(conn);
        }
        let result = f(guard.as_mut().expect("connected"));
        if let Err(e) = &result {
            if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error() {
                *guard = None;
            }
        }
        result.map_err(|e| self.io(what, e))
    }

    fn io(&self, what: &str, e: RedisError) -> Error {
        Error::io(format!("Redis at {}: cannot {what}", self.shown), std::io::Error::other(e.to_string()))
    }
}

/// A store's log in Redis, and this process's copy of its recent part.
pub struct RedisLog {
    loc: Location,
    keys: Keys,
    link: Link,
    /// The log from some revision on, up to the last one this process has seen or written.
    cache: MemoryLog,
    /// The shared earliest revision, as last read.
    earliest: u64,
    last_checkpoint: u64,
    appended_since_checkpoint: u64,
    read_only: bool,
    closed: bool,
    /// The server's `appendfsync` ("none" without the AOF), when it lets us read its configuration.
    appendfsync: Option<&'static str>,
    /// This open store's name among the readers.
    reader: String,
    append: Script,
    checkpoint: Script,
    compact_script: Script,
    /// Entries after this process's last revision that the reply of an append it made carried
    /// (others' commits, then its own), for the next `pull`.
    placed: Entries,
    /// Entries the tail's last wait read, for the next `pull` (shared with the tail).
    prefetched: Arc<Mutex<Entries>>,
    /// When `pull` last read the log itself (and reported this process's position).
    reported: Instant,
}

/// `XRANGE` entries: id and fields.
type Entries = Vec<(String, Vec<Vec<u8>>)>;
/// The meta hash's `earliest` and `ckpt`.
type Meta = (Option<u64>, Option<u64>);

impl RedisLog {
    /// Opens the store at `url`, applying the derived state (the checkpoint, then the log after
    /// it) to `apply`.
    pub fn open(url: &str, opts: &Options, apply: &mut dyn FnMut(&Event)) -> Result<RedisLog> {
        let loc = parse_url(url)?;
        let keys = Keys::new(&loc.name);
        let link = Link::new(&loc)?;
        // Servers that refuse CONFIG (managed ones) leave it unknown.
        let config = link
            .with("read the configuration", |c| {
                ::redis::cmd("CONFIG").arg("GET").arg("appendonly").arg("appendfsync").query::<Vec<String>>(c)
            })
            .unwrap_or_default();
        let get = |name: &str| {
            config.chunks(2).find(|kv| kv[0] == name).and_then(|kv| kv.get(1)).map(String::as_str)
        };
        let appendfsync = match (get("appendonly"), get("appendfsync")) {
            (Some("no"), _) => Some("none"),
            (_, Some("always")) => Some("always"),
            (_, Some("everysec")) => Some("everysec"),
            (_, Some("no")) => Some("no"),
            _ => None,
        };
        if !opts.read_only {
            link.with("open the store", |c| Script::new(SEQ_FROM).key(&keys.meta).invoke::<()>(c))?;
        }
        let (earliest, last_checkpoint, base) = load_checkpoint(&loc, &keys, &link, apply)?;
        let mut log = RedisLog {
            keys,
            link,
            cache: MemoryLog::starting_at(base),
            earliest,
            last_checkpoint,
            appended_since_checkpoint: 0,
            read_only: opts.read_only,
            closed: false,
            appendfsync,
            reader: reader_name(),
            append: Script::new(APPEND),
            checkpoint: Script::new(CHECKPOINT),
            compact_script: Script::new(COMPACT),
            placed: Vec::new(),
            prefetched: Arc::default(),
            reported: Instant::now(),
            loc,
        };
        let mut commits = Vec::new();
        loop {
            let more = log.pull(&mut commits)?;
            for e in commits.drain(..).flatten() {
                apply(&e);
            }
            if !more {
                return Ok(log);
            }
        }
    }

    /// A tail on the log that waits on its own connection.
    pub fn tail(&self) -> Result<RedisTail> {
        Ok(RedisTail {
            link: Link::new(&self.loc)?,
            key: self.keys.log.clone(),
            client_id: Mutex::new(None),
            stop: AtomicBool::new(false),
            prefetched: self.prefetched.clone(),
            busy: AtomicBool::new(false),
        })
    }

    /// Visits the commits holding revisions `[from, to]` read from Redis, until `visit` says stop.
    fn each_commit(&self, from: u64, to: u64, visit: &mut dyn FnMut(&[Event]) -> bool) -> Result<()> {
        let mut start = format!("{from}-0");
        let mut commit = Vec::new();
        loop {
            let entries: Entries = self.link.with("read the log", |c| {
                ::redis::cmd("XRANGE")
                    .arg(&self.keys.log)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(BATCH)
                    .query(c)
            })?;
            for (id, fields) in &entries {
                self.decode(id, fields, &mut commit)?;
                if commit[0].revision > to || !visit(&commit) {
                    return Ok(());
                }
                start = format!("({id}");
            }
            if entries.len() < BATCH {
                return Ok(());
            }
        }
    }

    fn decode(&self, id: &str, fields: &[Vec<u8>], out: &mut Vec<Event>) -> Result<()> {
        let bad =
            || Error::Corrupt(format!("log entry {id} of store {} in {}", self.loc.name, self.loc.shown));
        let (record, shift) = match fields {
            [name, record] if name == b"c" => (record, 0),
            [name, record, s, shift] if name == b"c" && s == b"s" => {
                let shift = std::str::from_utf8(shift).ok().and_then(|v| v.parse::<u64>().ok());
                (record, shift.ok_or_else(bad)?)
            }
            _ => return Err(bad()),
        };
        match codec::read_frame(record) {
            Frame::Record(payload, n) if n == record.len() => {
                codec::decode_commit(payload, out).ok_or_else(bad)?;
                // A commit the server put after others' (`APPEND`): its revisions, and the
                // creation revision of the keys it created, move up by `shift`.
                if shift > 0 {
                    let first = out[0].revision;
                    for e in out.iter_mut() {
                        e.revision += shift;
                        if e.create_revision >= first {
                            e.create_revision += shift;
                        }
                    }
                }
                Ok(())
            }
            _ => Err(bad()),
        }
    }

    /// Takes the commits of `entries` that follow this process's last revision (older ones
    /// are skipped) into the copy and `out`; `None` when one does not follow (a gap).
    fn take(&mut self, entries: &Entries, out: &mut Vec<Vec<Event>>) -> Result<Option<usize>> {
        let mut n = 0;
        for (id, fields) in entries {
            if entry_revision(id).is_some_and(|rev| rev <= self.last_revision()) {
                continue;
            }
            let mut commit = Vec::new();
            self.decode(id, fields, &mut commit)?;
            if commit[0].revision != self.last_revision() + 1 {
                return Ok(None);
            }
            self.cache.append(&commit)?;
            out.push(commit);
            n += 1;
        }
        Ok(Some(n))
    }

    /// `WAIT`s (on the connection that appended) for `replicas=N` to acknowledge the commit
    /// ending at `rev`. When fewer do in time the commit is still in the primary's log: the call
    /// fails with IO and the store finds the commit there later, like another process's.
    fn wait_for_replicas(&self, rev: u64) -> Result<()> {
        let (n, ms) = (self.loc.replicas, self.loc.wait_ms);
        let acked: u64 =
            self.link.with("wait for replicas", |c| ::redis::cmd("WAIT").arg(n).arg(ms).query(c))?;
        if acked >= u64::from(n) {
            return Ok(());
        }
        Err(Error::io_other(format!(
            "Redis at {}: revision {rev} is in the primary's log but only {acked} of {n} replicas \
             acknowledged it within {ms} ms",
            self.loc.shown
        )))
    }

    fn refuse_writes(&self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        if self.read_only {
            return Err(Error::InvalidArgument(format!(
                "store {} in {} was opened read-only",
                self.loc.name, self.loc.shown
            )));
        }
        Ok(())
    }

    /// Appends a commit planned against this process's last revision. With `may_move` (the
    /// keys it only required), the server may put it after other processes' newer commits
    /// that changed none of its keys (`Placed::Later`); without, it is compare-and-append.
    fn append_commit(&mut self, commit: &[Event], may_move: Option<&[&[u8]]>) -> Result<Placed> {
        self.refuse_writes()?;
        let last = self.last_revision();
        let new_last = commit.last().map_or(0, |e| e.revision);
        if commit.first().map(|e| e.revision) != Some(last + 1) || new_last < last + 1 {
            return Err(Error::InvalidArgument(format!("commit must start at revision {}", last + 1)));
        }
        let mut record = Vec::new();
        codec::encode_commit(commit, &mut record)?;
        let (keys, script) = (&self.keys, &self.append);
        let (ok, remote, gap): (i64, u64, Option<Entries>) = self.link.with("append to the log", |c| {
            let mut call = script.prepare_invoke();
            call.key(&keys.log)
                .key(&keys.meta)
                .key(&keys.idx)
                .key(&keys.tomb)
                .key(&keys.readers)
                .key(&keys.seen);
            call.arg(last)
                .arg(new_last)
                .arg(record)
                .arg(u8::from(may_move.is_some()))
                .arg(BATCH)
                .arg(&self.reader);
            for e in commit {
                let what = if e.kind == EventKind::Delete { 'd' } else { 'p' };
                call.arg(&e.key[..]).arg(format!("{what}{}", e.revision - last));
            }
            for key in may_move.unwrap_or_default() {
                call.arg(*key).arg("r");
            }
            call.invoke(c)
        })?;
        if ok == 1 {
            let moved = remote != last + 1;
            if self.loc.replicas > 0 {
                self.wait_for_replicas(new_last + (remote - last - 1))?;
            }
            self.appended_since_checkpoint += commit.len() as u64;
            if moved {
                // Others' commits come first: `pull` brings them, then this one (from the
                // entries the reply carried, when it did).
                self.placed = gap.unwrap_or_default();
                return Ok(Placed::Later { first: remote });
            }
            self.cache.append(commit)?;
            return Ok(Placed::AsPlanned);
        }
        if remote < last {
            return Err(Error::Corrupt(format!(
                "store {} in {} ends at revision {remote} but this process has seen {last}: Redis lost \
                 acknowledged writes (run it with appendonly yes, appendfsync always)",
                self.loc.name, self.loc.shown
            )));
        }
        // The store catches up (`pull`) and plans again.
        Err(Error::InvalidArgument(format!("another process appended revision {} first", last + 1)))
    }

    fn write_checkpoint(&mut self, state: StateVisitor<'_>) -> Result<()> {
        let rev = self.last_revision();
        if rev <= self.last_checkpoint {
            return Ok(());
        }
        let bytes = codec::encode_checkpoint(rev, self.earliest, state);
        let (keys, script) = (&self.keys, &self.checkpoint);
        self.link.with("write a checkpoint", |c| {
            script.key(&keys.meta).key(&keys.ckpt).arg(rev).arg(bytes).invoke::<i64>(c)
        })?;
        self.last_checkpoint = rev;
        self.appended_since_checkpoint = 0;
        Ok(())
    }
}

impl Storage for RedisLog {
    fn append(&mut self, commit: &[Event]) -> Result<()> {
        match self.append_commit(commit, None)? {
            Placed::AsPlanned => Ok(()),
            Placed::Later { .. } => unreachable!("a commit that may not move never moves"),
        }
    }

    fn append_after(&mut self, commit: &[Event], required: &[&[u8]]) -> Result<Placed> {
        self.append_commit(commit, Some(required))
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    fn pull(&mut self, out: &mut Vec<Vec<Event>>) -> Result<bool> {
        if self.closed {
            return Err(Error::Closed);
        }
        // Entries at hand first: those an append's reply carried, else those the tail's wait
        // read, as long as the log itself was read (and the position reported) within
        // `REPORT_EVERY`.
        let mut at_hand = std::mem::take(&mut self.placed);
        if at_hand.is_empty() && self.reported.elapsed() < REPORT_EVERY {
            at_hand = std::mem::take(&mut *self.prefetched.lock());
        }
        if self.take(&at_hand, out)?.is_some_and(|n| n > 0) {
            return Ok(false);
        }
        let last = self.last_revision();
        let (keys, reader) = (&self.keys, &self.reader);
        let (entries, earliest): (Entries, Option<u64>) = self.link.with("read the log", |c| {
            ::redis::pipe()
                .cmd("EVAL")
                .arg(SEEN)
                .arg(2)
                .arg(&keys.readers)
                .arg(&keys.seen)
                .arg(last)
                .arg(reader)
                .ignore()
                .cmd("XRANGE")
                .arg(&keys.log)
                .arg(format!("({last}-0"))
                .arg("+")
                .arg("COUNT")
                .arg(BATCH)
                .cmd("HGET")
                .arg(&keys.meta)
                .arg("earliest")
                .query(c)
        })?;
        self.reported = Instant::now();
        let earliest = earliest.unwrap_or(1);
        // Another process compacted past this one's position while it was away (it did not
        // report it for `STALE_S`): the store reloads from the checkpoint (`reload`).
        let gone = Error::Compacted { requested: last + 1, earliest };
        if earliest > last + 1 || self.take(&entries, out)?.is_none() {
            return Err(gone);
        }
        if earliest > self.earliest {
            self.earliest = earliest;
            self.cache.compact(earliest.min(self.last_revision() + 1), &mut |_| {})?;
        }
        if self.cache.len() > CACHE_MAX {
            let keep = self.last_revision() + 1 - (CACHE_MAX / 2) as u64;
            self.cache.compact(keep, &mut |_| {})?;
        }
        Ok(entries.len() == BATCH)
    }

    fn reload(&mut self, apply: &mut dyn FnMut(&Event)) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        let (earliest, last_checkpoint, base) = load_checkpoint(&self.loc, &self.keys, &self.link, apply)?;
        self.cache = MemoryLog::starting_at(base);
        self.earliest = earliest;
        self.last_checkpoint = last_checkpoint;
        self.appended_since_checkpoint = 0;
        Ok(())
    }

    fn scan(
        &self,
        selector: &Selector,
        from: u64,
        to: u64,
        limit: usize,
        visit: &mut dyn FnMut(&Event),
    ) -> Result<u64> {
        let (from, to) = super::scan_range(from, to, self.earliest, self.last_revision())?;
        if from > to {
            return Ok(to + 1);
        }
        let base = self.cache.earliest_revision();
        let mut matched = 0usize;
        if from < base {
            // Older than this process's copy: read from Redis.
            let end = to.min(base - 1);
            // The end of the commit in which the limit was reached.
            let mut stop = None;
            self.each_commit(from, end, &mut |commit| {
                for e in commit.iter().filter(|e| (from..=end).contains(&e.revision)) {
                    if selector.matches(&e.key) {
                        visit(e);
                        matched += 1;
                    }
                }
                if matched >= limit {
                    stop = Some(commit[commit.len() - 1].revision.min(to));
                }
                stop.is_none()
            })?;
            match stop {
                Some(last) if last <= end => return Ok(last + 1),
                // The commit goes on in the copy: finish it there.
                Some(last) => {
                    self.cache.scan(selector, base, last, usize::MAX, visit)?;
                    return Ok(last + 1);
                }
                None => {}
            }
        }
        let rest = limit.saturating_sub(matched).max(1);
        self.cache.scan(selector, from.max(base), to, rest, visit)
    }

    fn earliest_revision(&self) -> u64 {
        self.earliest
    }

    fn last_revision(&self) -> u64 {
        self.cache.last_revision()
    }

    fn compact(&mut self, keep: u64, state: StateVisitor<'_>) -> Result<u64> {
        self.refuse_writes()?;
        let keep = keep.min(self.last_revision() + 1);
        if keep <= self.earliest {
            return Ok(0);
        }
        self.write_checkpoint(state)?;
        let (keys, script) = (&self.keys, &self.compact_script);
        let (dropped, earliest): (u64, u64) = self.link.with("compact the log", |c| {
            script
                .key(&keys.log)
                .key(&keys.meta)
                .key(&keys.readers)
                .key(&keys.seen)
                .key(&keys.tomb)
                .key(&keys.idx)
                .arg(keep)
                .arg(STALE_S)
                .arg(&self.reader)
                .invoke(c)
        })?;
        self.earliest = self.earliest.max(earliest);
        self.cache.compact(self.earliest, &mut |_| {})?;
        Ok(dropped)
    }

    fn check_writable(&self) -> Result<()> {
        self.refuse_writes()
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        // Best effort: a reader that is gone stops holding compaction back at once.
        let (keys, reader) = (&self.keys, &self.reader);
        let _ = self.link.with("leave", |c| {
            ::redis::pipe()
                .cmd("ZREM")
                .arg(&keys.readers)
                .arg(reader)
                .cmd("HDEL")
                .arg(&keys.seen)
                .arg(reader)
                .query::<()>(c)
        });
        *self.link.conn.lock() = None;
    }

    fn stats(&self) -> StorageStats {
        StorageStats {
            durable: true,
            path: Some(format!("{}?store={}", self.loc.shown, self.loc.name)),
            sync: self.appendfsync,
            read_only: self.read_only,
            last_checkpoint_revision: self.last_checkpoint,
            cached_events: self.cache.len() as u64,
            ..StorageStats::default()
        }
    }

    fn checkpoint_if_due(&mut self, state: StateVisitor<'_>) -> Result<()> {
        if self.appended_since_checkpoint < CHECKPOINT_EVERY || self.read_only {
            return Ok(());
        }
        self.write_checkpoint(state)
    }

    fn tail(&self) -> Option<Result<Box<dyn Tail>>> {
        Some(RedisLog::tail(self).map(|t| Box::new(t) as Box<dyn Tail>))
    }
}

/// Waits, on a connection of its own, for commits other processes append (`XREAD BLOCK`).
pub struct RedisTail {
    link: Link,
    key: String,
    /// The connection's id, for `CLIENT UNBLOCK`.
    client_id: Mutex<Option<i64>>,
    stop: AtomicBool,
    /// What the last wait read, for the log's next `pull`.
    prefetched: Arc<Mutex<Entries>>,
    /// The last wait read more than one entry: the log is busy.
    busy: AtomicBool,
}

impl Tail for RedisTail {
    fn wait(&self, after: u64) -> Result<Option<u64>> {
        if self.stop.load(Ordering::Acquire) {
            return Ok(None);
        }
        // A busy log's commits are taken a few at a time rather than one wake-up each (each
        // costs the server a read and this process CPU its writers want); the pause adds at
        // most `BUSY_PAUSE` to the time another process's commit takes to be seen.
        if self.busy.load(Ordering::Relaxed) {
            std::thread::sleep(BUSY_PAUSE);
        }
        // The reply: [[log, [[id, fields]]]], or nil after the timeout.
        type Reply = Option<Vec<(String, Entries)>>;
        let reply: Result<Reply> = self.link.with("wait for the log", |c| {
            if self.client_id.lock().is_none() {
                let id: i64 = ::redis::cmd("CLIENT").arg("ID").query(c)?;
                *self.client_id.lock() = Some(id);
            }
            // The interrupt may have come before the id was known.
            if self.stop.load(Ordering::Acquire) {
                return Ok(None);
            }
            ::redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(1000)
                .arg("COUNT")
                .arg(BATCH)
                .arg("STREAMS")
                .arg(&self.key)
                .arg(format!("{after}-0"))
                .query(c)
        });
        if reply.is_err() {
            // A new connection has a new id.
            *self.client_id.lock() = None;
        }
        let entries: Entries = reply?.into_iter().flatten().flat_map(|(_, entries)| entries).collect();
        // An entry's id is `<the last revision of its commit>-0`.
        let reached = entries.last().and_then(|(id, _)| entry_revision(id));
        self.busy.store(entries.len() > 1, Ordering::Relaxed);
        *self.prefetched.lock() = entries;
        Ok(reached)
    }

    fn interrupt(&self) {
        self.stop.store(true, Ordering::Release);
        let Some(id) = *self.client_id.lock() else { return };
        // Best effort: without it the wait ends at its timeout.
        if let Ok(mut c) = self.link.client.get_connection_with_timeout(CONNECT_TIMEOUT) {
            let _ = ::redis::cmd("CLIENT").arg("UNBLOCK").arg(id).query::<i64>(&mut c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let loc = parse_url("redis://127.0.0.1:6379/2?store=orders").unwrap();
        assert_eq!(loc.server, "redis://127.0.0.1:6379/2");
        assert_eq!(loc.name, "orders");
        let loc = parse_url("redis://:secret@h:1?store=a").unwrap();
        assert_eq!(loc.shown, "redis://***@h:1");
        for bad in [
            "redis://h:1",
            "redis://h:1?store=",
            "redis://h:1?store=a&store=b",
            "redis://h:1?store=a&x=1",
            "redis://h:1?store={a}",
            "redis://?store=a",
            "redis://h:notaport?store=a",
            "redis://h:1?store=a&replicas=x",
            "redis://h:1?store=a&wait_ms=5",
            "redis://h:1?store=a&replicas=1&replicas=2",
            "redis://h:1?store=a&ca=/x.pem",
            "rediss://h:1?store=a&ca=/nonexistent/ca.pem",
            "http://h:1?store=a",
        ] {
            match parse_url(bad) {
                Err(Error::InvalidArgument(m)) => assert!(m.contains("bad Redis store URL"), "{m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(!parse_url("redis://:pw@h:1?x").unwrap_err().to_string().contains("pw"));
        let loc = parse_url("rediss://h:1/0?store=a&replicas=2&wait_ms=50").unwrap();
        assert_eq!((loc.server.as_str(), loc.replicas, loc.wait_ms, loc.ca), ("rediss://h:1/0", 2, 50, None));
        assert_eq!(parse_url("redis://h:1?store=a&replicas=1").unwrap().wait_ms, WAIT_MS);
    }
}
