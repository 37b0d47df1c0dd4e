/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * status_shm.c: every child's status summary in shared memory, so that the
 * status page (status_page.c), whichever child serves it, shows the whole
 * host.
 *
 * APR anonymous shared memory made in post_config, not ap_slotmem: it needs
 * no other module loaded (mod_slotmem_shm) and no file, its size is known
 * from our own directives then, and it lives as long as the configuration's
 * pool: a graceful restart makes a new, empty one for the new children (the
 * old children keep writing into the old mapping until they exit), so a
 * restart starts clean by construction.
 *
 * Layout: a header, an array of small slot headers (scanned by readers),
 * then one data area per slot.  A child claims a free slot in child_init and
 * frees it from its pool's cleanup; a slot whose process died without that
 * (a crash, SIGKILL) is ignored by readers (its pid is not in the
 * scoreboard or not alive) and reclaimed by the next child that finds no
 * free slot.  A child rewrites its slot only when the engine's change
 * counter moved (after a request of ours, or before it serves the status
 * page), never on a request that changed nothing.
 *
 * A slot is written by its owner only (a process-local mutex orders that
 * process's threads) under a sequence counter: odd while being written;
 * readers copy the slot and retry when the counter moved or was odd.
 *
 * Locking: no GIL on entry; the snapshot takes it (pyr_status_snapshot()),
 * never while the writer mutex is held.
 */
#include "pyr_httpd.h"

#include "ap_mpm.h"
#include "http_log.h"
#include "scoreboard.h"

#include <apr_shm.h>
#include <apr_strings.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

APLOG_USE_MODULE(pyreload);

typedef struct shm_head {
    int nslots;
    int entries;     /* PyReloadStatusEntries */
    int error_bytes; /* PyReloadStatusErrorBytes */
    apr_size_t area; /* bytes of one slot's data area */
} shm_head_t;

typedef struct slot {
    unsigned long seq;   /* atomic; odd while the owner writes */
    pid_t pid;           /* atomic; 0: free */
    apr_time_t started_at;
    apr_time_t updated_at;
    int nentries;
    int omitted; /* entries that did not fit */
    apr_size_t used;
} slot_t;

/* One entry in a data area: this, then its strings, each NUL-terminated. */
typedef struct rec {
    uint32_t size; /* of the whole record, a multiple of 8 */
    int32_t kind, retired_alive, nimports, error_truncated, pad;
    int64_t generation, loads, failures, in_flight, in_flight_retired;
    int64_t loaded_at, retired_oldest, error_at;
    double last_load_ms;
    char sha256[PYR_SHA256_HEX];
    uint32_t len[5]; /* path, name, imports ('\0'-separated), message, error */
} rec_t;

#define MESSAGE_MAX 512
/* Room per entry besides its traceback: its paths, name and imports. */
#define ENTRY_ROOM 2048

/* Inherited by the children from the parent's post_config. */
static apr_shm_t *shm;
static shm_head_t *head;
static slot_t *slots;
static char *areas;

/* This child's. */
static int my_slot = -1;
static pthread_mutex_t writer = PTHREAD_MUTEX_INITIALIZER;
static unsigned long written; /* under writer: the change count last published */
static int ever_written;
static apr_time_t my_start;

static apr_status_t
forget_shm(void *unused)
{
    shm = NULL;
    head = NULL;
    slots = NULL;
    areas = NULL;
    return APR_SUCCESS;
}

int
pyr_status_shm_create(apr_pool_t *pconf, server_rec *s, int entries, int error_bytes)
{
    int nslots = 0;
    apr_size_t area, size;
    apr_status_t rv;
    char *base;

    forget_shm(NULL);
    ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &nslots);
    /* Twice the processes there can be: a child that died without freeing
     * its slot leaves it to the readers to ignore, not to block a new one
     * (which would take it over only when no other is free). */
    nslots = 2 * (nslots < 1 ? 1 : nslots);
    area = APR_ALIGN_DEFAULT((apr_size_t)entries * (sizeof(rec_t) + ENTRY_ROOM + error_bytes));
    size = APR_ALIGN_DEFAULT(sizeof(shm_head_t)) + APR_ALIGN_DEFAULT(sizeof(slot_t) * nslots) +
           area * nslots;
    /* Anonymous: inherited by the children, gone with pconf. */
    rv = apr_shm_create(&shm, size, NULL, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     "PYR0500: cannot make %" APR_SIZE_T_FMT " bytes of shared memory for the "
                     "status page (%d processes x %d entries); it will show the process "
                     "that serves it only (lower PyReloadStatusEntries or "
                     "PyReloadStatusErrorBytes)",
                     size, nslots, entries);
        shm = NULL;
        return OK;
    }
    base = apr_shm_baseaddr_get(shm);
    head = (shm_head_t *)base;
    slots = (slot_t *)(base + APR_ALIGN_DEFAULT(sizeof(shm_head_t)));
    areas = (char *)slots + APR_ALIGN_DEFAULT(sizeof(slot_t) * nslots);
    memset(base, 0, (apr_size_t)(areas - base)); /* the data areas are read only when used */
    head->nslots = nslots;
    head->entries = entries;
    head->error_bytes = error_bytes;
    head->area = area;
    apr_pool_cleanup_register(pconf, NULL, forget_shm, apr_pool_cleanup_null);
    return OK;
}

