/* Terms: building Erlang terms from C results and reading C arguments from Erlang terms. */
#include "tidemark_nif.h"

#include <string.h>

ERL_NIF_TERM make_ok(ErlNifEnv *env, ERL_NIF_TERM t)
{
    return enif_make_tuple2(env, am_ok, t);
}

ERL_NIF_TERM make_error(ErlNifEnv *env, ERL_NIF_TERM reason)
{
    return enif_make_tuple2(env, am_error, reason);
}

ERL_NIF_TERM make_string_bin(ErlNifEnv *env, const char *s)
{
    ERL_NIF_TERM t;
    size_t n = s ? strlen(s) : 0;
    unsigned char *p = enif_make_new_binary(env, n, &t);
    if (n)
        memcpy(p, s, n);
    return t;
}

ERL_NIF_TERM make_bytes(ErlNifEnv *env, tidemark_bytes b)
{
    ERL_NIF_TERM t;
    unsigned char *p = enif_make_new_binary(env, b.len, &t);
    if (b.len)
        memcpy(p, b.ptr, b.len);
    return t;
}

void arena_init(ErlNifEnv *env, tm_arena *a, tidemark_bytes all)
{
    unsigned char *p = enif_make_new_binary(env, all.len, &a->bin);
    if (all.len)
        memcpy(p, all.ptr, all.len);
    a->base = all.ptr;
    a->len = all.len;
}

ERL_NIF_TERM arena_bytes(ErlNifEnv *env, const tm_arena *a, tidemark_bytes b)
{
    if (a != NULL && b.len > 64 && b.ptr >= a->base && b.ptr + b.len <= a->base + a->len)
        return enif_make_sub_binary(env, a->bin, (size_t)(b.ptr - a->base), b.len);
    return make_bytes(env, b);
}

ERL_NIF_TERM make_u64(ErlNifEnv *env, uint64_t v)
{
    return enif_make_uint64(env, (ErlNifUInt64)v);
}

