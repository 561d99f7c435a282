/* Transient subscriptions: a push watch over stream events (tidemark_store_subscribe). The
 * resource, its lifetime, flow control and unwatch are the watch's (watch.c); only the
 * selector and the message body are the subscription's own. */
#include "tidemark_nif.h"

#include <string.h>

/* all | {stream, S} | {prefix, P} | {event_type, T} | {stream, S, T} | {prefix, P, T}
 * (names checked by tidemark: empty or too long is {error, {invalid_argument | too_large, _}}) */
int get_stream_selector(ErlNifEnv *env, ERL_NIF_TERM t, tidemark_stream_selector *sel)
{
    const ERL_NIF_TERM *el;
    int arity;
    ErlNifBinary a, b;
    memset(sel, 0, sizeof *sel);
    if (enif_is_identical(t, am_all)) {
        sel->kind = TIDEMARK_STREAMS_ALL;
        return 1;
    }
    if (!enif_get_tuple(env, t, &arity, &el) || arity < 2 || arity > 3 || !get_bytes(env, el[1], &a))
        return 0;
    if (enif_is_identical(el[0], am_event_type) && arity == 2) {
        sel->kind = TIDEMARK_STREAMS_ALL;
        sel->event_type = (tidemark_bytes){a.data, a.size};
        /* An empty type would mean "any" to the C API: refuse it like an empty name. */
        return a.size > 0;
    }
    if (enif_is_identical(el[0], am_stream))
        sel->kind = TIDEMARK_STREAMS_ONE;
    else if (enif_is_identical(el[0], am_prefix))
        sel->kind = TIDEMARK_STREAMS_PREFIX;
    else
        return 0;
    sel->stream = (tidemark_bytes){a.data, a.size};
    if (arity == 3) {
        if (!get_bytes(env, el[2], &b) || b.size == 0)
            return 0;
        sel->event_type = (tidemark_bytes){b.data, b.size};
    }
    return 1;
}

static ERL_NIF_TERM sub_body(ErlNifEnv *env, ERL_NIF_TERM strukt, const void *items, size_t i, int *change)
{
    const tidemark_sub_event *e = (const tidemark_sub_event *)items + i;
    *change = e->kind == TIDEMARK_EVENT_PUT;
    switch (e->kind) {
    case TIDEMARK_EVENT_PUT:
        return with_struct(env, stream_event_map(env, &e->event), strukt);
    case TIDEMARK_EVENT_PROGRESS:
        return enif_make_tuple2(env, am_progress, make_u64(env, e->revision));
    case TIDEMARK_EVENT_COMPACTED:
        return enif_make_tuple2(env, am_compacted, make_u64(env, e->revision));
    default:
        return am_closed;
    }
}

static void sub_callback(void *userdata, const tidemark_sub_event *events, size_t count)
{
    watch_send(userdata, am_tidemark_sub_event, events, count, sub_body);
}

static tidemark_status sub_register(tidemark_store *s, const void *selector, const tidemark_watch_options *opts,
                                    void *w, uint64_t *id)
{
    return tidemark_store_subscribe(s, selector, opts, sub_callback, w, watch_drop, id);
}

/* subscribe_nif(Store, StreamSelector, Pid, StartRevision, Credit (0 = unlimited), MaxQueue, ProgressMs,
 *               Struct (an atom; undefined = plain maps)) */
ERL_NIF_TERM subscribe_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    tidemark_stream_selector sel;
    (void)argc;
    if (!get_stream_selector(env, argv[1], &sel))
        return enif_make_badarg(env);
    return watch_start(env, argv, &sel, sub_register);
}
