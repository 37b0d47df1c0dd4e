/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * late_wake.c: a library a test handler loads with ctypes (Python never
 * unloads it).  Its destructor runs in exit()'s last step (_dl_fini), after
 * httpd's atexit(apr_terminate) has destroyed the pools, and with them
 * unloaded the modules: there it wakes a thread that waited through
 * Python's finalisation, as a late timer or a late reply would, and gives
 * it the time to run.  It also logs (stderr: the error log) which of
 * libpython and mod_pyreload.so are still mapped at that point.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

static int wake_fd = -1;

void
pyrt_wake_at_exit(int fd)
{
    wake_fd = fd;
}

__attribute__((destructor)) static void
wake(void)
{
    if (wake_fd < 0) {
        return;
    }
    /* httpd loads modules RTLD_GLOBAL: their symbols are there while they are. */
    fprintf(stderr, "pyrt-late-wake: at exit libpython %s, mod_pyreload %s\n",
            dlsym(RTLD_DEFAULT, "Py_FinalizeEx") ? "mapped" : "unmapped",
            dlsym(RTLD_DEFAULT, "pyreload_module") ? "mapped" : "unmapped");
    fflush(stderr);
    if (write(wake_fd, "x", 1) != 1) {
        return;
    }
    usleep(300000);
}
