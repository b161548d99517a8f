#!/usr/bin/env bash
# l7.sh - slb-l7 against nginx and HAProxy as HTTP load balancers on loopback.
#
# Every proxy balances round robin over the same nginx backends (one nginx process, one server
# block per backend answering 200 "ok\n" with an X-Backend header) and keeps its upstream
# connections alive. Per mode and worker count each proxy gets its own port; measured runs go
# proxy by proxy in rounds (A B C, then B C A, ...), each after a warm-up of the same load.
#
#   http  HTTP/1.1 in the clear: wrk -t THREADS -c CONNS --latency (p50/p99)
#   tls   HTTPS/1.1 terminated at the proxy (ECDSA P-256 self-signed, TLS 1.2-1.3): wrk
#   h2    HTTP/2 over TLS (ALPN h2): h2load -t THREADS -c CONNS -m STREAMS (mean/sd, no p99)
#
# CPU: the proxy runs in its own process group; its CPU seconds are the group's
# utime+stime(+children) from /proc between the start and the end of a measured run, kernel
# work done in its context included. "req/CPU-s" = requests served / those seconds: on a shared
# 2-core machine where load generator, backends and proxy compete, the fairer efficiency figure.
#
# Usage: benches/compare/l7.sh [options]     (on a shared machine, under the lock others take
#                                            for builds and benchmarks: flock LOCKFILE l7.sh ...)
#   -m MODES    comma list of http,tls,h2 (default http,tls,h2)
#   -W LIST     worker counts, e.g. "1 2" (default "1 2")
#   -r N        rounds (default 3)
#   -d SECS     measured seconds per run (default 10)
#   -w SECS     warm-up seconds before each run (default 3)
#   -c N        client connections (default 64)
#   -t N        load generator threads (default 2)
#   -s N        h2: streams per connection (default 10)
#   -b N        backends, 1-9 (default 3)
#   -P LIST     contenders to run, of: nginx haproxy slb and the -x names (default: all)
#   -x NAME=CMD an extra candidate (repeatable), e.g. -x 'old=/tmp/l7_proxy.old': CMD runs
#               as `bash -c CMD` with the environment below, like slb
#   -B BIN      the slb binary to run (default: cargo build --release --example l7_proxy,
#               from this repository, into $CARGO_TARGET_DIR or target/)
#   -p PORT     port base (default 18400): backends PORT+1.., proxies from PORT+20 (http),
#               PORT+40 (tls), PORT+60 (h2)
#   -q CORES    quiet gate: wait before each run until other people's processes use less than
#               CORES cores, and redo a run during which they used more ("off": no gate;
#               default 0.10)
#   -Q SECS     longest wait for quiet (default 60)
#   -R N        redo a disturbed run at most N times (default 2; the last try is kept)
#   -o DIR      keep configs, logs, raw load-generator outputs, runs.tsv and summary.md in DIR
#   -h          this help
#
# Candidates (slb and -x) get: LISTEN=127.0.0.1:PORT, BACKENDS=127.0.0.1:P1,127.0.0.1:P2,...
# (plain HTTP/1.1, round robin, keep-alive), WORKERS=N, and in tls/h2 TLS_CERT and TLS_KEY (PEM
# files; ALPN h2,http/1.1). They must stay in the foreground in their process group and exit
# on SIGTERM. examples/l7_proxy reads exactly this environment.
#
# Requires nginx haproxy wrk curl openssl ss (h2load for h2): benches/compare/install.sh l7.
# Only 127.0.0.1 is used. Every process started here is stopped by its process group at exit
# (also on failure or Ctrl-C); each load run is bounded by timeout(1).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

