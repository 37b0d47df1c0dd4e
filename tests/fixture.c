/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * fixture.c: the real-httpd fixture of the integration tests (see fixture.h).
 */
#define _GNU_SOURCE
#include "fixture.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#define APACHE2      "/usr/sbin/apache2"
#define MODDIR       "/usr/lib/apache2/modules"
#ifndef SERVER_CONF_IN
#define SERVER_CONF_IN "tools/server.conf.in"
#endif
#define CLEAN_PATH   "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
#define CLEAN_LANG   "LANG=C.UTF-8"
#define STOP_WAIT_MS 10000
#define PORTS_DEFAULT "20000-24999"

/* ------------------------------------------------------------------ */
/* Registry shared by the runner and its forked tests                  */

#define REG_MAX  64
#define REG_KIDS 64

struct reg_entry {
    volatile pid_t owner;       /* process that started it; 0: free slot */
    volatile pid_t pid;         /* httpd parent; 0: not (yet) running */
    volatile int nkids;
    pid_t kids[REG_KIDS];       /* children seen while it ran */
    char dir[128];
    char error_log[160];
};

struct shared {
    pid_t root;                 /* the runner */
    volatile int port_start;    /* offset of the first port tried in the range;
                                   -1 until chosen */
    volatile unsigned port_next;/* ports handed out so far (all processes) */
    volatile pid_t in_test;     /* test process between begin and end */
    volatile int failures;      /* tests seen dying before httpd_test_end */
    volatile int san_reports;   /* sanitizer reports found (PYR_SANITIZE) */
    struct reg_entry reg[REG_MAX];
};

static struct shared *g_sh;
static struct shared g_sh_fallback;

static void httpd_atexit(void);

__attribute__((constructor)) static void httpd_global_init(void)
{
    void *p = mmap(NULL, sizeof(struct shared), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    g_sh = p == MAP_FAILED ? &g_sh_fallback : p;
    memset(g_sh, 0, sizeof *g_sh);
    g_sh->root = getpid();
    g_sh->port_start = -1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    atexit(httpd_atexit);
}

/* ------------------------------------------------------------------ */
/* Small utilities                                                     */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) abort();
    return d;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0) abort();
    va_end(ap);
    return s;
}

/* Whole file (from offset), malloc'd and NUL-terminated; "" if unreadable. */
static char *read_file_from(const char *path, size_t offset, size_t *lenp)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (!buf) abort();
    if (fd >= 0) {
        off_t off = (off_t)offset;
        for (;;) {
            ssize_t n;
            if (cap - len < 4096) {
                cap *= 2;
                buf = realloc(buf, cap);
                if (!buf) abort();
            }
            n = pread(fd, buf + len, cap - len - 1, off);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            len += (size_t)n;
            off += n;
        }
        close(fd);
    }
    buf[len] = '\0';
    if (lenp) *lenp = len;
    return buf;
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int mkdir_p(const char *path, mode_t mode)
{
    char tmp[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof tmp) { errno = ENAMETOOLONG; return -1; }
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, mode) < 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST) return -1;
    return 0;
}

static int mkdir_parent(const char *path)
{
    char tmp[PATH_MAX];
    char *slash;
    snprintf(tmp, sizeof tmp, "%s", path);
    slash = strrchr(tmp, '/');
    if (!slash || slash == tmp) return 0;
    *slash = '\0';
    return mkdir_p(tmp, 0755);
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path) < 0 ? 0 : 0;
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* text with each @NAME@ that kv names (NAME, value, ..., NULL) replaced by
 * its value, in one pass: a value is not searched again.  Another @NAME@ is
 * kept as it is, or, if strict, is an error: NULL after saying which.
 * malloc'd. */
