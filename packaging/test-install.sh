#!/usr/bin/env bash
# `make test-install`: installs tidemark (from target/dist, see `make dist`) into temporary
# prefixes and uses it as a C and a C++ project would: checks the file layout (DESTDIR staging
# too), the soname, the exported symbols and their version, the split debug info, builds the
# C quickstart with pkg-config (shared, then static with Libs.private) and the C++ quickstart
# with CMake find_package (shared and static), runs them against the installed library, checks
# the CMake version file, builds the Erlang application with rebar3 from the installed library
# (no checkout), runs the CLI, and uninstalls.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test-install: FAIL: $*" >&2; exit 1; }
ok() { echo "test-install: ok: $*"; passed=$((passed + 1)); }
passed=0

VERSION=$(sed -n 's/^version = "\([^"]*\)"/\1/p' Cargo.toml | head -n 1)
MAJOR=${VERSION%%.*}
REAL=libtidemark.so.$VERSION
SONAME=libtidemark.so.$MAJOR
MAKE_INSTALL=(make --no-print-directory -s -C "$ROOT")

# The bindings carry the crate's version, set by hand.
py_version=$(sed -n 's/^version = "\([^"]*\)"/\1/p' bindings/python/pyproject.toml)
py_init_version=$(sed -n 's/^__version__ = "\([^"]*\)"/\1/p' bindings/python/tidemark/__init__.py)
erl_version=$(sed -n 's/.*{vsn, "\([^"]*\)"}.*/\1/p' bindings/erlang/src/tidemark.app.src)
[ "$py_version $py_init_version $erl_version" = "$VERSION $VERSION $VERSION" ] || \
  fail "versions differ: Cargo.toml $VERSION, pyproject.toml $py_version, __init__.py $py_init_version, tidemark.app.src $erl_version"

expected_files() { # the installed tree, relative to the prefix: "f path" files, "l path -> target" links
  LC_ALL=C sort <<LIST
f bin/tidemark
f include/tidemark.h
f include/tidemark.hpp
f lib/$REAL
f lib/$REAL.debug
f lib/cmake/tidemark/tidemarkConfig.cmake
f lib/cmake/tidemark/tidemarkConfigVersion.cmake
f lib/libtidemark.a
l lib/libtidemark.so -> $SONAME
l lib/$SONAME -> $REAL
f lib/pkgconfig/tidemark.pc
LIST
}
listing() { # what is under $1, in expected_files' format
  (cd "$1" && find . \( -type f -o -type l \) | sed 's|^\./||' | while read -r p; do
    if [ -L "$p" ]; then echo "l $p -> $(readlink "$p")"; else echo "f $p"; fi
  done) | LC_ALL=C sort
}

# 1. DESTDIR staging: the files land under DESTDIR, the paths inside name PREFIX.
stage=$tmp/stage
"${MAKE_INSTALL[@]}" install DESTDIR="$stage" PREFIX=/usr
diff <(expected_files) <(listing "$stage/usr") || fail "installed files differ from the expected layout"
grep -qx 'prefix=/usr' "$stage/usr/lib/pkgconfig/tidemark.pc" || fail "tidemark.pc does not say prefix=/usr"
"${MAKE_INSTALL[@]}" uninstall DESTDIR="$stage" PREFIX=/usr
[ -z "$(find "$stage" \( -type f -o -type l \))" ] || fail "uninstall left: $(find "$stage" \( -type f -o -type l \))"
ok "DESTDIR=... PREFIX=/usr installs the expected $(expected_files | wc -l) entries; uninstall removes them"

# 2. A real prefix.
prefix=$tmp/prefix
"${MAKE_INSTALL[@]}" install PREFIX="$prefix"
lib=$prefix/lib
diff <(expected_files) <(listing "$prefix") || fail "installed files differ from the expected layout"

soname=$(readelf -d "$lib/$REAL" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "$SONAME" ] || fail "soname is '$soname', not $SONAME"
ok "readelf: $REAL has soname $soname"

# Exported: exactly the header's functions, each at version TIDEMARK_<major>.<minor> (the map's node).
header_fns=$(grep -o '\btidemark_[a-z0-9_]*(' include/tidemark.h | tr -d '(' | sort -u)
exports=$(nm -D --defined-only "$lib/$REAL" | awk '$2 != "A" {print $3}' | sort -u)
[ "$(sed 's/@@.*//' <<<"$exports")" = "$header_fns" ] || \
  fail "exports differ from the header: $(diff <(echo "$header_fns") <(sed 's/@@.*//' <<<"$exports") | grep '^[<>]' | head)"
