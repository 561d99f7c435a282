// tidemark.hpp: a thin, header-only C++17 wrapper over the C API in tidemark.h.
//
// It only translates the C API into C++ idioms, and adds no behaviour of its own:
//  - handles are RAII, move-only objects (store, pull_watch, events, entry, batch, and the
//    stream_events / stream_list / snapshots lists of the streams API);
//  - a failing call throws tidemark::error, carrying the status, the message and the revision
//    that goes with it (tidemark_last_error_revision());
//  - keys and values go in as std::string_view and come out as std::string_view borrowed from
//    the object that owns them (an events batch, an entry), exactly like the C API's
//    tidemark_bytes: copy them if they must outlive it;
//  - push watches take any callable; the std::function is owned by the library and freed
//    through drop_userdata, so nothing leaks however the watch ends.
//
// Link with the tidemark library (libtidemark.a + -lpthread -ldl -lm, or libtidemark.so).
#ifndef TIDEMARK_HPP
#define TIDEMARK_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tidemark.h"

namespace tidemark {

/// A failed call: what() is tidemark_last_error_message() at the time of the failure.
class error : public std::runtime_error {
 public:
  error(tidemark_status status, const char *message, std::uint64_t revision, std::int64_t current_version = -1)
      : std::runtime_error(message ? message : ""), status_(status), revision_(revision),
        current_version_(current_version) {}

  tidemark_status status() const noexcept { return status_; }
  /// e.g. "TIDEMARK_ERR_COMPACTED".
  const char *name() const noexcept { return tidemark_status_name(status_); }
  /// After COMPACTED: the earliest retained revision. After FUTURE_REVISION: the current
  /// revision. After CONFLICT: the key's current mod_revision (0 = absent). Otherwise 0.
  std::uint64_t revision() const noexcept { return revision_; }
  /// After CONFLICT from store::append: the stream's current version (-1 = no stream);
  /// otherwise -1.
  std::int64_t current_version() const noexcept { return current_version_; }

 private:
  tidemark_status status_;
  std::uint64_t revision_;
  std::int64_t current_version_;
};

namespace detail {

inline void check(tidemark_status status) {
  if (status != TIDEMARK_OK)
    throw error(status, tidemark_last_error_message(), tidemark_last_error_revision(),
                tidemark_last_error_current_version());
}

inline const std::uint8_t *bytes(std::string_view s) noexcept {
  return reinterpret_cast<const std::uint8_t *>(s.data());
}

inline std::string_view view(tidemark_bytes b) noexcept {
  return b.len == 0 ? std::string_view() : std::string_view(reinterpret_cast<const char *>(b.ptr), b.len);
}

template <typename T, void (*Free)(T *)>
struct deleter {
  void operator()(T *p) const noexcept { Free(p); }
};

}  // namespace detail

inline const char *version() noexcept { return tidemark_version(); }
inline const char *status_name(tidemark_status status) noexcept { return tidemark_status_name(status); }

/// What an event is about (tidemark_event_kind).
enum class event_kind : std::uint32_t {
  put = TIDEMARK_EVENT_PUT,
  del = TIDEMARK_EVENT_DELETE,
  progress = TIDEMARK_EVENT_PROGRESS,
  compacted = TIDEMARK_EVENT_COMPACTED,
  closed = TIDEMARK_EVENT_CLOSED,
};

inline const char *to_string(event_kind k) noexcept {
  switch (k) {
    case event_kind::put: return "PUT";
    case event_kind::del: return "DELETE";
    case event_kind::progress: return "PROGRESS";
    case event_kind::compacted: return "COMPACTED";
    case event_kind::closed: return "CLOSED";
  }
  return "UNKNOWN";
}

/// A view of one event. Valid as long as what it was taken from: an `events` batch, or,
/// inside a push-watch callback, the call.
class event {
 public:
  explicit event(const tidemark_event &e) noexcept : e_(&e) {}

  std::uint64_t revision() const noexcept { return e_->revision; }
  event_kind kind() const noexcept { return static_cast<event_kind>(e_->kind); }
  std::string_view key() const noexcept { return detail::view(e_->key); }
  std::string_view value() const noexcept { return detail::view(e_->value); }
  std::uint64_t create_revision() const noexcept { return e_->create_revision; }
  std::uint64_t version() const noexcept { return e_->version; }
  /// COMPACTED or CLOSED: the watch's last event.
  bool is_terminal() const noexcept { return kind() == event_kind::compacted || kind() == event_kind::closed; }
  const tidemark_event &c() const noexcept { return *e_; }

 private:
  const tidemark_event *e_;
};

/// A contiguous run of events (what a callback receives, and what `events` holds).
class event_span {
 public:
  class iterator {
   public:
    using iterator_category = std::random_access_iterator_tag;
    using value_type = event;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = event;

    explicit iterator(const tidemark_event *p = nullptr) noexcept : p_(p) {}
    event operator*() const noexcept { return event(*p_); }
    event operator[](difference_type n) const noexcept { return event(p_[n]); }
    iterator &operator++() noexcept { ++p_; return *this; }
    iterator operator++(int) noexcept { iterator t = *this; ++p_; return t; }
    iterator &operator--() noexcept { --p_; return *this; }
    iterator operator--(int) noexcept { iterator t = *this; --p_; return t; }
    iterator &operator+=(difference_type n) noexcept { p_ += n; return *this; }
    iterator &operator-=(difference_type n) noexcept { p_ -= n; return *this; }
    friend iterator operator+(iterator i, difference_type n) noexcept { return i += n; }
    friend iterator operator+(difference_type n, iterator i) noexcept { return i += n; }
    friend iterator operator-(iterator i, difference_type n) noexcept { return i -= n; }
    friend difference_type operator-(iterator a, iterator b) noexcept { return a.p_ - b.p_; }
    friend bool operator==(iterator a, iterator b) noexcept { return a.p_ == b.p_; }
    friend bool operator!=(iterator a, iterator b) noexcept { return a.p_ != b.p_; }
    friend bool operator<(iterator a, iterator b) noexcept { return a.p_ < b.p_; }
    friend bool operator>(iterator a, iterator b) noexcept { return a.p_ > b.p_; }
    friend bool operator<=(iterator a, iterator b) noexcept { return a.p_ <= b.p_; }
    friend bool operator>=(iterator a, iterator b) noexcept { return a.p_ >= b.p_; }

