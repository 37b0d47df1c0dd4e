# tests/it_wsgi.c: one WSGI application per behaviour under test, chosen by
# the first segment of PATH_INFO (/w/<name>?<query>).  Close() calls and runs
# are counted per token (?t=...) in COUNTS, read back through /w/count.
import io
import os
import sys
import threading
import time
import zlib
from urllib.parse import parse_qs

CT = [('Content-Type', 'text/plain')]
COUNTS = {}
_lock = threading.Lock()


def _q(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get('QUERY_STRING', ''),
                                           keep_blank_values=True).items()}


def _bump(token, what):
    with _lock:
        c = COUNTS.setdefault(token, {'closed': 0, 'ran': 0, 'blocks': 0})
        c[what] += 1


def app_count(environ, start_response):
    c = COUNTS.get(_q(environ).get('t'), {'closed': 0, 'ran': 0, 'blocks': 0})
    start_response('200 OK', CT)
    return [b'closed=%d ran=%d blocks=%d' % (c['closed'], c['ran'], c['blocks'])]


# ---- wsgi.input ----------------------------------------------------------

def _lines(read_line):
    out = []
    for _ in range(1000):
        line = read_line()
        if not line:
            break
        out.append(line)
    return out


def app_in(environ, start_response):
    q = _q(environ)
    op = q.get('op', 'readall')
    inp = environ['wsgi.input']
    if op == 'readall':
        res = [inp.read(), inp.read(), inp.read(5)]
    elif op == 'read4':
        res = _lines(lambda: inp.read(4)) + [inp.read(4)]
    elif op == 'readline':
        res = _lines(inp.readline) + [inp.readline()]
    elif op == 'readline5':
        res = _lines(lambda: inp.readline(5)) + [inp.readline(5)]
    elif op == 'readlines':
        res = [inp.readlines(), inp.readlines()]
    elif op == 'readlines_hint':
        first = inp.readlines(10)
        res = [first + inp.readlines(), len(first) >= 2]
    elif op == 'iter':
        res = [list(inp), list(inp)]
    elif op == 'mixed':
        res = [inp.read(3), inp.readline(), inp.read(2), inp.readlines(), inp.read()]
    elif op in ('big', 'bigline', 'bigiter'):
        total, crc, n = 0, 0, 0
        blocks = (iter(lambda: inp.read(65536), b'') if op == 'big'
                  else iter(inp.readline, b'') if op == 'bigline' else inp)
        for block in blocks:
            total += len(block)
            crc = zlib.crc32(block, crc)
            n += 1
            if op != 'big' and block[-1:] != b'\n' and total != int(q.get('len', -1)):
                raise ValueError('a line that does not end a line, at %d' % total)
        res = [total, '%08x' % crc]
    else:
        raise ValueError('no op %r' % op)
    res.append('CL=%s' % environ.get('CONTENT_LENGTH'))
    start_response('200 OK', CT)
    return [ascii(res).encode()]


# ---- wsgi.errors ---------------------------------------------------------

def app_errors(environ, start_response):
    t = _q(environ)['t']
    e = environ['wsgi.errors']
    e.write('PYRT-err-write-%s\n' % t)
    e.writelines(['PYRT-err-lines-a-%s\n' % t, 'PYRT-err-lines-b-%s\n' % t])
    print('PYRT-err-print-%s' % t, file=e)
    e.write('PYRT-err-unicode-%s caf\u00e9 \u20ac \U0001f600\n' % t)
    e.write('PYRT-err-noeol-%s' % t)
    e.flush()
    start_response('200 OK', CT)
    return [b'logged']


# ---- start_response ------------------------------------------------------

def _twice(sr):
    sr('200 OK', CT)
    sr('200 OK', CT)


def _twice_after_failed(sr):
    try:
        sr('200', CT)
    except Exception:
        pass
    sr('200 OK', CT)


def _bad(status, headers):
    return lambda sr: sr(status, headers)


