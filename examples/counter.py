# State that survives edits: __clone__ hands the old module's dict and lock
# to the new module before the new code runs.  Change the message below and
# reload the page: the count keeps going.
import threading

import pyreload


def __clone__(new):
    with _lock:
        new._lock = _lock
        new._hits = _hits


if "_hits" not in globals():   # first load only; a reload got them from __clone__
    _lock = threading.Lock()
    _hits = {"n": 0}


def handler(req):
    with _lock:
        _hits["n"] += 1
        n = _hits["n"]
    req.content_type = "text/plain; charset=utf-8"
    req.write("hit %d, code generation %d\n" % (n, __generation__))
    return pyreload.OK