   private:
    const tidemark_event *p_;
  };

  event_span() noexcept = default;
  event_span(const tidemark_event *data, std::size_t size) noexcept : data_(size ? data : nullptr), size_(size) {}

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  event operator[](std::size_t i) const noexcept { return event(data_[i]); }
  event front() const noexcept { return event(data_[0]); }
  event back() const noexcept { return event(data_[size_ - 1]); }
  iterator begin() const noexcept { return iterator(data_); }
  iterator end() const noexcept { return iterator(data_ + size_); }
  const tidemark_event *data() const noexcept { return data_; }

 private:
  const tidemark_event *data_ = nullptr;
  std::size_t size_ = 0;
};

/// An owned batch of events (from changes, range or a pull watch). Iterate it for `event`s.
class events {
 public:
  explicit events(tidemark_events *raw) noexcept : p_(raw) {}

  std::size_t size() const noexcept { return tidemark_events_len(p_.get()); }
  bool empty() const noexcept { return size() == 0; }
  event_span span() const noexcept { return event_span(tidemark_events_data(p_.get()), size()); }
  event operator[](std::size_t i) const noexcept { return span()[i]; }
  event_span::iterator begin() const noexcept { return span().begin(); }
  event_span::iterator end() const noexcept { return span().end(); }
  /// changes: the limit stopped the read early; range: keys were left out.
  bool has_more() const noexcept { return tidemark_events_has_more(p_.get()); }
  /// changes: the `from` of the next page; a watch delivery: the revision after its last event.
  std::uint64_t next_revision() const noexcept { return tidemark_events_next_revision(p_.get()); }
  /// The one buffer every key and value points into.
  std::string_view arena() const noexcept { return detail::view(tidemark_events_arena(p_.get())); }
  tidemark_events *c() const noexcept { return p_.get(); }

 private:
  std::unique_ptr<tidemark_events, detail::deleter<tidemark_events, tidemark_events_free>> p_;
};

/// One key's state, as returned by store::get. A copy: independent of the store.
class entry {
 public:
  explicit entry(tidemark_entry *raw) noexcept : p_(raw) {}

  std::string_view value() const noexcept { return detail::view(tidemark_entry_value(p_.get())); }
  std::uint64_t create_revision() const noexcept { return tidemark_entry_create_revision(p_.get()); }
  std::uint64_t mod_revision() const noexcept { return tidemark_entry_mod_revision(p_.get()); }
  std::uint64_t version() const noexcept { return tidemark_entry_version(p_.get()); }

 private:
  std::unique_ptr<tidemark_entry, detail::deleter<tidemark_entry, tidemark_entry_free>> p_;
};

/// An atomic write batch: operations are copied in; commit it with store::commit.
class batch {
 public:
  batch() : p_(tidemark_batch_new()) {
    if (!p_) throw std::bad_alloc();
  }

  batch &put(std::string_view key, std::string_view value) {
    detail::check(tidemark_batch_put(p_.get(), detail::bytes(key), key.size(), detail::bytes(value), value.size()));
    return *this;
  }
  batch &erase(std::string_view key) {
    detail::check(tidemark_batch_delete(p_.get(), detail::bytes(key), key.size()));
    return *this;
  }
  /// At commit, key's mod_revision must be `expected_mod_revision` (0 = must not exist).
  batch &require(std::string_view key, std::uint64_t expected_mod_revision) {
    detail::check(tidemark_batch_require(p_.get(), detail::bytes(key), key.size(), expected_mod_revision));
    return *this;
  }
  std::size_t size() const noexcept { return tidemark_batch_len(p_.get()); }
  void clear() noexcept { tidemark_batch_clear(p_.get()); }
  const tidemark_batch *c() const noexcept { return p_.get(); }

 private:
  std::unique_ptr<tidemark_batch, detail::deleter<tidemark_batch, tidemark_batch_free>> p_;
};

/// Which keys a read or a watch covers. Owns copies of its bytes.
class selector {
 public:
  /// Every key (like a NULL selector in C).
  selector() : kind_(TIDEMARK_SELECT_ALL) {}
  static selector all() { return selector(); }
  static selector key(std::string_view k) { return selector(TIDEMARK_SELECT_KEY, k, {}); }
  static selector prefix(std::string_view p) { return selector(TIDEMARK_SELECT_PREFIX, p, {}); }
  /// [start, end); an empty end means no upper bound.
  static selector range(std::string_view start, std::string_view end) {
    return selector(TIDEMARK_SELECT_RANGE, start, end);
  }

  /// The C view; its bytes point into this selector (valid while it lives, unmodified).
  tidemark_selector c() const noexcept {
    tidemark_selector s;
    s.kind = kind_;
    s.start = {detail::bytes(start_), start_.size()};
    s.end = {detail::bytes(end_), end_.size()};
    return s;
  }

 private:
  selector(std::uint32_t kind, std::string_view start, std::string_view end) : kind_(kind), start_(start), end_(end) {}
  std::uint32_t kind_;
  std::string start_, end_;
};

/// What opening a directory store cut off the end of its log (see tidemark_store_tail_repair);
/// all 0 when nothing was cut.
struct tail_repair {
  std::uint64_t bytes = 0, commits = 0, revisions = 0, first_revision = 0;
};

/// How a watch starts and is paced (see tidemark_watch_options).
struct watch_options {
  std::uint64_t start_revision = 0;  ///< 0 = only the future; N = replay from N, then live
  std::size_t max_queue = 0;         ///< 0 = the default (1000)
  std::chrono::milliseconds progress_interval{0};  ///< 0 = no progress events
  std::uint64_t credit = 0;          ///< push only: 0 = unlimited