/* 1 if the process of a slot is serving: in the scoreboard and alive. */
static int
pid_serving(pid_t pid)
{
    int i, n = 0;

    if (pid <= 0) {
        return 0;
    }
    if (kill(pid, 0) != 0 && errno == ESRCH) {
        return 0;
    }
    ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &n);
    for (i = 0; i < n; i++) {
        process_score *ps = ap_get_scoreboard_process(i);

        if (ps && ps->pid == pid) {
            return 1;
        }
    }
    return 0;
}

/* Requests pid has served: the scoreboard's count for this child (what
 * mod_status shows as its "Acc" middle figure), summed over its threads;
 * -1 if it is not there, or if httpd does not count (ExtendedStatus Off,
 * the default unless mod_status is loaded: turning it on would cost every
 * request a times() call). */
static long
requests_of(pid_t pid)
{
    int i, j, nd = 0, nt = 0;
    long sum = 0;

    if (!ap_extended_status) {
        return -1;
    }
    ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &nd);
    ap_mpm_query(AP_MPMQ_HARD_LIMIT_THREADS, &nt);
    for (i = 0; i < nd; i++) {
        process_score *ps = ap_get_scoreboard_process(i);

        if (!ps || ps->pid != pid) {
            continue;
        }
        for (j = 0; j < nt; j++) {
            worker_score *ws = ap_get_scoreboard_worker_from_indexes(i, j);

            if (ws) {
                sum += (long)ws->my_access_count;
            }
        }
        return sum;
    }
    return -1;
}

static apr_status_t
free_slot(void *unused)
{
    if (head && my_slot >= 0) {
        slot_t *sl = &slots[my_slot];

        __atomic_add_fetch(&sl->seq, 1, __ATOMIC_ACQ_REL);
        sl->nentries = 0;
        sl->used = 0;
        __atomic_add_fetch(&sl->seq, 1, __ATOMIC_ACQ_REL);
        __atomic_store_n(&sl->pid, 0, __ATOMIC_RELEASE);
    }
    my_slot = -1;
    return APR_SUCCESS;
}