cargo_exports=$(nm -D --defined-only target/release/libtidemark.so | awk '{print $3}' | sort -u)
[ "$cargo_exports" = "$header_fns" ] || fail "target/release/libtidemark.so (cargo's) exports differ from the header"
node=TIDEMARK_$(cut -d. -f1,2 <<<"$VERSION")
unversioned=$(grep -v "@@$node\$" <<<"$exports" || true)
[ -z "$unversioned" ] || fail "exports without version $node: $unversioned"
ok "exports: the header's $(wc -l <<<"$header_fns") functions (as cargo's cdylib), all @@$node, nothing else"

# Stripped library, debug info in the .debug file it names.
readelf -S "$lib/$REAL" | grep -q '\.debug_info' && fail "the installed $REAL still has debug info"
readelf -S "$lib/$REAL.debug" | grep -q '\.debug_info' || fail "$REAL.debug has no debug info"
link=$(readelf --string-dump=.gnu_debuglink "$lib/$REAL" | sed -n 's/^ *\[ *0\] *//p')
[ "$link" = "$REAL.debug" ] || fail "debuglink is '$link', not $REAL.debug"
readelf -S "$lib/libtidemark.a" | grep -q '\.debug_info' && fail "the installed libtidemark.a has debug info"
ok "stripped: $REAL $(stat -c %s "$lib/$REAL") bytes, $REAL.debug $(stat -c %s "$lib/$REAL.debug") bytes (debuglink), libtidemark.a $(stat -c %s "$lib/libtidemark.a") bytes"

# 3. C quickstart with pkg-config, shared: linked by soname, loaded from the prefix.
export PKG_CONFIG_PATH=$lib/pkgconfig
[ "$(pkg-config --modversion tidemark)" = "$VERSION" ] || fail "pkg-config --modversion is not $VERSION"
cc -std=c99 -Wall -Wextra -Werror examples/c/quickstart.c $(pkg-config --cflags --libs tidemark) -o "$tmp/qs_c"
readelf -d "$tmp/qs_c" | grep -q "NEEDED.*\[$SONAME\]" || fail "the C quickstart does not need $SONAME"
loaded=$(LD_LIBRARY_PATH=$lib ldd "$tmp/qs_c" | awk -v s="$SONAME" '$1 == s {print $3}')
[ "$loaded" = "$lib/$SONAME" ] || fail "$SONAME resolves to '$loaded', not the installed $lib/$SONAME"
(cd "$tmp" && LD_LIBRARY_PATH=$lib ./qs_c >qs_c.out) || fail "the C quickstart failed: $(cat "$tmp/qs_c.out")"
grep -qx done "$tmp/qs_c.out" || fail "the C quickstart did not finish"
ok "C quickstart: cc \$(pkg-config --cflags --libs tidemark), NEEDED $SONAME, runs from $lib"

# Static, with the flags of Libs.private.
static_libs=$(pkg-config --static --libs tidemark | sed 's/-ltidemark\b/-l:libtidemark.a/')
cc -std=c99 -Wall -Wextra -Werror examples/c/quickstart.c $(pkg-config --cflags tidemark) $static_libs -o "$tmp/qs_c_static"
readelf -d "$tmp/qs_c_static" | grep -q 'NEEDED.*libtidemark' && fail "the static C quickstart needs libtidemark.so"
(cd "$tmp" && ./qs_c_static >qs_c_static.out) || fail "the static C quickstart failed"
grep -qx done "$tmp/qs_c_static.out" || fail "the static C quickstart did not finish"
ok "C quickstart, static: pkg-config --static --libs tidemark ($static_libs)"

