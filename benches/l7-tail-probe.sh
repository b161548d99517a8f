#!/usr/bin/env bash
# l7-tail-probe.sh - one latency-distribution run of an HTTP proxy on loopback, in the shape of
# the comparison harness's http mode at one worker (benches/compare), for quick A/B probes of
# the tail.
#
#   l7-tail-probe.sh nginx                 nginx (1 worker, upstream keep-alive) as the proxy
#   l7-tail-probe.sh NAME CMD [ARGS...]    CMD as the proxy, with the candidate contract's
#                                          LISTEN, BACKENDS and WORKERS=1 in its environment;
#                                          it must stay in the foreground (a daemon escapes
#                                          the cleanup, and holds any lock its caller held)
#
# One nginx process (1 worker) serves three backends on 127.0.0.1:PORT+1..PORT+3; the proxy
# listens on 127.0.0.1:PORT+20. wrk warms up for 2 s, then measures SECS seconds with
# --latency. Prints one line: req/s, the proxy's CPU cores (its process group, from /proc),
# requests per proxy CPU-second, and the p50/p75/p90/p99 latencies.
#
# Environment: PORT (default 18300), WRK_THREADS (2), CONNS (64), SECS (8), WORKERS (1: the
# proxy's worker processes or threads), WRK_PREFIX
# (prepended to the measured wrk, e.g. "taskset -c 0"), DELAY_MS (0: each connection sends its
# next request as soon as the answer is in; N: it waits N ms first, through a wrk script, so
# that every proxy is offered the same rate, about CONNS / (N ms + latency), below saturation:
# latencies then compare at equal throughput; wrk's latency excludes the wait), TLS (1: the
# proxy terminates HTTPS/1.1 with a self-signed ECDSA P-256 certificate, as in the harness's tls
# mode: nginx with TLSv1.2-1.3 and a session cache, a candidate with TLS_CERT/TLS_KEY), H2 (1:
# HTTP/2 over that TLS, negotiated by ALPN, as in the harness's h2 mode: h2load with
# WRK_THREADS threads, CONNS connections and 10 streams each instead of wrk; the harness reports
# only h2load's mean and deviation, so the percentiles here come from h2load's per-request log).
# Requires nginx, wrk and curl (and openssl with TLS=1, h2load with H2=1). Everything listens on
# 127.0.0.1 only; every process started here is stopped by its process group at exit, and the
# work dir is removed.
set -euo pipefail