SR_CASES = {
    'status_no_reason': _bad('200', CT),
    'status_short_code': _bad('20 OK', CT),
    'status_long_code': _bad('2000 OK', CT),
    'status_alpha_code': _bad('abc OK', CT),
    'status_no_space': _bad('200OK', CT),
    'status_bytes': _bad(b'200 OK', CT),
    'status_int': _bad(200, CT),
    'status_crlf': _bad('200 OK\r\nX-Evil: 1', CT),
    'headers_tuple': _bad('200 OK', tuple(CT)),
    'headers_none': _bad('200 OK', None),
    'header_str': _bad('200 OK', ['Content-Type: text/plain']),
    'header_triple': _bad('200 OK', [('X-A', 'b', 'c')]),
    'name_bytes': _bad('200 OK', [(b'X-A', 'v')]),
    'value_bytes': _bad('200 OK', [('X-A', b'v')]),
    'value_int': _bad('200 OK', [('X-A', 1)]),
    'value_none': _bad('200 OK', [('X-A', None)]),
    'value_crlf': _bad('200 OK', [('X-A', 'v\r\nX-Evil: 1')]),
    'value_lf': _bad('200 OK', [('X-A', 'v\nX-Evil: 1')]),
    'value_cr': _bad('200 OK', [('X-A', 'v\rX-Evil: 1')]),
    'name_crlf': _bad('200 OK', [('X-A\r\nX-Evil', 'v')]),
    'name_colon': _bad('200 OK', [('X-A:', 'v')]),
    'name_space': _bad('200 OK', [('X A', 'v')]),
    'name_empty': _bad('200 OK', [('', 'v')]),
    'value_nul': _bad('200 OK', [('X-A', 'a\x00b')]),
    'value_non_latin1': _bad('200 OK', [('X-A', 'caf\u20ac')]),
    'status_non_latin1': _bad('200 \u20ac', CT),
    'hop_connection': _bad('200 OK', [('Connection', 'close')]),
    'hop_connection_lower': _bad('200 OK', [('connection', 'close')]),
    'hop_keep_alive': _bad('200 OK', [('Keep-Alive', 'timeout=5')]),
    'hop_proxy_authenticate': _bad('200 OK', [('Proxy-Authenticate', 'Basic')]),
    'hop_proxy_authorization': _bad('200 OK', [('Proxy-Authorization', 'Basic eA==')]),
    'hop_te': _bad('200 OK', [('TE', 'trailers')]),
    'hop_trailers': _bad('200 OK', [('Trailers', 'X-A')]),
    'hop_transfer_encoding': _bad('200 OK', [('Transfer-Encoding', 'chunked')]),
    'hop_upgrade': _bad('200 OK', [('Upgrade', 'h2c')]),
    'twice': _twice,
    'twice_after_failed': _twice_after_failed,
}


def app_sr(environ, start_response):
    q = _q(environ)
    case = SR_CASES[q['c']]
    if q.get('catch') == '1':
        try:
            case(start_response)
        except Exception as e:
            start_response('200 OK', CT, sys.exc_info())
            return [b'caught ' + type(e).__name__.encode()]
        return [b'not raised']
    case(start_response)
    return [b'PYRT-sr-body']


def app_srgood(environ, start_response):
    # The valid forms around the bad ones: any reason text, several headers
    # with the same name, ISO-8859-1 in a value.
    start_response('299 Quite Fine, Thanks', CT + [('X-Multi', 'a'), ('X-Multi', 'b'),
                                                   ('X-Latin', 'caf\xe9')])
    return [b'good']


# ---- exc_info and write() ------------------------------------------------

def app_excbefore(environ, start_response):
    start_response('200 OK', CT + [('X-First', '1')])
    try:
        raise ValueError('PYRT-handled')
    except ValueError:
        start_response('503 Service Unavailable', CT + [('X-Second', '2')], sys.exc_info())
    return [b'replaced']


def app_excafter(environ, start_response):
    start_response('200 OK', CT)
    yield b'A' * 100
    try:
        raise ValueError('PYRT-after-output')
    except ValueError:
        start_response('500 Oops', CT, sys.exc_info())
    yield b'PYRT-never-sent'


