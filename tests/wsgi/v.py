# tests/it_wsgi.c: test applications wrapped in the standard library's own
# checker, wsgiref.validate.validator.  Its warnings are made errors, so that
# any finding fails the request (a 500, or a cut response) and is logged.
import warnings
from wsgiref.validate import validator, WSGIWarning

warnings.simplefilter('error', WSGIWarning)
CT = [('Content-Type', 'text/plain')]


def _get(environ, start_response):
    start_response('200 OK', CT)
    return [b'get-ok ', environ['PATH_INFO'].encode('latin-1')]


def _post(environ, start_response):
    inp = environ['wsgi.input']
    first = inp.read(3)
    line = inp.readline()
    some = inp.readlines(1)
    rest = [chunk for chunk in inp]
    tail = inp.read(10)
    start_response('200 OK', CT)
    return [ascii([first, line, b''.join(some + rest), tail]).encode()]


def _stream(environ, start_response):
    start_response('200 OK', CT)
    for i in range(50):
        yield b'block-%02d\n' % i


def _write(environ, start_response):
    write = start_response('200 OK', CT)
    write(b'w1-')
    write(b'w2-')
    return [b'i1']


def _notfound(environ, start_response):
    start_response('404 Not Found', CT)
    return [b'nothing here']


def _empty(environ, start_response):
    start_response('204 No Content', [])
    return []


def _file(environ, start_response):
    start_response('200 OK', CT)
    f = open(__file__, 'rb')
    return environ['wsgi.file_wrapper'](f, 4096)


def _exc(environ, start_response):
    start_response('200 OK', CT)
    try:
        raise ValueError('PYRT-v-handled')
    except ValueError:
        import sys
        start_response('500 Internal Server Error', CT, sys.exc_info())
    return [b'handled']


APPS = {'get': _get, 'post': _post, 'stream': _stream, 'write': _write,
        'notfound': _notfound, 'empty': _empty, 'file': _file, 'exc': _exc}


def _dispatch(environ, start_response):
    name = environ['PATH_INFO'].strip('/').split('/')[0]
    return APPS[name](environ, start_response)


validated = validator(_dispatch)
