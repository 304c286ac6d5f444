#!/bin/bash
# Instructions per request of `fastmesh proxy` under callgrind (bench/README.md, "Profiles"):
# an nginx upstream on CPU 1, 2,000 warm-up requests, then 20,000 counted ones with h2load.
# Instruction counts barely depend on machine load, so this compares builds on a busy machine.
# usage: bench/profile/callgrind.sh LABEL [h1|h2c]   (from any directory; needs valgrind, nginx, h2load)
#   prints "LABEL MODE Ir/req: N (file)"; keeps the callgrind file for callgrind_annotate.
#   CG_SRC: the directory holding the `fastmesh` package to run (default src; an engine build's
#   overlay from bench.targets.engine_overlay to profile another build); CG_OPTS: more valgrind
#   options (`--cache-sim=yes --branch-sim=yes`: estimated I1/LL misses and mispredicts per request;
#   `--dump-instr=yes` for memcpy_sites.py).
set -u
LABEL=$1; MODE=${2:-h1}
D=${CG_DIR:-/tmp/cg}; mkdir -p "$D"
cd "$(dirname "$0")/../.."
UP=${CG_UPSTREAM_PORT:-28081}; PX=${CG_PROXY_PORT:-28090}
if ! ss -ltn | grep -q ":$UP "; then
  mkdir -p $D/up-tmp
  cat > $D/up.conf <<NG
worker_processes 1; daemon off; master_process on; pid $D/up.pid; error_log $D/up-err.log warn;
events { worker_connections 16384; }
http { access_log off; default_type text/plain; keepalive_requests 10000000; keepalive_timeout 300s;
 client_body_temp_path $D/up-tmp/b; proxy_temp_path $D/up-tmp/p;
 server { listen 127.0.0.1:$UP backlog=4096; location / { return 200 "hello world\n"; } } }
NG
  taskset -c 1 nginx -e $D/up-err.log -c $D/up.conf > $D/up.log 2>&1 &
  sleep 1
fi
cat > $D/fm.yaml <<Y
apiVersion: fastmesh.io/v1alpha1
kind: Proxy
metadata: {name: bench}
spec: {workerThreads: 1, pool: {maxIdlePerEndpoint: 4096}}
---
apiVersion: v1
kind: Service
metadata: {name: upstream}
spec: {ports: [{name: http, port: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: upstream-1, labels: {kubernetes.io/service-name: upstream}}
addressType: IPv4
ports: [{name: http, port: $UP}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: all}
spec: {rules: [{backendRefs: [{name: upstream, port: 8080}]}]}
Y
# The proxy's port must be free: if another proxy holds it (another engineer's profile on the same
# port), this one fails to bind and the counted load goes to theirs (and theirs to this one).
if ss -ltn | grep -q ":$PX "; then echo "port $PX is in use: set CG_PROXY_PORT" >&2; exit 1; fi
OUT=$D/cg.$LABEL.$MODE.out
rm -f $OUT
PYTHONPATH=${CG_SRC:-src} valgrind --tool=callgrind --instr-atstart=no ${CG_OPTS:-} --callgrind-out-file=$OUT \
  .venv/bin/python -m fastmesh proxy --config $D/fm.yaml --admin-address 127.0.0.1:0 --listener outbound=127.0.0.1:$PX > $D/fm.log 2>&1 &
VP=$!
for i in $(seq 1 240); do ss -ltn | grep -q ":$PX " && break; sleep 1; done
if [ $MODE = h1 ]; then ARGS="--h1 -c 50"; else ARGS="-c 10 -m 10"; fi
h2load $ARGS -n 2000 http://127.0.0.1:$PX/ > /dev/null
callgrind_control -i on $VP > /dev/null
h2load $ARGS -n 20000 http://127.0.0.1:$PX/ | grep -E "requests:|status codes" 
callgrind_control -i off $VP > /dev/null
callgrind_control -d $VP > /dev/null
sleep 2
kill -INT $VP; wait $VP
F=$OUT.1
TOT=$(callgrind_annotate $F 2>/dev/null | grep -m1 "PROGRAM TOTALS" | awk '{gsub(",","",$1); print $1}')
echo "$LABEL $MODE Ir/req: $((TOT/20000))  ($F)"
# With the cache and branch simulation: every event of the totals line per request.
if [ -n "${CG_OPTS:-}" ]; then
  callgrind_annotate $F 2>/dev/null | awk '/^Events shown:/ {ne = split($0, a, " ") - 2; for (i = 1; i <= ne; i++) ev[i] = a[i + 2]}
    /PROGRAM TOTALS/ {gsub(/\([^)]*\)/, ""); k = 0; out = ""
      for (i = 1; i <= NF && k < ne; i++) {v = $i; gsub(",", "", v); if (v ~ /^[0-9]+$/) {k++; out = out sprintf("%s %.1f  ", ev[k], v / 20000)}}
      print "'"$LABEL $MODE"' per request: " out}'
fi