def app_excafter_write(environ, start_response):
    write = start_response('200 OK', CT)
    write(b'A' * 100)
    try:
        raise ValueError('PYRT-after-write')
    except ValueError:
        start_response('500 Oops', CT, sys.exc_info())
    return [b'PYRT-never-sent']


def app_write(environ, start_response):
    ret = _q(environ).get('ret', 'list')
    write = start_response('200 OK', CT)
    write(b'AAA')
    write(b'')
    write(b'BBB')
    if ret == 'gen':
        return (b for b in (b'CCC', b'DDD'))
    if ret == 'empty':
        return []
    return [b'CCC']


def app_write_str(environ, start_response):
    write = start_response('200 OK', CT)
    write('PYRT-secret-str-write')
    return [b'after']


def app_emptyfirst(environ, start_response):
    # Empty blocks send nothing: the headers can still change (PEP 3333).
    mode = _q(environ)['mode']
    start_response('200 OK', CT)
    yield b''
    yield b''
    if mode == 'raise':
        raise ValueError('PYRT-before-any-byte')
    try:
        raise ValueError('PYRT-handled-late')
    except ValueError:
        start_response('503 Service Unavailable', CT + [('X-Late', '1')], sys.exc_info())
    yield b'late error page'


# ---- responses -----------------------------------------------------------

class Blocks:
    def __init__(self, blocks):
        self.blocks = blocks

    def __iter__(self):
        return iter(self.blocks)


def app_resp(environ, start_response):
    kind = _q(environ).get('kind', 'list')
    start_response('200 OK', CT)
    blocks = [b'one-', b'', b'two-', b'three']
    if kind == 'list':
        return blocks
    if kind == 'tuple':
        return tuple(blocks)
    if kind == 'gen':
        return (b for b in blocks)
    if kind == 'iter':
        return Blocks(blocks)
    if kind == 'bigtuple':
        return (b'x' * 100000,) * 3
    if kind == 'empty':
        return []
    raise ValueError(kind)


class Closeable:
    """Counts close() calls (and runs) under a token; mode says how it ends."""

    def __init__(self, token, mode, n=3):
        self.token, self.mode, self.n, self.i = token, mode, n, 0
        self.deadline = time.monotonic() + 8

    def __iter__(self):
        if self.mode == 'iter_raises':
            raise ValueError('PYRT-raised-in-iter')
        return self

    def __next__(self):
        self.i += 1
        _bump(self.token, 'blocks')
        if self.mode == 'raise_first' or (self.mode == 'raise_mid' and self.i == 3):
            raise ValueError('PYRT-raised-in-iteration')
        if self.mode == 'str_item':
            return 'PYRT-str-item'
        if self.mode in ('forever', 'cl_forever'):
            if time.monotonic() > self.deadline:
                raise StopIteration
            return b'f' * 65536
        if self.i > self.n:
            raise StopIteration
        return b'block-%d;' % self.i

    def close(self):
        _bump(self.token, 'closed')
        if self.mode == 'close_raises':
            raise ValueError('PYRT-close-raised')


class CloseableList(list):
    def close(self):
        _bump(self.token, 'closed')


def app_closeable(environ, start_response):
    q = _q(environ)
    t, mode = q['t'], q.get('mode', 'normal')
    _bump(t, 'ran')
    if mode == 'list':
        res = CloseableList([b'list-a;', b'list-b;'])
        res.token = t
    else:
        res = Closeable(t, mode)
    if mode == 'cl_short':
        start_response('200 OK', CT + [('Content-Length', '1000')])
    elif mode in ('cl_long', 'cl_forever'):
        start_response('200 OK', CT + [('Content-Length', '9')])
    elif mode != 'nostart':
        start_response('200 OK', CT)
    return res


