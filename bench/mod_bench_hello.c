/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE).
 *
 * mod_bench_hello.c: the benchmark's C ceiling.  bench/run.py builds it with
 * apxs and serves it with
 *
 *     LoadModule bench_hello_module .../mod_bench_hello.so
 *     <Location /hello>
 *         SetHandler bench-hello
 *     </Location>
 *
 * It answers "hello\n" as text/plain, the way the Python contenders do.  Two
 * details make it a ceiling rather than a straw man:
 *   - ap_rflush(): without it the response goes out only after the
 *     keep-alive read that follows, which halves one-connection throughput;
 *   - a Content-Length: a chunked response is written in two pieces (the
 *     flushed chunk, then the last-chunk at EOS), which costs about 2/3 of
 *     the one-connection throughput and 1/5 at 16 connections here.
 */
#include "httpd.h"
#include "http_config.h"
#include "http_protocol.h"

#include <string.h>

static int
hello_handler(request_rec *r)
{
    static const char body[] = "hello\n";

    if (!r->handler || strcmp(r->handler, "bench-hello") != 0) {
        return DECLINED;
    }
    if (r->method_number != M_GET) {
        return HTTP_METHOD_NOT_ALLOWED;
    }
    ap_set_content_type(r, "text/plain");
    ap_set_content_length(r, sizeof(body) - 1);
    if (!r->header_only) {
        ap_rwrite(body, sizeof(body) - 1, r);
        ap_rflush(r);
    }
    return OK;
}

static void
register_hooks(apr_pool_t *p)
{
    ap_hook_handler(hello_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

AP_DECLARE_MODULE(bench_hello) = {
    STANDARD20_MODULE_STUFF,
    NULL,                       /* per-directory config */
    NULL,                       /* merge per-directory */
    NULL,                       /* per-server config */
    NULL,                       /* merge per-server */
    NULL,                       /* directives */
    register_hooks
};