/* {error, Reason} for a failed call; must run right after it, on the same thread. */
ERL_NIF_TERM status_reason(ErlNifEnv *env, tidemark_status st, uint64_t rev, ERL_NIF_TERM msg)
{
    /* The reason's atom is the C name without its prefix, lowercased, so that a code the
     * header gains gets its atom without an edit here: TIDEMARK_ERR_TOO_LARGE -> too_large. */
    static const char prefix[] = "TIDEMARK_ERR_";
    const char *name = tidemark_status_name(st);
    char atom[64];
    size_t i, n;
    ERL_NIF_TERM tag;
    if (name == NULL || strncmp(name, prefix, sizeof prefix - 1) != 0 || strcmp(name, "TIDEMARK_ERR_UNKNOWN") == 0
        || (n = strlen(name + sizeof prefix - 1)) >= sizeof atom)
        return enif_make_tuple3(env, am_unknown, enif_make_uint(env, (unsigned)st), msg);
    for (i = 0; i < n; i++) {
        char c = name[sizeof prefix - 1 + i];
        atom[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    atom[n] = 0;
    tag = enif_make_atom(env, atom);
    /* The shape: which codes carry the revision tidemark_last_error_revision() gives, which
     * carry nothing, and (every other one) the message. */
    switch (st) {
    case TIDEMARK_ERR_COMPACTED:
    case TIDEMARK_ERR_CONFLICT:
    case TIDEMARK_ERR_FUTURE_REVISION:
        return enif_make_tuple2(env, tag, make_u64(env, rev));
    case TIDEMARK_ERR_NOT_FOUND:
    case TIDEMARK_ERR_CLOSED:
    case TIDEMARK_ERR_TIMEOUT:
        return tag;
    default:
        return enif_make_tuple2(env, tag, msg);
    }
}

ERL_NIF_TERM status_error(ErlNifEnv *env, tidemark_status st)
{
    uint64_t rev = tidemark_last_error_revision();
    ERL_NIF_TERM msg = make_string_bin(env, tidemark_last_error_message());
    return make_error(env, status_reason(env, st, rev, msg));
}

ERL_NIF_TERM closed_error(ErlNifEnv *env)
{
    return make_error(env, am_closed);
}

/* Bytes from a binary or iolist; valid for the duration of the NIF call. */
int get_bytes(ErlNifEnv *env, ERL_NIF_TERM t, ErlNifBinary *b)
{
    return enif_inspect_binary(env, t, b) || enif_inspect_iolist_as_binary(env, t, b);
}

int get_u64(ErlNifEnv *env, ERL_NIF_TERM t, uint64_t *out)
{
    ErlNifUInt64 v;
    if (!enif_get_uint64(env, t, &v))
        return 0;
    *out = (uint64_t)v;
    return 1;
}


/* all | {key, K} | {prefix, P} | {range, Start, End | infinity} */
int get_selector(ErlNifEnv *env, ERL_NIF_TERM t, tidemark_selector *sel)
{
    const ERL_NIF_TERM *el;
    int arity;
    ErlNifBinary a, b;
    memset(sel, 0, sizeof *sel);
    if (enif_is_identical(t, am_all)) {
        sel->kind = TIDEMARK_SELECT_ALL;
        return 1;
    }
    if (!enif_get_tuple(env, t, &arity, &el))
        return 0;
    if (arity == 2 && (enif_is_identical(el[0], am_key) || enif_is_identical(el[0], am_prefix))) {
        if (!get_bytes(env, el[1], &a))
            return 0;
        sel->kind = enif_is_identical(el[0], am_key) ? TIDEMARK_SELECT_KEY : TIDEMARK_SELECT_PREFIX;
        sel->start.ptr = a.data;
        sel->start.len = a.size;
        return 1;
    }
    if (arity == 3 && enif_is_identical(el[0], am_range)) {
        if (!get_bytes(env, el[1], &a))
            return 0;
        sel->kind = TIDEMARK_SELECT_RANGE;
        sel->start.ptr = a.data;
        sel->start.len = a.size;
        if (enif_is_identical(el[2], am_infinity))
            return 1;
        if (!get_bytes(env, el[2], &b))
            return 0;
        sel->end.ptr = b.data;
        sel->end.len = b.size;
        return 1;
    }
    return 0;
}

/* #{revision, type, key, value, version, create_revision} */
ERL_NIF_TERM make_event_map(ErlNifEnv *env, const tidemark_event *e, const tm_arena *a)
{
    ERL_NIF_TERM keys[6] = {am_revision, am_type, am_key, am_value, am_version, am_create_revision};
    ERL_NIF_TERM vals[6];
    ERL_NIF_TERM map;
    vals[0] = make_u64(env, e->revision);
    vals[1] = e->kind == TIDEMARK_EVENT_DELETE ? am_delete : am_put;
    vals[2] = arena_bytes(env, a, e->key);
    vals[3] = arena_bytes(env, a, e->value);
    vals[4] = make_u64(env, e->version);
    vals[5] = make_u64(env, e->create_revision);
    enif_make_map_from_arrays(env, keys, vals, 6, &map);
    return map;
}

/* #{key, value, create_revision, mod_revision, version} for range results */
ERL_NIF_TERM make_entry_map(ErlNifEnv *env, const tidemark_event *e, const tm_arena *a)
{
    ERL_NIF_TERM keys[5] = {am_key, am_value, am_create_revision, am_mod_revision, am_version};
    ERL_NIF_TERM vals[5];
    ERL_NIF_TERM map;
    vals[0] = arena_bytes(env, a, e->key);
    vals[1] = arena_bytes(env, a, e->value);
    vals[2] = make_u64(env, e->create_revision);
    vals[3] = make_u64(env, e->revision);
    vals[4] = make_u64(env, e->version);
    enif_make_map_from_arrays(env, keys, vals, 5, &map);
    return map;
}


char *cstring(const ErlNifBinary *b)
{
    char *s;
    if (memchr(b->data, 0, b->size) != NULL)
        return NULL;
    s = enif_alloc(b->size + 1);
    if (s == NULL)
        return NULL;
    memcpy(s, b->data, b->size);
    s[b->size] = 0;
    return s;
}