  tidemark_watch_options c() const noexcept {
    tidemark_watch_options o = tidemark_watch_options_default();
    o.start_revision = start_revision;
    if (max_queue) o.max_queue = max_queue;
    o.progress_interval_ms = static_cast<std::uint32_t>(progress_interval.count());
    o.credit = credit;
    return o;
  }
};

/// A pull watch: call next() from one thread at a time. Closed (and freed) on destruction;
/// it may outlive its store, and then reports the CLOSED event and CLOSED errors.
class pull_watch {
 public:
  explicit pull_watch(tidemark_watch *raw) noexcept : p_(raw) {}

  /// Waits up to `timeout` for the next delivery: whole commits, or one PROGRESS event, or
  /// the terminal event. std::nullopt when nothing came in time. After the terminal event
  /// was returned, throws error with TIDEMARK_ERR_CLOSED.
  std::optional<events> next(std::chrono::milliseconds timeout) {
    tidemark_events *out = nullptr;
    auto ms = timeout.count() < 0 ? 0 : timeout.count() > UINT32_MAX ? UINT32_MAX : timeout.count();
    tidemark_status st = tidemark_watch_next(p_.get(), static_cast<std::uint32_t>(ms), &out);
    if (st == TIDEMARK_ERR_TIMEOUT) return std::nullopt;
    detail::check(st);
    return events(out);
  }
  std::uint64_t id() const noexcept { return tidemark_watch_id(p_.get()); }
  void close() noexcept { p_.reset(); }

 private:
  std::unique_ptr<tidemark_watch, detail::deleter<tidemark_watch, tidemark_watch_close>> p_;
};

/// An owned list from the streams and snapshots API (stream events, stream names, snapshots):
/// a contiguous array of the C structs, whose bytes are borrowed from the list.
template <typename H, typename E, std::size_t (*Len)(const H *), const E *(*Data)(const H *), void (*Free)(H *)>
class list {
 public:
  explicit list(H *raw) noexcept : p_(raw) {}
  std::size_t size() const noexcept { return Len(p_.get()); }
  bool empty() const noexcept { return size() == 0; }
  const E &operator[](std::size_t i) const noexcept { return Data(p_.get())[i]; }
  const E *begin() const noexcept { return Data(p_.get()); }
  const E *end() const noexcept { return begin() + size(); }
  H *c() const noexcept { return p_.get(); }

 private:
  std::unique_ptr<H, detail::deleter<H, Free>> p_;
};

using stream_events = list<tidemark_stream_events, tidemark_stream_event, tidemark_stream_events_len,
                           tidemark_stream_events_data, tidemark_stream_events_free>;
using stream_list = list<tidemark_stream_list, tidemark_stream_info, tidemark_stream_list_len,
                         tidemark_stream_list_data, tidemark_stream_list_free>;
using snapshots =
    list<tidemark_snapshots, tidemark_snapshot, tidemark_snapshots_len, tidemark_snapshots_data, tidemark_snapshots_free>;

/// Which stream events a subscription delivers: every stream, one stream or a name prefix,
/// optionally of one event type only. Owns copies of its bytes.
class stream_selector {
 public:
  stream_selector() : kind_(TIDEMARK_STREAMS_ALL) {}
  static stream_selector all() { return stream_selector(); }
  static stream_selector stream(std::string_view name) { return stream_selector(TIDEMARK_STREAMS_ONE, name); }
  static stream_selector prefix(std::string_view p) { return stream_selector(TIDEMARK_STREAMS_PREFIX, p); }
  /// The same streams, events of type `t` only (an empty `t` means any type).
  stream_selector of_type(std::string_view t) const {
    stream_selector s = *this;
    s.type_ = t;
    return s;
  }

  /// The C view; its bytes point into this selector (valid while it lives, unmodified).
  tidemark_stream_selector c() const noexcept {
    tidemark_stream_selector s;
    s.kind = kind_;
    s.stream = {detail::bytes(name_), name_.size()};
    s.event_type = {detail::bytes(type_), type_.size()};
    return s;
  }

 private:
  stream_selector(std::uint32_t kind, std::string_view name) : kind_(kind), name_(name) {}
  std::uint32_t kind_;
  std::string name_, type_;
};

/// A delivery of a pull subscription: tidemark_sub_event items borrowed from it.
using sub_events =
    list<tidemark_sub_events, tidemark_sub_event, tidemark_sub_events_len, tidemark_sub_events_data, tidemark_sub_events_free>;

/// A pull subscription (see pull_watch): call next() from one thread at a time; closed on
/// destruction, and it may outlive its store.
class sub_feed {
 public:
  explicit sub_feed(tidemark_sub_feed *raw) noexcept : p_(raw) {}

  /// The next delivery, std::nullopt when nothing came in time; throws CLOSED after the
  /// terminal item was returned.
  std::optional<sub_events> next(std::chrono::milliseconds timeout) {
    tidemark_sub_events *out = nullptr;
    auto ms = timeout.count() < 0 ? 0 : timeout.count() > UINT32_MAX ? UINT32_MAX : timeout.count();
    tidemark_status st = tidemark_sub_feed_next(p_.get(), static_cast<std::uint32_t>(ms), &out);
    if (st == TIDEMARK_ERR_TIMEOUT) return std::nullopt;
    detail::check(st);
    return sub_events(out);
  }
  std::uint64_t id() const noexcept { return tidemark_sub_feed_id(p_.get()); }
  void close() noexcept { p_.reset(); }

 private:
  std::unique_ptr<tidemark_sub_feed, detail::deleter<tidemark_sub_feed, tidemark_sub_feed_close>> p_;
};

/// The callback of a push subscription: as watch_callback, with subscription items.
using sub_callback = std::function<void(const tidemark_sub_event *items, std::size_t count)>;

/// Deliveries of a persistent subscription (or its parked events): tidemark_delivery structs
/// whose bytes are borrowed from the list.
using deliveries = list<tidemark_deliveries, tidemark_delivery, tidemark_deliveries_len, tidemark_deliveries_data,
                        tidemark_deliveries_free>;

/// A consumer of a persistent subscription (store::subscription_connect). One thread at a
/// time; disconnected on destruction (its unacked events go to the other consumers).
class subscription {
 public:
  explicit subscription(tidemark_subscription *raw) noexcept : p_(raw) {}