void
pyr_status_shm_child_init(apr_pool_t *pchild, server_rec *s)
{
    pid_t me = getpid(), none;
    slot_t *sl;
    int i, pass;

    my_start = apr_time_now();
    my_slot = -1;
    ever_written = 0;
    if (!head) {
        return;
    }
    /* A free slot; failing that, one whose process died without freeing it. */
    for (pass = 0; pass < 2 && my_slot < 0; pass++) {
        for (i = 0; i < head->nslots && my_slot < 0; i++) {
            none = __atomic_load_n(&slots[i].pid, __ATOMIC_ACQUIRE);
            if ((pass == 0 && none == 0) || (pass == 1 && none != 0 && kill(none, 0) != 0 &&
                                             errno == ESRCH)) {
                if (__atomic_compare_exchange_n(&slots[i].pid, &none, me, 0, __ATOMIC_ACQ_REL,
                                                __ATOMIC_ACQUIRE)) {
                    my_slot = i;
                }
            }
        }
    }
    if (my_slot < 0) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "PYR0501: no free status slot for process %ld (%d slots): the status page "
                     "will not show it",
                     (long)me, head->nslots);
        return;
    }
    /* Odd while it is emptied (a taken-over slot has its late owner's
     * entries), whatever its owner was doing when it died. */
    sl = &slots[my_slot];
    if (!(__atomic_load_n(&sl->seq, __ATOMIC_ACQUIRE) & 1)) {
        __atomic_add_fetch(&sl->seq, 1, __ATOMIC_ACQ_REL);
    }
    sl->started_at = my_start;
    sl->updated_at = my_start;
    sl->nentries = sl->omitted = 0;
    sl->used = 0;
    __atomic_add_fetch(&sl->seq, 1, __ATOMIC_ACQ_REL);
    apr_pool_cleanup_register(pchild, NULL, free_slot, apr_pool_cleanup_null);
}

/* Copy n bytes of s and a NUL at *off; the caller checked the room. */
static void
put_str(char *area, apr_size_t *off, const char *s, apr_size_t n)
{
    memcpy(area + *off, s, n);
    area[*off + n] = '\0';
    *off += n + 1;
}

/* n, cut back so that no UTF-8 character is split. */
static apr_size_t
utf8_cut(const char *s, apr_size_t n)
{
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) {
        n--;
    }
    return n;
}

/* Entry st as a record at area + *off, if it fits before cap.  1 if it did. */
static int
put_entry(char *area, apr_size_t *off, apr_size_t cap, const pyr_status_entry_t *st,
          int error_bytes)
{
    rec_t rec;
    apr_size_t len[5], need, at;
    int i, trunc = 0;
    apr_size_t imports = 0;

    memset(&rec, 0, sizeof(rec));
    len[0] = strlen(st->path);
    len[1] = strlen(st->name ? st->name : "");
    for (i = 0; i < st->nimports; i++) {
        imports += strlen(st->imports[i]) + 1;
    }
    len[2] = imports ? imports - 1 : 0;
    len[3] = st->message ? strlen(st->message) : 0;
    if (len[3] > MESSAGE_MAX) {
        len[3] = utf8_cut(st->message, MESSAGE_MAX);
    }
    len[4] = st->error ? strlen(st->error) : 0;
    if (len[4] > (apr_size_t)error_bytes) {
        len[4] = utf8_cut(st->error, (apr_size_t)error_bytes);
        trunc = 1;
    }
    need = sizeof(rec) + len[0] + len[1] + len[2] + len[3] + len[4] + 5;
    need = (need + 7) & ~(apr_size_t)7;
    if (*off + need > cap) {
        return 0;
    }
    rec.size = (uint32_t)need;
    rec.kind = st->kind;
    rec.retired_alive = st->retired_alive;
    rec.nimports = st->nimports;
    rec.error_truncated = trunc;
    rec.generation = st->generation;
    rec.loads = st->loads;
    rec.failures = st->failures;
    rec.in_flight = st->in_flight;
    rec.in_flight_retired = st->in_flight_retired;
    rec.loaded_at = st->loaded_at;
    rec.retired_oldest = st->retired_oldest;
    rec.error_at = st->error_at;
    rec.last_load_ms = st->last_load_ms;
    memcpy(rec.sha256, st->sha256, sizeof(rec.sha256));
    for (i = 0; i < 5; i++) {
        rec.len[i] = (uint32_t)len[i];
    }
    at = *off + sizeof(rec);
    memcpy(area + *off, &rec, sizeof(rec));
    put_str(area, &at, st->path, len[0]);
    put_str(area, &at, st->name ? st->name : "", len[1]);
    for (i = 0; i < st->nimports; i++) {
        /* '\0'-separated: each one's NUL is the separator, the last one's
         * the string's end. */
        memcpy(area + at, st->imports[i], strlen(st->imports[i]) + 1);
        at += strlen(st->imports[i]) + 1;
    }
    if (!st->nimports) {
        area[at++] = '\0';
    }
    put_str(area, &at, st->message ? st->message : "", len[3]);
    put_str(area, &at, st->error ? st->error : "", len[4]);
    *off += need;
    return 1;
}

