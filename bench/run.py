#!/usr/bin/python3
"""mod_pyreload benchmark: the same Apache 2.4 serving the same hello world
through a C handler, mod_pyreload, mod_wsgi and mod_python, the same WSGI
hello world and the same small Flask app on mod_pyreload (PyReloadWSGI) and
mod_wsgi, plus the reload figures of mod_pyreload.  Run by `make bench`;
standard library only (Flask from Debian's python3-flask).

    /usr/bin/python3 bench/run.py          # everything, about 8-9 minutes

Contenders (KINDS; each its own apache2, same MPM and settings):
  c                 C handler (bench/mod_bench_hello.c): the ceiling
  pyreload          PyReloadHandler hello.py (checking every request)
  pyreload-nocheck  the same with PyReloadCheck Off
  wsgi-pyreload     PyReloadWSGI of the WSGI hello world (WSGI_HELLO)
  wsgi-embedded     mod_wsgi embedded, the same WSGI hello world
  wsgi-daemon       mod_wsgi daemon (1 process, 15 threads), the same
  modpython         mod_python hello
  flask-pyreload    PyReloadWSGI of a small Flask app (FLASK_APP), /app/hello
  flask-embedded    mod_wsgi embedded, the same Flask app file
  pyreload-base     PyReloadHandler hello.py served by another build of the
                    module (BASE_SO): a change's cost, measured in the same
                    run; only with BASE_SO set

Parts (PARTS, comma-separated; default: all):
  throughput  every contender on its URL (/hello; /app/hello for Flask):
              body check, warm-up, then wrk -t1 -c16 and wrk -t1 -c1
              --latency; ROUNDS rounds, the contenders alternating (one under
              load at a time); the Flask contenders also get one wrk -c16 on
              their template route per round
  check       /deps (a handler importing 20 modules) on pyreload vs
              pyreload-nocheck: what checking on every request costs
  latency     SAVES atomic saves of a handler, a keep-alive client polling:
              time from the rename to the first new body, stale bodies
  cost        reload of 10 / 1,000 / 10,000-line modules (the module's own
              "generation N loaded in X ms" log line) vs CPython's own
              compile()+exec() of the same source in /usr/bin/python3
  memory      VmRSS of the (single) child before/after RELOADS reloads
  codecache   prefork, 8 children, one edit of a CC_LINES-line handler, each
              child served once: CPU time all children spent loading, with
              PyReloadCodeCache Off and with the cache, vs one CPython
              compile+exec (target: <= 2x with the cache)
  codecache-start  prefork, 8 children, an app of 50 reloadable modules:
              each child's first response, cache off / cold / warm
  rss         VmRSS of the (single) child after 8 reloads of a 10,000-line
              module vs a plain /usr/bin/python3 that compiles and executes
              the same versions, each replacing the last

Knobs (environment):
  KINDS=c,pyreload,pyreload-nocheck,wsgi-pyreload,wsgi-embedded,wsgi-daemon,
        modpython,flask-pyreload,flask-embedded
  MPM=event|worker|prefork (event)   DURATION=5  WARMUP=2  ROUNDS=3  CONNS=16
  SAVES=200  COST_REPS=7  RELOADS=10000  RELOAD_WARMUP=200  CC_LINES=10000
  RELOAD_TARGET=pyreload|wsgi-embedded  (the server the reload parts measure;
                wsgi-embedded is for comparison only)
  PORT=18100 (servers use PORT..PORT+19, all inside 18100-18199)
  STOP_WAIT=15 (seconds between SIGTERM and SIGKILL)
  PIN=both|on|off (both): the throughput part unpinned (server and wrk share
        every CPU), pinned (taskset: the server's processes on the first CPU,
        wrk on the second), or both, each with its own table and targets
  BASE_SO=path/to/an/older/mod_pyreload.so (adds pyreload-base to the
          default contenders; `make bench-base BASE=<git rev>` builds one)
  WORK=bench/work  OUT=bench/results/latest.md
"""

import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import threading
import time
import http.client
import urllib.parse
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYRELOAD_SO = REPO / "mod_pyreload.so"
PYRELOAD_H = REPO / "include" / "pyreload.h"
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
SYSTEM_PYTHON = "/usr/bin/python3"
ALL_KINDS = ["c", "pyreload", "pyreload-nocheck", "wsgi-pyreload",
             "wsgi-embedded", "wsgi-daemon", "modpython", "flask-pyreload",
             "flask-embedded", "pyreload-base"]
ALL_PARTS = ["throughput", "check", "latency", "cost", "memory", "rss"]
ALL_PARTS += ["codecache", "codecache-start"]
# Served by mod_pyreload; the second group through PyReloadWSGI.
PYRELOAD_KINDS = ("pyreload", "pyreload-nocheck", "wsgi-pyreload",
                  "flask-pyreload", "pyreload-base")
PYRELOAD_WSGI_KINDS = ("wsgi-pyreload", "flask-pyreload")
FLASK_KINDS = ("flask-pyreload", "flask-embedded")
# The server configuration (KIND_CONF) each contender is an instance of.
FAMILY = {k: "pyreload" for k in PYRELOAD_KINDS}
FAMILY["flask-embedded"] = "wsgi-embedded"
PORT_RANGE = range(18100, 18200)
COST_SIZES = (10, 1000, 10000)
N_DEPS = 20
LOAD_LINE = re.compile(r"generation (\d+) loaded in ([0-9.]+) ms")

# Targets of issue 5.
T_VS_C = 0.80
T_VS_PEER = 1.5
# Targets of issue 10 (WSGI): hello vs mod_wsgi embedded and vs the C
# ceiling, the Flask app vs mod_wsgi embedded.
T_WSGI_VS_PEER = 1.5
T_WSGI_VS_C = 0.80
T_FLASK_VS_PEER = 1.0
T_CHECK_COST = 0.03
T_RELOAD_MS = 2.0
T_COST_RATIO = 1.15
T_MEM_MIB_PER_10K = 1.0
# Issue 13: the child's RSS after 8 reloads of a 10,000-line module against
# a plain python3 that compiles and executes the same versions.
T_RSS_RATIO = 1.25
RSS_LINES, RSS_RELOADS = 10000, 8
# A change to the module's request path: no regression against BASE_SO.
T_VS_BASE = 0.98
BASE_SO_NAME = "mod_pyreload-base.so"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr,
          flush=True)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------
# Settings

def env_int(name, default, lo=0):
    raw = os.environ.get(name, "")
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise BenchError(f"{name}={raw!r}: expected an integer")
    if value < lo:
        raise BenchError(f"{name}={value}: must be at least {lo}")
    return value


def env_list(name, default, allowed):
    raw = os.environ.get(name, "")
    items = [x.strip() for x in raw.split(",") if x.strip()] if raw else default
    bad = [x for x in items if x not in allowed]
    if bad:
        raise BenchError(f"{name}: unknown {', '.join(bad)} "
                         f"(valid: {', '.join(allowed)})")
    return [x for x in allowed if x in items]


class Settings:
    def __init__(self):
        self.base_so = os.environ.get("BASE_SO") or None
        if self.base_so and not Path(self.base_so).is_file():
            raise BenchError(f"BASE_SO={self.base_so}: no such file")
        default = [k for k in ALL_KINDS
                   if k != "pyreload-base" or self.base_so]
        self.kinds = env_list("KINDS", default, ALL_KINDS)
        if "pyreload-base" in self.kinds and not self.base_so:
            raise BenchError("KINDS=pyreload-base needs BASE_SO")
        self.parts = env_list("PARTS", ALL_PARTS, ALL_PARTS)
        self.mpm = os.environ.get("MPM", "event") or "event"
        if self.mpm not in MPM_CONF:
            raise BenchError(f"MPM={self.mpm}: use event, worker or prefork")
        self.duration = env_int("DURATION", 5, 1)
        self.warmup = env_int("WARMUP", 2, 0)
        self.rounds = env_int("ROUNDS", 3, 1)
        self.conns = env_int("CONNS", 16, 2)
        self.saves = env_int("SAVES", 200, 1)
        self.cost_reps = env_int("COST_REPS", 7, 1)
        self.reloads = env_int("RELOADS", 10000, 1)
        self.reload_warmup = env_int("RELOAD_WARMUP", 200, 0)
        self.reload_target = os.environ.get("RELOAD_TARGET", "pyreload")
        if self.reload_target not in ("pyreload", "wsgi-embedded"):
            raise BenchError("RELOAD_TARGET: use pyreload or wsgi-embedded")
        self.port = env_int("PORT", 18100, 18100)
        if self.port + 19 > PORT_RANGE[-1]:
            raise BenchError("PORT: PORT..PORT+19 must stay inside 18100-18199")
        self.stop_wait = env_int("STOP_WAIT", 15, 1)
        pin = os.environ.get("PIN", "both") or "both"
        if pin not in ("both", "on", "off"):
            raise BenchError(f"PIN={pin}: use both, on or off")
        self.pin_modes = {"both": [False, True], "on": [True], "off": [False]}[pin]
        if True in self.pin_modes and len(os.sched_getaffinity(0)) < 2:
            if pin == "on":
                raise BenchError("PIN=on needs two CPUs")
            self.pin_modes = [False]
        self.work = Path(os.environ.get("WORK") or BENCH / "work").resolve()
        self.out = Path(os.environ.get("OUT") or BENCH / "results" / "latest.md")
        self.out = self.out.resolve()

    def uses_pyreload(self):
        return (any(k in PYRELOAD_KINDS for k in self.kinds)
                or (self.reload_target == "pyreload"
                    and any(p in ("latency", "cost", "memory", "rss")
                            for p in self.parts))
                or any(p.startswith("codecache") for p in self.parts))

    def knobs(self):
        """The environment knobs that are set, as NAME=value words."""
        names = ["KINDS", "PARTS", "PIN", "MPM", "DURATION", "WARMUP", "ROUNDS", "CONNS",
                 "SAVES", "COST_REPS", "RELOADS", "RELOAD_WARMUP", "RELOAD_TARGET",
                 "PORT", "STOP_WAIT", "WORK", "OUT", "BASE_SO"]
        names += ["CC_LINES"]
        return " ".join(f"{n}={os.environ[n]}" for n in names if os.environ.get(n))


# --------------------------------------------------------------------------
# Config templates

# The server configuration the bench shares with the test fixture and the
# demo; BENCH_CONF below is the bench's own part (its CONF).
SERVER_CONF = REPO / "tools" / "server.conf.in"

BENCH_CONF = """\
# httpd 2.4 refuses requests ("couldn't check user") without these.
LoadModule authn_core_module $moddir/mod_authn_core.so
# As in any production configuration (Debian's apache2.conf): without it,
# every request looks for a .htaccess in each directory from / down to the
# document root (6 failed open()s, about 15 % of a hello request's CPU).
<Directory />
    AllowOverride None
</Directory>
<Location />
    Require all granted
</Location>
$kind_conf"""

THREADED_MPM = """\
StartServers 2
ServerLimit 4
ThreadsPerChild 25
MinSpareThreads 25
MaxSpareThreads 75
MaxRequestWorkers 100"""

MPM_CONF = {
    "event": THREADED_MPM,
    "worker": THREADED_MPM,
    # Enough idle children for CONNS keep-alive connections from the start:
    # prefork spawns at most 32 per second, which would show up as p99.
    "prefork": """\
StartServers 20
MinSpareServers 20
MaxSpareServers 32
ServerLimit 32
MaxRequestWorkers 32""",
}

# The reload figures: exactly one child process, so that every request sees
# the same module cache and /proc/<child>/status is the whole story.
ONE_CHILD_CONF = """\
ServerLimit 1
StartServers 1
ThreadLimit 16
ThreadsPerChild 16
MinSpareThreads 1
MaxSpareThreads 32
MaxRequestWorkers 16"""