  /// Waits up to `timeout` for deliveries; std::nullopt when none came in time.
  std::optional<deliveries> next(std::chrono::milliseconds timeout) {
    tidemark_deliveries *out = nullptr;
    auto ms = timeout.count() < 0 ? 0 : timeout.count() > UINT32_MAX ? UINT32_MAX : timeout.count();
    tidemark_status st = tidemark_subscription_next(p_.get(), static_cast<std::uint32_t>(ms), &out);
    if (st == TIDEMARK_ERR_TIMEOUT) return std::nullopt;
    detail::check(st);
    return deliveries(out);
  }
  /// Acks events delivered to this consumer (one commit for all of them).
  void ack(const std::vector<std::uint64_t> &revisions) {
    detail::check(tidemark_subscription_ack(p_.get(), revisions.data(), revisions.size()));
  }
  void ack(std::uint64_t revision) { detail::check(tidemark_subscription_ack(p_.get(), &revision, 1)); }
  void nack(std::uint64_t revision, tidemark_nack_action action) {
    detail::check(tidemark_subscription_nack(p_.get(), revision, action));
  }
  void close() noexcept { p_.reset(); }

 private:
  std::unique_ptr<tidemark_subscription, detail::deleter<tidemark_subscription, tidemark_subscription_close>> p_;
};

/// An event to append; an empty id (16 bytes otherwise) is generated by the library.
struct new_event {
  std::string_view type;
  std::string_view data;
  std::string_view metadata = {};
  std::string_view id = {};
};

/// The callback type of a push watch. It runs on a thread the store owns, one call at a time
/// per watch, and may call back into the store. It must not throw: an exception cannot cross
/// the C ABI, so one escaping the callback calls std::terminate.
using watch_callback = std::function<void(event_span)>;

/// One notification of a tracker; the views are valid only during the callback.
struct notification {
  tidemark_action action;
  std::string_view feature;
  std::string_view id;
  std::uint64_t revision;
  /// JSON text (`null` for the terminal COMPACTED / CLOSED).
  std::string_view data;
};

/// The callback type of a tracker: same threads and rules as watch_callback (no throwing).
using tracker_callback = std::function<void(const notification &)>;

/// A tracker (store::track): untracks when destroyed or on untrack(). It must not outlive its
/// store; one that ended by itself (terminal notification) untracks as a no-op.
class tracker {
 public:
  tracker(tracker &&o) noexcept : s_(o.s_), id_(std::exchange(o.id_, 0)) {}
  tracker &operator=(tracker &&o) noexcept {
    if (this != &o) {
      reset();
      s_ = o.s_;
      id_ = std::exchange(o.id_, 0);
    }
    return *this;
  }
  ~tracker() { reset(); }
  std::uint64_t id() const noexcept { return id_; }
  /// Ends the tracker: when this returns (outside its callback) the callback will not run again.
  void untrack() { reset(); }

 private:
  friend class store;
  tracker(tidemark_store *s, std::uint64_t id) noexcept : s_(s), id_(id) {}
  void reset() noexcept {
    if (id_ != 0) (void)tidemark_store_untrack(s_, std::exchange(id_, 0)); /* NOT_FOUND: it ended */
  }
  tidemark_store *s_;
  std::uint64_t id_;
};

/// What store::context_sync answered: `json` is the RFC 6902 patch (DELTA), the document
/// (FULL) or empty (NO_CHANGE); `version` is the current version.
struct context_sync_result {
  tidemark_sync_kind kind;
  std::uint64_t version;
  std::string json;
};

/// A store. Closed on destruction (every watch ends first; see tidemark_store_close).
class store {
 public:
  /// An in-memory store (empty path) or a durable one in a directory; options as JSON.
  static store open(std::string_view path = {}, std::string_view options_json = {}) {
    std::string p(path), o(options_json);
    tidemark_store *raw = nullptr;
    detail::check(tidemark_store_open(p.empty() ? nullptr : p.c_str(), o.empty() ? nullptr : o.c_str(), &raw));
    return store(raw);
  }

  store(store &&) noexcept = default;
  store &operator=(store &&) noexcept = default;

  /// Closes now (the destructor does it otherwise). No other thread may use the store.
  void close() noexcept { p_.reset(); }

  std::uint64_t current_revision() const noexcept { return tidemark_store_current_revision(p_.get()); }
  std::uint64_t earliest_revision() const noexcept { return tidemark_store_earliest_revision(p_.get()); }
  std::size_t watcher_count() const noexcept { return tidemark_store_watcher_count(p_.get()); }

