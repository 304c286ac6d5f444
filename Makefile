# fastmesh — `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV     ?= .venv
PY       := $(VENV)/bin/python
CACHE    ?= $(HOME)/.cache/fastmesh
# Rust build outputs live outside the clone, so a fresh clone on the same machine reuses them.
export CARGO_TARGET_DIR ?= $(CACHE)/cargo-target
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Real peers the tests and benchmarks meet: curl, wrk, h2load (nghttp2-client), nginx, HAProxy.
RUST_SRC := $(shell find rust/src -name '*.rs' 2>/dev/null) rust/Cargo.toml
ENGINE   := $(VENV)/.engine-built
# Cython modules (ext/, setup.py) built beside the sources into src/fastmesh/_ext/; without them the
# pure-Python path runs (fastmesh.config.fastpath).
EXT_SRC  := $(wildcard ext/*.pyx ext/*.pxd ext/includes/*.pxd) setup.py
EXT      := $(VENV)/.ext-built

.PHONY: help setup system-deps engine ext test test-rust test-python stubtest demo bench bench-kube-scale bench-control-e2e fortio h2spec clean \
        testcluster-build testcluster testcluster-stop

help:
	@echo "make demo   - set up, build the engine (release) and run the demo mesh"
	@echo "make test   - set up and run every test (Rust and Python)"
	@echo "make ext    - build the Cython modules of ext/ (part of make engine; the pure-Python path runs without them)"
	@echo "make bench  - benchmarks against nginx and HAProxy (bench/)"
	@echo "make bench-kube-scale - config compile at 10,000 Services / 100,000 endpoints (bench/kube_scale.py)"
	@echo "make bench-control-e2e - fastmesh control + 5 proxies at 10,000 Services in a real apiserver (bench/control_e2e.py)"
	@echo "make testcluster - start kube-apiserver + etcd on loopback (deploy/testcluster/); testcluster-stop stops it"

system-deps:
	@python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "fastmesh needs Python >= 3.11 as python3 (found $$(python3 -V 2>&1))"; exit 1; }
	@missing=""; for c in curl:curl wrk:wrk h2load:nghttp2-client nginx:nginx-light haproxy:haproxy cc:build-essential; do \
	  command -v $${c%%:*} >/dev/null || missing="$$missing $${c#*:}"; done; \
	python3 -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then echo "==> apt-get install$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	  $(SUDO) systemctl disable --now nginx haproxy >/dev/null 2>&1 || true; fi
	@# The Kubernetes tests' upstreams: an apiserver refuses loopback IPs in EndpointSlices, and a FQDN needs a dot.
	@grep -qs '^127.0.0.1 localhost.fastmesh.test$$' /etc/hosts || { echo "==> /etc/hosts: 127.0.0.1 localhost.fastmesh.test"; \
	  echo '127.0.0.1 localhost.fastmesh.test' | $(SUDO) tee -a /etc/hosts >/dev/null; }
	@command -v cargo >/dev/null || { echo "==> installing Rust (rustup)"; \
	  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null; }

$(VENV)/.deps: pyproject.toml
	@echo "==> Python virtualenv in $(VENV)"
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "maturin>=1.7,<2"
	touch $@

setup: system-deps $(VENV)/.deps

# The engine as it ships: release, profile-guided (bench/pgo.py: an instrumented build, a training
# load through a real `fastmesh proxy`, llvm-profdata merge, the optimised build; when a step fails
# it says so and builds the plain release engine). FASTMESH_PGO=0: the plain release build only
# (quicker, for iterating); FASTMESH_PGO=require: fail instead of falling back. What was built is
# in $(VENV)/.engine-build, and `make test` prints it. Switching FASTMESH_PGO on unchanged sources:
# rm $(VENV)/.engine-built first.
FASTMESH_PGO ?= 1
MATURIN_RELEASE := $(VENV)/bin/maturin develop --release -q -E test,ext
$(ENGINE): $(VENV)/.deps $(RUST_SRC) pyproject.toml bench/pgo.py
	@echo "==> building the engine (release; profile-guided unless FASTMESH_PGO=0; first build takes a few minutes)"
	export PATH="$(HOME)/.cargo/bin:$$PATH" VIRTUAL_ENV=$(abspath $(VENV)); \
	if [ "$(FASTMESH_PGO)" = 0 ]; then $(MATURIN_RELEASE); echo "release (plain: FASTMESH_PGO=0)" > $(VENV)/.engine-build; \
	else FASTMESH_CACHE=$(CACHE) $(PY) -m bench.pgo --record $(VENV)/.engine-build \
	  $(if $(filter require,$(FASTMESH_PGO)),--require) -- $(MATURIN_RELEASE); fi
	touch $@

# Cython and setuptools come with the engine (the `ext` extra of pyproject.toml).
$(EXT): $(ENGINE) $(EXT_SRC)
	@echo "==> building the Cython modules of ext/ (setup.py build_ext)"
	$(PY) -W ignore setup.py -q build_ext --inplace
	touch $@

ext: setup $(EXT)

engine: setup $(ENGINE) $(EXT)

test-rust: setup
	@echo "==> Rust tests"
	cd rust && PATH="$(HOME)/.cargo/bin:$$PATH" cargo test --no-default-features -q

stubtest: engine
	@echo "==> checking src/fastmesh/_engine.pyi against the built module"
	$(PY) -m mypy.stubtest fastmesh._engine

# kube-apiserver, etcd and kubectl from the Go module proxy, once per Kubernetes version (cached in $(CACHE)).
TESTCLUSTER := FASTMESH_CACHE=$(CACHE) $(PY) deploy/testcluster/cluster.py
testcluster-build: setup $(VENV)/.deps
	@echo "==> kube-apiserver, etcd, kubectl for the Kubernetes tests (deploy/testcluster/)"
	$(TESTCLUSTER) build

testcluster: engine testcluster-build
	$(TESTCLUSTER) start

testcluster-stop:
	$(TESTCLUSTER) stop

test-python: engine testcluster-build
	@echo "==> Python tests"
	$(PY) -m pytest -q

test: test-rust stubtest test-python
	@echo "==> the engine tested: $$(cat $(VENV)/.engine-build 2>/dev/null || echo unknown)"

demo: engine
	$(PY) -m fastmesh.demo

# fortio (fixed-rate latency, bench/fortio.py): `go install` from the Go module proxy into
# $(CACHE)/fortio-<version>, once per version; without Go the rate scenarios fall back to h2load.
fortio: setup
	FASTMESH_CACHE=$(CACHE) $(PY) -m bench.fortio

# h2spec (HTTP/2 conformance, tests/engine/test_h2spec.py; the test builds it too when missing).
h2spec: setup
	FASTMESH_CACHE=$(CACHE) $(PY) -m bench.h2spec

bench: engine fortio
	FASTMESH_CACHE=$(CACHE) $(PY) bench/run.py

# Issue 6: 10,000 Services / 100,000 endpoints through the incremental compiler (bench/kube_scale.py).
bench-kube-scale: engine
	$(PY) bench/kube_scale.py

# Issue 6 end to end: the cluster created in the test apiserver, fastmesh control, 5 proxies (bench/control_e2e.py).
bench-control-e2e: engine testcluster-build
	FASTMESH_CACHE=$(CACHE) $(PY) bench/control_e2e.py

clean:
	rm -rf $(VENV) build dist ext/*.c src/fastmesh/_ext/*.so