KIND_CONF = {
    "c": """\
LoadModule bench_hello_module $cmod
<Location /hello>
    SetHandler bench-hello
</Location>""",
    "pyreload": """\
LoadModule pyreload_module $pyreload_so
$locations""",
    "wsgi-embedded": """\
LoadModule wsgi_module $moddir/mod_wsgi.so
WSGISocketPrefix $dir/run/wsgi
WSGIScriptReloading On
$locations""",
    "wsgi-daemon": """\
LoadModule wsgi_module $moddir/mod_wsgi.so
WSGISocketPrefix $dir/run/wsgi
WSGIScriptReloading On
WSGIDaemonProcess bench processes=1 threads=15
WSGIProcessGroup bench
$locations""",
    "modpython": """\
LoadModule python_module $moddir/mod_python.so
<Location /hello>
    SetHandler mod_python
    PythonHandler hello
    PythonPath "sys.path+['$app']"
</Location>""",
}

PYRELOAD_LOCATION = string.Template("""\
<Location $url>
    $directive $file$check
</Location>""")

WSGI_LOCATION = string.Template("WSGIScriptAlias $url $file")

# --------------------------------------------------------------------------
# Application files

PYRELOAD_HELLO = """\
import pyreload
def handler(req):
    req.content_type = "text/plain"
    req.write(b"hello\\n")
    return pyreload.OK
"""

WSGI_HELLO = """\
def application(environ, start_response):
    body = b"hello\\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""

# The Flask contenders: one app file, the same on both servers (templates/
# next to it, as Flask's tutorial has it).  /hello is the measured route;
# /page/<name> renders a template (measured at c16 only).
FLASK_APP = """\
from flask import Flask, render_template

app = Flask(__name__)


@app.route("/hello")
def hello():
    return "hello flask\\n", 200, {"Content-Type": "text/plain; charset=utf-8"}


@app.route("/page/<name>")
def page(name):
    return render_template("page.html", name=name)


application = app
"""

FLASK_TEMPLATE = """\
<!doctype html>
<title>{{ name }}</title>
<p>hello {{ name }}</p>
"""

MODPYTHON_HELLO = """\
from mod_python import apache
def handler(req):
    req.content_type = "text/plain"
    req.write(b"hello\\n")
    return apache.OK
"""

# Served by wsgi-embedded next to /hello: CPython's compile()+exec() timed
# inside an Apache child, i.e. through the shared libpython3.11.so that the
# modules use (/usr/bin/python3 has libpython linked in statically).
WSGI_BASELINE = """\
import gc, json, statistics, sys, time, types, urllib.parse
sys.modules.setdefault("pyreload", types.ModuleType("pyreload"))
sys.modules["pyreload"].OK = 0
def application(environ, start_response):
    q = urllib.parse.parse_qs(environ["QUERY_STRING"])
    path, reps = q["path"][0], int(q["reps"][0])
    with open(path, "rb") as f:
        src = f.read()
    times, keep = [], []
    for _ in range(reps + 1):
        gc.collect()
        t0 = time.perf_counter()
        code = compile(src, path, "exec")
        mod = types.ModuleType("bench_baseline")
        mod.__file__ = path
        exec(code, mod.__dict__)
        times.append((time.perf_counter() - t0) * 1000.0)
        keep.append(mod)
    body = json.dumps({"ms": statistics.median(times[1:])}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""

# Run by /usr/bin/python3 -I: the CPython baseline of the reload cost.
CPYTHON_BASELINE = """\
import gc, json, statistics, sys, time, types
sys.modules["pyreload"] = types.ModuleType("pyreload")
sys.modules["pyreload"].OK = 0
reps, out = int(sys.argv[1]), {}
# RSS for scale: the loads the cost part makes, each replacing the last.
mod = None
for path in sys.argv[2:]:
    for _ in range(reps + 1):
        with open(path, "rb") as f:
            mod, code = types.ModuleType("bench_baseline"), compile(f.read(), path, "exec")
        exec(code, mod.__dict__)
with open("/proc/self/status") as f:
    out["rss_kib"] = int([l for l in f if l.startswith("VmRSS:")][0].split()[1])
for path in sys.argv[2:]:
    comp, full, keep = [], [], []
    for _ in range(reps + 1):
        gc.collect()
        t0 = time.perf_counter()
        with open(path, "rb") as f:
            src = f.read()
        t1 = time.perf_counter()
        code = compile(src, path, "exec")
        mod = types.ModuleType("bench_baseline")
        mod.__file__ = path
        exec(code, mod.__dict__)
        t2 = time.perf_counter()
        comp.append((t2 - t1) * 1000.0)
        full.append((t2 - t0) * 1000.0)
        keep.append(mod)   # no deallocation inside a timed run
    out[path] = {"compile_exec_ms": statistics.median(comp[1:]),
                 "read_compile_exec_ms": statistics.median(full[1:])}
print(json.dumps(out))
"""


# Run by /usr/bin/python3 -I: the RSS baseline of the rss part, the same
# versions compiled and executed in turn, each module replacing the last.
CPYTHON_RSS = """\
import sys, types
sys.modules["pyreload"] = types.ModuleType("pyreload")
sys.modules["pyreload"].OK = 0
mod = None
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec")
    mod = types.ModuleType("bench_rss")
    exec(code, mod.__dict__)
    del code
with open("/proc/self/status") as f:
    print(int([l for l in f if l.startswith("VmRSS:")][0].split()[1]))
"""


def marked_hello(flavor, marker):
    """A hello handler whose body carries a marker: b"hello <marker>\\n"."""
    if flavor == "pyreload":
        return (f'import pyreload\nMARK = b"hello {marker}\\n"\n'
                'def handler(req):\n    req.content_type = "text/plain"\n'
                '    req.write(MARK)\n    return pyreload.OK\n')
    return (f'MARK = b"hello {marker}\\n"\n'
            'def application(environ, start_response):\n'
            '    start_response("200 OK", [("Content-Type", "text/plain"),\n'
            '                              ("Content-Length", str(len(MARK)))])\n'
            '    return [MARK]\n')


def gc_probe(flavor):
    """Diagnostic handler: runs gc.collect() in the child, answers the count."""
    if flavor == "pyreload":
        return ('import gc\nimport pyreload\ndef handler(req):\n'
                '    n = gc.collect()\n    req.content_type = "text/plain"\n'
                '    req.write(b"collected %d\\n" % n)\n    return pyreload.OK\n')
    return ('import gc\ndef application(environ, start_response):\n'
            '    n = gc.collect()\n'
            '    start_response("200 OK", [("Content-Type", "text/plain")])\n'
            '    return [b"collected %d\\n" % n]\n')


def gen_module(nlines, marker, flavor, seed=None):
    """Realistic code of exactly nlines lines: constants, dict tables,
    functions and classes, ending with the entry point that answers
    "hello <marker>".  The structure depends only on nlines and seed."""
    rnd = random.Random(nlines if seed is None else seed)
    words = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa",
             "lambda_", "theta", "zeta", "user", "order", "item", "price",
             "count", "limit", "timeout", "region", "status", "token")
    head = [f'"""Generated by bench/run.py: {nlines} lines of constants, '
            'tables and functions."""']
    if flavor == "pyreload":
        head.append("import pyreload")
        tail = ["def handler(req):", '    req.content_type = "text/plain"',
                "    req.write(MARK)", "    return pyreload.OK"]
    else:
        tail = ["def application(environ, start_response):",
                '    start_response("200 OK", [("Content-Type", "text/plain")])',
                "    return [MARK]"]
    head.append(f'MARK = b"hello {marker}\\n"')
    head.append("LIMIT_0 = 1024")
    consts = ["LIMIT_0"]
    n = [0]

    def name(prefix):
        n[0] += 1
        return f"{prefix}_{n[0]}"

    def const():
        c = name(rnd.choice(("LIMIT", "TIMEOUT", "RATE", "LABEL", "PAIR")))
        value = rnd.choice((
            str(rnd.randint(0, 100000)),
            f"{rnd.random() * 1000:.4f}",
            repr(" ".join(rnd.sample(words, 3))),
            f"({rnd.randint(0, 99)}, {rnd.randint(0, 99)}, {rnd.randint(0, 99)})",
        ))
        consts.append(c)
        return [f"{c} = {value}"]

    def table():
        lines = [f"{name('TABLE')} = {{"]
        for w in rnd.sample(words, rnd.randint(3, 8)):
            v = rnd.choice((str(rnd.randint(0, 999)), repr(rnd.choice(words)),
                            f"[{rnd.randint(0, 9)}, {rnd.randint(0, 9)}]",
                            rnd.choice(consts)))
            lines.append(f'    "{w}": {v},')
        return lines + ["}", ""]

    def function():
        f, k = name("compute"), rnd.choice(consts)
        return [f"def {f}(values, factor={rnd.randint(2, 9)}):",
                f'    """Fold the values against {k}."""',
                "    total = 0",
                "    for i, v in enumerate(values):",
                f"        if v % {rnd.randint(2, 7)} == 0:",
                "            total += v * factor",
                f"        elif isinstance({k}, int) and v > {k}:",
                "            total -= i",
                "        else:",
                "            total ^= i",
                f"    return {{'name': {f!r}, 'total': total, 'n': len(values)}}",
                ""]

    def klass():
        c = name("Record")
        return [f"class {c}:",
                f'    """A {rnd.choice(words)} record."""',
                '    __slots__ = ("key", "value")',
                "    def __init__(self, key, value):",
                "        self.key = key",
                "        self.value = value",
                "    def describe(self):",
                '        return "%s=%r" % (self.key, self.value)',
                ""]

    body, room = [], nlines - len(head) - len(tail)
    makers = (const, const, table, function, function, klass)
    while room > 0:
        block = rnd.choice(makers)()
        if len(block) > room:
            block = const()
        body += block
        room -= len(block)
    src = "\n".join(head + body + tail) + "\n"
    assert src.count("\n") == nlines, (nlines, src.count("\n"))
    return src


def deps_files(mark):
    """deps/handler.py importing dep01..dep20, and the deps themselves;
    the body carries dep01.MARK, so an edit of dep01.py alone is visible."""
    imports = "\n".join(f"import dep{i:02d}" for i in range(1, N_DEPS + 1))
    files = {"handler.py": f'''\
import os
import sys
import pyreload
try:
    import dep01
except ImportError:
    # The handler's directory is not on sys.path: put it there.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
{imports}
def handler(req):
    req.content_type = "text/plain"
    req.write(b"deps " + dep01.MARK + b"\\n")
    return pyreload.OK
'''}
    for i in range(1, N_DEPS + 1):
        # gen_module's code minus its docstring and MARK lines.
        body = gen_module(30, "-", "wsgi", seed=i).split("\n", 2)[2]
        files[f"dep{i:02d}.py"] = (
            f'"""Dependency {i} of the /deps handler."""\n'
            f'MARK = b"{mark if i == 1 else "-"}"\n'
            + body.replace("def application(", "def serve("))
    return files


_last_mtime = {}