  /// Returns the new revision.
  std::uint64_t put(std::string_view key, std::string_view value) {
    std::uint64_t rev = 0;
    detail::check(tidemark_store_put(p_.get(), detail::bytes(key), key.size(), detail::bytes(value), value.size(), &rev));
    return rev;
  }
  /// Puts only if key's mod_revision is `expected_mod_revision` (0 = must not exist);
  /// otherwise throws error(TIDEMARK_ERR_CONFLICT) whose revision() is the current one.
  std::uint64_t put_if(std::string_view key, std::string_view value, std::uint64_t expected_mod_revision) {
    std::uint64_t rev = 0;
    detail::check(tidemark_store_put_if(p_.get(), detail::bytes(key), key.size(), detail::bytes(value), value.size(),
                                        expected_mod_revision, &rev));
    return rev;
  }
  /// Deletes key; returns the delete's revision. A missing key throws TIDEMARK_ERR_NOT_FOUND.
  std::uint64_t erase(std::string_view key) {
    std::uint64_t rev = 0;
    detail::check(tidemark_store_delete(p_.get(), detail::bytes(key), key.size(), &rev));
    return rev;
  }
  /// A missing key throws TIDEMARK_ERR_NOT_FOUND; see find() for the non-throwing form.
  entry get(std::string_view key) const {
    tidemark_entry *raw = nullptr;
    detail::check(tidemark_store_get(p_.get(), detail::bytes(key), key.size(), &raw));
    return entry(raw);
  }
  std::optional<entry> find(std::string_view key) const {
    tidemark_entry *raw = nullptr;
    tidemark_status st = tidemark_store_get(p_.get(), detail::bytes(key), key.size(), &raw);
    if (st == TIDEMARK_ERR_NOT_FOUND) return std::nullopt;
    detail::check(st);
    return entry(raw);
  }
  /// Applies the batch atomically; returns the first write's revision (0 if it wrote nothing).
  std::uint64_t commit(const batch &b) {
    std::uint64_t first = 0;
    detail::check(tidemark_store_commit(p_.get(), b.c(), &first));
    return first;
  }
  /// Current keys in byte order, as PUT events; limit 0 = all.
  events range(const selector &sel = selector::all(), std::size_t limit = 0) const {
    tidemark_events *out = nullptr;
    tidemark_selector cs = sel.c();
    detail::check(tidemark_store_range(p_.get(), &cs, limit, &out));
    return events(out);
  }
  /// Changes with revision in [from, to] (to 0 = current), at most about `limit` (0 = 1000).
  /// Continue from next_revision() while has_more().
  events changes(std::uint64_t from, std::uint64_t to = 0, std::size_t limit = 0,
                 const selector &sel = selector::all()) const {
    tidemark_events *out = nullptr;
    tidemark_selector cs = sel.c();
    detail::check(tidemark_store_changes(p_.get(), &cs, from, to, limit, &out));
    return events(out);
  }
  /// Drops log entries below keep_revision; returns how many.
  std::uint64_t compact(std::uint64_t keep_revision) {
    std::uint64_t removed = 0;
    detail::check(tidemark_store_compact(p_.get(), keep_revision, &removed));
    return removed;
  }
  /// What opening the store cut off the end of its log.
  tidemark::tail_repair tail_repair() const {
    tidemark::tail_repair r;
    detail::check(tidemark_store_tail_repair(p_.get(), &r.bytes, &r.commits, &r.revisions, &r.first_revision));
    return r;
  }
  /// The store's state as JSON.
  std::string status_json() const {
    char *raw = nullptr;
    detail::check(tidemark_store_status_json(p_.get(), &raw));
    return owned_string(raw);
  }

  /// The metrics in the Prometheus text exposition format, and the same as a JSON object
  /// (docs/operations.md).
  std::string metrics_text() const {
    char *raw = nullptr;
    detail::check(tidemark_store_metrics_text(p_.get(), &raw));
    return owned_string(raw);
  }
  std::string metrics_json() const {
    char *raw = nullptr;
    detail::check(tidemark_store_metrics_json(p_.get(), &raw));
    return owned_string(raw);
  }

  /// Contexts (docs/contexts.md): JSON documents in and out as strings. set/update return
  /// {"document", "version", "delta", "revision"}; an invalid or non-object JSON throws
  /// TIDEMARK_ERR_INVALID_ARGUMENT, an absent context TIDEMARK_ERR_NOT_FOUND.
  std::string context_set(std::string_view id, const std::string &document_json) {
    char *raw = nullptr;
    detail::check(tidemark_store_context_set(p_.get(), detail::bytes(id), id.size(), document_json.c_str(), &raw));
    return owned_string(raw);
  }
  /// Applies an RFC 7386 merge patch (a JSON object).
  std::string context_update(std::string_view id, const std::string &patch_json) {
    char *raw = nullptr;
    detail::check(tidemark_store_context_update(p_.get(), detail::bytes(id), id.size(), patch_json.c_str(), &raw));
    return owned_string(raw);
  }
  /// {"id", "id_hex", "document", "version", "created_ms", "updated_ms", "revision"}.
  std::string context_get(std::string_view id) const {
    char *raw = nullptr;
    detail::check(tidemark_store_context_get(p_.get(), detail::bytes(id), id.size(), &raw));
    return owned_string(raw);
  }
  /// Deletes the context and its deltas; returns the commit's revision.
  std::uint64_t context_delete(std::string_view id) {
    std::uint64_t rev = 0;
    detail::check(tidemark_store_context_delete(p_.get(), detail::bytes(id), id.size(), &rev));
    return rev;
  }
  /// client_version <= 0 (TIDEMARK_SYNC_NONE) = the client has nothing.
  context_sync_result context_sync(std::string_view id, std::int64_t client_version) const {
    context_sync_result r{TIDEMARK_SYNC_NO_CHANGE, 0, {}};
    char *raw = nullptr;
    detail::check(tidemark_store_context_sync(p_.get(), detail::bytes(id), id.size(), client_version, &r.kind,
                                              &r.version, &raw));
    if (raw != nullptr) r.json = owned_string(raw);
    return r;
  }
  /// A JSON array of contexts (as context_get) by id; limit 0 = 1000.
  std::string context_list(std::size_t limit = 0, std::size_t offset = 0,
                           tidemark_order order = TIDEMARK_ORDER_ASC) const {
    char *raw = nullptr;
    detail::check(tidemark_store_context_list(p_.get(), limit, offset, order, &raw));
    return owned_string(raw);
  }
  /// A JSON array of the retained deltas {"version", "timestamp_ms", "patch"}; limit 0 = all.
  std::string context_deltas(std::string_view id, std::size_t limit = 0, std::size_t offset = 0,
                             tidemark_order order = TIDEMARK_ORDER_ASC) const {
    char *raw = nullptr;
    detail::check(tidemark_store_context_deltas(p_.get(), detail::bytes(id), id.size(), limit, offset, order, &raw));
    return owned_string(raw);
  }
  /// One cleanup pass; returns {contexts deleted, deltas deleted}.
  std::pair<std::uint64_t, std::uint64_t> context_cleanup(std::size_t limit = 0) {
    std::uint64_t contexts = 0, deltas = 0;
    detail::check(tidemark_store_context_cleanup(p_.get(), limit, &contexts, &deltas));
    return {contexts, deltas};
  }
  /// Starts the store's cleanup thread (a context_cleanup(limit) pass every interval_ms), or
  /// sets its interval and limit when it runs. The store stops it when it closes.
  void context_cleaner_start(std::uint64_t interval_ms, std::size_t limit = 0) {
    detail::check(tidemark_store_context_cleaner_start(p_.get(), interval_ms, limit));
  }
  /// Changes the running cleanup thread's interval (TIDEMARK_ERR_NOT_FOUND when none runs).
  void context_cleaner_set_interval(std::uint64_t interval_ms) {
    detail::check(tidemark_store_context_cleaner_set_interval(p_.get(), interval_ms));
  }
  /// Stops the cleanup thread and waits for it; returns whether one was running.
  bool context_cleaner_stop() {
    bool was = false;
    detail::check(tidemark_store_context_cleaner_stop(p_.get(), &was));
    return was;
  }

