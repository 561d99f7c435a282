// examples/cpp/quickstart.cpp: the C quickstart's flow with the C++ wrapper (tidemark.hpp).
//
//   make -C examples/cpp run
//
// Handles clean up after themselves, failures are exceptions (tidemark::error, with the
// status, the message and the revision that goes with it), keys and values are string_views,
// and a push watch takes a lambda.
#include "tidemark.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>

using namespace std::chrono_literals;

static void print(const char *who, tidemark::event e) {
  std::cout << "  " << who << " rev " << e.revision() << " " << tidemark::to_string(e.kind()) << " " << e.key();
  if (e.kind() == tidemark::event_kind::put) std::cout << " = " << e.value() << " (version " << e.version() << ")";
  std::cout << "\n";
}

int main() try {
  std::cout << "tidemark " << tidemark::version() << "\n";

  // 1. An in-memory store; closed when `store` goes out of scope.
  auto store = tidemark::store::open();

  std::cout << "\n1. put\n";
  std::cout << "  users/alice = admin  -> revision " << store.put("users/alice", "admin") << "\n";
  std::cout << "  users/bob   = reader -> revision " << store.put("users/bob", "reader") << "\n";
  std::cout << "  users/alice = owner  -> revision " << store.put("users/alice", "owner") << "\n";

  std::cout << "\n2. get\n";
  auto alice = store.get("users/alice");
  std::cout << "  users/alice = " << alice.value() << " (created at " << alice.create_revision() << ", modified at "
            << alice.mod_revision() << ", version " << alice.version() << ")\n";
  if (!store.find("users/nobody")) std::cout << "  users/nobody: not there\n";

  std::cout << "\n3. batch\n";
  tidemark::batch batch;
  batch.require("users/alice", alice.mod_revision()).put("users/carol", "writer").erase("users/bob");
  auto first = store.commit(batch);
  std::cout << "  committed " << batch.size() << " operations: writes at revisions " << first << ".."
            << store.current_revision() << "\n";
  try {
    store.put_if("users/alice", "guest", 1);
  } catch (const tidemark::error &e) {
    std::cout << "  put_if(users/alice, expected 1) -> " << e.name() << ", its mod_revision is " << e.revision() << "\n";
  }

  std::cout << "\n4. changes since revision 1, 2 per page\n";
  std::uint64_t from = 1;
  for (int page = 1;; page++) {
    auto events = store.changes(from, 0, 2);
    std::cout << " page " << page << ":\n";
    for (auto e : events) print("", e);
    from = events.next_revision();
    if (!events.has_more()) break;
  }
  std::cout << "  next time, ask for changes from revision " << from << "\n";

  std::cout << "\n5. push watch on users/\n";
  std::mutex mu;
  std::condition_variable cv;
  std::uint64_t seen = 0;
  // The lambda runs on a thread the store owns; the library frees it when the watch ends.
  auto id = store.watch(tidemark::selector::prefix("users/"), [&](tidemark::event_span events) {
    std::lock_guard<std::mutex> lock(mu);
    for (auto e : events) {
      print("push:", e);
      seen = e.revision();
    }
    cv.notify_all();
  });
  store.put("config/theme", "dark");  // not under users/: not delivered
  auto dave = store.put("users/dave", "reader");
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return seen >= dave; });
  }
  store.unwatch(id);

  std::cout << "\n6. pull watch from revision 1\n";
  tidemark::watch_options replay;
  replay.start_revision = 1;
  auto watch = store.open_watch(tidemark::selector::all(), replay);
  store.put("users/erin", "writer");
  while (auto events = watch.next(100ms)) {
    for (auto e : *events) print("pull:", e);
  }
  std::cout << "  pull: nothing new for 100 ms: caught up\n";

  std::cout << "\n7. compaction\n";
  auto removed = store.compact(6);
  std::cout << "  compact(6): " << removed << " log entries removed, earliest revision now "
            << store.earliest_revision() << "\n";
  try {
    store.changes(1);
  } catch (const tidemark::error &e) {
    std::cout << "  changes from 1 -> " << e.name() << ": " << e.what() << "\n";
    std::cout << "  resync: current state with range, then changes from " << e.revision() << "\n";
    for (auto kv : store.range()) print("range:", kv);
    for (auto c : store.changes(e.revision())) print("changes:", c);
  }

  std::cout << "\ndone\n";
  return 0;
} catch (const tidemark::error &e) {
  std::cerr << "tidemark error " << e.name() << ": " << e.what() << "\n";
  return 1;
}