MODES=http,tls,h2 WORKER_COUNTS="1 2" ROUNDS=3 SECS=10 WARM=3 CONNS=64 THREADS=2 STREAMS=10
NBACKENDS=3 ONLY="" SLB_BIN="" PORT=18400 QUIET=0.10 QUIET_WAIT=60 REDO=2 OUT=""
declare -A EXTRA_CMD=()
EXTRA_NAMES=()

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit "$1"; }
while getopts "m:W:r:d:w:c:t:s:b:P:x:B:p:q:Q:R:o:h" opt; do
  case $opt in
    m) MODES=$OPTARG ;; W) WORKER_COUNTS=$OPTARG ;; r) ROUNDS=$OPTARG ;; d) SECS=$OPTARG ;;
    w) WARM=$OPTARG ;; c) CONNS=$OPTARG ;; t) THREADS=$OPTARG ;; s) STREAMS=$OPTARG ;;
    b) NBACKENDS=$OPTARG ;; P) ONLY=$OPTARG ;; B) SLB_BIN=$OPTARG ;; p) PORT=$OPTARG ;;
    q) QUIET=$OPTARG ;; Q) QUIET_WAIT=$OPTARG ;; R) REDO=$OPTARG ;; o) OUT=$OPTARG ;;
    x) [[ $OPTARG =~ ^([A-Za-z][A-Za-z0-9_]*)=(.+)$ ]] || fail "-x wants NAME=CMD"
       [[ " nginx haproxy slb ${EXTRA_NAMES[*]} " != *" ${BASH_REMATCH[1]} "* ]] || fail "-x: name ${BASH_REMATCH[1]} is taken"
       EXTRA_CMD[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}; EXTRA_NAMES+=("${BASH_REMATCH[1]}") ;;
    h) usage 0 ;; *) usage 2 ;;
  esac