void
pyr_status_publish(pyr_cache_t *cache)
{
    unsigned long now = pyr_status_changes();
    apr_pool_t *p;
    pyr_status_entry_t *st;
    slot_t *sl;
    char *area;
    apr_size_t off = 0;
    int n, i, kept = 0, omitted = 0;

    /* The one check a request that changed nothing pays: a load and a
     * compare. */
    if (!head || my_slot < 0 || !cache ||
        (__atomic_load_n(&ever_written, __ATOMIC_ACQUIRE) &&
         __atomic_load_n(&written, __ATOMIC_ACQUIRE) == now)) {
        return;
    }
    /* One writer at a time, each with a snapshot taken after the last one
     * was written, so that an older snapshot never overwrites a newer.
     * The snapshot takes the GIL with the mutex held: no thread waits for
     * this mutex with the GIL (callers hold no GIL). */
    pthread_mutex_lock(&writer);
    now = pyr_status_changes();
    if ((ever_written && written == now) || apr_pool_create(&p, NULL) != APR_SUCCESS) {
        pthread_mutex_unlock(&writer);
        return;
    }
    n = pyr_status_snapshot(cache, p, &st);
    sl = &slots[my_slot];
    area = areas + head->area * (apr_size_t)my_slot;
    __atomic_add_fetch(&sl->seq, 1, __ATOMIC_ACQ_REL);
    for (i = 0; i < n; i++) {
        if (kept < head->entries && put_entry(area, &off, head->area, &st[i], head->error_bytes)) {
            kept++;
        }
        else {
            omitted++;
        }
    }
    sl->nentries = kept;
    sl->omitted = omitted;
    sl->used = off;
    sl->updated_at = apr_time_now();
    __atomic_add_fetch(&sl->seq, 1, __ATOMIC_ACQ_REL);
    __atomic_store_n(&written, now, __ATOMIC_RELEASE);
    __atomic_store_n(&ever_written, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&writer);
    apr_pool_destroy(p);
}

/* The records of a copied data area as entries, strings from p. */
static pyr_status_entry_t *
decode(apr_pool_t *p, const char *area, apr_size_t used, int n, int *got)
{
    pyr_status_entry_t *st = apr_pcalloc(p, sizeof(*st) * (size_t)(n + 1));
    apr_size_t off = 0;
    int i, j;

    for (i = 0; i < n && off + sizeof(rec_t) <= used; i++) {
        rec_t rec;
        const char *s;

        memcpy(&rec, area + off, sizeof(rec));
        if (rec.size < sizeof(rec) || off + rec.size > used) {
            break;
        }
        s = area + off + sizeof(rec);
        st[i].path = s;
        s += rec.len[0] + 1;
        st[i].name = s;
        s += rec.len[1] + 1;
        st[i].nimports = rec.nimports;
        st[i].imports = apr_pcalloc(p, sizeof(char *) * (size_t)(rec.nimports + 1));
        for (j = 0; j < rec.nimports; j++) {
            st[i].imports[j] = s;
            s += strlen(s) + 1;
        }
        if (!rec.nimports) {
            s++;
        }
        st[i].message = *s ? s : NULL;
        s += rec.len[3] + 1;
        st[i].error = rec.error_at ? s : NULL;
        st[i].error_truncated = rec.error_truncated;
        st[i].kind = (pyr_kind_t)rec.kind;
        st[i].generation = rec.generation;
        st[i].loads = rec.loads;
        st[i].failures = rec.failures;
        st[i].in_flight = rec.in_flight;
        st[i].in_flight_retired = rec.in_flight_retired;
        st[i].retired_alive = rec.retired_alive;
        st[i].loaded_at = rec.loaded_at;
        st[i].retired_oldest = rec.retired_oldest;
        st[i].error_at = rec.error_at;
        st[i].last_load_ms = rec.last_load_ms;
        memcpy(st[i].sha256, rec.sha256, sizeof(rec.sha256));
        st[i].sha256[PYR_SHA256_HEX - 1] = '\0';
        off += rec.size;
    }
    *got = i;
    return st;
}

