# mod_pyreload: build, test, demo and benchmark.
#
#   make            build ./mod_pyreload.so (apxs + Debian's system Python)
#   make check      install what is missing, build, run every test
#   make demo       install what is missing, build, serve examples/ on 127.0.0.1:8080
#   make stop       stop the demo server
#   make bench      install what is missing, build, compare against the peers
#   make install    install the module with apxs
#
# PYTHON_CONFIG=/path/to/python3-config picks another (embeddable) Python.

APXS          ?= apxs
PYTHON_CONFIG ?= /usr/bin/python3-config
CC            ?= cc
DEMO_PORT     ?= 8080

# Packages a fresh Debian 12 needs; installed only when one is missing.
DEB_BUILD  = apache2 apache2-dev python3-dev libpython3-dev check libcurl4-openssl-dev pkg-config
DEB_BENCH  = wrk libapache2-mod-wsgi-py3 libapache2-mod-python

PY_INCLUDES := $(shell $(PYTHON_CONFIG) --includes 2>/dev/null)
PY_LDFLAGS  := $(shell $(PYTHON_CONFIG) --embed --ldflags 2>/dev/null)
PY_LIBDIR   := $(shell $(PYTHON_CONFIG) --configdir 2>/dev/null)
AP_INCLUDES := -I$(shell $(APXS) -q INCLUDEDIR 2>/dev/null) \
               $(shell apr-1-config --includes --cppflags 2>/dev/null)
APR_LIBS    := $(shell apr-1-config --link-ld 2>/dev/null)
CHECK_FLAGS := $(shell pkg-config --cflags --libs check 2>/dev/null)
CURL_FLAGS  := $(shell pkg-config --cflags --libs libcurl 2>/dev/null)

comma   := ,
WARN     = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers
CFLAGS  ?= -O2 -g
CPPFLAGS_ALL = -Iinclude -Isrc $(PY_INCLUDES) $(AP_INCLUDES)

# The engine: no httpd header, unit-tested without Apache.
ENGINE_SRC = src/log.c src/interp.c src/exc.c src/stdio.c src/source.c src/spec.c src/engine.c src/loader.c src/notify.c \
             src/table.c src/pymod.c
ENGINE_SRC += src/procguard.c src/shutdown.c
# httpd-side Python glue.
GLUE_SRC   = src/request.c src/child.c
MODULE_SRC = mod_pyreload.c $(GLUE_SRC) $(ENGINE_SRC)
HEADERS    = include/pyreload.h $(wildcard src/*.h)

UNIT_SRC   = $(wildcard tests/unit_*.c)
IT_SRC     = $(wildcard tests/it_*.c) tests/httpd.c

.PHONY: all deps deps-bench check unit it demo stop bench install clean

all: mod_pyreload.so

mod_pyreload.so: $(MODULE_SRC) $(HEADERS) Makefile
	@mkdir -p build
	$(APXS) -c -o build/mod_pyreload.la -Wc,-std=gnu11 $(addprefix -Wc$(comma),$(WARN)) \
	    -Iinclude -Isrc $(PY_INCLUDES) $(PY_LDFLAGS) $(MODULE_SRC) >build/apxs.log 2>&1 \
	    || { cat build/apxs.log; exit 1; }
	@grep -E ': (warning|error):' build/apxs.log || true
	@# A new inode: a running server that has the old one mapped keeps working.
	cp build/.libs/mod_pyreload.so $@.tmp && mv -f $@.tmp $@
	@rm -rf *.lo *.slo src/*.lo src/*.slo src/*.o *.o *.la src/*.la .libs src/.libs

tests/unit_runner: $(UNIT_SRC) tests/unit.h $(ENGINE_SRC) $(HEADERS) Makefile
	$(CC) -std=gnu11 $(CFLAGS) $(WARN) $(CPPFLAGS_ALL) -o $@ $(UNIT_SRC) $(ENGINE_SRC) \
	    $(PY_LDFLAGS) $(APR_LIBS) $(CHECK_FLAGS) -lpthread

tests/it_runner: $(IT_SRC) tests/httpd.h Makefile
	$(CC) -std=gnu11 $(CFLAGS) $(WARN) -Itests -o $@ $(IT_SRC) $(CURL_FLAGS) $(CHECK_FLAGS) -lpthread

# Install only what is missing, so that a machine that has it all needs no network.
deps:
	@./tools/ensure-packages $(DEB_BUILD)

deps-bench:
	@./tools/ensure-packages $(DEB_BUILD) $(DEB_BENCH)

check: deps
	$(MAKE) all tests/unit_runner tests/it_runner
	$(MAKE) unit it

unit: tests/unit_runner
	CK_DEFAULT_TIMEOUT=60 ./tests/unit_runner

it: tests/it_runner mod_pyreload.so
	PYR_MODULE=$(CURDIR)/mod_pyreload.so CK_DEFAULT_TIMEOUT=120 ./tests/it_runner

demo: deps
	$(MAKE) all
	./tools/demo start $(DEMO_PORT)

stop:
	./tools/demo stop

bench: deps-bench
	$(MAKE) all
	/usr/bin/python3 bench/run.py

install: mod_pyreload.so
	$(APXS) -i -n pyreload mod_pyreload.so

clean:
	rm -rf build mod_pyreload.so tests/unit_runner tests/it_runner *.lo *.slo src/*.lo src/*.slo .libs src/.libs