def write_atomic(path, text):
    """Save like an editor: temp file + rename.  The mtime is set strictly
    increasing, so the signature changes even if the inode is reused and the
    coarse file clock has not ticked.  Returns perf_counter() taken just
    before the rename (after it, another thread may hold the GIL first)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    ns = max(time.time_ns(), _last_mtime.get(path, 0) + 1000)
    _last_mtime[path] = ns
    os.utime(tmp, ns=(ns, ns))
    t = time.perf_counter()
    os.rename(tmp, path)
    return t


# --------------------------------------------------------------------------
# /proc helpers

def proc_stat(pid):
    """(ppid, starttime, comm) or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1:raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[19]), comm


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def children_of(ppid):
    """{pid: starttime} of the live children of ppid."""
    kids = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st and st[0] == ppid:
                kids[int(entry)] = st[1]
    return kids


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of pid, in seconds (0.0 if it has gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def vmrss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def apache_count():
    """apache2/httpd processes on the machine (call before starting ours)."""
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st and st[2] in ("apache2", "httpd"):
                n += 1
    return n


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


# --------------------------------------------------------------------------
# Servers

class Server:
    """One self-contained apache2 (own ServerRoot under WORK), run in the
    foreground in its own session, stopped by its verified PID."""

    registry = []

    def __init__(self, name, kind, port, settings, *, mpm_conf=None,
                 loglevel="warn", pyreload_check=True, extra_files=None):
        self.name, self.kind, self.port = name, kind, port
        self.settings = settings
        self.dir = settings.work / name
        self.app = self.dir / "app"
        self.conf = self.dir / "httpd.conf"
        self.mpm = settings.mpm if mpm_conf is None else "event"
        self.mpm_conf = MPM_CONF[settings.mpm] if mpm_conf is None else mpm_conf
        self.loglevel = loglevel
        self.pyreload_check = pyreload_check
        self.locations = []          # (url, file) for pyreload and wsgi kinds
        self.extra_files = dict(extra_files or {})
        self.proc = None
        self.pid = None
        self.start_time = None
        self.known_children = {}
        self.framing = "?"

    @property
    def error_log(self):
        return self.dir / "logs" / "error.log"

    def add_location(self, url, relfile, text):
        self.locations.append((url, self.app / relfile))
        self.extra_files[relfile] = text

    def file_for(self, url):
        return dict(self.locations)[url]

    def write(self, cmod=None):
        for sub in ("run", "logs", "htdocs", "app"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        for rel, text in self.extra_files.items():
            p = self.app / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        family = FAMILY.get(self.kind, self.kind)
        if family == "pyreload":
            check = "" if self.pyreload_check else "\n    PyReloadCheck Off"
            directive = ("PyReloadWSGI" if self.kind in PYRELOAD_WSGI_KINDS
                         else "PyReloadHandler")
            locs = "\n".join(PYRELOAD_LOCATION.substitute(
                url=u, file=f, check=check, directive=directive)
                for u, f in self.locations)
        else:
            locs = "\n".join(WSGI_LOCATION.substitute(url=u, file=f)
                             for u, f in self.locations)
        kind_conf = string.Template(KIND_CONF[family]).substitute(
            dir=self.dir, app=self.app, moddir=apache_moddir(), cmod=cmod or "",
            pyreload_so=self.settings.work / (BASE_SO_NAME if self.kind == "pyreload-base"
                                              else PYRELOAD_SO.name),
            locations=locs)
        own = string.Template(BENCH_CONF).substitute(moddir=apache_moddir(),
                                                     kind_conf=kind_conf)
        self.conf.write_text(fill_conf(SERVER_CONF.read_text(), {
            "BY": f"bench/run.py for {self.name}", "DIR": self.dir,
            "PORT": self.port, "LOGLEVEL": self.loglevel, "MPM": self.mpm,
            "MPM_CONF": self.mpm_conf, "MODDIR": apache_moddir(), "CONF": own}))
        # The children run as www-data: everything must be readable by them.
        for root, dirs, files in os.walk(self.dir):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        os.chmod(self.dir, 0o755)

    def start(self, timeout=20.0):
        if not port_free(self.port):
            raise BenchError(f"{self.name}: port {self.port} is in use")
        stderr = open(self.dir / "logs" / "stderr.log", "w")
        cmd = ["apache2", "-f", str(self.conf), "-D", "FOREGROUND"]
        self.proc = subprocess.Popen(cmd, env=CLEAN_ENV, stdin=subprocess.DEVNULL,
                                     stdout=stderr, stderr=stderr,
                                     start_new_session=True)
        stderr.close()
        self.pid = self.proc.pid
        st = proc_stat(self.pid)
        self.start_time = st[1] if st else None
        Server.registry.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name}: apache2 exited with "
                                 f"{self.proc.returncode}\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5):
                    pass
                if children_of(self.pid):
                    self.remember_children()
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise BenchError(f"{self.name}: port {self.port} not open after "
                         f"{timeout:.0f} s\n{self.log_tail()}")

    def verified(self):
        """True if self.pid is still our apache2 parent."""
        if self.pid is None:
            return False
        st = proc_stat(self.pid)
        return (st is not None and st[1] == self.start_time
                and str(self.conf).encode() in proc_cmdline(self.pid))

    def remember_children(self):
        if self.verified():
            self.known_children.update(children_of(self.pid))
        return self.known_children

    def children(self):
        return list(children_of(self.pid)) if self.verified() else []

    def rss_kib(self):
        return sum(vmrss_kib(p) or 0 for p in self.children())

    def cpu(self):
        """{pid: CPU seconds} of the parent and its children."""
        if not self.verified():
            return {}
        return {p: cpu_seconds(p) for p in [self.pid] + self.children()}

    def log_size(self):
        try:
            return self.error_log.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset):
        try:
            with open(self.error_log, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines=8):
        text = self.log_since(0).splitlines()[-lines:]
        try:
            text += (self.dir / "logs" / "stderr.log").read_text().splitlines()[-5:]
        except OSError:
            pass
        return "\n".join("    " + line for line in text)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    # Stopping: SIGTERM, wait, then SIGKILL the parent and every child it was
    # seen with (mod_wsgi's embedded children hang ~10 s on SIGTERM).
    def stop_begin(self):
        if self.verified():
            self.remember_children()
            os.kill(self.pid, signal.SIGTERM)

    def stopped(self):
        if self.proc is not None and self.proc.poll() is not None:
            return True
        return not self.verified()

    def stop_force(self):
        if self.verified():
            os.kill(self.pid, signal.SIGKILL)
        for pid, start in self.known_children.items():
            st = proc_stat(pid)
            if st is not None and st[1] == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


def stop_servers(servers, wait):
    """Stop servers in parallel: SIGTERM all, wait up to `wait` s, SIGKILL."""
    servers = [s for s in servers if s.proc is not None]
    if not servers:
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for s in servers:
            s.stop_begin()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not all(s.stopped() for s in servers):
            time.sleep(0.1)
        for s in servers:
            forced = not s.stopped()
            s.stop_force()
            if forced:
                log(f"{s.name}: still running {wait} s after SIGTERM, SIGKILLed")
            if s in Server.registry:
                Server.registry.remove(s)
    finally:
        signal.signal(signal.SIGINT, old)


def stop_leftovers(work):
    """Servers of an earlier, killed run (same WORK) are stopped first."""
    for pidfile in work.glob("*/run/httpd.pid"):
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        conf = pidfile.parent.parent / "httpd.conf"
        st = proc_stat(pid)
        if st and str(conf).encode() in proc_cmdline(pid):
            log(f"stopping a leftover server {pid} ({conf})")
            s = Server.__new__(Server)
            s.name, s.pid, s.start_time, s.conf = conf.parent.name, pid, st[1], conf
            s.proc, s.known_children = None, {}
            s.stop_begin()
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and s.verified():
                time.sleep(0.1)
            s.stop_force()


_moddir = None


def fill_conf(template, values):
    """template with each @NAME@ replaced by values[NAME] in one pass; a name
    with no value is an error (as in tests/fixture.c and tools/demo)."""
    def one(m):
        if m.group(1) not in values:
            raise BenchError(f"{SERVER_CONF}: no value for {m.group(0)}")
        return str(values[m.group(1)])
    return re.sub(r"@([A-Z_]+)@", one, template)


def apache_moddir():
    global _moddir
    if _moddir is None:
        try:
            _moddir = subprocess.run(["apxs", "-q", "LIBEXECDIR"], env=CLEAN_ENV,
                                     capture_output=True, text=True,
                                     timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            _moddir = ""
        _moddir = _moddir or "/usr/lib/apache2/modules"
    return _moddir


def build_c_module(work):
    """apxs -c bench/mod_bench_hello.c in WORK/cmod; returns the .so path."""
    d = work / "cmod"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(BENCH / "mod_bench_hello.c", d / "mod_bench_hello.c")
    r = subprocess.run(["apxs", "-c", "-o", "mod_bench_hello.la", "mod_bench_hello.c"],
                       cwd=d, env=CLEAN_ENV, capture_output=True, text=True,
                       timeout=120)
    so = d / ".libs" / "mod_bench_hello.so"
    if r.returncode != 0 or not so.exists():
        raise BenchError(f"apxs failed:\n{r.stdout}\n{r.stderr}")
    os.chmod(d, 0o755)
    return so


# --------------------------------------------------------------------------
# HTTP client (keep-alive) and wrk

class Client:
    """A keep-alive HTTP/1.1 client; reconnects once on a dropped connection."""

    def __init__(self, port, timeout=10.0):
        self.port, self.timeout, self.conn = port, timeout, None

    def get(self, path):
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                       timeout=self.timeout)
            try:
                self.conn.request("GET", path)
                r = self.conn.getresponse()
                body = r.read()
                if r.will_close:
                    self.close()
                return r.status, r.getheader("Content-Type", ""), body, \
                    r.getheader("Content-Length"), r.getheader("Transfer-Encoding")
            except (http.client.HTTPException, ConnectionError, socket.timeout):
                self.close()
                if attempt == 2:
                    raise

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def check_body(server, path, expect, retry_for=5.0, ctype_want="text/plain"):
    """Return None if path answers 200 `ctype_want` `expect`, else what it got.
    The framing seen is kept in server.framing (for the text/plain body)."""
    deadline = time.monotonic() + retry_for
    seen = "no answer"
    while True:
        client = Client(server.port, timeout=10)
        try:
            status, ctype, body, clen, te = client.get(path)
            seen = (f"status {status}, Content-Type {ctype!r}, body {body[:300]!r}")
            if status == 200 and body == expect and ctype.startswith(ctype_want):
                if ctype_want == "text/plain":
                    server.framing = ("Content-Length" if clen else
                                      "chunked" if te else "close")
                return None
        except OSError as e:
            seen = f"{type(e).__name__}: {e}"
        finally:
            client.close()
        if time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def wrk_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * WRK_UNITS[m.group(2)] if m else float("nan")


def run_wrk(url, conns, seconds, latency=True, cpu=None):
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s"]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu)] + cmd
    if latency:
        cmd.append("--latency")
    cmd.append(url)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    out = r.stdout
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if r.returncode != 0 or not m:
        raise BenchError(f"wrk failed ({r.returncode}): {out}\n{r.stderr}")
    lat = {p: wrk_ms(v) for p, v in
           re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M)}
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                     r"timeout (\d+)", out)
    return {"rps": float(m.group(1)), "p50": lat.get("50", float("nan")),
            "p99": lat.get("99", float("nan")),
            "requests": int(total.group(1)) if total else 0,
            "errors": (int(non2xx.group(1)) if non2xx else 0)
                      + (sum(map(int, sock.groups())) if sock else 0)}


