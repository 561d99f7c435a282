// Compiles include/tidemark.h as C++17 (-Wall -Wextra -Werror): the generated header must
// stay usable from C++ without the wrapper. Nothing here runs.
#include "tidemark.h"

#include <type_traits>

static_assert(std::is_same<std::underlying_type<tidemark_status>::type, uint32_t>::value,
              "tidemark_status is a uint32_t enum in C++");
static_assert(TIDEMARK_ERR_PANIC == 13, "status values are fixed");
static_assert(sizeof(tidemark_bytes) == sizeof(void *) + sizeof(size_t), "tidemark_bytes is (ptr, len)");

extern "C" void tidemark_header_compiles_as_cxx(void);
extern "C" void tidemark_header_compiles_as_cxx(void) {
  tidemark_watch_options options = tidemark_watch_options_default();
  (void)options;
  tidemark_status status = tidemark_store_open(nullptr, nullptr, nullptr);
  (void)tidemark_status_name(status);
}