static char *subst(const char *text, const char *const *kv, int strict)
{
    char *out = NULL;
    size_t size = 0;
    FILE *m = open_memstream(&out, &size);

    if (!m) abort();
    for (const char *p = text; *p;) {
        size_t n = *p == '@' ? strspn(p + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") : 0;
        if (n && p[n + 1] == '@') {
            const char *const *k = kv;
            while (*k && (strlen(*k) != n || strncmp(*k, p + 1, n)))
                k += 2;
            if (*k) {
                fputs(k[1], m);
                p += n + 2;
                continue;
            }
            if (strict) {
                fprintf(stderr, "pyr-it: no value for %.*s\n", (int)n + 2, p);
                fclose(m);
                free(out);
                return NULL;
            }
        }
        fputc(*p++, m);
    }
    if (fclose(m) != 0) abort();
    return out;
}

char *httpd_subst(const httpd_t *h, const char *text)
{
    const char *const kv[] = {"APP", h->app, "DIR", h->dir, NULL};
    return subst(text ? text : "", kv, 0);
}
/* "/proc/<pid><suffix>" into path (64 bytes), without snprintf: usable from a
 * signal handler. */
static void proc_path(char *path, pid_t pid, const char *suffix)
{
    char digits[24];
    int nd = 0;
    unsigned long v = (unsigned long)pid;
    const char *pre = "/proc/";
    size_t k = 0;
    do { digits[nd++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (*pre) path[k++] = *pre++;
    while (nd) path[k++] = digits[--nd];
    while (*suffix) path[k++] = *suffix++;
    path[k] = '\0';
}


/* ------------------------------------------------------------------ */
/* /proc (the async-signal-safe parts use only open/read/close)        */

/* State letter and ppid of pid; 0, or -1 if it does not exist. */
static int proc_stat(pid_t pid, char *state, pid_t *ppid)
{
    char path[64], buf[512];
    int fd;
    ssize_t n;
    char *p;
    long pp = 0;
    proc_path(path, pid, "/stat");
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = '\0';
    p = strrchr(buf, ')');
    if (!p || !p[1] || !p[2]) return -1;
    p += 2;
    if (state) *state = *p;
    p++;
    while (*p == ' ') p++;
    while (*p >= '0' && *p <= '9') pp = pp * 10 + (*p++ - '0');
    if (ppid) *ppid = (pid_t)pp;
    return 0;
}

int httpd_pid_alive(pid_t pid)
{
    char st;
    if (pid <= 0) return 0;
    if (proc_stat(pid, &st, NULL) < 0) return 0;
    return st != 'Z' && st != 'X' && st != 'x';
}

/* 1 if /proc/pid/comm is "apache2" (guards SIGKILL against pid reuse). */
static int is_apache(pid_t pid)
{
    char path[64], buf[32];
    int fd;
    ssize_t n;
    proc_path(path, pid, "/comm");
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    return !strncmp(buf, "apache2", 7);
}

static int proc_cmdline_has(pid_t pid, const char *needle)
{
    char path[64];
    size_t len;
    char *buf;
    int found = 0;
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    buf = read_file_from(path, 0, &len);
    for (size_t i = 0; i < len;) {
        if (strstr(buf + i, needle)) { found = 1; break; }
        i += strlen(buf + i) + 1;
    }
    free(buf);
    return found;
}

/* Live processes whose ppid is `ppid` (if > 0) or whose command line
 * contains `cmd` (if non-NULL). */
static int scan_procs(pid_t ppid, const char *cmd, pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    int n = 0;
    if (!d) return 0;
    while ((de = readdir(d)) != NULL) {
        char *end, st;
        pid_t pp;
        long v = strtol(de->d_name, &end, 10);
        if (*end || v <= 0) continue;
        if (proc_stat((pid_t)v, &st, &pp) < 0 || st == 'Z' || st == 'X') continue;
        if (ppid > 0 && pp != ppid) continue;
        if (cmd && !proc_cmdline_has((pid_t)v, cmd)) continue;
        if (n < max) out[n++] = (pid_t)v;
    }
    closedir(d);
    return n;
}

long httpd_rss_kb(pid_t pid)
{
    char path[64];
    char *buf, *p;
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    buf = read_file_from(path, 0, NULL);
    p = strstr(buf, "\nVmRSS:");
    if (p) kb = strtol(p + 7, NULL, 10);
    free(buf);
    return kb;
}

/* ------------------------------------------------------------------ */
/* Registry                                                            */

static int reg_claim(const httpd_t *h)
{
    for (int i = 0; i < REG_MAX; i++) {
        struct reg_entry *e = &g_sh->reg[i];
        if (e->owner == 0 && __sync_bool_compare_and_swap(&e->owner, 0, getpid())) {
            e->pid = 0;
            e->nkids = 0;
            snprintf(e->dir, sizeof e->dir, "%s", h->dir);
            snprintf(e->error_log, sizeof e->error_log, "%s", h->error_log);
            return i;
        }
    }
    fprintf(stderr, "pyr-it: server registry full (%d)\n", REG_MAX);
    return -1;
}

static struct reg_entry *reg_of(const httpd_t *h)
{
    if (h->slot < 0) return NULL;
    struct reg_entry *e = &g_sh->reg[h->slot];
    if (!e->owner || strcmp(e->dir, h->dir)) return NULL;
    return e;
}

static void reg_release(httpd_t *h)
{
    struct reg_entry *e = reg_of(h);
    if (e) {
        e->pid = 0;
        e->nkids = 0;
        __sync_synchronize();
        e->owner = 0;
    }
    h->slot = -1;
}

static void reg_add_kids(struct reg_entry *e, const pid_t *kids, int n)
{
    if (!e) return;
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < e->nkids; j++)
            if (e->kids[j] == kids[i]) seen = 1;
        if (!seen && e->nkids < REG_KIDS) {
            e->kids[e->nkids] = kids[i];
            __sync_synchronize();
            e->nkids++;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Stopping (shared by httpd_stop, the reaper and the signal path)     */

static void sigkill_kids(const pid_t *kids, int n)
{
    for (int i = 0; i < n; i++)
        if (httpd_pid_alive(kids[i]) && is_apache(kids[i])) kill(kids[i], SIGKILL);
}

static int any_alive(const pid_t *kids, int n)
{
    for (int i = 0; i < n; i++)
        if (httpd_pid_alive(kids[i]) && is_apache(kids[i])) return 1;
    return 0;
}

/* SIGTERM pid, wait up to wait_ms for it and kids to exit; else SIGKILL.
 * Returns 1 if clean.  Async-signal-safe. */
static int stop_pids(pid_t pid, const pid_t *kids, int nkids, int wait_ms,
                     double *secs)
{
    double t0 = now_ms(), deadline = t0 + wait_ms;
    int clean = 1;
    if (httpd_pid_alive(pid)) kill(pid, SIGTERM);
    while (httpd_pid_alive(pid) && now_ms() < deadline) sleep_ms(10);
    if (httpd_pid_alive(pid)) {
        clean = 0;
        kill(pid, SIGKILL);
    } else {
        /* the parent waits for its children; give stragglers a moment */
        double kd = now_ms() + 1000;
        while (any_alive(kids, nkids) && now_ms() < kd) sleep_ms(10);
    }
    if (any_alive(kids, nkids)) {
        clean = 0;
        sigkill_kids(kids, nkids);
    }
    for (int i = 0; i < 200 && (httpd_pid_alive(pid) || any_alive(kids, nkids)); i++)
        sleep_ms(10);
    if (secs) *secs = (now_ms() - t0) / 1e3;
    return clean;
}

static void dump_file_tail(const char *title, const char *path, int lines)
{
    size_t len;
    char *buf = read_file_from(path, 0, &len);
    const char *p = buf + len;
    int n = 0;
    if (lines <= 0) lines = 40;
    if (len && p[-1] == '\n') p--;
    while (p > buf) {
        if (p[-1] == '\n' && ++n >= lines) break;
        p--;
    }
    fprintf(stderr, "---- %s (%s), last %d lines ----\n%s%s---- end ----\n", title,
            path, lines, p, (len && buf[len - 1] != '\n') ? "\n" : "");
    free(buf);
}

void httpd_dump_log_tail(httpd_t *h, int lines)
{
    if (!h) return;
    fprintf(stderr, "pyr-it: server dir %s (port %d)\n", h->dir, h->port);
    if (h->startup_output && *h->startup_output)
        fprintf(stderr, "---- apache2 -k start output ----\n%s---- end ----\n",
                h->startup_output);
    dump_file_tail("error log", h->error_log, lines);
}

/* ------------------------------------------------------------------ */
/* Failure tracking and orphans                                        */

static void note_dead_test(void)
{
    pid_t t = g_sh->in_test;
    if (t && t != getpid() && !httpd_pid_alive(t)
        && __sync_bool_compare_and_swap(&g_sh->in_test, t, 0))
        __sync_fetch_and_add(&g_sh->failures, 1);
}

void httpd_test_begin(void)
{
    note_dead_test();
    httpd_reap_orphans();
    g_sh->in_test = getpid();
}

void httpd_test_end(void)
{
    if (g_sh->in_test == getpid()) g_sh->in_test = 0;
}

static void stop_entry(struct reg_entry *e, const char *why)
{
    pid_t kids[REG_KIDS];
    int n = 0;
    pid_t pid = e->pid;
    double secs = 0;
    if (pid > 0) {
        pid_t more[REG_KIDS];
        int m = scan_procs(pid, NULL, more, REG_KIDS);
        reg_add_kids(e, more, m);
    }
    n = e->nkids;
    memcpy(kids, e->kids, sizeof(pid_t) * (size_t)n);
    if (pid > 0) stop_pids(pid, kids, n, STOP_WAIT_MS, &secs);
    fprintf(stderr, "pyr-it: %s: stopped the httpd in %s (kept for inspection)\n", why,
            e->dir);
    dump_file_tail("error log", e->error_log, 30);
}

void httpd_reap_orphans(void)
{
    pid_t me = getpid();
    for (int i = 0; i < REG_MAX; i++) {
        struct reg_entry *e = &g_sh->reg[i];
        pid_t o = e->owner;
        if (!o || o == me || httpd_pid_alive(o)) continue;
        if (!__sync_bool_compare_and_swap(&e->owner, o, me)) continue;
        if (e->pid) {
            char why[96];
            snprintf(why, sizeof why,
                     "test process %d died (failed or timed out) with a server running",
                     (int)o);
            stop_entry(e, why);
        }
        e->pid = 0;
        e->nkids = 0;
        __sync_synchronize();
        e->owner = 0;
    }
}

static void httpd_atexit(void)
{
    pid_t me = getpid();
    if (!g_sh) return;
    if (me == g_sh->root) {
        note_dead_test();
        httpd_reap_orphans();
    }
    for (int i = 0; i < REG_MAX; i++) {
        struct reg_entry *e = &g_sh->reg[i];
        if (e->owner != me) continue;
        if (e->pid) stop_entry(e, "server still running at exit (never freed)");
        e->pid = 0;
        e->owner = 0;
    }
}

/* Async-signal-safe. */
static void say(const char *a, const char *b, const char *c)
{
    if (a) write_all(2, a, strlen(a));
    if (b) write_all(2, b, strlen(b));
    if (c) write_all(2, c, strlen(c));
}

void httpd_stop_all(void)
{
    pid_t me = getpid();
    int root = me == g_sh->root;
    double deadline;
    for (int i = 0; i < REG_MAX; i++) {
        struct reg_entry *e = &g_sh->reg[i];
        if (e->owner && e->pid > 0 && (root || e->owner == me)) kill(e->pid, SIGTERM);
    }
    deadline = now_ms() + 5000;
    for (;;) {
        int left = 0;
        for (int i = 0; i < REG_MAX; i++) {
            struct reg_entry *e = &g_sh->reg[i];
            if (e->owner && e->pid > 0 && (root || e->owner == me) && httpd_pid_alive(e->pid))
                left = 1;
        }
        if (!left || now_ms() > deadline) break;
        sleep_ms(20);
    }
    for (int i = 0; i < REG_MAX; i++) {
        struct reg_entry *e = &g_sh->reg[i];
        if (!e->owner || e->pid <= 0 || !(root || e->owner == me)) continue;
        if (httpd_pid_alive(e->pid)) kill(e->pid, SIGKILL);
        sigkill_kids(e->kids, e->nkids);
        say("pyr-it: stopped the httpd in ", e->dir, " (kept)\n");
        e->pid = 0;
        e->owner = 0;
    }
}

static void on_fatal_signal(int sig)
{
    static volatile sig_atomic_t busy;
    if (!busy) {
        busy = 1;
        say("pyr-it: signal received, stopping servers\n", NULL, NULL);
        httpd_stop_all();
        if (getpid() == g_sh->root && g_sh->in_test > 0) kill(-g_sh->in_test, SIGKILL);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

void httpd_install_signal_handlers(int include_sigalrm)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGALRM};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction sa, cur;
        if (sigs[i] == SIGALRM && !include_sigalrm) continue;
        if (sigaction(sigs[i], NULL, &cur) == 0 && !(cur.sa_flags & SA_SIGINFO)
            && cur.sa_handler == on_fatal_signal)
            continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_fatal_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

/* ------------------------------------------------------------------ */
/* check glue                                                          */

static void tcase_enter(void)
{
    httpd_install_signal_handlers(0);
    note_dead_test();
    httpd_reap_orphans();
}

static void tcase_leave(void)
{
    note_dead_test();
    httpd_reap_orphans();
}

TCase *httpd_tcase(const char *name, int timeout_s, void (*setup)(void),
                   void (*teardown)(void))
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, timeout_s > 0 ? timeout_s : 60);
    tcase_add_unchecked_fixture(tc, tcase_enter, tcase_leave);
    if (setup || teardown) tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_checked_fixture(tc, httpd_test_begin, httpd_test_end);
    return tc;
}

/* ------------------------------------------------------------------ */
/* Sanitizers (PYR_SANITIZE)                                           */

int httpd_sanitizing(void)
{
    const char *v = getenv("PYR_SANITIZE");
    return v && *v;
}

int httpd_sanitizer_reports(void)
{
    return g_sh->san_reports;
}

/* The sanitizer runtime's variables for apache2, into env (room for 4);
 * returns how many.  Reports go to san/ (asan.<pid>, ubsan.<pid>), one file
 * per reporting process, so that children's reports are not lost in a
 * closed stderr. */
static size_t sanitizer_env(const httpd_t *h, char **env)
{
    const char *supp = getenv("PYR_LSAN_SUPPRESSIONS");
    if (!httpd_sanitizing()) return 0;
    env[0] = xasprintf("LD_PRELOAD=%s", getenv("PYR_SANITIZE"));
    /* allow_user_segv_handler=0: httpd installs its own SIGSEGV handler
     * (to log "exit signal"), which would otherwise hide ASan's report.
     * Errors halt the process (ASan's default; UBSan asked to), so that a
     * report cannot scroll by unnoticed.  fast_unwind_on_malloc=0: libpython
     * and httpd have no frame pointers, and allocation stacks would stop at
     * their first frame (useless reports, suppressions that cannot match). */
    env[1] = xasprintf("ASAN_OPTIONS=log_path=%s/san/asan:allow_user_segv_handler=0:"
                       "detect_leaks=%d:halt_on_error=1:fast_unwind_on_malloc=0", h->dir,
                       !h->opts.no_leak_check);
    env[2] = xasprintf("LSAN_OPTIONS=%s%s:print_suppressions=0",
                       supp && *supp ? "suppressions=" : "", supp && *supp ? supp : "");
    env[3] = xasprintf("UBSAN_OPTIONS=log_path=%s/san/ubsan:print_stacktrace=1:"
                       "halt_on_error=1", h->dir);
    return 4;
}

static int has_report(const char *text)
{
    return strstr(text, "ERROR: AddressSanitizer") || strstr(text, "ERROR: LeakSanitizer")
           || strstr(text, "Sanitizer has encountered a fatal error")
           || strstr(text, "SUMMARY: AddressSanitizer") || strstr(text, "SUMMARY: LeakSanitizer")
           || strstr(text, "SUMMARY: UndefinedBehaviorSanitizer")
           || strstr(text, ": runtime error: ");
}

/* LeakSanitizer's own failure to run (its tracer, stopping the process's
 * threads, caught a signal: seen with prefork children that exit from a
 * signal handler) is no finding about the code, and holds no other report:
 * said, not counted.  That process was not leak-checked. */
static int lsan_could_not_run(const char *text)
{
    return strstr(text, "LeakSanitizer has encountered a fatal error")
           && !strstr(text, "ERROR: AddressSanitizer") && !strstr(text, "detected memory leaks")
           && !strstr(text, "SUMMARY:") && !strstr(text, ": runtime error: ");
}

/* httpd 2.4 event's own race at an ungraceful stop (settle_before_stop()):
 * ASan's SEGV in apr_os_sock_get() called from mod_mpm_event.so (its main
 * thread's close_worker_sockets()), alone in the report.  The wait before
 * the stop makes it rare; a test that stops during a request can still meet
 * it, and it says nothing about the module: said, not counted. */
static int event_stop_race(const char *text)
{
    const char *e = strstr(text, "ERROR: AddressSanitizer: SEGV on unknown address");
    const char *f0, *f1, *f2, *s = strstr(text, "SUMMARY:");
    if (!e || e != strstr(text, "ERROR:") || strstr(e + 1, "ERROR:") || !s
        || strstr(s + 1, "SUMMARY:") || strstr(text, ": runtime error: "))
        return 0;
    f0 = strstr(e, "#0 ");
    f1 = f0 ? strstr(f0, "#1 ") : NULL;
    f2 = f1 ? strstr(f1, "#2 ") : NULL;
    return f2 && (s = strstr(f0, " in apr_os_sock_get ")) != NULL && s < f1
           && (s = strstr(f1, "/mod_mpm_event.so+")) != NULL && s < f2;
}

/* After a stop: every report file in san/ (and any report that reached the
 * error log or the startup output instead) fails the running test, or, in
 * the runner process (a TCase's teardown), makes the runner fail at the end
 * (it_main.c).  Files are renamed *.seen, so each counts once. */
static void sanitizer_check(httpd_t *h)
{
    char sandir[200];
    DIR *d;
    struct dirent *de;
    int found = 0;
    if (!httpd_sanitizing()) return;
    snprintf(sandir, sizeof sandir, "%s/san", h->dir);
    d = opendir(sandir);
    while (d && (de = readdir(d)) != NULL) {
        char path[PATH_MAX], seen[PATH_MAX + 8];
        size_t len;
        char *text;
        if (de->d_name[0] == '.' || strstr(de->d_name, ".seen")) continue;
        snprintf(path, sizeof path, "%s/%s", sandir, de->d_name);
        text = read_file_from(path, 0, &len);
        if (len && lsan_could_not_run(text)) {
            fprintf(stderr, "pyr-it: LeakSanitizer could not run in one process of %s (not a "
                            "finding; that process was not leak-checked):\n%.2000s\n", h->dir,
                    text);
        }
        else if (len && event_stop_race(text)) {
            fprintf(stderr, "pyr-it: httpd's event MPM crashed at the stop of %s in "
                            "close_worker_sockets() (its known race, not the module's; not "
                            "counted):\n%.2000s\n", h->dir, text);
        }
        else if (len) {
            found++;
            fprintf(stderr, "pyr-it: SANITIZER REPORT %s:\n%.20000s%s\n", path, text,
                    len > 20000 ? "\n[...]" : "");
        }
        free(text);
        snprintf(seen, sizeof seen, "%s.seen", path);
        rename(path, seen);
    }
    if (d) closedir(d);
    {
        char *log = httpd_log_since(h, h->san_mark);
        h->san_mark += strlen(log);
        if ((has_report(log) && !lsan_could_not_run(log))
            || (!h->san_startup_seen && has_report(h->startup_output)
                && !lsan_could_not_run(h->startup_output))) {
            found++;
            fprintf(stderr, "pyr-it: SANITIZER REPORT in the error log or startup output "
                            "of %s\n", h->dir);
        }
        h->san_startup_seen = 1;
        free(log);
    }
    if (!found) return;
    h->keep = 1;
    __sync_fetch_and_add(&g_sh->san_reports, found);
    if (getpid() != g_sh->root)
        ck_abort_msg("%d sanitizer report(s) from the httpd in %s (printed above)", found,
                     h->dir);
}

/* ------------------------------------------------------------------ */
/* Servers                                                             */

const char *httpd_module_path(void)
{
    static char path[PATH_MAX];
    const char *env = getenv("PYR_MODULE");
    if (path[0]) return path;
    if (env && *env) {
        snprintf(path, sizeof path, "%s", env);
    } else if (!realpath("mod_pyreload.so", path)) {
        char cwd[PATH_MAX - 32];
        if (!getcwd(cwd, sizeof cwd)) snprintf(cwd, sizeof cwd, ".");
        snprintf(path, sizeof path, "%s/mod_pyreload.so", cwd);
    }
    return path;
}

int httpd_have_module(void)
{
    return access(httpd_module_path(), R_OK) == 0;
}

httpd_t *httpd_new(const httpd_opts_t *opts)
{
    static const httpd_opts_t none;
    httpd_t *h = calloc(1, sizeof *h);
    const char *subdirs[] = {"app", "htdocs", "logs", "run", "san"};
    if (!h) abort();
    if (!opts) opts = &none;
    h->slot = -1;
    snprintf(h->dir, sizeof h->dir, "/tmp/pyr-it.XXXXXX");
    if (!mkdtemp(h->dir) || chmod(h->dir, 0755) < 0) {
        fprintf(stderr, "pyr-it: mkdtemp: %s\n", strerror(errno));
        free(h);
        return NULL;
    }
    for (size_t i = 0; i < sizeof subdirs / sizeof subdirs[0]; i++) {
        char p[200];
        snprintf(p, sizeof p, "%s/%s", h->dir, subdirs[i]);
        /* san/: sanitizer reports, written by children running as www-data */
        mode_t mode = strcmp(subdirs[i], "san") ? 0755 : 01777;
        if (mkdir(p, mode) < 0 || chmod(p, mode) < 0) {
            fprintf(stderr, "pyr-it: mkdir %s: %s\n", p, strerror(errno));
            rm_rf(h->dir);
            free(h);
            return NULL;
        }
    }
    snprintf(h->app, sizeof h->app, "%s/app", h->dir);
    snprintf(h->conf, sizeof h->conf, "%s/httpd.conf", h->dir);
    /* The layout tools/server.conf.in gives every server root. */
    snprintf(h->error_log, sizeof h->error_log, "%s/logs/error.log", h->dir);
    snprintf(h->pid_file, sizeof h->pid_file, "%s/run/httpd.pid", h->dir);
    snprintf(h->startup_log, sizeof h->startup_log, "%s/startup.log", h->dir);
    h->startup_output = xstrdup("");
    h->failures_at_start = g_sh->failures;

    h->opts = *opts;
    h->opts.config = opts->config ? xstrdup(opts->config) : NULL;
    h->opts.mpm = opts->mpm ? xstrdup(opts->mpm) : NULL;
    h->opts.loglevel = opts->loglevel ? xstrdup(opts->loglevel) : NULL;
    h->opts.files = NULL;
    h->opts.env = NULL;
    if (opts->env) {
        size_t n = 0;
        while (opts->env[n]) n++;
        h->env_copy = calloc(n + 1, sizeof(char *));
        if (!h->env_copy) abort();
        for (size_t i = 0; i < n; i++) h->env_copy[i] = xstrdup(opts->env[i]);
        h->opts.env = (const char *const *)h->env_copy;
    }
    for (const httpd_file_t *f = opts->files; f && f->name; f++) {
        char *text = httpd_subst(h, f->content);
        if (httpd_write(h, f->name, text) < 0)
            fprintf(stderr, "pyr-it: writing %s: %s\n", f->name, strerror(errno));
        free(text);
    }
    return h;
}

/* $PYR_PORTS ("LO-HI"), else PORTS_DEFAULT; a bad value is reported once. */
static void port_range(int *lo, int *hi)
{
    static int warned;
    const char *env = getenv("PYR_PORTS");
    int a = 0, b = 0, n = 0;

    if (env && *env && (sscanf(env, "%d-%d%n", &a, &b, &n) != 2 || env[n] || a < 1024
                        || b > 65535 || a > b)) {
        if (!warned++)
            fprintf(stderr, "pyr-it: PYR_PORTS=%s is not LO-HI within 1024-65535; "
                            "using " PORTS_DEFAULT "\n", env);
        env = NULL;
    }
    if (!env || !*env) sscanf(PORTS_DEFAULT, "%d-%d", &a, &b);
    *lo = a;
    *hi = b;
}

/* 1 if apache2 could bind 127.0.0.1:port: probed as it binds, with
 * SO_REUSEADDR, so that connections of a stopped server left in TIME_WAIT do
 * not make a small range run dry. */
static int port_free(int port)
{
    struct sockaddr_in a;
    int ok, one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* The next free port of the range.  Every process of this runner (the forked
 * tests too) draws from one cursor in shared memory, so they never offer each
 * other the same port; the cursor starts at a random place, so that runners
 * started at the same moment (other suites, other checkouts) rarely meet, and
 * when they do, the bind() probe and start_once's retry sort it out. */
static int pick_port(void)
{
    int lo, hi, span;
    port_range(&lo, &hi);
    span = hi - lo + 1;
    if (g_sh->port_start < 0) {
        struct timespec ts;
        unsigned seed;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (unsigned)getpid() * 2654435761u ^ (unsigned)ts.tv_nsec;
        __sync_bool_compare_and_swap(&g_sh->port_start, -1, (int)(seed % 65536u));
    }
    /* A range that is all taken may free up as other servers stop. */
    for (int pass = 0; pass < 3; pass++) {
        if (pass) sleep_ms(500);
        for (int i = 0; i < span; i++) {
            unsigned k = __sync_fetch_and_add(&g_sh->port_next, 1u);
            int port = lo + (int)(((unsigned)g_sh->port_start + k) % (unsigned)span);
            if (port_free(port)) return port;
        }
    }
    fprintf(stderr, "pyr-it: no free port in %d-%d (PYR_PORTS)\n", lo, hi);
    return -1;
}

/* 1 if 127.0.0.1:port is in LISTEN state (/proc/net/tcp). */
static int port_listening(int port)
{
    char want[32];
    char *buf = read_file_from("/proc/net/tcp", 0, NULL);
    int found = 0;
    snprintf(want, sizeof want, "0100007F:%04X 00000000:0000 0A", port);
    found = strstr(buf, want) != NULL;
    free(buf);
    return found;
}

/* Connections to port that are closing (/proc/net/tcp and tcp6): the
 * client has closed (CLOSE_WAIT, LAST_ACK) or the server has begun to
 * (FIN_WAIT1/2, CLOSING), so a worker may still be inside it. */
static int port_closing(int port)
{
    static const char *const tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    int n = 0;
    for (size_t t = 0; t < sizeof tables / sizeof *tables; t++) {
        char *buf = read_file_from(tables[t], 0, NULL), *line = buf;
        unsigned lport, st;
        while (line && (line = strchr(line, '\n')) != NULL) {
            line++;
            if (sscanf(line, "%*d: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x", &lport, &st) == 2
                && (int)lport == port
                && (st == 0x04 || st == 0x05 || st == 0x08 || st == 0x09 || st == 0x0B))
                n++;
        }
        free(buf);
    }
    return n;
}

/* httpd 2.4's event MPM (2.4.71 here) may crash a child when an ungraceful
 * stop (SIGTERM) comes while a worker is finishing a connection: the main
 * thread's close_worker_sockets() takes worker_sockets[i] before the worker
 * clears it, the worker has given the connection's pool back, the leaving
 * listener frees the idle pools (ap_queue_info_free_idle_pools() -> munmap
 * in the cores), and apr_os_sock_get() reads the unmapped socket: SIGSEGV,
 * "exit signal Segmentation fault" in the log, or AddressSanitizer's SEGV
 * under make check-asan.  tools/event-stop-race shows it with no module
 * loaded (5 crashes in 120 runs, 6 in 120 with ours; 0 in 120 either way
 * after this wait).  The tests' clients close their connection just before
 * most stops, so let the server finish the connections they closed (1 s at
 * most), then give the worker a moment to leave it.  Requests still running
 * are not waited for: the tests that stop during a request still do. */
static void settle_before_stop(const httpd_t *h)
{
    double deadline = now_ms() + 1000;
    while (port_closing(h->port) > 0 && now_ms() < deadline) sleep_ms(5);
    sleep_ms(50);
}

const char *httpd_mpm(const httpd_t *h)
{
    const char *m = h->opts.mpm;
    if (!m || !*m) m = getenv("PYR_MPM");
    if (!m || !*m) m = "event";
    return m;
}

/* httpd.conf: the server configuration shared with the bench and the demo
 * (tools/server.conf.in; SERVER_CONF_IN is its absolute path, from the
 * Makefile) filled with this server's sizing and the test's own part. */
static int write_conf(httpd_t *h)
{
    const char *mpm = httpd_mpm(h);
    int threads = h->opts.threads > 0 ? h->opts.threads : 16;
    int procs = h->opts.procs > 0 ? h->opts.procs : 1;
    int servers = h->opts.servers > 0 ? h->opts.servers : 1;
    char port[16], mpm_conf[256], *conf = NULL, *extra, *tmpl, *text;
    size_t len;
    FILE *f;
    int rc = -1;

    snprintf(port, sizeof port, "%d", h->port);
    if (!strcmp(mpm, "prefork"))
        snprintf(mpm_conf, sizeof mpm_conf,
                 "StartServers %d\n"
                 "MinSpareServers %d\n"
                 "MaxSpareServers %d\n"
                 "ServerLimit %d\n"
                 "MaxRequestWorkers %d",
                 procs, procs, procs + 1, procs, procs);
    else
        /* MaxSpareThreads above every thread: no idle process is stopped. */
        snprintf(mpm_conf, sizeof mpm_conf,
                 "StartServers %d\n"
                 "ServerLimit %d\n"
                 "ThreadLimit %d\n"
                 "ThreadsPerChild %d\n"
                 "MaxRequestWorkers %d\n"
                 "MinSpareThreads 1\n"
                 "MaxSpareThreads %d",
                 servers, servers, threads, threads, threads * servers,
                 threads * servers + 1);
    extra = httpd_subst(h, h->opts.config);
    if (asprintf(&conf,
                 "LoadModule mime_module " MODDIR "/mod_mime.so\n"
                 "TypesConfig /etc/mime.types\n"
                 "%s%s%s"
                 "# ---- test configuration ----\n"
                 "%s\n",
                 h->opts.no_module ? "" : "LoadModule pyreload_module ",
                 h->opts.no_module ? "" : httpd_module_path(),
                 h->opts.no_module ? "" : "\n", extra) < 0)
        abort();
    free(extra);

    tmpl = read_file_from(SERVER_CONF_IN, 0, &len);
    if (len == 0) {
        fprintf(stderr, "pyr-it: cannot read %s\n", SERVER_CONF_IN);
        errno = ENOENT;
    }
    else {
        const char *const kv[] = {
            "BY", "tests/fixture.c", "DIR", h->dir, "PORT", port,
            "LOGLEVEL", h->opts.loglevel ? h->opts.loglevel : "info",
            "MPM", mpm, "MODDIR", MODDIR, "MPM_CONF", mpm_conf, "CONF", conf,
            NULL};
        text = subst(tmpl, kv, 1);
        if (!text)
            errno = EINVAL;
        else if ((f = fopen(h->conf, "w")) != NULL) {
            rc = fputs(text, f) < 0 ? -1 : 0;
            rc = fclose(f) != 0 ? -1 : rc;
        }
        free(text);
    }
    free(tmpl);
    free(conf);
    return rc;
}

static int read_pid_file(const httpd_t *h)
{
    char *s = read_file_from(h->pid_file, 0, NULL);
    int pid = atoi(s);
    free(s);
    return pid;
}

/* apache2's environment: clean, plus opts.env and the sanitizer's.  envp
 * has room for 64; entries from [2] on are malloc'd.  Returns the count. */
static size_t build_env(const httpd_t *h, char **envp)
{
    size_t ne = 0;

    envp[ne++] = CLEAN_PATH;
    envp[ne++] = CLEAN_LANG;
    for (const char *const *v = h->opts.env; v && *v && ne < 59; v++)
        envp[ne++] = httpd_subst(h, *v);
    ne += sanitizer_env(h, envp + ne);
    envp[ne] = NULL;
    return ne;
}

int httpd_configtest(httpd_t *h, char **out)
{
    char *argv[] = {APACHE2, "-t", "-f", h->conf, NULL};
    char *envp[64];
    size_t ne = build_env(h, envp), len = 0;
    double deadline = now_ms() + 10000;
    int fds[2], status = -1;
    pid_t pid;

    *out = calloc(1, 65536);
    if (!*out || pipe(fds) != 0) {
        for (size_t i = 2; i < ne; i++) free(envp[i]);
        return -1;
    }
    pid = fork();
    if (pid == 0) {
        int nul = open("/dev/null", O_RDONLY);
        dup2(nul, 0);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        for (int i = 3; i < 1024; i++) close(i);
        execve(APACHE2, argv, envp);
        _exit(127);
    }
    for (size_t i = 2; i < ne; i++) free(envp[i]);
    close(fds[1]);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    while (pid > 0 && now_ms() < deadline) {
        ssize_t n = read(fds[0], *out + len, 65535 - len);
        if (n > 0) { len += (size_t)n; continue; }
        if (n == 0 || len == 65535) break;
        sleep_ms(10);
    }
    close(fds[0]);
    if (pid > 0) {
        if (now_ms() >= deadline) kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    return pid > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* One attempt.  0 ok, 1 port taken (retry), -1 failure. */
static int start_once(httpd_t *h)
{
    int timeout = h->opts.start_timeout_ms > 0 ? h->opts.start_timeout_ms : 10000;
    double deadline = now_ms() + timeout;
    char *argv[] = {APACHE2, "-f", h->conf, "-k", "start", NULL};
    char *envp[64];
    size_t ne = 0;
    int status = 0, exited = 0;
    pid_t launcher, pid = 0;
    struct reg_entry *e;

    ne = build_env(h, envp);

    unlink(h->pid_file);
    h->slot = reg_claim(h);
    e = reg_of(h);

    launcher = fork();
    if (launcher < 0) {
        for (size_t i = 2; i < ne; i++) free(envp[i]);
        reg_release(h);
        return -1;
    }
    if (launcher == 0) {
        sigset_t all;
        int fd = open(h->startup_log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int nul = open("/dev/null", O_RDONLY);
        if (fd < 0 || nul < 0) _exit(126);
        dup2(nul, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        for (int i = 3; i < 1024; i++) close(i);
        for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        execve(APACHE2, argv, envp);
        _exit(127);
    }
    for (size_t i = 2; i < ne; i++) free(envp[i]);
    /* the launcher exits once the daemon detached (or on a config error) */
    while (now_ms() < deadline) {
        pid_t w = waitpid(launcher, &status, WNOHANG);
        if (w == launcher) { exited = 1; break; }
        if (w < 0 && errno != EINTR) break;
        sleep_ms(10);
    }
    if (!exited) {
        kill(launcher, SIGKILL);
        waitpid(launcher, &status, 0);
    }
    free(h->startup_output);
    h->startup_output = read_file_from(h->startup_log, 0, NULL);
    h->san_startup_seen = 0;

    if (exited && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        /* wait for the pid file and the listener */
        int gone_checks = 0;
        while (now_ms() < deadline) {
            pid = read_pid_file(h);
            if (pid > 0 && e) e->pid = pid;
            if (pid > 0 && !httpd_pid_alive(pid)) break;
            if (pid > 0 && port_listening(h->port)) {
                h->pid = pid;
                break;
            }
            if (pid <= 0) {
                /* no pid file yet: is any process of this server left? */
                pid_t any[4];
                if (scan_procs(0, h->conf, any, 4) == 0) {
                    if (++gone_checks > 5) break;
                } else {
                    gone_checks = 0;
                }
            }
            sleep_ms(10);
        }
    }
    if (h->pid > 0) {
        /* wait (bounded, not fatal) for the child process(es) */
        double cd = now_ms() + 5000;
        pid_t kids[REG_KIDS];
        while (now_ms() < cd) {
            if (httpd_children(h, kids, REG_KIDS) > 0) break;
            if (!httpd_pid_alive(h->pid)) break;
            sleep_ms(10);
        }
        return 0;
    }

    /* failure: kill whatever came up */
    {
        pid_t procs[REG_KIDS];
        int n = scan_procs(0, h->conf, procs, REG_KIDS);
        pid = read_pid_file(h);
        if (pid > 0 || n > 0) stop_pids(pid, procs, n, 3000, NULL);
    }
    reg_release(h);
    h->pid = 0;
    {
        char *log = httpd_log(h);
        int busy = strstr(h->startup_output, "Address already in use") != NULL
                   || strstr(log, "Address already in use") != NULL;
        free(log);
        if (busy) return 1;
    }
    if (!exited)
        fprintf(stderr, "pyr-it: apache2 -k start did not return within %d ms\n", timeout);
    return -1;
}

int httpd_start(httpd_t *h)
{
    if (!h) return -1;
    if (h->pid > 0 && httpd_pid_alive(h->pid)) return 0;
    /* The port can be taken between the probe and apache2's bind (another
     * runner): start_once then says so and the next port is tried. */
    for (int attempt = 0; attempt < 5; attempt++) {
        int rc;
        h->port = pick_port();
        snprintf(h->url, sizeof h->url, "http://127.0.0.1:%d", h->port);
        if (h->port <= 0 || write_conf(h) < 0) {
            fprintf(stderr, "pyr-it: cannot prepare %s: %s\n", h->conf, strerror(errno));
            return -1;
        }
        rc = start_once(h);
        if (rc <= 0) return rc;
        fprintf(stderr, "pyr-it: port %d was taken meanwhile; trying another\n", h->port);
    }
    return -1;
}

httpd_t *httpd_launch(const httpd_opts_t *opts)
{
    httpd_t *h = httpd_new(opts);
    if (!h) return NULL;
    if (!h->opts.no_module && !httpd_have_module())
        fprintf(stderr, "pyr-it: module %s does not exist (set PYR_MODULE)\n",
                httpd_module_path());
    if (httpd_start(h) < 0) {
        fprintf(stderr, "pyr-it: httpd did not start\n");
        h->keep = 1;
        httpd_free(h);
        return NULL;
    }
    return h;
}

int httpd_children(httpd_t *h, pid_t *out, int max)
{
    pid_t kids[REG_KIDS];
    int n;
    if (!h || h->pid <= 0) return 0;
    n = scan_procs(h->pid, NULL, kids, REG_KIDS);
    reg_add_kids(reg_of(h), kids, n);
    if (out) {
        if (n > max) n = max;
        memcpy(out, kids, sizeof(pid_t) * (size_t)(n > 0 ? n : 0));
    }
    return n;
}

pid_t httpd_child(httpd_t *h)
{
    double deadline = now_ms() + 5000;
    pid_t kid = 0;
    while (now_ms() < deadline) {
        if (httpd_children(h, &kid, 1) > 0) return kid;
        if (!h || !httpd_pid_alive(h->pid)) break;
        sleep_ms(10);
    }
    return 0;
}

int httpd_signal(httpd_t *h, int sig)
{
    if (!h || h->pid <= 0) return -1;
    return kill(h->pid, sig);
}

int httpd_stop(httpd_t *h)
{
    pid_t kids[REG_KIDS];
    int n = 0, clean;
    struct reg_entry *e;
    if (!h) return 0;
    e = reg_of(h);
    if (h->pid <= 0 && e && e->pid > 0) h->pid = e->pid;
    if (h->pid <= 0 || !httpd_pid_alive(h->pid)) {
        h->pid = 0;
        reg_release(h);
        return 0;
    }
    httpd_children(h, NULL, 0);
    if (e) {
        n = e->nkids;
        memcpy(kids, e->kids, sizeof(pid_t) * (size_t)n);
    } else {
        n = scan_procs(h->pid, NULL, kids, REG_KIDS);
    }
    settle_before_stop(h);
    clean = stop_pids(h->pid, kids, n, STOP_WAIT_MS, &h->stop_seconds);
    h->stop_clean = clean;
    h->pid = 0;
    reg_release(h);
    sanitizer_check(h);
    return clean ? 0 : -1;
}

void httpd_free(httpd_t *h)
{
    const char *keep_env = getenv("PYR_KEEP");
    int failed;
    if (!h) return;
    note_dead_test();
    if (httpd_stop(h) < 0)
        fprintf(stderr, "pyr-it: the httpd in %s needed SIGKILL to stop (%.2f s)\n", h->dir,
                h->stop_seconds);
    sanitizer_check(h);     /* also what a start that failed left */
    failed = g_sh->failures != h->failures_at_start;
    if (failed || h->keep) {
        fprintf(stderr, "pyr-it: keeping %s (%s)\n", h->dir,
                failed ? "a test failed while this server ran" : "asked to");
        httpd_dump_log_tail(h, 40);
    } else if (keep_env && !strcmp(keep_env, "1")) {
        fprintf(stderr, "pyr-it: keeping %s (PYR_KEEP=1)\n", h->dir);
    } else {
        rm_rf(h->dir);
    }
    free(h->startup_output);
    free((char *)h->opts.config);
    free((char *)h->opts.mpm);
    free((char *)h->opts.loglevel);
    if (h->env_copy) {
        for (char **v = h->env_copy; *v; v++) free(*v);
        free(h->env_copy);
    }
    free(h);
}

/* ------------------------------------------------------------------ */
/* Files                                                               */

char *httpd_path(const httpd_t *h, const char *name)
{
    if (name[0] == '/') return xstrdup(name);
    return xasprintf("%s/%s", h->app, name);
}

int httpd_write_bytes(const httpd_t *h, const char *name, const void *data, size_t len)
{
    char *path = httpd_path(h, name);
    int fd, rc = -1, saved;
    mkdir_parent(path);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        rc = write_all(fd, data, len);
        if (fchmod(fd, 0644) < 0) rc = -1;
        if (close(fd) < 0) rc = -1;
    }
    saved = errno;
    free(path);
    errno = saved;
    return rc;
}

int httpd_write(const httpd_t *h, const char *name, const char *text)
{
    return httpd_write_bytes(h, name, text, strlen(text));
}

int httpd_write_atomic(const httpd_t *h, const char *name, const char *text)
{
    char *path = httpd_path(h, name);
    char *tmp = xasprintf("%s.tmp-XXXXXX", path);
    int fd, rc = -1, saved;
    mkdir_parent(path);
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd >= 0) {
        rc = write_all(fd, text, strlen(text));
        if (fchmod(fd, 0644) < 0) rc = -1;
        if (close(fd) < 0) rc = -1;
        if (rc == 0) rc = rename(tmp, path);
        if (rc < 0) unlink(tmp);
    }
    saved = errno;
    free(tmp);
    free(path);
    errno = saved;
    return rc;
}

int httpd_set_mtime(const httpd_t *h, const char *name, int64_t sec, long nsec)
{
    char *path = httpd_path(h, name);
    struct timespec ts[2];
    int rc, saved;
    ts[0].tv_sec = (time_t)sec;
    ts[0].tv_nsec = nsec;
    ts[1] = ts[0];
    rc = utimensat(AT_FDCWD, path, ts, 0);
    saved = errno;
    free(path);
    errno = saved;
    return rc;
}

int httpd_symlink(const httpd_t *h, const char *target, const char *name)
{
    static unsigned counter;
    char *path = httpd_path(h, name);
    char *tmp = xasprintf("%s.lnk-%d-%u", path, (int)getpid(), counter++);
    int rc, saved;
    mkdir_parent(path);
    unlink(tmp);
    rc = symlink(target, tmp);
    if (rc == 0) rc = rename(tmp, path);
    saved = errno;
    if (rc < 0) unlink(tmp);
    free(tmp);
    free(path);
    errno = saved;
    return rc;
}

int httpd_remove(const httpd_t *h, const char *name)
{
    char *path = httpd_path(h, name);
    int rc = unlink(path), saved = errno;
    free(path);
    errno = saved;
    return rc;
}

int httpd_mkdir(const httpd_t *h, const char *name)
{
    char *path = httpd_path(h, name);
    int rc = mkdir_p(path, 0755), saved = errno;
    free(path);
    errno = saved;
    return rc;
}

/* ------------------------------------------------------------------ */
/* Error log                                                           */

size_t httpd_log_mark(const httpd_t *h)
{
    struct stat st;
    if (stat(h->error_log, &st) < 0) return 0;
    return (size_t)st.st_size;
}

char *httpd_log_since(const httpd_t *h, size_t mark)
{
    return read_file_from(h->error_log, mark, NULL);
}

char *httpd_log(const httpd_t *h)
{
    return httpd_log_since(h, 0);
}

static int count_in(const char *hay, const char *needle)
{
    int n = 0;
    size_t l = strlen(needle);
    if (!l) return 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += l) n++;
    return n;
}

int httpd_log_count(const httpd_t *h, size_t mark, const char *needle)
{
    char *log = httpd_log_since(h, mark);
    int n = count_in(log, needle);
    free(log);
    return n;
}

int httpd_log_wait(const httpd_t *h, size_t mark, const char *needle, int count,
                   int timeout_ms)
{
    double deadline = now_ms() + timeout_ms;
    if (count < 1) count = 1;
    for (;;) {
        if (httpd_log_count(h, mark, needle) >= count) return 1;
        if (now_ms() >= deadline) return 0;
        sleep_ms(10);
    }
}

char *httpd_log_line(const httpd_t *h, size_t mark, const char *needle)
{
    char *log = httpd_log_since(h, mark);
    char *p = strstr(log, needle), *b, *e, *line = NULL;
    if (p) {
        b = p;
        while (b > log && b[-1] != '\n') b--;
        e = strchr(p, '\n');
        if (!e) e = p + strlen(p);
        line = strndup(b, (size_t)(e - b));
    }
    free(log);
    return line;
}

int httpd_log_no_crash(const httpd_t *h, size_t mark)
{
    char *log = httpd_log_since(h, mark);
    int ok = !strstr(log, "exit signal") && !strstr(log, "Segmentation fault")
             && !strstr(log, "AH00052");
    free(log);
    return ok;
}

/* ------------------------------------------------------------------ */
/* HTTP                                                                */

struct http_client {
    CURL *curl;
    char base[64];
    long connects;
};

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        b->data = realloc(b->data, cap);
        if (!b->data) abort();
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

typedef struct {
    buf_t body, hdr;
    double t0, first;
} xfer_t;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    xfer_t *x = ud;
    if (x->first < 0 && size * n > 0) x->first = now_ms() - x->t0;
    buf_add(&x->body, p, size * n);
    return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    xfer_t *x = ud;
    size_t len = size * n;
    if (len >= 5 && !strncmp(p, "HTTP/", 5)) x->hdr.len = 0;  /* a new response */
    buf_add(&x->hdr, p, len);
    return len;
}

static void parse_headers(http_resp_t *r)
{
    char *save = NULL, *line;
    int cap = 16;
    r->hbuf_ = xstrdup(r->headers);
    r->hname_ = calloc((size_t)cap, sizeof(char *));
    r->hvalue_ = calloc((size_t)cap, sizeof(char *));
    if (!r->hname_ || !r->hvalue_) abort();
    for (line = strtok_r(r->hbuf_, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
        char *colon = strchr(line, ':');
        if (!colon || !strncmp(line, "HTTP/", 5)) continue;
        *colon = '\0';
        colon++;
        while (*colon == ' ' || *colon == '\t') colon++;
        if (r->nh_ == cap) {
            cap *= 2;
            r->hname_ = realloc(r->hname_, sizeof(char *) * (size_t)cap);
            r->hvalue_ = realloc(r->hvalue_, sizeof(char *) * (size_t)cap);
            if (!r->hname_ || !r->hvalue_) abort();
        }
        r->hname_[r->nh_] = line;
        r->hvalue_[r->nh_] = colon;
        r->nh_++;
    }
}

static http_resp_t *perform(CURL *c, const char *base, const http_req_t *rq)
{
    http_resp_t *r = calloc(1, sizeof *r);
    struct curl_slist *hl = NULL;
    xfer_t x;
    char errbuf[CURL_ERROR_SIZE] = "";
    char *url;
    CURLcode rc;
    const char *method = rq->method;
    long connects = 0;
    char *ct = NULL;
    if (!r) abort();

    memset(&x, 0, sizeof x);
    x.first = -1;
    url = xasprintf("%s%s", base, rq->path ? rq->path : "/");
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, rq->timeout_ms > 0 ? rq->timeout_ms : 10000L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION,
                     rq->http10 ? CURL_HTTP_VERSION_1_0 : CURL_HTTP_VERSION_1_1);
    for (const char *const *v = rq->headers; v && *v; v++) hl = curl_slist_append(hl, *v);
    hl = curl_slist_append(hl, "Expect:");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    if (rq->body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, rq->body);
        if (method && strcmp(method, "POST")) curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    } else if (method && !strcmp(method, "HEAD")) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (method && strcmp(method, "GET")) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }

    x.t0 = now_ms();
    rc = curl_easy_perform(c);
    r->total_ms = now_ms() - x.t0;
    r->first_body_ms = x.first;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        if (curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct)
            snprintf(r->content_type, sizeof r->content_type, "%s", ct);
    } else {
        r->status = 0;
        snprintf(r->error, sizeof r->error, "%s: %s", curl_easy_strerror(rc), errbuf);
    }
    curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &connects);
    r->connects = (int)connects;
    r->body = x.body.data ? x.body.data : xstrdup("");
    r->len = x.body.len;
    r->headers = x.hdr.data ? x.hdr.data : xstrdup("");
    parse_headers(r);
    curl_slist_free_all(hl);
    free(url);
    return r;
}