  /// The store's clock (ms since the epoch) for every timestamp and TTL; an empty function
  /// goes back to the system clock. The library owns the callable (deleted when replaced or
  /// at close), calls it from any thread, also concurrently; it must not use the store and
  /// an exception it throws reads as 0.
  using clock_function = std::function<std::uint64_t()>;
  void set_clock(clock_function clock) {
    if (!clock) return detail::check(tidemark_store_set_clock(p_.get(), nullptr, nullptr, nullptr));
    // A failed call has already deleted the callable (drop_userdata runs on failure too).
    detail::check(tidemark_store_set_clock(p_.get(), &store::clock_trampoline,
                                           new clock_function(std::move(clock)), &store::drop_as<clock_function>));
  }

  /// An exporter: gets the id, the context JSON (as context_get) and its version; returns
  /// true when it took the context (false or an exception: the export failed).
  using context_exporter = std::function<bool(std::string_view id, std::string_view context_json, std::uint64_t version)>;
  /// Sets the exporter of context_export and of cleanup (an empty function removes it). It runs
  /// on the exporting thread (the caller's or the cleanup thread) and may use the store.
  void context_set_exporter(context_exporter exporter) {
    if (!exporter) return detail::check(tidemark_store_context_set_exporter(p_.get(), nullptr, nullptr, nullptr));
    detail::check(tidemark_store_context_set_exporter(p_.get(), &store::export_trampoline,
                                                      new context_exporter(std::move(exporter)),
                                                      &store::drop_as<context_exporter>));
  }
  /// A provider: answers a missing context's document JSON and the version it had (0 =
  /// unknown), or nullopt when it has none; an exception is a failure (TIDEMARK_ERR_IO).
  using context_provider = std::function<std::optional<std::pair<std::string, std::uint64_t>>(std::string_view id)>;
  /// Sets the provider that context_get / _update / _sync ask for a missing context (an empty
  /// function removes it). It runs on the calling thread and may use the store.
  void context_set_provider(context_provider provider) {
    if (!provider) return detail::check(tidemark_store_context_set_provider(p_.get(), nullptr, nullptr, nullptr));
    detail::check(tidemark_store_context_set_provider(p_.get(), &store::provide_trampoline,
                                                      new context_provider(std::move(provider)),
                                                      &store::drop_as<context_provider>));
  }
  /// Hands the context to the exporter; returns it as JSON (as context_get).
  std::string context_export(std::string_view id) const {
    char *raw = nullptr;
    detail::check(tidemark_store_context_export(p_.get(), detail::bytes(id), id.size(), &raw));
    return owned_string(raw);
  }
  /// Stores a document for a missing context (see tidemark_store_context_restore); returns the
  /// context as it is then.
  std::string context_restore(std::string_view id, const std::string &document_json, std::uint64_t version = 0) {
    char *raw = nullptr;
    detail::check(tidemark_store_context_restore(p_.get(), detail::bytes(id), id.size(), document_json.c_str(),
                                                 version, &raw));
    return owned_string(raw);
  }

  /// Registers a push watch and returns its id. The callable is moved to the heap and owned
  /// by the library until the watch ends (unwatch, terminal event, store close, or a failed
  /// registration), when drop_userdata deletes it.
  std::uint64_t watch(const selector &sel, watch_callback callback, const watch_options &options = {}) {
    if (!callback) throw std::invalid_argument("tidemark::store::watch: empty callback");
    tidemark_selector cs = sel.c();
    tidemark_watch_options o = options.c();
    std::uint64_t id = 0;
    auto *fn = new watch_callback(std::move(callback));
    tidemark_status st = tidemark_store_watch(p_.get(), &cs, &o, &store::trampoline, fn, &store::drop, &id);
    // A failed registration has already called drop_userdata, except for a NULL store
    // (a moved-from or closed `store`), which takes nothing over.
    if (st != TIDEMARK_OK && !p_) delete fn;
    detail::check(st);
    return id;
  }
  /// Ends a push watch: when this returns the callback will not run again.
  void unwatch(std::uint64_t watch_id) { detail::check(tidemark_store_unwatch(p_.get(), watch_id)); }
  /// Grants a push watch opened with a credit `n` more events.
  void credit(std::uint64_t watch_id, std::uint64_t n) {
    detail::check(tidemark_store_watch_credit(p_.get(), watch_id, n));
  }
  /// Tracks `feature` (streams, snapshots, contexts, keys, keys/<prefix>, or a user feature);
  /// the callable is owned by the library until the tracker ends, as for watch().
  tracker track(std::string_view feature, tracker_callback callback, const watch_options &options = {}) {
    if (!callback) throw std::invalid_argument("tidemark::store::track: empty callback");
    std::string f(feature);
    tidemark_watch_options o = options.c();
    std::uint64_t id = 0;
    auto *fn = new tracker_callback(std::move(callback));
    tidemark_status st = tidemark_store_track(p_.get(), f.c_str(), &o, &store::tracker_trampoline, fn,
                                              &store::tracker_drop, &id);
    if (st != TIDEMARK_OK && !p_) delete fn;  // a NULL store takes nothing over
    detail::check(st);
    return tracker(p_.get(), id);
  }
  /// The ids of the live trackers of `feature`, ascending.
  std::vector<std::uint64_t> tracker_members(std::string_view feature) const {
    std::string f(feature);
    std::vector<std::uint64_t> ids(16);
    std::size_t n = 0;
    for (;;) {
      detail::check(tidemark_store_tracker_members(p_.get(), f.c_str(), ids.data(), ids.size(), &n));
      if (n <= ids.size()) break;
      ids.resize(n);
    }
    ids.resize(n);
    return ids;
  }
  /// Notifies the trackers of the user feature `feature`; returns the commit's revision.
  std::uint64_t notify(std::string_view feature, tidemark_action action, std::string_view id,
                       std::string_view data_json = "null") {
    std::string f(feature), d(data_json);
    std::uint64_t rev = 0;
    detail::check(tidemark_store_notify(p_.get(), f.c_str(), static_cast<std::uint32_t>(action), detail::bytes(id),
                                        id.size(), d.c_str(), &rev));
    return rev;
  }
  /// Opens a pull watch.
  pull_watch open_watch(const selector &sel = selector::all(), const watch_options &options = {}) {
    tidemark_selector cs = sel.c();
    tidemark_watch_options o = options.c();
    tidemark_watch *raw = nullptr;
    detail::check(tidemark_watch_open(p_.get(), &cs, &o, &raw));
    return pull_watch(raw);
  }

