// tests/c/test_hpp.cpp: a smoke test of the C++ wrapper include/tidemark.hpp, run under
// AddressSanitizer (so a std::function that drop_userdata fails to free is a leak and fails
// the run). The C API itself is tested by main.c and test_*.c.
#include "tidemark.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

static int g_passed, g_failed;

#define CHECK(cond)                                                                                         \
  do {                                                                                                      \
    if (cond) {                                                                                             \
      g_passed++;                                                                                           \
    } else {                                                                                                \
      g_failed++;                                                                                           \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n    last error: %s\n", __FILE__, __LINE__, #cond,     \
                   tidemark_last_error_message());                                                          \
    }                                                                                                       \
  } while (0)

// Runs `f`, expecting tidemark::error with `status`; returns the error's revision.
template <typename F>
static std::uint64_t expect_error(F &&f, tidemark_status status, int line) {
  try {
    f();
  } catch (const tidemark::error &e) {
    if (e.status() == status && e.what()[0] != '\0') {
      g_passed++;
      return e.revision();
    }
    std::fprintf(stderr, "%s:%d: threw %s (%s), expected %s\n", __FILE__, line, e.name(), e.what(),
                 tidemark::status_name(status));
    g_failed++;
    return 0;
  }
  std::fprintf(stderr, "%s:%d: did not throw, expected %s\n", __FILE__, line, tidemark::status_name(status));
  g_failed++;
  return 0;
}
#define EXPECT_ERROR(stmt, status) expect_error([&] { stmt; }, status, __LINE__)

template <typename P>
static bool wait_until(P pred) {
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// Counts how many live copies of itself exist: a leaked std::function keeps one alive.
struct tracked {
  static std::atomic<int> alive;
  tracked() { alive++; }
  tracked(const tracked &) { alive++; }
  ~tracked() { alive--; }
};
std::atomic<int> tracked::alive{0};

struct seen {
  std::mutex mu;
  std::vector<std::uint64_t> revisions;
  std::vector<std::string> keys;
  int terminals = 0;
  tidemark::event_kind last_kind = tidemark::event_kind::put;
  std::size_t size() {
    std::lock_guard<std::mutex> g(mu);
    return revisions.size();
  }
};

int main() {
  std::printf("tidemark %s: C++ wrapper tests\n", tidemark::version());

  EXPECT_ERROR(tidemark::store::open("", "{\"nope\": 1}"), TIDEMARK_ERR_INVALID_ARGUMENT);

  auto s = tidemark::store::open();
  CHECK(s.current_revision() == 0 && s.earliest_revision() == 1);
  CHECK(s.put("a", "1") == 1);
  CHECK(s.put("b", std::string("\0x", 2)) == 2);
  CHECK(s.get("b").value() == std::string_view("\0x", 2));
  auto e = s.get("a");
  CHECK(e.value() == "1" && e.version() == 1 && e.create_revision() == 1 && e.mod_revision() == 1);
  CHECK(!s.find("zz").has_value());
  EXPECT_ERROR(s.get("zz"), TIDEMARK_ERR_NOT_FOUND);
  EXPECT_ERROR(s.erase("zz"), TIDEMARK_ERR_NOT_FOUND);
  EXPECT_ERROR(s.put("", "v"), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(EXPECT_ERROR(s.put_if("a", "2", 0), TIDEMARK_ERR_CONFLICT) == 1);
  CHECK(s.put_if("a", "2", 1) == 3);
  CHECK(s.erase("b") == 4);

  tidemark::batch b;
  b.put("x", "1").put("y", "1").require("a", 3);
  CHECK(b.size() == 3);
  CHECK(s.commit(b) == 5);
  b.clear();
  b.require("a", 1).put("z", "1");
  CHECK(EXPECT_ERROR(s.commit(b), TIDEMARK_ERR_CONFLICT) == 3);
  CHECK(!s.find("z"));

  // changes with paging; range with selectors
  std::vector<std::uint64_t> revs;
  for (std::uint64_t from = 1;;) {
    auto page = s.changes(from, 0, 2);
    for (auto ev : page) revs.push_back(ev.revision());
    if (!page.has_more()) break;
    from = page.next_revision();
  }
  CHECK((revs == std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6}));
  auto r = s.range(tidemark::selector::range("a", "y"));
  CHECK(r.size() == 2 && r[0].key() == "a" && r[1].key() == "x" && !r.has_more());
  CHECK(s.range(tidemark::selector::prefix("x")).size() == 1);
  CHECK(s.range(tidemark::selector::key("y"))[0].kind() == tidemark::event_kind::put);
  CHECK(s.range({}, 1).has_more());
  EXPECT_ERROR(s.range(tidemark::selector::range("b", "a")), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(s.status_json().find("\"revision\":6") != std::string::npos);
  CHECK(s.metrics_text().find("\ntidemark_revision 6\n") != std::string::npos);
  CHECK(s.metrics_json().find("\"tidemark_revision\":6") != std::string::npos);
  CHECK(s.tail_repair().commits == 0 && s.tail_repair().first_revision == 0);

  // Contexts: JSON strings in and out, sync results, errors as exceptions.
  CHECK(s.context_set("ctx", R"({"a":1})").find("\"version\":1") != std::string::npos);
  CHECK(s.context_update("ctx", R"({"b":2})").find("\"version\":2") != std::string::npos);
  CHECK(s.context_get("ctx").find(R"("document":{"a":1,"b":2})") != std::string::npos);
  auto delta = s.context_sync("ctx", 1);
  CHECK(delta.kind == TIDEMARK_SYNC_DELTA && delta.version == 2 && delta.json.find("/b") != std::string::npos);
  auto same = s.context_sync("ctx", 2);
  CHECK(same.kind == TIDEMARK_SYNC_NO_CHANGE && same.json.empty());
  CHECK(s.context_sync("ctx", TIDEMARK_SYNC_NONE).kind == TIDEMARK_SYNC_FULL);
  CHECK(s.context_list().find("\"id\":\"ctx\"") != std::string::npos);
  CHECK(s.context_deltas("ctx", 0, 0, TIDEMARK_ORDER_DESC).find("\"version\":2") != std::string::npos);
  CHECK(s.context_cleanup() == std::make_pair(std::uint64_t{0}, std::uint64_t{0}));
  EXPECT_ERROR(s.context_set("ctx", "[1]"), TIDEMARK_ERR_INVALID_ARGUMENT);
  EXPECT_ERROR(s.context_update("ctx", "{"), TIDEMARK_ERR_INVALID_ARGUMENT);
  CHECK(s.context_delete("ctx") > 0);
  EXPECT_ERROR(s.context_get("ctx"), TIDEMARK_ERR_NOT_FOUND);
  {
    // The clock, the cleanup thread, the exporter and the provider through RAII-owned callables.
    auto c = tidemark::store::open({}, R"({"context_ttl_ms":10,"context_auto_delete":true})");
    auto now = std::make_shared<std::atomic<std::uint64_t>>(1000);
    c.set_clock([now] { return now->load(); });
    c.context_set("old", "{}");
    CHECK(c.context_get("old").find("\"created_ms\":1000") != std::string::npos);
    auto exported = std::make_shared<std::vector<std::string>>();
    c.context_set_exporter([exported](std::string_view id, std::string_view, std::uint64_t version) {
      exported->push_back(std::string(id) + "@" + std::to_string(version));
      return true;
    });
    CHECK(c.context_export("old").find("\"version\":1") != std::string::npos);
    now->store(2000);
    CHECK(c.context_cleanup() == std::make_pair(std::uint64_t{1}, std::uint64_t{0}));
    CHECK(exported->size() == 2 && (*exported)[1] == "old@1");
    c.context_set_exporter([](std::string_view, std::string_view, std::uint64_t) -> bool {
      throw std::runtime_error("archive down");
    });
    c.context_set("x", "{}");
    EXPECT_ERROR(c.context_export("x"), TIDEMARK_ERR_IO);
    c.context_set_exporter(nullptr);
    EXPECT_ERROR(c.context_export("x"), TIDEMARK_ERR_INVALID_ARGUMENT);
    c.context_set_provider([](std::string_view id) -> std::optional<std::pair<std::string, std::uint64_t>> {
      if (id == "kept") return std::make_pair(std::string(R"({"r":1})"), std::uint64_t{5});
      if (id == "broken") throw std::runtime_error("backend down");
      return std::nullopt;
    });
    CHECK(c.context_get("kept").find("\"version\":5") != std::string::npos);
    EXPECT_ERROR(c.context_get("broken"), TIDEMARK_ERR_IO);
    EXPECT_ERROR(c.context_get("none"), TIDEMARK_ERR_NOT_FOUND);
    CHECK(c.context_restore("r", R"({"k":1})").find("\"version\":1") != std::string::npos);
    c.context_cleaner_start(1000);
    c.context_cleaner_set_interval(2000);
    CHECK(c.context_cleaner_stop() && !c.context_cleaner_stop());
    EXPECT_ERROR(c.context_cleaner_set_interval(5), TIDEMARK_ERR_NOT_FOUND);
    c.context_cleaner_start(1000);  // still running at close: the store stops it
    c.set_clock(nullptr);
  }

  // A push watch with a lambda; its std::function is freed by drop_userdata on unwatch.
  {
    auto state = std::make_shared<seen>();
    tracked t;
    std::uint64_t id = s.watch(tidemark::selector::prefix("w/"), [state, t](tidemark::event_span events) {
      std::lock_guard<std::mutex> g(state->mu);
      for (auto ev : events) {
        if (ev.is_terminal()) {
          state->terminals++;
          state->last_kind = ev.kind();
        } else {
          state->revisions.push_back(ev.revision());
          state->keys.emplace_back(ev.key());
        }
      }
    });
    CHECK(tracked::alive == 2);
    std::uint64_t first = s.put("w/1", "a");
    s.put("other", "b");
    s.put("w/2", "c");
    CHECK(wait_until([&] { return state->size() == 2; }));
    {
      std::lock_guard<std::mutex> g(state->mu);
      CHECK(state->revisions[0] == first && state->revisions[1] == first + 2);
      CHECK(state->keys[1] == "w/2");
    }
    s.unwatch(id);
    CHECK(tracked::alive == 1);  // the lambda's copy is gone
    EXPECT_ERROR(s.unwatch(id), TIDEMARK_ERR_NOT_FOUND);
    EXPECT_ERROR(s.credit(id, 1), TIDEMARK_ERR_NOT_FOUND);
  }
  CHECK(tracked::alive == 0);

  // A failed registration frees the callable too.
  s.compact(3);
  {
    tracked t;
    tidemark::watch_options o;
    o.start_revision = 1;
    CHECK(EXPECT_ERROR(s.watch({}, [t](tidemark::event_span) {}, o), TIDEMARK_ERR_COMPACTED) == 3);
    EXPECT_ERROR(s.open_watch({}, o), TIDEMARK_ERR_COMPACTED);
    CHECK(tracked::alive == 1);
    EXPECT_ERROR(s.changes(1), TIDEMARK_ERR_COMPACTED);
  }

  // Credit flow control.
  {
    auto state = std::make_shared<seen>();
    tidemark::watch_options o;
    o.credit = 1;
    std::uint64_t id = s.watch(tidemark::selector::key("c"), [state](tidemark::event_span events) {
      std::lock_guard<std::mutex> g(state->mu);
      for (auto ev : events) state->revisions.push_back(ev.revision());
    }, o);
    s.put("c", "1");
    s.put("c", "2");
    CHECK(wait_until([&] { return state->size() == 1; }));
    std::this_thread::sleep_for(50ms);
    CHECK(state->size() == 1);
    s.credit(id, 1);
    CHECK(wait_until([&] { return state->size() == 2; }));
    s.unwatch(id);
  }

  // A pull watch: timeout, events, progress.
  {
    tidemark::watch_options o;
    o.progress_interval = 20ms;
    auto w = s.open_watch(tidemark::selector::all(), o);
    CHECK(w.id() != 0);
    std::uint64_t rev = s.put("p", "1");
    bool got = false;
    for (int i = 0; i < 100 && !got; i++) {
      auto evs = w.next(60s);
      CHECK(evs.has_value());
      if (evs && (*evs)[0].kind() == tidemark::event_kind::put) {
        got = (*evs)[0].revision() == rev && (*evs)[0].value() == "1" && evs->next_revision() == rev + 1;
      }
    }
    CHECK(got);
    auto progress = w.next(60s);
    CHECK(progress && progress->size() == 1 && (*progress)[0].kind() == tidemark::event_kind::progress);
    CHECK(progress && (*progress)[0].revision() == s.current_revision());
  }
  CHECK(s.watcher_count() == 0);

  // Closing the store ends push watches (CLOSED, then the callable is freed) and pull
  // watches (CLOSED event, then TIDEMARK_ERR_CLOSED errors).
  auto state = std::make_shared<seen>();
  {
    tracked t;
    s.watch({}, [state, t](tidemark::event_span events) {
      std::lock_guard<std::mutex> g(state->mu);
      for (auto ev : events)
        if (ev.is_terminal()) state->terminals++, state->last_kind = ev.kind();
    });
  }
  auto w = s.open_watch();
  CHECK(tracked::alive == 1 && s.watcher_count() == 2);
  s.close();
  CHECK(tracked::alive == 0);
  CHECK(state->terminals == 1 && state->last_kind == tidemark::event_kind::closed);
  auto last = w.next(60s);
  CHECK(last && last->size() == 1 && (*last)[0].kind() == tidemark::event_kind::closed);
  EXPECT_ERROR(w.next(0ms), TIDEMARK_ERR_CLOSED);
  w.close();

  // A closed (or moved-from) store refuses calls with NULL_ARGUMENT and leaks nothing.
  {
    tracked t;
    EXPECT_ERROR(s.watch({}, [t](tidemark::event_span) {}), TIDEMARK_ERR_NULL_ARGUMENT);
    EXPECT_ERROR(s.put("k", "v"), TIDEMARK_ERR_NULL_ARGUMENT);
    CHECK(s.current_revision() == 0);
  }
  CHECK(tracked::alive == 0);
  auto s2 = tidemark::store::open();
  auto s3 = std::move(s2);
  CHECK(s3.put("k", "v") == 1);
  EXPECT_ERROR(s2.put("k", "v"), TIDEMARK_ERR_NULL_ARGUMENT);

  // Streams and snapshots: RAII lists, CONFLICT with the stream's current version.
  {
    auto st = tidemark::store::open();
    auto r = st.append("orders", {{"created", "1"}, {"paid", "2", "meta"}}, TIDEMARK_EXPECT_NO_STREAM);
    CHECK(r.first_version == 0 && r.version == 1 && r.first_revision == 1);
    try {
      st.append("orders", {{"x", ""}}, 0);
      CHECK(false);
    } catch (const tidemark::error &e) {
      CHECK(e.status() == TIDEMARK_ERR_CONFLICT && e.current_version() == 1);
    }
    std::string id(16, '\x07');
    st.append("orders", {{"shipped", "3", "", id}}, 1);
    CHECK(st.stream_version("orders") == 2);
    auto evs = st.read_stream("orders");
    CHECK(evs.size() == 3 && tidemark::detail::view(evs[1].metadata) == "meta");
    CHECK(tidemark::detail::view(evs[2].id) == id && evs[2].version == 2);
    auto back = st.read_stream("orders", TIDEMARK_READ_FROM_END, 1, TIDEMARK_BACKWARD);
    CHECK(back.size() == 1 && back[0].version == 2);
    int n = 0;
    for (const tidemark_stream_event &e : evs) n += e.version == static_cast<std::uint64_t>(n);
    CHECK(n == 3);
    auto names = st.list_streams();
    CHECK(names.size() == 1 && names[0].version == 2);
    st.snapshot_record("src", "orders", 2, "snap");
    CHECK(st.snapshot_read("src", "orders", 9)[0].version == 2 && st.snapshot_list("src", "orders").size() == 1);
    st.snapshot_delete("src", "orders", 2);
    EXPECT_ERROR(st.snapshot_read("src", "orders", 9), TIDEMARK_ERR_NOT_FOUND);
    CHECK(st.delete_stream("orders") > 0 && st.stream_version("orders") == -1);
    EXPECT_ERROR(st.read_stream("orders"), TIDEMARK_ERR_NOT_FOUND);
    EXPECT_ERROR(st.append("", {{"t", ""}}), TIDEMARK_ERR_INVALID_ARGUMENT);
  }

  // Transient subscriptions: a pull feed replaying history, a push callback owned by the
  // library (freed through drop_userdata: ASan would report a leak), bad names throwing.
  {
    auto st = tidemark::store::open();
    st.append("order-1", {{"created", "1"}, {"paid", "2"}});
    st.append("cart-1", {{"created", "3"}});
    tidemark::watch_options from1;
    from1.start_revision = 1;
    auto feed = st.open_subscription(tidemark::stream_selector::all().of_type("created"), from1);
    CHECK(feed.id() > 0);
    std::vector<std::string> got;
    while (auto d = feed.next(0ms))
      for (const tidemark_sub_event &e : *d) got.push_back(std::string(tidemark::detail::view(e.event.stream)));
    CHECK((got == std::vector<std::string>{"order-1", "cart-1"}));
    std::atomic<int> n{0};
    auto keep = std::make_shared<int>(1);
    std::uint64_t id = st.subscribe(tidemark::stream_selector::stream("order-1"),
                                    [&n, keep](const tidemark_sub_event *items, std::size_t count) {
                                      for (std::size_t i = 0; i < count; i++) n += items[i].kind == TIDEMARK_EVENT_PUT;
                                    },
                                    from1);
    CHECK(wait_until([&] { return n.load() == 2; }));
    st.unwatch(id);
    CHECK(keep.use_count() == 1);
    EXPECT_ERROR(st.open_subscription(tidemark::stream_selector::prefix("")), TIDEMARK_ERR_INVALID_ARGUMENT);
    EXPECT_ERROR(st.subscribe(tidemark::stream_selector::stream(std::string(1025, 'x')),
                              [](const tidemark_sub_event *, std::size_t) {}),
                 TIDEMARK_ERR_TOO_LARGE);
  }
  // Trackers: RAII untrack, members, notify, a failed registration frees the callable.
  {
    auto st = tidemark::store::open();
    auto state = std::make_shared<seen>();
    tracked t;
    {
      auto tr = st.track("jobs", [state, t](const tidemark::notification &n) {
        std::lock_guard<std::mutex> g(state->mu);
        state->revisions.push_back(n.revision);
        state->keys.emplace_back(std::string(n.id) + "=" + std::string(n.data));
      });
      CHECK(tracked::alive == 2);
      CHECK(st.tracker_members("jobs") == std::vector<std::uint64_t>{tr.id()});
      std::uint64_t rev = st.notify("jobs", TIDEMARK_ACTION_CREATED, "j1", "{\"a\":1}");
      CHECK(wait_until([&] { return state->size() == 1; }));
      std::lock_guard<std::mutex> g(state->mu);
      CHECK(state->revisions[0] == rev && state->keys[0] == "j1={\"a\":1}");
    }
    CHECK(tracked::alive == 1);  // the tracker untracked when it went out of scope
    CHECK(st.tracker_members("jobs").empty());
    EXPECT_ERROR(st.track("", [t](const tidemark::notification &) {}), TIDEMARK_ERR_INVALID_ARGUMENT);
    EXPECT_ERROR(st.notify("jobs", static_cast<tidemark_action>(9), "x"), TIDEMARK_ERR_INVALID_ARGUMENT);
    CHECK(tracked::alive == 1);
  }
  CHECK(tracked::alive == 0);

  // Persistent subscriptions: a consumer (RAII) acks and nacks, parked events replay, a
  // consumer that goes out of scope hands its events to another, and a reset redelivers.
  {
    auto st = tidemark::store::open();
    st.append("order-1", {{"created", "1"}, {"paid", "2"}});
    st.subscription_create("sub", tidemark::stream_selector::prefix("order-"), TIDEMARK_START_BEGINNING);
    std::vector<std::uint64_t> revs;
    {
      auto c = st.subscription_connect("sub");
      while (revs.size() < 2)
        if (auto d = c.next(60000ms))
          for (const tidemark_delivery &e : *d) revs.push_back(e.event.revision);
      c.ack(revs[0]);
      c.nack(revs[1], TIDEMARK_NACK_PARK);
      CHECK(st.subscription_parked("sub").size() == 1);
      CHECK(st.subscription_replay_parked("sub") == 1);
      EXPECT_ERROR(c.ack(std::vector<std::uint64_t>{revs[0]}), TIDEMARK_ERR_INVALID_ARGUMENT);
      auto again = c.next(60000ms);
      CHECK(again && again->size() == 1 && (*again)[0].delivery_count == 1);
    }
    auto other = st.subscription_connect("sub");
    auto handed = other.next(60000ms);
    CHECK(handed && handed->size() == 1 && (*handed)[0].delivery_count == 2);
    other.ack(std::vector<std::uint64_t>{revs[1]});
    CHECK(st.subscription_parked("sub").empty());
    CHECK(st.subscription_list().find("\"parked\":0") != std::string::npos);
    // Reset to the first event: delivered again to the next consumer.
    std::uint64_t at = st.subscription_reset("sub", revs[0]);
    CHECK(at == st.current_revision());
    EXPECT_ERROR(other.next(0ms), TIDEMARK_ERR_CONFLICT);
    EXPECT_ERROR(st.subscription_reset("sub", 0), TIDEMARK_ERR_INVALID_ARGUMENT);
    EXPECT_ERROR(st.subscription_reset("nope", 1), TIDEMARK_ERR_NOT_FOUND);
    {
      auto c = st.subscription_connect("sub");
      auto d = c.next(60000ms);
      CHECK(d && (*d)[0].event.revision == revs[0]);
    }
    EXPECT_ERROR(st.subscription_create("sub", tidemark::stream_selector::all(), TIDEMARK_START_END),
                 TIDEMARK_ERR_CONFLICT);
    st.subscription_delete("sub");
    EXPECT_ERROR(st.subscription_connect("sub"), TIDEMARK_ERR_NOT_FOUND);
  }

  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