http_client_t *http_client_new(const httpd_t *h)
{
    http_client_t *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->curl = curl_easy_init();
    if (!c->curl) abort();
    snprintf(c->base, sizeof c->base, "%s", h->url);
    return c;
}

http_resp_t *http_client_do(http_client_t *c, const http_req_t *rq)
{
    http_resp_t *r = perform(c->curl, c->base, rq);
    c->connects += r->connects;
    return r;
}

http_resp_t *http_client_get(http_client_t *c, const char *path)
{
    http_req_t rq = {.path = path};
    return http_client_do(c, &rq);
}

long http_client_connects(const http_client_t *c)
{
    return c->connects;
}

void http_client_free(http_client_t *c)
{
    if (!c) return;
    curl_easy_cleanup(c->curl);
    free(c);
}

/* A request that timed out: the server's threads as gdb sees them, once per
 * test process (check forks one per test), to stderr, while the request is
 * still stuck.  A rare hang under load is otherwise gone by the time anyone
 * looks (the fixture stops the server); with the stacks, the next one says
 * whose lock it waits on.  Skipped without gdb; each process bounded to 60 s. */
static void stacks_on_timeout(const httpd_t *h, const http_resp_t *r, const char *path)
{
    static int done;
    pid_t kids[REG_KIDS];
    int n;
    if (done || r->status != 0 || !strstr(r->error, "Timeout") || h->pid <= 0
        || access("/usr/bin/gdb", X_OK) != 0)
        return;
    done = 1;
    n = scan_procs(h->pid, NULL, kids, REG_KIDS);
    fprintf(stderr, "pyr-it: %s timed out after %.0f ms; stacks of %d server process(es):\n",
            path ? path : "/", r->total_ms, n);
    for (int i = 0; i < n; i++) {
        char *cmd = xasprintf("timeout 60 /usr/bin/gdb -p %d -batch -nx "
                              "-ex 'thread apply all bt' 2>&1 | grep -E '^(Thread|#)' >&2",
                              (int)kids[i]);
        fprintf(stderr, "pyr-it: ---- pid %d\n", (int)kids[i]);
        fflush(stderr);
        if (system(cmd) != 0) fprintf(stderr, "pyr-it: (gdb failed)\n");
        free(cmd);
    }
}