def app_cl(environ, start_response):
    q = _q(environ)
    n, send, kind = int(q['n']), int(q['send']), q.get('kind', 'list')
    write = start_response('200 OK', CT + [('Content-Length', str(n))])
    data = (b'0123456789' * (send // 10 + 1))[:send]
    if kind == 'gen':
        return (data[i:i + 7] for i in range(0, len(data), 7))
    if kind == 'write':
        write(data)
        return []
    return [data]


def app_slow(environ, start_response):
    # A first block, then a pause: the block must reach the client now.
    how = _q(environ).get('how', 'gen')
    write = start_response('200 OK', CT)
    if how == 'write':
        write(b'first;')
        time.sleep(1)
        return [b'second']

    def blocks():
        yield b'first;'
        time.sleep(1)
        yield b'second'
    return blocks()


def app_stream(environ, start_response):
    mb = int(_q(environ).get('mb', '1'))
    start_response('200 OK', CT)
    for _ in range(mb * 16):
        yield b'z' * 65536


def app_rss(environ, start_response):
    with open('/proc/self/status') as f:
        rss = [line.split()[1] for line in f if line.startswith('VmRSS')][0]
    start_response('200 OK', CT)
    return [rss.encode()]


# ---- wsgi.file_wrapper ---------------------------------------------------

class CountedFile(io.FileIO):
    limit = None

    def read(self, n=-1):
        _bump(self.token, 'blocks')
        if self.limit is not None and COUNTS[self.token]['blocks'] > self.limit:
            return b''
        return super().read(n)

    def close(self):
        if not self.closed:
            _bump(self.token, 'closed')
        super().close()


class NoFileno:
    def __init__(self, path, token):
        self.f, self.token = open(path, 'rb'), token

    def read(self, n=-1):
        return self.f.read(n)

    def close(self):
        _bump(self.token, 'closed')
        self.f.close()


def app_fw(environ, start_response):
    q = _q(environ)
    mode, t = q.get('mode', 'real'), q.get('t', '-')
    path = environ['pyreload.options']['bigfile']
    _bump(t, 'ran')
    headers = list(CT)
    if mode == 'nofileno':
        f = NoFileno(path, t)
    elif mode == 'empty':
        f = CountedFile(path + '.empty', 'rb')
    elif mode == 'devzero':
        f = CountedFile('/dev/zero', 'rb')
        f.limit = 64        # 4 MiB: bounded even if iteration never stops
    else:
        f = CountedFile(path, 'rb')
    f.token = t
    if mode == 'seek':
        f.seek(1000)
    if mode in ('cl', 'devzero'):
        headers.append(('Content-Length', '5000'))
    if mode == 'cl_over':
        headers.append(('Content-Length', str(os.path.getsize(path) + 100)))
    start_response('200 OK', headers)
    if mode == 'noblksize':
        return environ['wsgi.file_wrapper'](f)
    return environ['wsgi.file_wrapper'](f, 65536)


# ---- wrong responses -----------------------------------------------------

def _gen_str(sr):
    sr('200 OK', CT)
    yield 'PYRT-secret-gen-str'


def _gen_raise(sr):
    sr('200 OK', CT)
    raise ValueError('PYRT-secret-gen-raise')
    yield b'unreachable'


def _raise_before(sr):
    raise ValueError('PYRT-secret-raise')


def _ok_then(result):
    def app(sr):
        sr('200 OK', CT)
        return result
    return app


WRONG = {
    'nostart': lambda sr: [b'PYRT-secret-nostart'],
    'nostart_empty': lambda sr: [],
    'gen_nostart_empty': lambda sr: (b for b in ()),
    'none': _ok_then(None),
    'str_item': _ok_then(['PYRT-secret-str']),
    'str_result': _ok_then('PYRT-secret-str-result'),
    'bytes_result': _ok_then(b'x'),
    'int_item': _ok_then([1]),
    'int_result': _ok_then(42),
    'none_item': _ok_then([None]),
    'raise_before': _raise_before,
    'gen_str_first': _gen_str,
    'gen_raise_first': _gen_raise,
}


def app_wrong(environ, start_response):
    return WRONG[_q(environ)['c']](start_response)


# ---- more input, status, kept objects ------------------------------------

def app_readodd(environ, start_response):
    # Sizes a file accepts: huge (no preallocation), zero, -1, None.
    inp = environ['wsgi.input']
    res = [inp.read(0), inp.read(2 ** 31)[:5], inp.read(-1), inp.readline(-1)]
    try:
        inp.read('x')
        res.append('no error')
    except TypeError as e:
        res.append(type(e).__name__)
    start_response('200 OK', CT)
    return [ascii(res).encode()]


def app_partial(environ, start_response):
    environ['wsgi.input'].read(10)
    start_response('200 OK', CT)
    return [b'partial ok']


def app_errbytes(environ, start_response):
    try:
        environ['wsgi.errors'].write(b'PYRT-bytes')
        got = 'no error'
    except TypeError as e:
        got = type(e).__name__
    start_response('200 OK', CT)
    return [got.encode()]


def app_status(environ, start_response):
    code = _q(environ)['s']
    headers = list(CT)
    if code.startswith('3'):
        headers.append(('Location', 'http://127.0.0.1/elsewhere'))
    if code in ('204', '304'):
        headers = []
    start_response(code + ' Custom Reason', headers + [('Set-Cookie', 'a=1'),
                                                        ('Set-Cookie', 'b=2')])
    return [b'PYRT-app-body-' + code.encode()] if code not in ('204', '304') else []


KEPT = {}


def app_keep(environ, start_response):
    phase = _q(environ)['phase']
    if phase == 'store':
        write = start_response('200 OK', CT)
        KEPT.update(input=environ['wsgi.input'], errors=environ['wsgi.errors'],
                    start_response=start_response, write=write)
        return [b'stored']
    res = []
    for name, use in (('input', lambda o: o.read(1)),
                      ('start_response', lambda o: o('200 OK', CT)),
                      ('write', lambda o: o(b'PYRT-late-write')),
                      ('errors', lambda o: (o.write('PYRT-late-errors\n'), o.flush()))):
        try:
            use(KEPT[name])
            res.append('%s:ok' % name)
        except Exception as e:
            res.append('%s:%s' % (name, type(e).__name__))
    start_response('200 OK', CT)
    return [' '.join(res).encode()]


HAMMER = {'started': 0, 'runtime': 0, 'other': [], 'threads': []}


def _hammer(write, inp, errors, start_response):
    # Uses the request's objects while its request ends: each use either
    # works (before the end) or raises RuntimeError (after), never crashes.
    deadline = time.monotonic() + 3
    try:
        while time.monotonic() < deadline:
            write(b'h' * 100)
            inp.read(1)
            errors.write('PYRT-hammer\n')
            try:
                start_response('200 OK', CT)
            except AssertionError:
                pass    # the second call: not this test's business
        with _lock:
            HAMMER['other'].append('no error after 3 s')
    except RuntimeError:
        with _lock:
            HAMMER['runtime'] += 1
    except Exception as e:
        with _lock:
            HAMMER['other'].append(repr(e))


def app_hammer(environ, start_response):
    if _q(environ).get('report'):
        for t in list(HAMMER['threads']):
            t.join(10)
        alive = sum(t.is_alive() for t in HAMMER['threads'])
        start_response('200 OK', CT)
        return [('started=%d runtime=%d alive=%d other=%r' % (
            HAMMER['started'], HAMMER['runtime'], alive, HAMMER['other'][:3])).encode()]
    write = start_response('200 OK', CT)
    t = threading.Thread(target=_hammer, daemon=True,
                         args=(write, environ['wsgi.input'], environ['wsgi.errors'],
                               start_response))
    with _lock:
        HAMMER['started'] += 1
        HAMMER['threads'].append(t)
    t.start()
    return [b'started']


class AppClass:
    """A class as the application (PEP 3333): the instance is the iterable."""

    def __init__(self, environ, start_response):
        self.t = _q(environ).get('t', '-')
        start_response('200 OK', CT)

    def __iter__(self):
        yield b'from-class'

    def close(self):
        _bump(self.t, 'closed')


class _Callable:
    def __call__(self, environ, start_response):
        start_response('200 OK', CT)
        return [b'from-instance']


app_instance = _Callable()


# ---- dispatch ------------------------------------------------------------

def dispatch(environ, start_response):
    name = environ['PATH_INFO'].strip('/').split('/')[0]
    return globals()['app_' + name](environ, start_response)
