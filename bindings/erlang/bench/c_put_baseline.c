/* The same put and get workload as tidemark_bench.erl, straight through the C API, so the NIF's cost
 * per call can be read off: 16-byte keys over 100k distinct keys, 100-byte values. */
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "tidemark.h"

#define KEYS 100000
#define PUTS 1000000

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint8_t keys[KEYS][16];

int main(void)
{
    tidemark_store *s;
    uint8_t value[100];
    volatile uint64_t sink = 0;
    double t0, t1;
    int round, i;
    memset(value, 'v', sizeof value);
    for (i = 0; i < KEYS; i++)
        snprintf((char *)keys[i], 17, "key-%012d", i);
    for (round = 0; round < 3; round++) {
        if (tidemark_store_open(NULL, NULL, &s) != TIDEMARK_OK)
            return 1;
        t0 = now();
        for (i = 0; i < PUTS; i++)
            if (tidemark_store_put(s, keys[i % KEYS], 16, value, sizeof value, NULL) != TIDEMARK_OK)
                return 1;
        t1 = now();
        printf("c-baseline put (C API, 1 thread):        %8.0f ns/op %10.0f ops/s\n",
               (t1 - t0) * 1e9 / PUTS, PUTS / (t1 - t0));
        t0 = now();
        for (i = 0; i < PUTS; i++) {
            tidemark_entry *e = NULL;
            if (tidemark_store_get(s, keys[i % KEYS], 16, &e) != TIDEMARK_OK)
                return 1;
            sink += tidemark_entry_value(e).len;
            tidemark_entry_free(e);
        }
        t1 = now();
        printf("c-baseline get (C API, 1 thread):        %8.0f ns/op %10.0f ops/s\n",
               (t1 - t0) * 1e9 / PUTS, PUTS / (t1 - t0));
        t0 = now();
        for (i = 0; i < PUTS; i++)
            sink += tidemark_store_current_revision(s);
        t1 = now();
        printf("c-baseline current_revision (C API):     %8.1f ns/op\n", (t1 - t0) * 1e9 / PUTS);
        tidemark_store_close(s);
    }
    return sink == 0;
}