  /// Registers a push subscription and returns its id (a watch id: unwatch() ends it,
  /// credit() paces it). The callable is owned by the library until the subscription ends.
  std::uint64_t subscribe(const stream_selector &sel, sub_callback callback, const watch_options &options = {}) {
    if (!callback) throw std::invalid_argument("tidemark::store::subscribe: empty callback");
    tidemark_stream_selector cs = sel.c();
    tidemark_watch_options o = options.c();
    std::uint64_t id = 0;
    auto *fn = new sub_callback(std::move(callback));
    // On failure the library has already called sub_drop, which freed fn.
    detail::check(tidemark_store_subscribe(p_.get(), &cs, &o, &store::sub_trampoline, fn, &store::sub_drop, &id));
    return id;
  }
  /// Opens a pull subscription.
  sub_feed open_subscription(const stream_selector &sel = stream_selector::all(), const watch_options &options = {}) {
    tidemark_stream_selector cs = sel.c();
    tidemark_watch_options o = options.c();
    tidemark_sub_feed *raw = nullptr;
    detail::check(tidemark_store_subscribe_pull(p_.get(), &cs, &o, &raw));
    return sub_feed(raw);
  }

  /// Appends atomically if the stream's version matches `expected_version`
  /// (TIDEMARK_EXPECT_ANY / _NO_STREAM / _EXISTS or an exact version); a mismatch throws an
  /// error with status CONFLICT and the stream's current_version().
  tidemark_append_result append(std::string_view stream, const std::vector<new_event> &events,
                                std::int64_t expected_version = TIDEMARK_EXPECT_ANY) {
    std::vector<tidemark_stream_event> in(events.size());
    for (std::size_t i = 0; i < events.size(); i++) {
      const new_event &e = events[i];
      in[i] = tidemark_stream_event{{nullptr, 0},
                                    {detail::bytes(e.id), e.id.size()},
                                    {detail::bytes(e.type), e.type.size()},
                                    {detail::bytes(e.data), e.data.size()},
                                    {detail::bytes(e.metadata), e.metadata.size()},
                                    0,
                                    0,
                                    0};
    }
    tidemark_append_result r{};
    detail::check(tidemark_store_append(p_.get(), detail::bytes(stream), stream.size(), in.data(), in.size(),
                                        expected_version, &r));
    return r;
  }
  /// Up to `count` events (0 = all) from `from_version` (TIDEMARK_READ_FROM_END backward).
  stream_events read_stream(std::string_view stream, std::int64_t from_version = 0, std::size_t count = 0,
                            tidemark_direction direction = TIDEMARK_FORWARD) const {
    tidemark_stream_events *raw = nullptr;
    detail::check(tidemark_store_read_stream(p_.get(), detail::bytes(stream), stream.size(), from_version, count,
                                             direction, &raw));
    return stream_events(raw);
  }