done
shift $((OPTIND - 1))
(( $# == 0 )) || fail "unexpected argument $1 (see -h)"
for v in ROUNDS SECS WARM CONNS THREADS STREAMS NBACKENDS PORT QUIET_WAIT REDO; do
  [[ ${!v} =~ ^[0-9]+$ ]] || fail "$v must be a whole number"
done
(( ROUNDS >= 1 && SECS >= 1 && NBACKENDS >= 1 && NBACKENDS <= 9 )) || fail "bad -r, -d or -b"
(( PORT >= 1024 && PORT + 100 <= 65535 )) || fail "-p must leave room for 100 ports"
[[ $WORKER_COUNTS =~ ^[0-9]+( [0-9]+)*$ ]] || fail "-W wants numbers separated by spaces"
[[ $QUIET == off || $QUIET =~ ^[0-9]*\.?[0-9]+$ ]] || fail "-q wants cores or off"
IFS=, read -ra MODE_LIST <<<"$MODES"
for m in "${MODE_LIST[@]}"; do [[ $m == http || $m == tls || $m == h2 ]] || fail "unknown mode $m"; done

CONTENDERS=(nginx haproxy slb "${EXTRA_NAMES[@]}")
if [[ -n $ONLY ]]; then
  for n in $ONLY; do [[ " ${CONTENDERS[*]} " == *" $n "* ]] || fail "-P: unknown contender $n"; done
  read -ra CONTENDERS <<<"$ONLY"
fi
PEERS=(nginx haproxy)                            # the systems slb is compared with

require l7 curl openssl ss setsid nginx haproxy wrk
[[ ,$MODES, == *,h2,* ]] && require l7 h2load
read -r eph_lo eph_hi </proc/sys/net/ipv4/ip_local_port_range
(( PORT + 100 < eph_lo || PORT > eph_hi )) ||
  say "warning: ports $PORT-$((PORT + 100)) overlap the ephemeral range $eph_lo-$eph_hi"

workdir "$OUT"
trap on_exit EXIT
chmod 755 "$WORK"                                # nginx workers run as nobody
mkdir -p "$WORK/raw"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FDS=$(ulimit -n); [[ $FDS == unlimited ]] && FDS=65536
MAXCONN=$(( FDS / 2 - 100 < 16384 ? FDS / 2 - 100 : 16384 ))

if [[ " ${CONTENDERS[*]} " == *" slb "* ]]; then
  [[ -n $SLB_BIN ]] || SLB_BIN=$(build_example l7_proxy)
  [[ -x $SLB_BIN ]] || fail "-B $SLB_BIN is not an executable"
  EXTRA_CMD[slb]=$(printf '%q' "$SLB_BIN")
fi

# ---------- services ----------
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_busy() { [[ -n $(ss -Hltn "( sport = :$1 )" 2>/dev/null) ]]; }   # something listens there

await_port() {                                   # await_port NAME PORT SECS
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    listening "$2" && return 0
    is_child "$(pid_of "$1")" || { tail -n 20 "$WORK/$1.log" >&2; fail "$1 exited while starting"; }
    sleep 0.1
  done
  tail -n 20 "$WORK/$1.log" >&2
  fail "$1 is not listening on 127.0.0.1:$2 after $3 s"
}

BACKEND_PORTS=()
start_backends() {
  local i p blocks=""
  for ((i = 1; i <= NBACKENDS; i++)); do
    p=$((PORT + i)); port_busy "$p" && fail "port $p is in use"
    BACKEND_PORTS+=("$p")
    blocks+="    server { listen 127.0.0.1:$p; location / { add_header X-Backend $p; return 200 \"ok\\n\"; } }"$'\n'
  done
  mkdir -p "$WORK/backends"
  cat >"$WORK/backends/nginx.conf" <<EOF
# the backends: one nginx process with one worker, a server block per backend
daemon off;
worker_processes 1;
pid $WORK/backends/nginx.pid;
error_log $WORK/backends/error.log warn;
events { worker_connections $MAXCONN; }
http {
    access_log off;
    default_type text/plain;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
$blocks}
EOF
  spawn backends nginx -e "$WORK/backends/error.log" -p "$WORK/backends/" -c "$WORK/backends/nginx.conf"
  for p in "${BACKEND_PORTS[@]}"; do await_port backends "$p" 10; done
}
backends_csv() { local p s=""; for p in "${BACKEND_PORTS[@]}"; do s+=${s:+,}127.0.0.1:$p; done; echo "$s"; }

make_cert() {
  [[ -f $WORK/tls/key.pem ]] && return 0
  mkdir -p "$WORK/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" >"$WORK/tls/openssl.log" 2>&1 ||
    fail "openssl could not make a certificate"
  cat "$WORK/tls/cert.pem" "$WORK/tls/key.pem" >"$WORK/tls/both.pem"   # HAProxy's crt
  chmod 644 "$WORK/tls/"*.pem
}

# run_nginx NAME MODE WORKERS PORT
run_nginx() {
  local d=$WORK/$1 p servers="" tls=""
  mkdir -p "$d"
  for p in "${BACKEND_PORTS[@]}"; do servers+="        server 127.0.0.1:$p;"$'\n'; done
  # tls and h2 share one listener shape: TLS offering h2 and http/1.1 by ALPN
  [[ $2 != http ]] && tls=" ssl http2;
        ssl_certificate $WORK/tls/cert.pem;
        ssl_certificate_key $WORK/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:1m"
  cat >"$d/nginx.conf" <<EOF
daemon off;
worker_processes $3;
worker_rlimit_nofile $FDS;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections $MAXCONN; }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    upstream pool {                     # round robin is nginx's default
$servers        keepalive 1024;                 # idle upstream connections per worker
        keepalive_timeout 300s;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$4${tls};
        location / {
            proxy_pass http://pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
  spawn "$1" nginx -e "$d/error.log" -p "$d/" -c "$d/nginx.conf"
}

# run_haproxy NAME MODE WORKERS PORT
run_haproxy() {
  local d=$WORK/$1 p i=0 servers="" tls=""
  mkdir -p "$d"
  for p in "${BACKEND_PORTS[@]}"; do servers+="    server s$((++i)) 127.0.0.1:$p"$'\n'; done
  [[ $2 != http ]] && tls=" ssl crt $WORK/tls/both.pem alpn h2,http/1.1"
  cat >"$d/haproxy.cfg" <<EOF
global
    nbthread $3
    maxconn $MAXCONN
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 300s
frontend front
    bind 127.0.0.1:$4${tls}
    default_backend pool
backend pool
    balance roundrobin
$servers
EOF
  haproxy -c -q -f "$d/haproxy.cfg" >"$d/check.log" 2>&1 || { cat "$d/check.log" >&2; fail "haproxy rejects $d/haproxy.cfg"; }
  spawn "$1" haproxy -db -f "$d/haproxy.cfg"
}

# run_candidate NAME MODE WORKERS PORT CMD
run_candidate() {
  local tls=()
  [[ $2 != http ]] && tls=(TLS_CERT="$WORK/tls/cert.pem" TLS_KEY="$WORK/tls/key.pem")
  spawn "$1" env LISTEN="127.0.0.1:$4" BACKENDS="$(backends_csv)" WORKERS="$3" "${tls[@]}" bash -c "$5"
}

# check NAME MODE URL: 200 "ok", more than one backend seen, HTTP/2 where asked for
check() {
  local name=$1 mode=$2 url=$3 i out seen=() distinct
  for ((i = 0; i < 2 * NBACKENDS; i++)); do
    out=$(curl -sk --http1.1 -m 5 -D - "$url") || fail "$name: no answer from $url"
    [[ $out == "HTTP/1.1 200"* && $out == *$'\r\n\r\nok' ]] || fail "$name: unexpected answer: ${out:0:200}"
    seen+=("$(tr -d '\r' <<<"$out" | awk 'tolower($1) == "x-backend:" { print $2 }')")
  done
  distinct=$(printf '%s\n' "${seen[@]}" | sort -u | wc -l)
  (( distinct > 1 || NBACKENDS == 1 )) || say "warning: $name sent all requests to backend ${seen[0]}"
  if [[ $mode == h2 ]]; then
    [[ $(curl -sk --http2 -m 5 -o /dev/null -w '%{http_version}' "$url") == 2 ]] ||
      fail "$name: HTTP/2 was not negotiated"
  fi
}

# ---------- load and its results ----------
# load MODE URL SECS OUT: one bounded run of the load generator (--foreground: it stays in this
# shell's process group, so Ctrl-C reaches it at once)
load() {
  local limit=$(($3 + 30))
  if [[ $1 == h2 ]]; then
    timeout --foreground -k 5 "$limit" h2load -t "$THREADS" -c "$CONNS" -m "$STREAMS" -D "$3" "$2" >"$4" 2>&1 || true
  else
    timeout --foreground -k 5 "$limit" wrk -t "$THREADS" -c "$CONNS" -d "$3s" --timeout 5s --latency "$2" >"$4" 2>&1 || true
  fi
}

# "req/s lat1_ms lat2_ms requests errors" from wrk (p50, p99) or h2load (mean, sd)
results() {
  awk -v tool="$1" '
    function ms(v) {                               # 812.00us, 3.41ms, 1.02s, 2m
      if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
      if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return v + 0 }
    tool == "wrk" && $1 == "50%" { a = ms($2) }
    tool == "wrk" && $1 == "99%" { b = ms($2) }
    tool == "wrk" && /requests in/ { n = $1 }
    tool == "wrk" && $1 == "Requests/sec:" { rate = $2 }
    tool == "wrk" && /Non-2xx or 3xx responses:/ { bad += $NF }
    tool == "wrk" && /Socket errors:/ { for (i = 3; i <= NF; i++) { x = $i; sub(/,$/, "", x); if (x ~ /^[0-9]+$/) bad += x } }
    tool == "h2" && /^finished in/ { rate = $4 }
    tool == "h2" && /^requests:/ { n = $8; bad += $10 + $12 + $14 }          # failed, errored, timeout
    tool == "h2" && /^status codes:/ { bad += $7 + $9 }                     # 4xx, 5xx
    tool == "h2" && /^time for request:/ { a = ms($6); b = ms($7) }         # mean, sd
    END { printf "%.1f %.3f %.3f %d %d\n", rate, a, b, n, bad }' "$2"
}

RUNS=$WORK/runs.tsv
printf 'mode\tworkers\tround\tproxy\treq_s\tlat1_ms\tlat2_ms\trequests\terrors\tproxy_cpu_s\twall_s\tforeign_cores\n' >"$RUNS"

# measure MODE WORKERS ROUND NAME URL: warm-up, then one measured run (redone if disturbed)
measure() {
  local mode=$1 n=$2 r=$3 name=$4 url=$5 raw try t0 t1 cpu res row
  local tool=wrk; [[ $mode == h2 ]] && tool=h2
  raw=$WORK/raw/$mode-$name-r$r.txt
  for ((try = 0; try <= REDO; try++)); do
    quiet_wait
    (( WARM == 0 )) || load "$mode" "$url" "$WARM" "$WORK/raw/warm-up.txt"
    proc_snap "$WORK/.a"; t0=$EPOCHREALTIME
    load "$mode" "$url" "$SECS" "$raw"
    t1=$EPOCHREALTIME; proc_snap "$WORK/.b"
    cpu=$(proc_delta "$WORK/.a" "$WORK/.b" "$(pid_of "$name")" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
    res=$(results "$tool" "$raw")
    [[ ${res%% *} != 0.0 ]] || { cat "$raw" >&2; fail "$name: the load generator measured nothing"; }
    row=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s' "$mode" "$n" "$r" "${name%-w*}" "${res// /$'\t'}" \
      "${cpu% *}" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "${cpu#* }")
    say "$(awk -F'\t' '{ printf "%s w%s r%s %s: %.0f req/s, %.2f / %.2f ms, proxy %.1f CPU-s, %d errors, foreign %s cores", $1, $2, $3, $4, $5, $6, $7, $10, $9, $12 }' <<<"$row")"
    if (( try < REDO )) && disturbed "${cpu#* }"; then
      say "other processes were busy during the run: doing it again"
      echo "$row" >>"$WORK/runs-disturbed.tsv"
      continue
    fi
    break
  done
  echo "$row" >>"$RUNS"
}

# ---------- summary ----------
# one table per mode: medians over rounds, CPU summed over rounds, ratios to the peers with the
# same worker count (req/s ratio from the medians, req/CPU-s ratio from the sums)
summary() {
  local mode=$1 l1=p50 l2=p99 how="wrk -t$THREADS -c$CONNS"
  [[ $mode == h2 ]] && { l1=mean; l2=sd; how="h2load -t$THREADS -c$CONNS -m$STREAMS"; }
  printf '\n### %s: %s, %s s runs after %s s warm-up, %s rounds, %s backends\n\n' \
    "$mode" "$how" "$SECS" "$WARM" "$ROUNDS" "$NBACKENDS"
  awk -F'\t' -v mode="$mode" -v l1="$l1" -v l2="$l2" -v peers="${PEERS[*]}" '
    function median(list,   v, n, i, j, x) {
      n = split(list, v, " ")
      for (i = 2; i <= n; i++) { x = v[i] + 0; for (j = i - 1; j > 0 && v[j] + 0 > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
      return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function ratio(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "-" }
    NR > 1 && $1 == mode {
      k = $2 SUBSEP $4
      if (!(k in rate)) { order[++nk] = k; if (!($2 in seenw)) { seenw[$2] = 1; ws[++nw] = $2 } }
      rate[k] = rate[k] " " $5; a[k] = a[k] " " $6; b[k] = b[k] " " $7
      if (!(k in lo) || $5 + 0 < lo[k]) lo[k] = $5 + 0; if ($5 + 0 > hi[k]) hi[k] = $5 + 0
      req[k] += $8; err[k] += $9; cpu[k] += $10; wall[k] += $11; fo[k] += $12 * $11
    }
    END {
      np = split(peers, P, " ")
      for (i = 1; i <= nk; i++) { k = order[i]; med[k] = median(rate[k]); eff[k] = cpu[k] > 0 ? req[k] / cpu[k] : 0 }
      printf "| workers | proxy | req/s median (min-max) | %s ms | %s ms | proxy CPU s | proxy cores | req per proxy CPU-s |", l1, l2
      for (p = 1; p <= np; p++) printf " vs %s |", P[p]
      printf " vs best peer | errors |\n|---:|---|---|---:|---:|---:|---:|---:|"
      for (p = 1; p <= np; p++) printf "---:|"
      printf "---:|---:|\n"
      for (i = 1; i <= nk; i++) {
        k = order[i]; split(k, kk, SUBSEP); w = kk[1]
        bestr = beste = 0
        for (p = 1; p <= np; p++) { pk = w SUBSEP P[p]
          if ((pk in med) && med[pk] > bestr) bestr = med[pk]
          if ((pk in eff) && eff[pk] > beste) beste = eff[pk] }
        printf "| %s | %s | %.0f (%.0f-%.0f) | %.2f | %.2f | %.1f | %.2f | %.0f |", w, kk[2], med[k], lo[k], hi[k],
          median(a[k]), median(b[k]), cpu[k], cpu[k] / wall[k], eff[k]
        for (p = 1; p <= np; p++) { pk = w SUBSEP P[p]
          printf " %s / %s |", ratio(med[k], (pk in med) ? med[pk] : 0), ratio(eff[k], (pk in eff) ? eff[pk] : 0) }
        printf " %s / %s | %d |\n", ratio(med[k], bestr), ratio(eff[k], beste), err[k]
      }
      printf "\nRatios: req/s / req per CPU-s, each against the peer with the same worker count.\n"
      printf "Other processes (not this harness) used, in cores during the measured runs:"
      for (i = 1; i <= nk; i++) { k = order[i]; split(k, kk, SUBSEP); printf " %s-w%s %.2f;", kk[2], kk[1], fo[k] / wall[k] }
      printf "\n"
    }' "$RUNS"
}

# ---------- one mode ----------
run_mode() {
  local mode=$1 port n c name scheme=http names=() urls=() r i j
  case $mode in http) port=$((PORT + 20)) ;; tls) port=$((PORT + 40)) ;; h2) port=$((PORT + 60)) ;; esac
  [[ $mode == http ]] || { scheme=https; make_cert; }
  for n in $WORKER_COUNTS; do
    for c in "${CONTENDERS[@]}"; do
      name=$c-w$n
      port_busy "$port" && fail "port $port is in use"
      case $c in
        nginx) run_nginx "$name" "$mode" "$n" "$port" ;;
        haproxy) run_haproxy "$name" "$mode" "$n" "$port" ;;
        *) run_candidate "$name" "$mode" "$n" "$port" "${EXTRA_CMD[$c]}" ;;
      esac
      await_port "$name" "$port" 30
      names+=("$name"); urls+=("$scheme://127.0.0.1:$port/"); port=$((port + 1))
    done
  done
  for i in "${!names[@]}"; do check "${names[i]}" "$mode" "${urls[i]}"; done
  say "mode $mode: ${names[*]}: $ROUNDS rounds of $((WARM + SECS)) s runs"
  for ((r = 1; r <= ROUNDS; r++)); do
    for ((j = 0; j < ${#names[@]}; j++)); do
      i=$(( (j + r - 1) % ${#names[@]} ))        # each round starts one further along
      n=${names[i]##*-w}
      measure "$mode" "$n" "$r" "${names[i]}" "${urls[i]}"
    done
  done
  for name in "${names[@]}"; do halt "$name"; done
  summary "$mode" | tee -a "$WORK/summary.md"
}

{
  echo "## benches/compare/l7.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, Linux $(uname -r)"
  echo
  echo "nginx $(nginx -v 2>&1 | sed 's/^.*nginx\///'), HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }'),"\
       "$(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }' || true)$([[ ,$MODES, == *,h2,* ]] && echo ", h2load $(h2load --version | awk '{ print $NF }')");"\
       "slb: ${SLB_BIN:-(not run)}$(for x in "${EXTRA_NAMES[@]}"; do printf '; %s: %s' "$x" "${EXTRA_CMD[$x]}"; done)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$WORK/summary.md"
start_backends
for m in "${MODE_LIST[@]}"; do run_mode "$m"; done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$WORK/summary.md"