http_resp_t *http_do(const httpd_t *h, const http_req_t *rq)
{
    http_client_t *c = http_client_new(h);
    http_resp_t *r = http_client_do(c, rq);
    http_client_free(c);
    stacks_on_timeout(h, r, rq->path);
    return r;
}

http_resp_t *http_get(const httpd_t *h, const char *path)
{
    http_req_t rq = {.path = path};
    return http_do(h, &rq);
}

http_resp_t *http_post(const httpd_t *h, const char *path, const void *body, size_t len)
{
    http_req_t rq = {.path = path, .body = body ? body : "", .body_len = len};
    return http_do(h, &rq);
}

http_resp_t *http_request(const httpd_t *h, const char *method, const char *path,
                          const char *const *headers, const void *body, size_t len)
{
    http_req_t rq = {.method = method, .path = path, .headers = headers, .body = body,
                     .body_len = len};
    return http_do(h, &rq);
}

void http_free(http_resp_t *r)
{
    if (!r) return;
    free(r->body);
    free(r->headers);
    free(r->hbuf_);
    free(r->hname_);
    free(r->hvalue_);
    free(r);
}

const char *http_header_nth(const http_resp_t *r, const char *name, int nth)
{
    for (int i = 0; i < r->nh_; i++)
        if (!strcasecmp(r->hname_[i], name) && nth-- == 0) return r->hvalue_[i];
    return NULL;
}

const char *http_header(const http_resp_t *r, const char *name)
{
    return http_header_nth(r, name, 0);
}

int http_header_count(const http_resp_t *r, const char *name)
{
    int n = 0;
    for (int i = 0; i < r->nh_; i++)
        if (!strcasecmp(r->hname_[i], name)) n++;
    return n;
}

char *http_raw(const httpd_t *h, const void *data, size_t len, size_t *outlen,
               int timeout_ms)
{
    buf_t b = {0};
    struct sockaddr_in a;
    double deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 10000);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    buf_add(&b, "", 0);
    if (fd < 0) goto out;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)h->port);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 || write_all(fd, data, len) < 0)
        goto out;
    for (;;) {
        char tmp[8192];
        struct pollfd pfd = {fd, POLLIN, 0};
        int left = (int)(deadline - now_ms());
        ssize_t n;
        if (left <= 0) break;
        if (poll(&pfd, 1, left) <= 0) break;
        n = read(fd, tmp, sizeof tmp);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        buf_add(&b, tmp, (size_t)n);
    }
out:
    if (fd >= 0) close(fd);
    if (outlen) *outlen = b.len;
    return b.data;
}