  /// Creates a persistent subscription; returns the first revision of its commit.
  std::uint64_t subscription_create(std::string_view name, const stream_selector &selector,
                                    tidemark_subscription_start start, std::uint64_t start_revision = 0,
                                    const tidemark_subscription_options *options = nullptr) {
    std::uint64_t rev = 0;
    tidemark_stream_selector sel = selector.c();
    detail::check(tidemark_store_subscription_create(p_.get(), detail::bytes(name), name.size(), &sel, start,
                                                     start_revision, options, &rev));
    return rev;
  }
  std::uint64_t subscription_delete(std::string_view name) {
    std::uint64_t rev = 0;
    detail::check(tidemark_store_subscription_delete(p_.get(), detail::bytes(name), name.size(), &rev));
    return rev;
  }
  /// Every subscription as a JSON array (see tidemark_store_subscription_list).
  std::string subscription_list() const {
    char *json = nullptr;
    detail::check(tidemark_store_subscription_list(p_.get(), &json));
    std::string out(json);
    tidemark_string_free(json);
    return out;
  }
  subscription subscription_connect(std::string_view name) {
    tidemark_subscription *raw = nullptr;
    detail::check(tidemark_subscription_connect(p_.get(), detail::bytes(name), name.size(), &raw));
    return subscription(raw);
  }
  deliveries subscription_parked(std::string_view name, std::size_t limit = 0) const {
    tidemark_deliveries *out = nullptr;
    detail::check(tidemark_store_subscription_parked(p_.get(), detail::bytes(name), name.size(), limit, &out));
    return deliveries(out);
  }
  std::size_t subscription_replay_parked(std::string_view name) {
    std::size_t n = 0;
    detail::check(tidemark_store_subscription_replay_parked(p_.get(), detail::bytes(name), name.size(), &n));
    return n;
  }
  /// Delivery starts again at `revision` (see tidemark_store_subscription_reset).
  std::uint64_t subscription_reset(std::string_view name, std::uint64_t revision) {
    std::uint64_t rev = 0;
    detail::check(tidemark_store_subscription_reset(p_.get(), detail::bytes(name), name.size(), revision, &rev));
    return rev;
  }
  /// -1 when the stream does not exist.
  std::int64_t stream_version(std::string_view stream) const {
    std::int64_t v = -1;
    detail::check(tidemark_store_stream_version(p_.get(), detail::bytes(stream), stream.size(), &v));
    return v;
  }
  stream_list list_streams(std::string_view prefix = {}, std::string_view after = {}, std::size_t limit = 0) const {
    tidemark_stream_list *raw = nullptr;
    detail::check(tidemark_store_list_streams(p_.get(), detail::bytes(prefix), prefix.size(), detail::bytes(after),
                                              after.size(), limit, &raw));
    return stream_list(raw);
  }
  /// Returns the commit's first revision.
  std::uint64_t delete_stream(std::string_view stream) {
    std::uint64_t rev = 0;
    detail::check(tidemark_store_delete_stream(p_.get(), detail::bytes(stream), stream.size(), &rev));
    return rev;
  }
  std::uint64_t snapshot_record(std::string_view source, std::string_view stream, std::uint64_t version,
                                std::string_view data) {
    std::uint64_t rev = 0;
    detail::check(tidemark_store_snapshot_record(p_.get(), detail::bytes(source), source.size(), detail::bytes(stream),
                                                 stream.size(), version, detail::bytes(data), data.size(), &rev));
    return rev;
  }
  /// The latest snapshot at or below `max_version` (a list of one); NOT_FOUND throws.
  snapshots snapshot_read(std::string_view source, std::string_view stream, std::uint64_t max_version) const {
    tidemark_snapshots *raw = nullptr;
    detail::check(tidemark_store_snapshot_read(p_.get(), detail::bytes(source), source.size(), detail::bytes(stream),
                                               stream.size(), max_version, &raw));
    return snapshots(raw);
  }
  std::uint64_t snapshot_delete(std::string_view source, std::string_view stream, std::uint64_t version) {
    std::uint64_t rev = 0;
    detail::check(tidemark_store_snapshot_delete(p_.get(), detail::bytes(source), source.size(), detail::bytes(stream),
                                                 stream.size(), version, &rev));
    return rev;
  }
  snapshots snapshot_list(std::string_view source, std::string_view stream) const {
    tidemark_snapshots *raw = nullptr;
    detail::check(tidemark_store_snapshot_list(p_.get(), detail::bytes(source), source.size(), detail::bytes(stream),
                                               stream.size(), &raw));
    return snapshots(raw);
  }

  tidemark_store *c() const noexcept { return p_.get(); }

 private:
  explicit store(tidemark_store *raw) noexcept : p_(raw) {}

  static void trampoline(void *userdata, const tidemark_event *events, std::size_t count) noexcept {
    (*static_cast<watch_callback *>(userdata))(event_span(events, count));
  }
  static void drop(void *userdata) noexcept { delete static_cast<watch_callback *>(userdata); }
  static void sub_trampoline(void *userdata, const tidemark_sub_event *items, std::size_t count) noexcept {
    (*static_cast<sub_callback *>(userdata))(items, count);
  }
  static void sub_drop(void *userdata) noexcept { delete static_cast<sub_callback *>(userdata); }
  static void tracker_trampoline(void *userdata, const tidemark_notification *n) noexcept {
    using detail::view;
    (*static_cast<tracker_callback *>(userdata))(notification{static_cast<tidemark_action>(n->action),
                                                              view(n->feature), view(n->id), n->revision,
                                                              view(n->data)});
  }
  static void tracker_drop(void *userdata) noexcept { delete static_cast<tracker_callback *>(userdata); }
  template <class F>
  static void drop_as(void *userdata) noexcept {
    delete static_cast<F *>(userdata);
  }
  static std::uint64_t clock_trampoline(void *userdata) noexcept {
    try {
      return (*static_cast<clock_function *>(userdata))();
    } catch (...) {
      return 0;
    }
  }
  static std::uint32_t export_trampoline(void *userdata, const std::uint8_t *id, std::size_t id_len, const char *json,
                                         std::uint64_t version) noexcept {
    try {
      std::string_view name(reinterpret_cast<const char *>(id), id_len);
      return (*static_cast<context_exporter *>(userdata))(name, json, version) ? TIDEMARK_OK : TIDEMARK_ERR_IO;
    } catch (...) {
      return TIDEMARK_ERR_IO;
    }
  }
  static std::uint32_t provide_trampoline(void *userdata, const std::uint8_t *id, std::size_t id_len,
                                          tidemark_context_reply *reply) noexcept {
    try {
      auto answer = (*static_cast<context_provider *>(userdata))(std::string_view(reinterpret_cast<const char *>(id), id_len));
      if (!answer) return TIDEMARK_ERR_NOT_FOUND;
      return tidemark_context_reply_set(reply, answer->first.c_str(), answer->second);
    } catch (...) {
      return TIDEMARK_ERR_IO;
    }
  }
  static std::string owned_string(char *raw) {
    std::unique_ptr<char, detail::deleter<char, tidemark_string_free>> owned(raw);
    return std::string(owned.get());
  }

  std::unique_ptr<tidemark_store, detail::deleter<tidemark_store, tidemark_store_close>> p_;
};

}  // namespace tidemark

#endif  // TIDEMARK_HPP