/* A consistent copy of slot i into *proc; 0 if it is free, dead, or kept
 * changing. */
static int
read_slot(apr_pool_t *p, int i, pyr_status_proc_t *proc)
{
    slot_t *sl = &slots[i];
    char *area = areas + head->area * (apr_size_t)i;
    int tries;

    for (tries = 0; tries < 100; tries++) {
        unsigned long seq = __atomic_load_n(&sl->seq, __ATOMIC_ACQUIRE);
        slot_t copy;
        char *data;

        if (seq & 1) {
            apr_sleep(1000);
            continue;
        }
        memcpy(&copy, sl, sizeof(copy));
        if (copy.used > head->area) {
            continue;
        }
        data = apr_palloc(p, copy.used + 1);
        memcpy(data, area, copy.used);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&sl->seq, __ATOMIC_ACQUIRE) != seq) {
            continue;
        }
        if (!pid_serving(copy.pid)) {
            return 0;
        }
        memset(proc, 0, sizeof(*proc));
        proc->pid = copy.pid;
        proc->started_at = copy.started_at;
        proc->updated_at = copy.updated_at;
        proc->omitted = copy.omitted;
        proc->requests = requests_of(copy.pid);
        proc->entries = decode(p, data, copy.used, copy.nentries, &proc->nentries);
        return 1;
    }
    return 0;
}

int
pyr_status_read(apr_pool_t *p, pyr_cache_t *cache, pyr_status_proc_t **out)
{
    pyr_status_proc_t *procs;
    int n = 0, i, cap;
    pid_t me = getpid();

    /* This process from its own memory: exact in-flight counts, whole
     * tracebacks.  Its slot first, so that the others see it up to date. */
    pyr_status_publish(cache);
    cap = (head ? head->nslots : 0) + 1;
    procs = apr_pcalloc(p, sizeof(*procs) * (size_t)cap);
    procs[0].pid = me;
    procs[0].started_at = my_start;
    procs[0].updated_at = apr_time_now();
    procs[0].live = 1;
    procs[0].requests = requests_of(me);
    procs[0].no_slot = head && my_slot < 0;
    if (cache) {
        procs[0].nentries = pyr_status_snapshot(cache, p, &procs[0].entries);
    }
    n = 1;
    for (i = 0; head && i < head->nslots; i++) {
        if (i != my_slot && read_slot(p, i, &procs[n]) && procs[n].pid != me) {
            n++;
        }
    }
    *out = procs;
    return n;
}

int
pyr_status_shm_sizes(int *entries, int *error_bytes, int *used, int *stale)
{
    int i;

    *entries = *error_bytes = *used = *stale = 0;
    if (!head) {
        return 0;
    }
    *entries = head->entries;
    *error_bytes = head->error_bytes;
    for (i = 0; i < head->nslots; i++) {
        pid_t pid = __atomic_load_n(&slots[i].pid, __ATOMIC_ACQUIRE);

        *used += pid != 0;
        *stale += pid != 0 && !pid_serving(pid);
    }
    return head->nslots;
}
