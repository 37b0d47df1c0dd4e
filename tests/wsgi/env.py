# tests/it_wsgi.c: the environ a WSGI application gets, one "KEY=value" line
# per key (values through ascii(), so bytes kept as ISO-8859-1 show as \xNN),
# then derived "_name=..." lines for what a line cannot show (types, APIs).


def _shown(key, value):
    if key == 'pyreload.options':
        try:
            return ascii(sorted(dict(value.items()).items()))
        except Exception as e:
            return '<error %r>' % (e,)
    if isinstance(value, (str, bytes, int, float, tuple, type(None))):
        return ascii(value)
    return '<%s>' % type(value).__name__


def _readonly(mapping):
    try:
        mapping['color'] = 'red'
    except Exception:
        return mapping.get('color') != 'red'
    return False


def _has(obj, names):
    return all(callable(getattr(obj, n, None)) for n in names)


def application(environ, start_response):
    lines = ['%s=%s' % (k, _shown(k, environ[k])) for k in sorted(environ)]
    cgi = [k for k in environ if '.' not in k]
    derived = {
        'nonstr': sorted(k for k in cgi if type(environ[k]) is not str),
        'remote_port_digits': type(environ.get('REMOTE_PORT')) is str
                              and environ['REMOTE_PORT'].isdigit(),
        'server_port_str': type(environ.get('SERVER_PORT')) is str,
        'input_api': _has(environ.get('wsgi.input'),
                          ('read', 'readline', 'readlines', '__iter__')),
        'errors_api': _has(environ.get('wsgi.errors'), ('write', 'writelines', 'flush')),
        'file_wrapper_callable': callable(environ.get('wsgi.file_wrapper')),
        'gen_is_int': type(environ.get('pyreload.generation')) is int,
        'multithread': bool(environ.get('wsgi.multithread')),
        'multiprocess': bool(environ.get('wsgi.multiprocess')),
        'run_once': bool(environ.get('wsgi.run_once', True)),
        'options_readonly': _readonly(environ.get('pyreload.options', {})),
        # PEP 3333 / wsgiref.util: '' or '/...', and SCRIPT_NAME never ends in '/'
        'path_info_ok': environ.get('PATH_INFO', '')[:1] in ('', '/'),
        'script_name_ok': environ.get('SCRIPT_NAME', '')[:1] in ('', '/')
                          and not environ.get('SCRIPT_NAME', '').endswith('/'),
    }
    lines += ['_%s=%s' % (k, v) for k, v in sorted(derived.items())]
    body = ('\n' + '\n'.join(lines) + '\n').encode('ascii')
    if environ.get('QUERY_STRING') == 'mutate':
        # What a request does to its environ must not reach the next one.
        environ['PYRT_LEAK'] = 'leaked'
        environ['PATH_INFO'] = '/mutated'
        environ.pop('HTTP_HOST', None)
        environ['wsgi.url_scheme'] = 'leaked'
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body]