[ $# -ge 1 ] || { sed -n '2,30p' "$0"; exit 2; }
name=$1
shift
port=${PORT:-18300}
threads=${WRK_THREADS:-2}
conns=${CONNS:-64}
secs=${SECS:-8}
proxy=127.0.0.1:$((port + 20))

work=$(mktemp -d /tmp/l7-tail-probe.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

servers=""
upstreams=""
backends=""
for i in 1 2 3; do
    p=$((port + i))
    servers+="server { listen 127.0.0.1:$p; location / { add_header X-Backend $p; return 200 \"ok\\n\"; } }"$'\n'
    upstreams+="server 127.0.0.1:$p; "
    backends+="${backends:+,}127.0.0.1:$p"
done
cat > "$work/backends.conf" <<EOF
worker_processes 1; daemon off; pid $work/backends.pid; error_log $work/backends.err warn;
events { worker_connections 9900; }
http { access_log off; default_type text/plain; keepalive_requests 100000000; keepalive_timeout 300s;
$servers}
EOF
scheme=http
listen="listen $proxy;"
tls_env=()
workers=${WORKERS:-1}
h2=${H2:-0}
[ "$h2" = 1 ] && TLS=1
if [ "${TLS:-0}" = 1 ]; then
    scheme=https
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
        -keyout "$work/key.pem" -out "$work/cert.pem" 2> "$work/openssl.log"
    listen="listen $proxy ssl$([ "$h2" = 1 ] && echo ' http2'); ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:1m;"
    tls_env=(TLS_CERT="$work/cert.pem" TLS_KEY="$work/key.pem")
fi
cat > "$work/proxy.conf" <<EOF
worker_processes $workers; daemon off; pid $work/proxy.pid; error_log $work/proxy.err warn;
worker_rlimit_nofile 20000;
events { worker_connections 9900; }
http { access_log off; keepalive_requests 100000000; keepalive_timeout 300s;
  upstream backends { $upstreams keepalive 1024; keepalive_requests 100000000; keepalive_timeout 300s; }
  server { $listen location / { proxy_pass http://backends; proxy_http_version 1.1;
    proxy_set_header Connection ""; } } }
EOF

setsid nginx -c "$work/backends.conf" > "$work/backends.log" 2>&1 &
pids+=($!)
if [ "$name" = nginx ]; then
    setsid nginx -c "$work/proxy.conf" > "$work/proxy.log" 2>&1 &
else
    env LISTEN="$proxy" BACKENDS="$backends" WORKERS="$workers" "${tls_env[@]}" setsid "$@" \
        > "$work/proxy.log" 2>&1 &
fi
px=$!
pids+=("$px")

deadline=$((SECONDS + 30))
until curl -skf -m 1 "$scheme://$proxy/" > /dev/null; do
    if [ $SECONDS -ge $deadline ]; then
        echo "$name: no answer on $proxy within 30 s" >&2
        cat "$work/proxy.log" >&2
        exit 1
    fi
    sleep 0.1
done

# CPU ticks (user + system) of every process in the proxy's process group.
group_ticks() {
    local total=0 f rest s
    for f in /proc/[0-9]*/stat; do
        rest=$(cat "$f" 2> /dev/null) || continue
        rest=${rest##*) }
        read -r -a s <<< "$rest"
        # After the command name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12).
        if [ "${s[2]}" = "$px" ]; then total=$((total + s[11] + s[12])); fi
    done
    echo "$total"
}

if [ "$h2" = 1 ]; then
    h2load -t"$threads" -c"$conns" -m10 -D2 "$scheme://$proxy/" > /dev/null
    t0=$(group_ticks)
    h2load -t"$threads" -c"$conns" -m10 -D"$secs" --log-file="$work/h2.log" "$scheme://$proxy/" \
        > "$work/h2load.out"
    t1=$(group_ticks)
    # The log: start time, status, duration in microseconds, one request a line.
    sort -n -k3,3 "$work/h2.log" | awk -v name="$name" -v t0="$t0" -v t1="$t1" \
        -v hz="$(getconf CLK_TCK)" -v secs="$secs" -v ok="$(grep -c $'\t200\t' "$work/h2.log")" '
        { d[NR] = $3 }
        END {
            cores = (t1 - t0) / hz / secs
            rps = NR / secs
            per = cores > 0 ? rps / cores : 0
            printf "%s req/s=%d cores=%.2f req/cpu-s=%d status200=%d/%d", name, rps, cores, per,
                ok, NR
            n = split("50 75 90 99", q, " ")
            for (i = 1; i <= n; i++) {
                k = int(NR * q[i] / 100); if (k < 1) k = 1
                printf " p%s=%.2fms", q[i], d[k] / 1000
            }
            printf "\n"
        }'
    exit 0
fi
script=()
if [ "${DELAY_MS:-0}" != 0 ]; then
    printf 'function delay()\n  return %d\nend\n' "$DELAY_MS" > "$work/delay.lua"
    script=(-s "$work/delay.lua")
fi
wrk -t"$threads" -c"$conns" -d2s "${script[@]}" "$scheme://$proxy/" > /dev/null
t0=$(group_ticks)
# shellcheck disable=SC2086 # WRK_PREFIX is a command prefix, split on purpose.
out=$(${WRK_PREFIX:-} wrk -t"$threads" -c"$conns" -d"${secs}s" --latency "${script[@]}" "$scheme://$proxy/")
t1=$(group_ticks)
awk -v name="$name" -v t0="$t0" -v t1="$t1" -v hz="$(getconf CLK_TCK)" -v secs="$secs" '
    /Requests\/sec/ { rps = $2 }
    /^ +(50|75|90|99)%/ { lat = lat " p" substr($1, 1, length($1) - 1) "=" $2 }
    END {
        cores = (t1 - t0) / hz / secs
        per = cores > 0 ? rps / cores : 0
        printf "%s req/s=%d cores=%.2f req/cpu-s=%d%s\n", name, rps, cores, per, lat
    }' <<< "$out"