def med(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


# --------------------------------------------------------------------------
# Contenders

# What each contender is measured on: (URL, expected body).  Flask's
# template route is measured too (c16 only; FLASK_PAGE).
KIND_URL = {k: ("/hello", b"hello\n") for k in ALL_KINDS}
KIND_URL.update({k: ("/app/hello", b"hello flask\n") for k in FLASK_KINDS})
FLASK_PAGE = ("/app/page/bench",
              b"<!doctype html>\n<title>bench</title>\n<p>hello bench</p>")


def make_contender(kind, port, settings, cmod):
    s = Server(kind, kind, port, settings,
               pyreload_check=(kind != "pyreload-nocheck"))
    if kind in FLASK_KINDS:
        s.add_location("/app", "app.py", FLASK_APP)
        s.extra_files["templates/page.html"] = FLASK_TEMPLATE
    elif kind == "wsgi-pyreload":
        s.add_location("/hello", "hello_wsgi.py", WSGI_HELLO)
    elif kind in PYRELOAD_KINDS:
        s.add_location("/hello", "hello.py", PYRELOAD_HELLO)
        if "check" in settings.parts:
            for rel, text in deps_files("v0").items():
                s.extra_files[f"deps/{rel}"] = text
            s.locations.append(("/deps", s.app / "deps" / "handler.py"))
    elif kind in ("wsgi-embedded", "wsgi-daemon"):
        s.add_location("/hello", "hello.wsgi", WSGI_HELLO)
        if kind == "wsgi-embedded":
            s.add_location("/cpython-baseline", "baseline.wsgi", WSGI_BASELINE)
    elif kind == "modpython":
        s.extra_files["hello.py"] = MODPYTHON_HELLO
    s.write(cmod)
    return s


def contender_kinds(settings):
    """The contenders the chosen parts use: a part run alone (PARTS=rss)
    starts no server it does not measure."""
    kinds = []
    if "throughput" in settings.parts:
        kinds = list(settings.kinds)
    elif "check" in settings.parts:
        kinds = [k for k in settings.kinds if k in ("pyreload", "pyreload-nocheck")]
    if "cost" in settings.parts and "wsgi-embedded" not in kinds:
        kinds.append("wsgi-embedded")   # only for the in-Apache CPython baseline
    return kinds


def start_contenders(settings, cmod):
    servers, failures = {}, {}
    kinds = contender_kinds(settings)
    for i, kind in enumerate(ALL_KINDS):
        if kind not in kinds:
            continue
        s = make_contender(kind, settings.port + i, settings, cmod)
        try:
            s.start()
        except BenchError as e:
            if kind in settings.kinds:
                failures[kind] = str(e)
            log(f"{kind}: failed to start\n{e}")
            continue
        servers[kind] = s
    return servers, failures


# --------------------------------------------------------------------------
# Measurements

THROUGHPUT_KEY = {False: "throughput", True: "throughput_pinned"}
THROUGHPUT_MODE = {False: "unpinned", True: "pinned"}

# Pinned mode: the server on the first CPU, wrk on the second, so that the
# client's CPU no longer caps every contender at the same figure.
CPUS = sorted(os.sched_getaffinity(0))


def pin_server(server, cpus):
    """Every thread of the server's processes onto cpus (a set); children
    forked later inherit the parent's."""
    if not server.verified():
        return
    for pid in [server.pid] + server.children():
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:
                pass     # a thread that just ended


def measure_throughput(servers, settings, failures, pinned=False):
    """Median over ROUNDS of wrk -c16 and -c1 per contender, alternating;
    the Flask contenders' template route at c16 too.  pinned: each server
    on CPUS[0] while it is measured, wrk on CPUS[1]."""
    wcpu = CPUS[1] if pinned else None
    kinds = [k for k in settings.kinds if k in servers and k not in failures]
    for k in list(kinds):
        checks = [(*KIND_URL[k], "text/plain")]
        if k in FLASK_KINDS:
            checks.append((*FLASK_PAGE, "text/html"))
        for path, want, ctype in checks:
            bad = check_body(servers[k], path, want, ctype_want=ctype)
            if bad:
                failures[k] = (f"GET {path} answered {bad} (expected 200 {ctype} "
                               f"{want!r})\n{servers[k].log_tail()}")
                log(f"{k}: wrong answer: {bad}")
                kinds.remove(k)
                break
    runs = {k: [] for k in kinds}
    for rnd in range(settings.rounds):
        order = kinds[rnd % len(kinds):] + kinds[:rnd % len(kinds)] if kinds else []
        for k in order:
            url = servers[k].url(KIND_URL[k][0])
            if pinned:
                pin_server(servers[k], {CPUS[0]})
            if settings.warmup:
                run_wrk(url, settings.conns, settings.warmup, latency=False, cpu=wcpu)
            cpu0 = servers[k].cpu()
            many = run_wrk(url, settings.conns, settings.duration, cpu=wcpu)
            cpu1 = servers[k].cpu()
            # The server's CPU per request: what the other jobs on the
            # machine disturb least (processes present before and after).
            used = sum(cpu1[p] - cpu0[p] for p in cpu1 if p in cpu0)
            many["cpu_us"] = (used / many["requests"] * 1e6
                              if many["requests"] else float("nan"))
            one = run_wrk(url, 1, settings.duration, cpu=wcpu)
            runs[k].append({"many": many, "one": one})
            if k in FLASK_KINDS:
                runs[k][-1]["page"] = run_wrk(servers[k].url(FLASK_PAGE[0]),
                                              settings.conns, settings.duration,
                                              cpu=wcpu)
            if pinned:
                pin_server(servers[k], set(CPUS))
            log(f"round {rnd + 1}/{settings.rounds}{' pinned' if pinned else ''} {k:17s} "
                f"c{settings.conns} {many['rps']:9.0f} req/s   "
                f"c1 {one['rps']:8.0f} req/s p50 {one['p50']:.3f} ms")
    results = {}
    for k in kinds:
        r = runs[k]
        results[k] = {
            f"{w}_{f}": med([x[w][f] for x in r])
            for w in ("many", "one") for f in ("rps", "p50", "p99")}
        results[k]["errors"] = sum(x[w]["errors"] for x in r for w in ("many", "one"))
        results[k]["many_cpu_us"] = med([x["many"]["cpu_us"] for x in r])
        if k in FLASK_KINDS:
            results[k]["page_rps"] = med([x["page"]["rps"] for x in r])
            results[k]["page_p99"] = med([x["page"]["p99"] for x in r])
            results[k]["errors"] += sum(x["page"]["errors"] for x in r)
        results[k]["rounds"] = [(x["many"]["rps"], x["one"]["rps"]) for x in r]
        many = [x["many"]["rps"] for x in r]
        results[k]["spread"] = (max(many) - min(many)) / med(many)
        results[k]["rss_mb"] = servers[k].rss_kib() / 1024.0
        results[k]["procs"] = len(servers[k].children())
        results[k]["framing"] = getattr(servers[k], "framing", "?")
    return results


def measure_check_cost(servers, settings, failures):
    """/deps (20 imported modules) with checking on vs PyReloadCheck Off."""
    pair = ("pyreload", "pyreload-nocheck")
    if any(k not in servers or k in failures for k in pair):
        return {"skipped": "needs both pyreload and pyreload-nocheck running"}
    for k in pair:
        bad = check_body(servers[k], "/deps", b"deps v0\n")
        if bad:
            return {"error": f"{k} GET /deps answered {bad}\n{servers[k].log_tail()}"}
    rps = {k: [] for k in pair}
    for rnd in range(settings.rounds):
        for k in (pair if rnd % 2 == 0 else pair[::-1]):
            url = servers[k].url("/deps")
            if settings.warmup:
                run_wrk(url, settings.conns, settings.warmup, latency=False)
            r = run_wrk(url, settings.conns, settings.duration)
            rps[k].append(r["rps"])
            log(f"check round {rnd + 1}/{settings.rounds} {k:17s} /deps "
                f"{r['rps']:9.0f} req/s")
    out = {"check_rps": med(rps["pyreload"]),
           "nocheck_rps": med(rps["pyreload-nocheck"]),
           "rounds": list(zip(rps["pyreload"], rps["pyreload-nocheck"]))}
    out["cost"] = 1.0 - out["check_rps"] / out["nocheck_rps"]
    out["tracking"] = probe_dependency_tracking(servers["pyreload"])
    return out


def probe_dependency_tracking(server):
    """Edit dep01.py only: does the checking server pick it up?"""
    dep = server.app / "deps" / "dep01.py"
    old = dep.read_text()
    write_atomic(dep, old.replace('MARK = b"v0"', 'MARK = b"v1"'))
    t0 = time.perf_counter()
    deadline = t0 + 3.0
    try:
        while time.perf_counter() < deadline:
            c = Client(server.port, timeout=5)
            try:
                status, _, body, _, _ = c.get("/deps")
            finally:
                c.close()
            if body == b"deps v1\n":
                return f"yes: an edit of dep01.py alone was served after " \
                       f"{(time.perf_counter() - t0) * 1000:.1f} ms"
            time.sleep(0.01)
        return ("no: an edit of dep01.py alone was not served within 3 s, so "
                "only handler.py is checked per request")
    finally:
        write_atomic(dep, old)


def reload_server(settings, name, port, locations):
    """A one-child server for the reload parts (LogLevel info).
    locations: {url: file text}; the file is named after the url."""
    target = settings.reload_target
    s = Server(f"{name}-{target}", "pyreload" if target == "pyreload" else target,
               port, settings, mpm_conf=ONE_CHILD_CONF, loglevel="info")
    ext = "py" if target == "pyreload" else "wsgi"
    for url, text in locations.items():
        s.add_location(url, f"{url.strip('/')}.{ext}", text)
    s.write()
    return s


def run_reload_parts(settings, servers, res):
    """latency and cost share one server; memory gets a fresh one, so that
    what the cost part allocated does not blur its RSS figures."""
    target = settings.reload_target
    plan = []
    if "latency" in settings.parts or "cost" in settings.parts:
        locs = {"/hello": marked_hello(target, 0)}
        locs.update({f"/cost{n}": gen_module(n, "start", target) for n in COST_SIZES})
        locs["/gcprobe"] = gc_probe(target)
        rs = reload_server(settings, "reload", settings.port + 10, locs)
        plan += [(p, rs) for p in ("latency", "cost") if p in settings.parts]
    if "memory" in settings.parts:
        ms = reload_server(settings, "memory", settings.port + 11,
                           {"/mem": marked_hello(target, 0)})
        plan.append(("memory", ms))
    if "rss" in settings.parts:
        big = reload_server(settings, "rss", settings.port + 12,
                            {"/big": gen_module(RSS_LINES, "v0", target)})
        plan.append(("rss", big))
    measure = {
        "latency": lambda s: measure_reload_latency(s, settings),
        "cost": lambda s: measure_reload_cost(s, settings, wsgi_baseline_fn(servers)),
        "memory": lambda s: measure_reload_memory(s, settings),
        "rss": lambda s: measure_reload_rss(s, settings),
    }
    for part, server in plan:
        log(f"reload part: {part}")
        try:
            if server.proc is None:
                server.start()
                url = server.locations[0][0]
                want = {"/hello": b"hello 0\n", "/mem": b"hello 0\n",
                        "/big": b"hello v0\n"}.get(url, b"hello start\n")
                bad = check_body(server, url, want)
                if bad:
                    raise BenchError(f"GET {url} answered {bad}")
            res[part] = measure[part](server)
        except (BenchError, OSError, http.client.HTTPException) as e:
            res["part_errors"][part] = f"{type(e).__name__}: {e}\n{server.log_tail()}"
            log(f"{part} failed: {e}\n{server.log_tail()}")


def marker_of(body):
    m = re.fullmatch(rb"hello (\S+)\n", body)
    return m.group(1).decode() if m else None


def measure_reload_latency(server, settings):
    """SAVES atomic saves of /hello's file while a keep-alive client polls."""
    target = settings.reload_target
    path = server.file_for("/hello")
    client = Client(server.port, timeout=5)
    cond = threading.Condition()
    state = {"latest": -1, "first": {}, "stale": 0, "bad": [], "responses": 0,
             "stop": False, "error": None}

    def poll():
        try:
            while not state["stop"]:
                status, _, body, _, _ = client.get("/hello")
                t = time.perf_counter()
                m = marker_of(body)
                with cond:
                    state["responses"] += 1
                    if status != 200 or m is None:
                        if len(state["bad"]) < 5:
                            state["bad"].append((status, body[:200]))
                        continue
                    n = int(m)
                    if n < state["latest"]:
                        state["stale"] += 1
                    elif n > state["latest"]:
                        state["latest"] = n
                        state["first"][n] = t
                        cond.notify_all()
        except Exception as e:   # reported, not raised, from the thread
            state["error"] = f"{type(e).__name__}: {e}"
            with cond:
                cond.notify_all()

    # The unchanged request time, for reference.
    plain = []
    for _ in range(300):
        t0 = time.perf_counter()
        client.get("/hello")
        plain.append((time.perf_counter() - t0) * 1000.0)
    write_atomic(path, marked_hello(target, 0))
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    lat, missed = [], 0
    rnd = random.Random(5)
    try:
        with cond:
            cond.wait_for(lambda: state["latest"] >= 0 or state["error"], 5)
        for i in range(1, settings.saves + 1):
            t_rename = write_atomic(path, marked_hello(target, i))
            with cond:
                ok = cond.wait_for(lambda: state["latest"] >= i or state["error"], 3)
                first = state["first"].get(i)
            if state["error"]:
                break
            if not ok or first is None:
                missed += 1
            else:
                lat.append((first - t_rename) * 1000.0)
            time.sleep(rnd.uniform(0.002, 0.010))
        time.sleep(0.05)      # a few more responses after the last save
    finally:
        state["stop"] = True
        thread.join(10)
        client.close()
    return {"saves": settings.saves, "measured": len(lat), "missed": missed,
            "median_ms": med(lat), "p99_ms": pct(lat, 99), "max_ms": max(lat or [0]),
            "stale": state["stale"], "responses": state["responses"],
            "bad": state["bad"], "error": state["error"],
            "plain_ms": med(plain)}


def measure_reload_cost(server, settings, wsgi_baseline):
    """Reload time of 10 / 1,000 / 10,000-line modules vs CPython."""
    target = settings.reload_target
    kids = server.children()
    rss_before = vmrss_kib(kids[0]) if len(kids) == 1 else None
    client = Client(server.port, timeout=30)
    plain = []
    for _ in range(200):
        t0 = time.perf_counter()
        client.get(f"/cost{COST_SIZES[0]}")
        plain.append((time.perf_counter() - t0) * 1000.0)
    plain_ms = med(plain)
    rows = {}
    for n in COST_SIZES:
        path = server.file_for(f"/cost{n}")
        logged, client_ms, problems = [], [], []
        for rep in range(settings.cost_reps + 1):   # rep 0: warm-up load
            marker = f"{n}-{rep}"
            offset = server.log_size()
            t0 = write_atomic(path, gen_module(n, marker, target))
            deadline = t0 + 10
            while True:
                status, _, body, _, _ = client.get(f"/cost{n}")
                if body == f"hello {marker}\n".encode():
                    break
                if time.perf_counter() > deadline:
                    problems.append(f"new body not served in 10 s "
                                    f"(last: {status} {body[:100]!r})")
                    break
            elapsed = (time.perf_counter() - t0) * 1000.0
            found = []
            for _ in range(20):    # the log line may land just after the body
                found = LOAD_LINE.findall(server.log_since(offset))
                if found:
                    break
                time.sleep(0.02)
            if rep == 0:
                continue
            client_ms.append(elapsed)
            if found:
                logged.append(float(found[-1][1]))
        rows[n] = {"logged_ms": med(logged), "n_logged": len(logged),
                   "client_ms": med(client_ms), "problems": problems,
                   "path": path}
    client.close()
    # CPython's own compile()+exec() of the same files, same Python build.
    r = subprocess.run([SYSTEM_PYTHON, "-I", "-c", CPYTHON_BASELINE,
                        str(settings.cost_reps)]
                       + [str(rows[n]["path"]) for n in COST_SIZES],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise BenchError(f"CPython baseline failed: {r.stderr}")
    base = json.loads(r.stdout)
    for n in COST_SIZES:
        row = rows[n]
        b = base[str(row["path"])]
        row["cpython_ms"] = b["compile_exec_ms"]
        row["cpython_read_ms"] = b["read_compile_exec_ms"]
        row["wsgi_ms"] = wsgi_baseline(row["path"], settings.cost_reps)
        if row["n_logged"]:
            row["method"] = "log line"
            row["reload_ms"] = row["logged_ms"]
        else:
            row["method"] = "client: save to new body minus an unchanged request"
            row["reload_ms"] = row["client_ms"] - plain_ms
        row["ratio"] = row["reload_ms"] / row["cpython_ms"]
    rss_after = vmrss_kib(kids[0]) if len(kids) == 1 else None
    # Diagnostic: how much of that is garbage only the cyclic GC can free?
    c = Client(server.port, timeout=30)
    try:
        status, _, body, _, _ = c.get("/gcprobe")
        collected = body.decode(errors="replace").strip() if status == 200 \
            else f"status {status}"
    except (OSError, http.client.HTTPException) as e:
        collected = f"{type(e).__name__}: {e}"
    finally:
        c.close()
    rss_gc = vmrss_kib(kids[0]) if len(kids) == 1 else None
    return {"rows": rows, "plain_ms": plain_ms, "rss_before": rss_before,
            "rss_after": rss_after, "gc": collected, "rss_gc": rss_gc,
            "cpython_rss": base["rss_kib"]}


def wsgi_baseline_fn(servers):
    """compile()+exec() timed inside an Apache child (mod_wsgi embedded)."""
    s = servers.get("wsgi-embedded")

    def measure(path, reps):
        if s is None:
            return float("nan")
        c = Client(s.port, timeout=120)
        try:
            q = urllib.parse.urlencode({"path": str(path), "reps": reps})
            status, _, body, _, _ = c.get(f"/cpython-baseline?{q}")
            return json.loads(body)["ms"] if status == 200 else float("nan")
        except (OSError, ValueError, KeyError):
            return float("nan")
        finally:
            c.close()
    return measure


def measure_reload_memory(server, settings):
    """Child VmRSS before/after RELOADS reloads (one request after each)."""
    target = settings.reload_target
    path = server.file_for("/mem")
    client = Client(server.port, timeout=10)
    state = {"mismatch": 0, "extra": 0}

    def one(i):
        write_atomic(path, marked_hello(target, f"m{i}"))
        want = f"hello m{i}\n".encode()
        for attempt in range(200):
            status, _, body, _, _ = client.get("/mem")
            if body == want:
                if attempt:
                    state["extra"] += attempt
                return
            time.sleep(0.001)
        state["mismatch"] += 1

    offset = server.log_size()
    for i in range(settings.reload_warmup):
        one(i)
    kids = server.children()
    if len(kids) != 1:
        raise BenchError(f"expected one child, found {kids}")
    child = kids[0]
    samples = [(0, vmrss_kib(child))]
    step = max(1, min(1000, settings.reloads // 10))
    t0 = time.perf_counter()
    for i in range(1, settings.reloads + 1):
        one(settings.reload_warmup + i)
        if i % step == 0 or i == settings.reloads:
            samples.append((i, vmrss_kib(child)))
    elapsed = time.perf_counter() - t0
    client.close()
    loads = len(LOAD_LINE.findall(server.log_since(offset)))
    same_child = server.children() == [child]
    before, after = samples[0][1], samples[-1][1]
    growth = after - before
    return {"before_kib": before, "after_kib": after, "growth_kib": growth,
            "per_1000_kib": growth * 1000.0 / settings.reloads,
            "per_10000_mib": growth * 10000.0 / settings.reloads / 1024.0,
            "samples": samples, "reloads": settings.reloads,
            "warmup": settings.reload_warmup,
            "ms_per_reload": elapsed * 1000.0 / settings.reloads,
            "mismatch": state["mismatch"], "extra_requests": state["extra"],
            "loads_logged": loads, "same_child": same_child, "child": child}


def measure_reload_rss(server, settings):
    """The child's VmRSS after RSS_RELOADS reloads of a RSS_LINES-line module,
    and a plain python3's after compiling and executing the same versions
    (the first load included), each replacing the last."""
    target = settings.reload_target
    path = server.file_for("/big")
    kids = server.children()
    if len(kids) != 1:
        raise BenchError(f"expected one child, found {kids}")
    child = kids[0]
    before = vmrss_kib(child)
    client = Client(server.port, timeout=30)
    versions = server.dir / "rss-versions"
    versions.mkdir(exist_ok=True)
    paths = [versions / "v0.py"]
    paths[0].write_text(gen_module(RSS_LINES, "v0", target))
    try:
        for i in range(1, RSS_RELOADS + 1):
            text = gen_module(RSS_LINES, f"v{i}", target)
            (versions / f"v{i}.py").write_text(text)
            paths.append(versions / f"v{i}.py")
            write_atomic(path, text)
            deadline = time.monotonic() + 30
            while client.get("/big")[2] != f"hello v{i}\n".encode():
                if time.monotonic() > deadline:
                    raise BenchError(f"reload {i} not served within 30 s")
        # What the last request left for after its response, done.
        time.sleep(0.5)
        client.get("/big")
    finally:
        client.close()
    after = vmrss_kib(child)
    r = subprocess.run([SYSTEM_PYTHON, "-I", "-c", CPYTHON_RSS] + [str(p) for p in paths],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise BenchError(f"python3 RSS baseline failed: {r.stderr}")
    base = int(r.stdout.split()[-1])
    return {"before_kib": before, "after_kib": after, "python_kib": base,
            "ratio": after / base, "reloads": RSS_RELOADS, "lines": RSS_LINES,
            "same_child": server.children() == [child]}


# --------------------------------------------------------------------------
# Compiled once per host (issue 13): the code cache across processes.

CC_CHILDREN = 8
CC_START_MODULES = 50
T_CC_RATIO = 2.0
PREFORK_CONF = string.Template("""\
StartServers $n
MinSpareServers $n
MaxSpareServers $n
ServerLimit $n
MaxRequestWorkers $n""")


def cc_module(nlines, marker):
    """gen_module's pyreload handler, whose body also names the child:
    b"hello <marker> <pid>\\n"."""
    return gen_module(nlines, marker, "pyreload").replace(
        "    req.write(MARK)",
        "    req.write(MARK[:-1] + b' %d\\n' % __import__('os').getpid())")


def cc_server(settings, name, port, locations, cache, extra_files=None):
    """A prefork server with CC_CHILDREN children, LogLevel info, the code
    cache at its default place (cache=True) or PyReloadCodeCache Off."""
    s = Server(name, "pyreload", port, settings, loglevel="info",
               mpm_conf=PREFORK_CONF.substitute(n=CC_CHILDREN),
               extra_files=extra_files)
    s.mpm = "prefork"
    for url, (rel, text) in locations.items():
        s.add_location(url, rel, text)
    s.write()
    if not cache:
        s.conf.write_text(s.conf.read_text() + "PyReloadCodeCache Off\n")
    return s


def task_cpu_ns(pid):
    """CPU time of every thread of pid, in ns (schedstat: not rounded to
    clock ticks, which are longer than a small load)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return total


def cc_serve_each(server, url, prefix, want, deadline_s=60):
    """GET url on fresh connections until `want` distinct children have
    answered a body starting with prefix.  {pid: first response's ms} in
    the order they first answered, and the number of requests made."""
    firsts, requests = {}, 0
    end = time.monotonic() + deadline_s
    while len(firsts) < want:
        if time.monotonic() > end:
            raise BenchError(f"{url}: only {len(firsts)} of {want} children "
                             f"answered '{prefix}' in {deadline_s} s")
        c = Client(server.port, timeout=60)
        t0 = time.perf_counter()
        try:
            status, _, body, _, _ = c.get(url)
        finally:
            c.close()
        ms = (time.perf_counter() - t0) * 1000.0
        requests += 1
        m = re.fullmatch(rb"(.*) (\d+)\n", body)
        if status == 200 and m and m.group(1).decode() == prefix:
            firsts.setdefault(int(m.group(2)), ms)
    return firsts, requests


CC_BASELINE = """\
import json, statistics, sys, time, types
sys.modules["pyreload"] = types.ModuleType("pyreload")
sys.modules["pyreload"].OK = 0
reps, path, cpu = int(sys.argv[1]), sys.argv[2], []
for _ in range(reps + 1):
    t0 = time.process_time()
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec")
    exec(code, types.ModuleType("bench_baseline").__dict__)
    cpu.append((time.process_time() - t0) * 1000.0)
print(json.dumps(statistics.median(cpu[1:])))
"""


def cpython_compile_exec_cpu_ms(path, reps):
    """CPU time (not wall: the children's figures are CPU time) of one
    read+compile+exec of path in a plain CPython, median of reps."""
    r = subprocess.run([SYSTEM_PYTHON, "-I", "-c", CC_BASELINE, str(reps), str(path)],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise BenchError(f"CPython baseline failed: {r.stderr}")
    return json.loads(r.stdout)


def measure_codecache_edit(settings, port, cache):
    """One edit of a CC_LINES-line handler under prefork with CC_CHILDREN
    children, each child then served once: the CPU time all of them spent
    on the new version (each child's CPU over that phase, minus what its
    requests cost without a load)."""
    n = env_int("CC_LINES", 10000, 10)
    name = f"codecache-{'on' if cache else 'off'}"
    s = cc_server(settings, name, port, {"/cc": ("cc.py", cc_module(n, "start"))}, cache)
    try:
        s.start()
        cc_serve_each(s, "/cc", "hello start", CC_CHILDREN)
        kids = s.children()
        if len(kids) != CC_CHILDREN:
            raise BenchError(f"{name}: {len(kids)} children, want {CC_CHILDREN}")
        # What a request costs a child that has nothing to load.
        before = {p: task_cpu_ns(p) for p in kids}
        _, plain_requests = cc_serve_each(s, "/cc", "hello start", CC_CHILDREN)
        plain_ns = sum(task_cpu_ns(p) - before[p] for p in kids) / max(plain_requests, 1)
        offset = s.log_size()
        before = {p: task_cpu_ns(p) for p in kids}
        write_atomic(s.file_for("/cc"), cc_module(n, "edited"))
        firsts, requests = cc_serve_each(s, "/cc", "hello edited", CC_CHILDREN)
        cpu_ms = (sum(task_cpu_ns(p) - before[p] for p in kids)
                  - requests * plain_ns) / 1e6
        text = s.log_since(offset)
        logged = [float(x) for _, x in LOAD_LINE.findall(text)]
        return {"lines": n, "cpu_ms": cpu_ms, "logged_ms": sum(logged),
                "loads": len(logged), "requests": requests,
                "compiled": text.count(": compiled in "),
                "from_cache": text.count(": from cache in "),
                "cpython_ms": cpython_compile_exec_cpu_ms(s.file_for("/cc"),
                                                          settings.cost_reps)}
    finally:
        stop_servers([s], settings.stop_wait)


def cc_settle(server, timeout=15.0):
    """Wait until the CC_CHILDREN children exist and have finished starting
    (Python's start in each: their CPU time stops growing), so that a first
    response measures the load, not the other children's start."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        kids = server.children()
        now = sum(task_cpu_ns(p) for p in kids) if len(kids) == CC_CHILDREN else None
        if now is not None and last is not None and now - last < 2e6:
            return
        last = now
        time.sleep(0.25)
    raise BenchError(f"{server.name}: children still starting after {timeout:.0f} s")


def cc_app_files(marker):
    """An app of CC_START_MODULES reloadable modules: app.py imports
    mod01..mod50 (each 200 lines of gen_module's code)."""
    imports = "\n".join(f"import mod{i:02d}" for i in range(1, CC_START_MODULES + 1))
    files = {"app.py": f"import os\nimport pyreload\n{imports}\n"
                       "def handler(req):\n"
                       "    req.content_type = 'text/plain'\n"
                       f"    req.write(b'app {marker} %d\\n' % os.getpid())\n"
                       "    return pyreload.OK\n"}
    for i in range(1, CC_START_MODULES + 1):
        body = gen_module(200, "-", "wsgi", seed=100 + i).split("\n", 2)[2]
        files[f"mod{i:02d}.py"] = f'"""Module {i} of the /app handler."""\n' + body
    return files


def measure_codecache_start(settings, port):
    """Start of an app of 50 reloadable modules under prefork: each child's
    first response (ms, client side), with the cache off, cold (empty:
    the first child compiles, the others read what it wrote) and warm
    (a restart: every child reads)."""
    out = {}
    files = cc_app_files("v1")
    app = files.pop("app.py")
    for cache in (False, True):
        s = cc_server(settings, f"ccstart-{'on' if cache else 'off'}", port,
                      {"/app": ("app.py", app)}, cache, extra_files=files)
        # With the cache: its first start finds it empty (cold); a restart
        # of the same server (the key names each file's path) finds it full.
        for mode in (("cold", "warm") if cache else ("off",)):
            try:
                offset = s.log_size()
                s.start()
                cc_settle(s)
                firsts, _ = cc_serve_each(s, "/app", "app v1", CC_CHILDREN)
                text = s.log_since(offset)
                times = list(firsts.values())
                out[mode] = {"first_ms": times[0], "others_ms": med(times[1:]),
                             "median_ms": med(times), "max_ms": max(times),
                             "compiled": text.count(": compiled in "),
                             "from_cache": text.count(": from cache in ")}
            finally:
                stop_servers([s], settings.stop_wait)
    return out


def run_codecache_parts(settings, res):
    port = settings.port + 13  # 10-12: the reload parts (reload, memory, rss)
    if "codecache" in settings.parts:
        log("codecache part: one edit, 8 prefork children, cache off then on")
        try:
            off = measure_codecache_edit(settings, port, cache=False)
            on = measure_codecache_edit(settings, port, cache=True)
            res["codecache"] = {"off": off, "on": on}
        except (BenchError, OSError, http.client.HTTPException) as e:
            res["part_errors"]["codecache"] = f"{type(e).__name__}: {e}"
            log(f"codecache failed: {e}")
    if "codecache-start" in settings.parts:
        log("codecache-start part: 50 modules, 8 prefork children, off / cold / warm")
        try:
            res["codecache_start"] = measure_codecache_start(settings, port)
        except (BenchError, OSError, http.client.HTTPException) as e:
            res["part_errors"]["codecache-start"] = f"{type(e).__name__}: {e}"
            log(f"codecache-start failed: {e}")


def render_codecache(settings, res, add):
    cc = res.get("codecache")
    if cc:
        on, off = cc["on"], cc["off"]
        add("### Compiled once per host")
        add("")
        add(f"Prefork, {CC_CHILDREN} children, a {on['lines']:,}-line handler; one "
            "atomic save, then each child served until it has answered with the new "
            "version. CPU: every child's CPU time (schedstat) over that phase, minus "
            "what its requests cost without a load; logged: the sum of the "
            "children's load lines. Reference: one CPython compile+exec of the file "
            f"in `{SYSTEM_PYTHON} -I`.")
        add("")
        one = off["cpu_ms"] / CC_CHILDREN
        add("| code cache | CPU ms, all children | × one child's load | × CPython "
            "compile+exec | logged ms | loads | compiled | from cache | requests |")
        add("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for label, r in (("off", off), ("on", on)):
            add(f"| {label} | {f_ms(r['cpu_ms'], 1)} | {f_x(ratio(r['cpu_ms'], one))} | "
                f"{f_x(ratio(r['cpu_ms'], r['cpython_ms']))} | {f_ms(r['logged_ms'], 1)} | "
                f"{r['loads']} | {r['compiled']} | {r['from_cache']} | {r['requests']} |")
        add("")
        add(f"One child's load (compile+exec, no cache: the off row / {CC_CHILDREN}): "
            f"{f_ms(one, 1)} ms CPU. CPython's own read+compile+exec of the file: "
            f"{f_ms(on['cpython_ms'], 1)} ms CPU.")
        add("")
    st = res.get("codecache_start")
    if st:
        add(f"### Start of an app of {CC_START_MODULES} reloadable modules")
        add("")
        add(f"Prefork, {CC_CHILDREN} children, started and idle (Python started in "
            "each); then each child's first response, which loads the app (client "
            "side, fresh connections, one at a time). Cold: an empty cache (the first "
            "child compiles, the others read what it wrote); warm: a restart.")
        add("")
        add("| code cache | first child ms | other children, median ms | max ms | "
            "compiled | from cache |")
        add("|---|---:|---:|---:|---:|---:|")
        for mode in ("off", "cold", "warm"):
            r = st.get(mode)
            if r:
                add(f"| {mode} | {f_ms(r['first_ms'], 1)} | {f_ms(r['others_ms'], 1)} | "
                    f"{f_ms(r['max_ms'], 1)} | {r['compiled']} | {r['from_cache']} |")
        add("")


def targets_codecache(res):
    cc = res.get("codecache")
    label = (f"compiled once per host: {CC_CHILDREN} children's loading ≤ "
             f"{T_CC_RATIO:.0f}× one child's compile+exec")
    if not cc:
        return [target_line(label, None, "–")]
    on, off = cc["on"], cc["off"]
    one = off["cpu_ms"] / CC_CHILDREN
    r = ratio(on["cpu_ms"], one)
    return [target_line(label, r <= T_CC_RATIO,
                        f"{r:.2f}× ({on['cpu_ms']:.1f} ms vs {one:.1f} ms for one child; "
                        f"without the cache {ratio(off['cpu_ms'], one):.2f}×; "
                        f"{ratio(on['cpu_ms'], on['cpython_ms']):.2f}× CPython's own)")]


# --------------------------------------------------------------------------
# Report

def sh(cmd):
    try:
        r = subprocess.run(cmd, env=CLEAN_ENV, capture_output=True, text=True,
                           timeout=30)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"({e})"


def file_sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def snapshot_pyreload(work, base_so=None):
    """Servers load a copy of ./mod_pyreload.so taken now, so that a rebuild
    during the run cannot leave servers on different builds."""
    shutil.copy2(PYRELOAD_SO, work / PYRELOAD_SO.name)
    if base_so:
        shutil.copy2(base_so, work / BASE_SO_NAME)
    return file_sha(work / PYRELOAD_SO.name)


def machine_and_versions():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    apache = sh(["apache2", "-v"]).splitlines()
    pkgs = sh(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "apache2",
               "libapache2-mod-wsgi-py3", "libapache2-mod-python", "wrk",
               "python3-flask"])
    so = "not built"
    if PYRELOAD_SO.exists():
        st = PYRELOAD_SO.stat()
        ver = re.search(r'PYR_VERSION "([^"]+)"', PYRELOAD_H.read_text()) \
            if PYRELOAD_H.exists() else None
        rev = sh(["git", "-C", str(REPO), "describe", "--always", "--dirty"])
        so = (f"{ver.group(1) if ver else '?'}, source {rev}, ./mod_pyreload.so "
              f"built {time.strftime('%Y-%m-%d %H:%M', time.localtime(st.st_mtime))}"
              f", sha256 {file_sha(PYRELOAD_SO)[:12]}")
    return {
        "cpu": cpu, "cores": os.cpu_count(), "mem": mem,
        "kernel": os.uname().release,
        "apache": apache[0].split(":", 1)[-1].strip() if apache else "?",
        "python": sh([SYSTEM_PYTHON, "-VV"]).replace("\n", " "),
        "packages": pkgs.splitlines(), "pyreload": so,
        "wrk": sh(["wrk", "-v"]).splitlines()[0] if sh(["wrk", "-v"]) else "?",
    }


def f_rps(v):
    return "–" if v != v else f"{v:,.0f}"


def f_ms(v, digits=3):
    return "–" if v != v else f"{v:.{digits}f}"


def f_x(v):
    return "–" if v != v else f"{v:.2f}×"


def ratio(a, b):
    return a / b if b and a == a and b == b else float("nan")


def target_line(label, ok, figure):
    if ok is None:
        return f"| {label} | not measured | {figure} |"
    return f"| {label} | {'met' if ok else '**NOT met**'} | {figure} |"


def render(settings, info, res, started, elapsed):
    L = []
    add = L.append
    add("# mod_pyreload benchmark")
    add("")
    add(f"Run {time.strftime('%Y-%m-%d %H:%M', time.localtime(started))}, "
        f"{elapsed / 60:.1f} min. Everything on 127.0.0.1.")
    if res.get("incomplete"):
        add("")
        add(f"**INCOMPLETE: {res['incomplete']}**")
    add("")
    add("## Machine and versions")
    add("")
    add(f"- CPU: {info['cpu']}, {info['cores']} cores, {info['mem']} RAM, "
        f"Linux {info['kernel']}")
    add(f"- Load average at start / end: {res['load_start']} / {res['load_end']}; "
        f"other apache2 processes at start: {res['others']}"
        + (" (they may disturb the figures)" if res["others"] else ""))
    add(f"- {info['apache']}, MPM {settings.mpm}")
    add(f"- {info['python']} ({SYSTEM_PYTHON}; mod_wsgi and mod_python use the "
        "same Python through libpython3.11.so)")
    for p in info["packages"]:
        add(f"- package {p}")
    add(f"- {info['wrk']}")
    add(f"- mod_pyreload {info['pyreload']}; the servers load a copy taken "
        "at the start of the run")
    if res.get("so_changed"):
        add("- **./mod_pyreload.so was rebuilt during the run**; the figures are "
            "all from the build the run started with")
    add("")
    add("## Command")
    add("")
    cmd = "/usr/bin/python3 bench/run.py"
    if settings.knobs():
        cmd = f"{settings.knobs()} {cmd}"
    if os.environ.get("MAKELEVEL"):
        cmd = f"make bench  # ran: {cmd}"
    add("```")
    add(cmd)
    add("```")
    add("")
    add(f"Settings: contenders {', '.join(settings.kinds)}; parts "
        f"{', '.join(settings.parts)}; {settings.rounds} rounds, contenders "
        f"alternating, one under load at a time; per contender and round a "
        f"{settings.warmup} s warm-up, then `wrk -t1 -c{settings.conns} "
        f"-d{settings.duration}s --latency` and `wrk -t1 -c1 "
        f"-d{settings.duration}s --latency`. Figures are medians over the rounds.")
    add("")
    mpm_lines = ", ".join(MPM_CONF[settings.mpm].split("\n")
                          + ["MaxConnectionsPerChild 0"])
    add(f"Apache (every contender): MPM {settings.mpm} ({mpm_lines}), KeepAlive "
        "On, MaxKeepAliveRequests 0, AllowOverride None, no access log, "
        "LogLevel warn.")
    add("")

    failures = res.get("failures", {})
    if failures:
        add("## Failures")
        add("")
        for k, msg in failures.items():
            add(f"- **{k}**:")
            add("```")
            add(msg.rstrip())
            add("```")
        add("")

    for pinned in (False, True):
        tp = res.get(THROUGHPUT_KEY[pinned])
        if not tp:
            continue
        c = tp.get("c", {})
        add("## Throughput: hello world, WSGI hello world, Flask"
            + (" (pinned)" if pinned else ""))
        add("")
        if pinned:
            add(f"Pinned mode: while a contender is measured, every thread of "
                f"its server runs on CPU {CPUS[0]} (`taskset`, "
                f"sched_setaffinity) and wrk on CPU {CPUS[1]} (`taskset -c "
                f"{CPUS[1]}`), so that the client's CPU does not cap the "
                "server; one CPU serves.")
            add("")
        add("c, pyreload, pyreload-nocheck and modpython serve their own hello "
            "handler; wsgi-pyreload, wsgi-embedded and wsgi-daemon the same WSGI "
            "file (`WSGI_HELLO`); flask-pyreload and flask-embedded the same "
            "Flask app file (`FLASK_APP`, Debian's python3-flask; mod_wsgi with "
            "its default application group). Every body is checked first.")
        add("")
        add(f"| contender | URL | req/s c{settings.conns} | ×c | p50 ms | p99 ms | "
            f"CPU µs/req c{settings.conns} | "
            "req/s c1 | ×c | p50 ms | p99 ms | spread | errors | RSS MB | procs | "
            "framing |")
        add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            "---:|---|")
        for k in settings.kinds:
            if k not in tp:
                continue
            r = tp[k]
            add(f"| {k} | {KIND_URL[k][0]} | {f_rps(r['many_rps'])} | "
                f"{f_x(ratio(r['many_rps'], c.get('many_rps')))} | "
                f"{f_ms(r['many_p50'])} | {f_ms(r['many_p99'])} | "
                f"{f_ms(r['many_cpu_us'], 1)} | "
                f"{f_rps(r['one_rps'])} | "
                f"{f_x(ratio(r['one_rps'], c.get('one_rps')))} | "
                f"{f_ms(r['one_p50'])} | {f_ms(r['one_p99'])} | "
                f"{r['spread'] * 100:.0f} % | {r['errors']} | "
                f"{r['rss_mb']:.1f} | {r['procs']} | {r['framing']} |")
        add("")
        add(f"spread: (max − min) ÷ median of the c{settings.conns} req/s over "
            "the rounds; a large spread means something else was using the CPU. "
            f"CPU µs/req: user + system CPU of the server's processes during the "
            f"c{settings.conns} run ÷ the requests wrk counted, the figure that "
            "other jobs on the machine disturb least. "
            "RSS: summed VmRSS of the server's children after the run. "
            "framing: how the body was delimited."
            + ("" if pinned else " wrk runs on the same cores, "
               f"so at c{settings.conns} the client's share of the CPU caps "
               "every contender, the C ceiling included."))
        add("")
        for which, label in (("many_rps", f"c{settings.conns}"), ("one_rps", "c1")):
            ks = [k for k in settings.kinds if k in tp]
            add(f"Ratios, req/s at {label} (row ÷ column):")
            add("")
            add("| | " + " | ".join(ks) + " |")
            add("|---|" + "---:|" * len(ks))
            for a in ks:
                add(f"| {a} | " + " | ".join(
                    f_x(ratio(tp[a][which], tp[b][which])) for b in ks) + " |")
            add("")
        pages = [k for k in FLASK_KINDS if k in tp]
        if pages:
            add(f"Flask template route `{FLASK_PAGE[0]}` (render_template), "
                f"wrk -c{settings.conns}, median over the rounds:")
            add("")
            add(f"| contender | req/s c{settings.conns} | p99 ms |")
            add("|---|---:|---:|")
            for k in pages:
                add(f"| {k} | {f_rps(tp[k]['page_rps'])} | "
                    f"{f_ms(tp[k]['page_p99'])} |")
            if len(pages) == 2:
                add(f"| flask-pyreload ÷ flask-embedded | "
                    f"{f_x(ratio(tp[pages[0]]['page_rps'], tp[pages[1]]['page_rps']))}"
                    " | |")
            add("")
        add("Per round (req/s c{0} / c1):".format(settings.conns))
        add("")
        for k in settings.kinds:
            if k in tp:
                add(f"- {k}: " + ", ".join(f"{a:,.0f} / {b:,.0f}"
                                          for a, b in tp[k]["rounds"]))
        add("")

    ck = res.get("check")
    if ck:
        add("## Cost of checking: handler importing 20 modules")
        add("")
        add("`/deps` runs `deps/handler.py`, which imports dep01 … dep20 (files "
            "next to it, ~30 lines each). Same servers as pyreload and "
            "pyreload-nocheck above.")
        add("")
        if "cost" in ck:
            add(f"| | req/s c{settings.conns} |")
            add("|---|---:|")
            add(f"| pyreload (checking every request) | {f_rps(ck['check_rps'])} |")
            add(f"| pyreload-nocheck (PyReloadCheck Off) | {f_rps(ck['nocheck_rps'])} |")
            add(f"| cost of checking | {ck['cost'] * 100:.1f} % |")
            add("")
            add("Per round (checking / off): " + ", ".join(
                f"{a:,.0f} / {b:,.0f}" for a, b in ck["rounds"]))
            add("")
            add(f"Dependency tracking: {ck['tracking']}.")
        else:
            add(ck.get("error") or ck.get("skipped"))
        add("")

    rl = res.get("latency")
    tname = settings.reload_target
    if rl or res.get("cost") or res.get("memory"):
        add(f"## Reload figures ({tname})")
        add("")
        add("One child process: event MPM, ServerLimit 1, StartServers 1, "
            "ThreadsPerChild 16, LogLevel info; latency and cost share one "
            "server, memory has a fresh one. Saves are atomic (temp file + "
            "os.rename, mtime set strictly increasing).")
        add("")
    if rl:
        add("### Reload latency")
        add("")
        add(f"{rl['saves']} saves, each with a new body marker, 2–10 ms apart; "
            "one client thread requests in a loop on one keep-alive connection. "
            "Latency = rename → first response carrying the new body.")
        add("")
        add("| median ms | p99 ms | max ms | saves seen | stale bodies after a new one "
            "| responses | unchanged request ms |")
        add("|---:|---:|---:|---:|---:|---:|---:|")
        add(f"| {f_ms(rl['median_ms'])} | {f_ms(rl['p99_ms'])} | "
            f"{f_ms(rl['max_ms'])} | {rl['measured']}/{rl['saves']} | "
            f"{rl['stale']} | {rl['responses']} | {f_ms(rl['plain_ms'])} |")
        if rl["bad"] or rl["error"]:
            add("")
            add(f"Unexpected: {rl['error'] or ''} {rl['bad']}")
        add("")
    co = res.get("cost")
    if co:
        add("### Reload cost")
        add("")
        add(f"Median of {settings.cost_reps} reloads per size after a first load "
            "(a changed MARK line each time). CPython: compile()+exec() of the "
            f"same file into a fresh module in `{SYSTEM_PYTHON} -I`, median of "
            "several runs in the same bench run (gc.collect() before each run; "
            "earlier modules are kept, so no deallocation is timed). The "
            "in-Apache column is the same measurement inside a mod_wsgi "
            "embedded child, i.e. through the shared libpython3.11.so that "
            "Apache modules use (`/usr/bin/python3` has libpython linked in "
            "statically), for reference.")
        add("")
        add("| lines | reload ms | measured by | CPython compile+exec ms | ratio "
            "| CPython read+compile+exec ms | in-Apache compile+exec ms | ratio "
            "| save → new body ms |")
        add("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        for n, r in co["rows"].items():
            add(f"| {n:,} | {f_ms(r['reload_ms'])} | {r['method']} | "
                f"{f_ms(r['cpython_ms'])} | {f_x(r['ratio'])} | "
                f"{f_ms(r['cpython_read_ms'])} | {f_ms(r['wsgi_ms'])} | "
                f"{f_x(ratio(r['reload_ms'], r['wsgi_ms']))} | "
                f"{f_ms(r['client_ms'])} |")
            for p in r["problems"]:
                add(f"| | problem: {p} | | | | | | | |")
        add("")
        add(f"Unchanged request (client side): {f_ms(co['plain_ms'])} ms. "
            f"Child VmRSS before / after this part: {co['rss_before']} / "
            f"{co['rss_after']} KiB; then a handler ran gc.collect() in the child "
            f"({co['gc']} objects): {co['rss_gc']} KiB. For scale, the same "
            f"{settings.cost_reps + 1} loads per size in a plain "
            f"`{SYSTEM_PYTHON}`, each replacing the last: "
            f"{co.get('cpython_rss', '?')} KiB.")
        add("")
    mm = res.get("memory")
    if mm:
        add("### Memory over reloads")
        add("")
        add(f"Child VmRSS after {mm['warmup']} warm-up reloads, then "
            f"{mm['reloads']:,} reloads (atomic save, one request, body checked).")
        add("")
        add("| before KiB | after KiB | growth KiB | per 1,000 reloads KiB | "
            "per 10,000 MiB | ms per reload | wrong bodies | loads logged | "
            "same child |")
        add("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        add(f"| {mm['before_kib']} | {mm['after_kib']} | {mm['growth_kib']} | "
            f"{mm['per_1000_kib']:.1f} | {mm['per_10000_mib']:.2f} | "
            f"{mm['ms_per_reload']:.2f} | {mm['mismatch']} | {mm['loads_logged']} | "
            f"{'yes' if mm['same_child'] else 'NO'} |")
        add("")
        add("VmRSS (KiB) by reloads done: " + ", ".join(
            f"{i:,}: {kib}" for i, kib in mm["samples"]))
        add("")
        if mm["extra_requests"]:
            add(f"Requests that still got the previous body (then retried): "
                f"{mm['extra_requests']}.")
            add("")
    render_codecache(settings, res, add)
    rs = res.get("rss")
    if rs:
        add(f"### Memory after {rs['reloads']} reloads of a {rs['lines']:,}-line module")
        add("")
        add(f"One child (a fresh server), the module loaded, then {rs['reloads']} "
            "saves, each served once; VmRSS half a second after the last. "
            f"`{SYSTEM_PYTHON} -I` compiles and executes the same "
            f"{rs['reloads'] + 1} versions in turn, each module replacing the "
            "last, and reports its VmRSS.")
        add("")
        add("| child before KiB | child after KiB | python3 KiB | ratio | same child |")
        add("|---:|---:|---:|---:|---|")
        add(f"| {rs['before_kib']} | {rs['after_kib']} | {rs['python_kib']} | "
            f"{rs['ratio']:.2f}× | {'yes' if rs['same_child'] else 'NO'} |")
        add("")
    for part, msg in res.get("part_errors", {}).items():
        add(f"**{part} failed:** {msg}")
        add("")

    add("## Targets")
    add("")
    add("| target | result | figure |")
    add("|---|---|---|")
    for line in targets(settings, res):
        add(line)
    add("")
    return "\n".join(L)


def throughput_targets(settings, tp, suffix):
    """The throughput targets on one mode's results (suffix names it)."""
    out = []

    def vs(other, need, label, kind="pyreload"):
        if kind not in tp or other not in tp:
            return target_line(label, None, "–")
        me = tp[kind]
        r = ratio(me["many_rps"], tp[other]["many_rps"])
        return target_line(label, r >= need,
                           f"{r:.2f}× ({me['many_rps']:,.0f} vs "
                           f"{tp[other]['many_rps']:,.0f} req/s)")
    c16 = f"c{settings.conns}{suffix}"
    out.append(vs("c", T_VS_C, f"pyreload ≥ {T_VS_C:.2f}× c at {c16}"))
    if "pyreload-base" in settings.kinds:
        out.append(vs("pyreload-base", T_VS_BASE,
                      f"no regression: pyreload ≥ {T_VS_BASE}× pyreload-base "
                      f"(BASE_SO) at {c16}"))
        if "pyreload" in tp and "pyreload-base" in tp:
            a, b = tp["pyreload"]["many_cpu_us"], tp["pyreload-base"]["many_cpu_us"]
            out.append(target_line(
                f"no regression{suffix}: server CPU per request ≤ {1 / T_VS_BASE:.2f}× "
                f"pyreload-base's at {c16}", a <= b / T_VS_BASE,
                f"{ratio(a, b):.2f}× ({a:.1f} vs {b:.1f} µs)"))
    out.append(vs("wsgi-embedded", T_VS_PEER,
                  f"pyreload ≥ {T_VS_PEER}× wsgi-embedded at {c16}"))
    out.append(vs("modpython", T_VS_PEER,
                  f"pyreload ≥ {T_VS_PEER}× modpython at {c16}"))
    out.append(vs("wsgi-embedded", T_WSGI_VS_PEER,
                  f"WSGI hello: wsgi-pyreload ≥ {T_WSGI_VS_PEER}× wsgi-embedded "
                  f"at {c16}", "wsgi-pyreload"))
    out.append(vs("c", T_WSGI_VS_C,
                  f"WSGI hello: wsgi-pyreload ≥ {T_WSGI_VS_C:.2f}× c at {c16}",
                  "wsgi-pyreload"))
    out.append(vs("flask-embedded", T_FLASK_VS_PEER,
                  f"Flask: flask-pyreload ≥ {T_FLASK_VS_PEER:.1f}× flask-embedded "
                  f"at {c16}", "flask-pyreload"))
    label = (f"Flask template route: flask-pyreload ≥ {T_FLASK_VS_PEER:.1f}× "
             f"flask-embedded at {c16}")
    if all(k in tp for k in FLASK_KINDS):
        a, b = (tp[k]["page_rps"] for k in FLASK_KINDS)
        out.append(target_line(label, ratio(a, b) >= T_FLASK_VS_PEER,
                               f"{f_x(ratio(a, b))} ({a:,.0f} vs {b:,.0f} req/s)"))
    else:
        out.append(target_line(label, None, "–"))
    return out


def targets(settings, res):
    out = []
    for pinned in settings.pin_modes:
        out += throughput_targets(settings, res.get(THROUGHPUT_KEY[pinned]) or {},
                                  " (pinned)" if pinned else "")
    tp = res.get("throughput") or {}
    p = tp.get("pyreload")
    ck = res.get("check") or {}
    if "cost" in ck:
        out.append(target_line(f"checking costs ≤ {T_CHECK_COST:.0%} (20 imported "
                               "modules)", ck["cost"] <= T_CHECK_COST,
                               f"{ck['cost'] * 100:.1f} % "
                               f"({'dependency tracking' if ck['tracking'].startswith('yes') else 'handler file only'})"))
    else:
        out.append(target_line(f"checking costs ≤ {T_CHECK_COST:.0%} "
                               "(20 imported modules)", None, "–"))
    if p is not None and "pyreload-nocheck" in tp:
        cost = 1.0 - p["many_rps"] / tp["pyreload-nocheck"]["many_rps"]
        out.append(target_line(f"checking costs ≤ {T_CHECK_COST:.0%} (hello, "
                               "one file)", cost <= T_CHECK_COST,
                               f"{cost * 100:.1f} %"))
    tgt = "" if settings.reload_target == "pyreload" else \
        f" [{settings.reload_target}]"
    rl = res.get("latency")
    if rl:
        out.append(target_line(f"reload latency median < {T_RELOAD_MS} ms{tgt}",
                               rl["median_ms"] < T_RELOAD_MS and not rl["missed"],
                               f"{rl['median_ms']:.3f} ms (p99 {rl['p99_ms']:.3f}, "
                               f"{rl['missed']} saves never seen)"))
        out.append(target_line(f"no stale body after a new one{tgt}",
                               rl["stale"] == 0 and not rl["error"],
                               f"{rl['stale']} stale of {rl['responses']} responses"))
    else:
        out.append(target_line(f"reload latency median < {T_RELOAD_MS} ms", None, "–"))
        out.append(target_line("no stale body after a new one", None, "–"))
    co = res.get("cost")
    if co:
        for n, r in co["rows"].items():
            out.append(target_line(
                f"reload cost ≤ {T_COST_RATIO}× CPython compile+exec, "
                f"{n:,} lines{tgt}", r["ratio"] <= T_COST_RATIO,
                f"{r['ratio']:.2f}× ({r['reload_ms']:.3f} vs {r['cpython_ms']:.3f} ms)"))
    else:
        out.append(target_line(f"reload cost ≤ {T_COST_RATIO}× CPython", None, "–"))
    mm = res.get("memory")
    if mm:
        out.append(target_line(
            f"≤ {T_MEM_MIB_PER_10K:.0f} MiB RSS growth per 10,000 reloads{tgt}",
            mm["per_10000_mib"] <= T_MEM_MIB_PER_10K and mm["same_child"]
            and not mm["mismatch"],
            f"{mm['per_10000_mib']:.2f} MiB ({mm['growth_kib']} KiB over "
            f"{mm['reloads']:,}; {mm['mismatch']} wrong bodies)"))
    else:
        out.append(target_line(f"≤ {T_MEM_MIB_PER_10K:.0f} MiB RSS growth per "
                               "10,000 reloads", None, "–"))
    out += targets_codecache(res)
    rs = res.get("rss")
    label = (f"child RSS after {RSS_RELOADS} reloads of a {RSS_LINES:,}-line module "
             f"≤ {T_RSS_RATIO}× python3 doing the same{tgt}")
    if rs:
        out.append(target_line(label, rs["ratio"] <= T_RSS_RATIO and rs["same_child"],
                               f"{rs['ratio']:.2f}× ({rs['after_kib']:,} vs "
                               f"{rs['python_kib']:,} KiB)"))
    else:
        out.append(target_line(label, None, "–"))
    return out


# --------------------------------------------------------------------------

def on_signal(signum, frame):
    raise SystemExit(128 + signum)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    # Ctrl-C, kill and hang-up all unwind through main()'s finally, which
    # stops every server (SIGINT explicitly: a background job inherits it
    # ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    os.umask(0o022)
    settings = Settings()
    if settings.uses_pyreload() and not PYRELOAD_SO.exists():
        raise BenchError(f"{PYRELOAD_SO} is missing: run `make` first, or set "
                         "KINDS=c,wsgi-embedded,wsgi-daemon,modpython,flask-embedded "
                         "RELOAD_TARGET=wsgi-embedded")
    started = time.time()
    res = {"load_start": loadavg(), "failures": {}, "part_errors": {}}
    stop_leftovers(settings.work)
    if settings.work.exists():
        shutil.rmtree(settings.work)
    settings.work.mkdir(parents=True)
    os.chmod(settings.work, 0o755)
    res["others"] = apache_count()
    info = machine_and_versions()
    so_sha = snapshot_pyreload(settings.work, settings.base_so) if settings.uses_pyreload() else None
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    partial = settings.out.with_name(settings.out.name + ".tmp")
    try:
        cmod = None
        if "c" in contender_kinds(settings):
            log(f"building the C handler; work dir {settings.work}")
            cmod = build_c_module(settings.work)
        servers, res["failures"] = start_contenders(settings, cmod)
        if "throughput" in settings.parts:
            for pinned in settings.pin_modes:
                res[THROUGHPUT_KEY[pinned]] = measure_throughput(
                    servers, settings, res["failures"], pinned)
        if "check" in settings.parts:
            res["check"] = measure_check_cost(servers, settings, res["failures"])
        if any(p in settings.parts for p in ("latency", "cost", "memory", "rss")):
            run_reload_parts(settings, servers, res)
        run_codecache_parts(settings, res)
    except BaseException as e:
        res["incomplete"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        log("stopping servers")
        stop_servers(list(Server.registry), settings.stop_wait)
        res["load_end"] = loadavg()
        res["so_changed"] = so_sha is not None and (
            not PYRELOAD_SO.exists() or file_sha(PYRELOAD_SO) != so_sha)
        report = render(settings, info, res, started, time.time() - started)
        partial.write_text(report + "\n")
        if not res.get("incomplete"):
            os.replace(partial, settings.out)
            print(report)
            log(f"report written to {settings.out}")
        else:
            log(f"incomplete report left in {partial}")
    return 1 if res["failures"] or res["part_errors"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