# 4. C++ quickstart with CMake find_package(tidemark): shared and static imported targets.
cmake -S examples/cpp -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_FLAGS="-Wall -Wextra -Werror" >"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log"; fail "cmake configure"; }
cmake --build "$tmp/cmake" >>"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log"; fail "cmake --build"; }
readelf -d "$tmp/cmake/quickstart" | grep -q "NEEDED.*\[$SONAME\]" || fail "the C++ quickstart does not need $SONAME"
loaded=$(ldd "$tmp/cmake/quickstart" | awk -v s="$SONAME" '$1 == s {print $3}')
[ "$(readlink -f "$loaded")" = "$(readlink -f "$lib/$SONAME")" ] || fail "the C++ quickstart loads '$loaded', not $lib/$SONAME"
(cd "$tmp" && ./cmake/quickstart >qs_cpp.out) || fail "the C++ quickstart failed: $(cat "$tmp/qs_cpp.out")"
(cd "$tmp" && ./cmake/quickstart_static >qs_cpp_static.out) || fail "the static C++ quickstart failed"
readelf -d "$tmp/cmake/quickstart_static" | grep -q 'NEEDED.*libtidemark' && fail "quickstart_static needs libtidemark.so"
ok "C++ quickstart: CMake find_package(tidemark 0.1), tidemark::tidemark from $lib (rpath), tidemark::tidemark_static"

# The version file: same major, not newer.
cat >"$tmp/version-check.cmake" <<'CMAKE'
string(REPLACE "." ";" _parts "${REQ}")
list(GET _parts 0 PACKAGE_FIND_VERSION_MAJOR)
set(PACKAGE_FIND_VERSION "${REQ}")
set(CMAKE_SIZEOF_VOID_P 8)
include("${FILE}")
if(PACKAGE_VERSION_COMPATIBLE)
  message("TRUE")
else()
  message("FALSE")
endif()
CMAKE
for case in "$VERSION:TRUE" "$MAJOR.0:TRUE" "$MAJOR.999:FALSE" "$((MAJOR + 1)).0:FALSE"; do
  want=${case#*:}; req=${case%:*}
  got=$(cmake -DREQ="$req" -DFILE="$lib/cmake/tidemark/tidemarkConfigVersion.cmake" -P "$tmp/version-check.cmake" 2>&1)
  [ "$got" = "$want" ] || fail "tidemarkConfigVersion.cmake: request $req gives compatible=$got, want $want"
done
ok "tidemarkConfigVersion.cmake: $VERSION and $MAJOR.0 accepted, $MAJOR.999 and $((MAJOR + 1)).0 refused"

# 5. The Erlang application outside a checkout: rebar3 builds the NIF from the installed libtidemark.a.
erl_app=$tmp/erlang/tidemark
mkdir -p "$erl_app"
cp -r bindings/erlang/Makefile bindings/erlang/rebar.config bindings/erlang/src bindings/erlang/c_src "$erl_app/"
find "$erl_app/c_src" -name '*.o' -delete
(cd "$erl_app" && TIDEMARK_ROOT="$tmp/no-checkout" rebar3 compile >"$tmp/rebar3.log" 2>&1) || { cat "$tmp/rebar3.log"; fail "rebar3 compile against the installed library"; }
grep -q -- "-I$prefix/include" "$tmp/rebar3.log" && grep -q "$lib/libtidemark.a" "$tmp/rebar3.log" || fail "the NIF was not built from $prefix"
got=$(cd "$tmp" && erl -noshell -pa "$erl_app/_build/default/lib/tidemark/ebin" -eval '
  {ok, S} = tidemark:open(memory, #{}), {ok, _} = tidemark:put(S, <<"k">>, <<"v">>),
  {ok, E} = tidemark:get(S, <<"k">>), io:format("~s", [maps:get(value, E)]), ok = tidemark:close(S), halt(0).')
[ "$got" = v ] || fail "the rebar3-built Erlang application against the installed library: '$got'"
ok "Erlang: rebar3 compile outside a checkout links the installed libtidemark.a (pkg-config), put/get work"

# 6. The CLI.
[ "$("$prefix/bin/tidemark" --version)" = "tidemark $VERSION" ] || fail "bin/tidemark --version"
"$prefix/bin/tidemark" put --store "$tmp/store" greeting hello >/dev/null
[ "$("$prefix/bin/tidemark" get --store "$tmp/store" greeting)" = hello ] || fail "bin/tidemark get"
ok "bin/tidemark: --version, put, get"

# 7. Uninstall leaves nothing of ours.
"${MAKE_INSTALL[@]}" uninstall PREFIX="$prefix"
[ -z "$(find "$prefix" \( -type f -o -type l \))" ] || fail "uninstall left: $(find "$prefix" \( -type f -o -type l \))"
ok "make uninstall removes every installed file"

echo "test-install: $passed passed, 0 failed"
