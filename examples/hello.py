# Edit this file while the demo runs: the next request runs the new code.
import pyreload


def handler(req):
    req.content_type = "text/plain; charset=utf-8"
    req.write("hello from %s\n" % req.uri)
    return pyreload.OK
