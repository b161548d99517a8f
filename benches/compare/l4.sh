#!/usr/bin/env bash
# l4.sh - slb's L4 director (examples/l4_director) against the kernel's iptables DNAT, NAT mode,
# on one network-namespace topology, in interleaved rounds.
#
#   c 10.0.1.2 --- lb-c 10.0.1.1 [lb] lb-s 10.0.2.1 --- [sw: bridge] --- s1 10.0.2.11
#                                                                    \--- s2 10.0.2.12
#   c routes VIP 10.0.0.100 via 10.0.1.1; s1 and s2 route back via 10.0.2.1; every neighbour
#   and bridge entry is static; TSO, GSO and GRO are off on every interface, tx checksum
#   offload off on c, s1 and s2. Namespaces: slbc-<pid of this script>-{c,lb,sw,s1,s2}.
#
# udp: trafgen on CPU0 in c sends 64-byte frames (60 B + FCS) to VIP:9 from -f source ports,
#      as fast as its socket takes them, for -w warm-up + -d measured seconds; s1 and s2 drop
#      the DNATed frames in iptables raw PREROUTING. offered = c's tx frames/s, delivered =
#      s1 + s2 rx frames/s over the measured window. CPU from /proc/stat over the same window:
#      busy = 1 - (idle + iowait + steal) / elapsed, per CPU. The forwarder works on CPU1: the
#      kernel through RPS (lb-c's rps_cpus = CPU1), the director pinned there with taskset.
#      For the director, lb's receive softirq (the AF_PACKET copy) stays on CPU0 with the
#      generator, so the figure to compare is "per core counting CPU0 softirq": delivered /
#      (CPU1 busy + CPU0 softirq share). CPU0's softirq share = CPU0 busy x softirq ticks /
#      busy ticks.
# tcp: one iperf3 stream c -> VIP:5201 for -t s (after 1 s left out), client and one-off
#      servers on CPU0; receiver Gbit/s and CPU1 busy.
#
# Usage: benches/compare/l4.sh [options]      (root; about 2.5 min with the defaults)
#   -r N        rounds (default 5); each round runs every contender, the order turning
#   -d SECS     measured seconds of a UDP run (default 5)
#   -w SECS     UDP warm-up seconds, not measured (default 1)
#   -t SECS     iperf3 seconds (default 4)
#   -T LIST     tests: udp,tcp (default udp,tcp)
#   -f N        UDP flows = source ports 10000.. (default 1024, at most 20000)
#   -C LIST     contenders, of: kernel slb and the -x names (default: all)
#   -x NAME=CMD an extra candidate director (repeatable), e.g. -x 'old=/tmp/l4_director.old'
#   -B BIN      the slb director to run (default: cargo build --release --example l4_director,
#               from this repository, into $CARGO_TARGET_DIR or target/)
#   -q CORES    quiet gate: wait before each run until other people's processes use less than
#               CORES cores, and redo a run during which they used more (default 0.10; "off")
#   -Q SECS     longest wait for quiet (default 20)
#   -R N        redo a disturbed run at most N times (default 1)
#   -M SECS     the whole run stops (and cleans up) after SECS (default 900)
#   -o DIR      keep the work files (trafgen config, logs, runs.tsv, summary.md) in DIR
#   -X          only remove namespaces slbc-<pid>-* whose script <pid> is gone, then exit
#   -h          this help
#
# The director's link: its default (batched AF_PACKET), or whatever LINK= / OFFLOAD= (and
# COALESCE_US=, DROP_TRANSIT=) this script's environment holds, e.g.
#   LINK=xdp-generic OFFLOAD=1 benches/compare/l4.sh
# Candidates (slb and -x) run as `bash -c CMD` in lb, pinned to CPU1, in their own process
# group, once per round, with MODE=nat VIP=10.0.0.100 CLIENT_IF=lb-c SERVER_IF=lb-s
# BACKENDS=10.0.2.11@02:00:00:00:02:11,10.0.2.12@02:00:00:00:02:12 UDP_PORTS=9 TCP_PORTS=5201
# CLIENT_NEXTHOP=10.0.1.2@02:00:00:00:01:02 FWD_CPU=1 (what examples/l4_director reads). They
# must forward NAT-style (TCP with source-IP persistence: iperf3's two connections must meet
# one server), answer the UDP readiness probes within 30 s and exit on SIGTERM.
#
# Requires root, 2 CPUs, ip tc bridge iptables ethtool trafgen iperf3 socat taskset:
# benches/compare/install.sh l4. The root namespace is not changed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

ROUNDS=5 SECS=5 WARM=1 TCP_SECS=4 TESTS=udp,tcp FLOWS=1024 ONLY="" SLB_BIN=""
QUIET=0.10 QUIET_WAIT=20 REDO=1 MAX_SECS=900 OUT="" SWEEP=0
declare -A EXTRA_CMD=()
EXTRA_NAMES=()

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit "$1"; }
ARGS="$*"
while getopts "r:d:w:t:T:f:C:x:B:q:Q:R:M:o:Xh" opt; do
  case $opt in
    r) ROUNDS=$OPTARG ;; d) SECS=$OPTARG ;; w) WARM=$OPTARG ;; t) TCP_SECS=$OPTARG ;;
    T) TESTS=$OPTARG ;; f) FLOWS=$OPTARG ;; C) ONLY=$OPTARG ;; B) SLB_BIN=$OPTARG ;;
    q) QUIET=$OPTARG ;; Q) QUIET_WAIT=$OPTARG ;; R) REDO=$OPTARG ;; M) MAX_SECS=$OPTARG ;;
    o) OUT=$OPTARG ;; X) SWEEP=1 ;;
    x) [[ $OPTARG =~ ^([A-Za-z][A-Za-z0-9_]*)=(.+)$ ]] || fail "-x wants NAME=CMD"
       [[ " kernel slb ${EXTRA_NAMES[*]} " != *" ${BASH_REMATCH[1]} "* ]] || fail "-x: name ${BASH_REMATCH[1]} is taken"
       EXTRA_CMD[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}; EXTRA_NAMES+=("${BASH_REMATCH[1]}") ;;
    h) usage 0 ;; *) usage 2 ;;
  esac
done
shift $((OPTIND - 1))
(( $# == 0 )) || fail "unexpected argument $1 (see -h)"
[[ $(id -u) == 0 ]] || fail "run as root (network namespaces)"

if (( SWEEP )); then                             # -X: namespaces of dead runs only
  ip netns list | awk '$1 ~ /^slbc-[0-9]+-(c|lb|sw|s1|s2)$/ { print $1 }' | while read -r ns; do
    owner=${ns#slbc-}; owner=${owner%%-*}
    if kill -0 "$owner" 2>/dev/null; then say "keeping $ns: process $owner is alive"; continue; fi
    ip netns del "$ns" && say "removed $ns"
  done
  exit 0
fi

for v in ROUNDS SECS WARM TCP_SECS FLOWS QUIET_WAIT REDO MAX_SECS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || fail "$v must be a whole number"
done
(( ROUNDS >= 1 && SECS >= 1 && TCP_SECS >= 1 )) || fail "-r, -d and -t must be at least 1"
(( FLOWS >= 1 && FLOWS <= 20000 )) || fail "-f must be 1..20000 (below the ephemeral ports)"
[[ $QUIET == off || $QUIET =~ ^[0-9]*\.?[0-9]+$ ]] || fail "-q wants cores or off"
for t in ${TESTS//,/ }; do [[ $t == udp || $t == tcp ]] || fail "unknown test $t"; done
want() { [[ ,$TESTS, == *,$1,* ]]; }

CONTENDERS=(kernel slb "${EXTRA_NAMES[@]}")
if [[ -n $ONLY ]]; then
  for n in ${ONLY//,/ }; do [[ " ${CONTENDERS[*]} " == *" $n "* ]] || fail "-C: unknown contender $n"; done
  read -ra CONTENDERS <<<"${ONLY//,/ }"
fi

require l4 ip tc bridge iptables ethtool trafgen iperf3 socat taskset timeout setsid
(( $(getconf _NPROCESSORS_ONLN) >= 2 )) || fail "needs 2 CPUs: the generator on CPU0, forwarding on CPU1"
GEN_CPU=0 FWD_CPU=1 FWD_MASK=2
USE_NFT=0
[[ $(iptables -V) == *nf_tables* ]] && command -v nft >/dev/null && USE_NFT=1

workdir "$OUT"
trap on_exit EXIT

if [[ " ${CONTENDERS[*]} " == *" slb "* ]]; then
  [[ -n $SLB_BIN ]] || SLB_BIN=$(build_example l4_director)
  [[ -x $SLB_BIN ]] || fail "-B $SLB_BIN is not an executable"
  EXTRA_CMD[slb]=$(printf '%q' "$SLB_BIN")
fi
link_env=""                                      # only for the summary: candidates inherit it
for v in LINK OFFLOAD COALESCE_US DROP_TRANSIT; do [[ -n ${!v:-} ]] && link_env+="$v=${!v} "; done

per_round=3
want udp && per_round=$((per_round + WARM + SECS + 4))
want tcp && per_round=$((per_round + TCP_SECS + 5))
estimate=$((ROUNDS * ${#CONTENDERS[@]} * per_round))
(( estimate + 30 <= MAX_SECS )) || fail "about ${estimate}s of runs do not fit in -M ${MAX_SECS}s"
spawn watchdog bash -c "sleep $MAX_SECS; kill -TERM $$"

# ---------- the lab ----------
NS=slbc-$$
VIP=10.0.0.100 UDP_PORT=9 TCP_PORT=5201 SPORT=10000
C_IP=10.0.1.2 C_MAC=02:00:00:00:01:02
LBC_IP=10.0.1.1 LBC_MAC=02:00:00:00:01:01
LBS_IP=10.0.2.1 LBS_MAC=02:00:00:00:02:01
S_IP=(10.0.2.11 10.0.2.12) S_MAC=(02:00:00:00:02:11 02:00:00:00:02:12)
in_ns() { local n=$1; shift; ip netns exec "$NS-$n" "$@"; }

MADE_NS=()
lab_down() {
  local n
  for n in "${MADE_NS[@]}"; do ip netns del "$NS-$n" 2>/dev/null || say "could not remove $NS-$n"; done
  MADE_NS=()
}
EXIT_HOOKS+=("halt_all; lab_down")              # processes first, then their namespaces

lab_up() {
  local n i s
  for n in c lb sw s1 s2; do
    ip netns add "$NS-$n" || fail "cannot create namespace $NS-$n"
    MADE_NS+=("$n")
    ip -n "$NS-$n" link set lo up
  done
  ip link add eth0 netns "$NS-c" address "$C_MAC" type veth peer name lb-c netns "$NS-lb" address "$LBC_MAC"
  ip link add lb-s netns "$NS-lb" address "$LBS_MAC" type veth peer name sw-lb netns "$NS-sw"
  for i in 0 1; do
    ip link add eth0 netns "$NS-s$((i + 1))" address "${S_MAC[i]}" type veth peer name "sw-s$((i + 1))" netns "$NS-sw"
  done
  # the switch: a bridge that never floods (static entries for the three MACs behind it)
  ip -n "$NS-sw" link add br0 type bridge
  for n in lb s1 s2; do ip -n "$NS-sw" link set "sw-$n" master br0 up; done
  ip -n "$NS-sw" link set br0 up
  bridge -n "$NS-sw" fdb replace "$LBS_MAC" dev sw-lb master static
  for i in 0 1; do bridge -n "$NS-sw" fdb replace "${S_MAC[i]}" dev "sw-s$((i + 1))" master static; done
  in_ns sw sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 \
    net.bridge.bridge-nf-call-arptables=0 2>/dev/null || true   # only with br_netfilter loaded
  # the client
  ip -n "$NS-c" addr add "$C_IP/24" dev eth0
  ip -n "$NS-c" link set eth0 up
  ip -n "$NS-c" route add "$VIP/32" via "$LBC_IP"
  ip -n "$NS-c" neigh replace "$LBC_IP" lladdr "$LBC_MAC" dev eth0 nud permanent
  # the balancer: addresses on both sides, forwarding off until the kernel contender runs
  ip -n "$NS-lb" addr add "$LBC_IP/24" dev lb-c
  ip -n "$NS-lb" addr add "$LBS_IP/24" dev lb-s
  ip -n "$NS-lb" link set lb-c up
  ip -n "$NS-lb" link set lb-s up
  ip -n "$NS-lb" neigh replace "$C_IP" lladdr "$C_MAC" dev lb-c nud permanent
  in_ns lb sysctl -qw net.ipv4.ip_forward=0
  # the servers, each with a sink for the generator's frames (only if correctly DNATed)
  for i in 0 1; do
    s=s$((i + 1))
    ip -n "$NS-$s" addr add "${S_IP[i]}/24" dev eth0
    ip -n "$NS-$s" link set eth0 up
    ip -n "$NS-$s" route add default via "$LBS_IP"
    ip -n "$NS-$s" neigh replace "$LBS_IP" lladdr "$LBS_MAC" dev eth0 nud permanent
    ip -n "$NS-lb" neigh replace "${S_IP[i]}" lladdr "${S_MAC[i]}" dev lb-s nud permanent
    in_ns "$s" iptables -t raw -A PREROUTING -i eth0 -s "$C_IP" -d "${S_IP[i]}" -p udp \
      --sport "$SPORT:$((SPORT + FLOWS - 1))" --dport "$UDP_PORT" -j DROP
  done
  # no frames above the MTU anywhere; the endpoints put complete checksums in what they send
  local spec
  for spec in c:eth0:tx s1:eth0:tx s2:eth0:tx lb:lb-c lb:lb-s sw:sw-lb sw:sw-s1 sw:sw-s2; do
    IFS=: read -r n i s <<<"$spec"
    in_ns "$n" ethtool -K "$i" tso off gso off gro off ${s:+tx off} >/dev/null 2>&1 || true
    if grep -Eq '^(tcp-segmentation|generic-segmentation|generic-receive)-offload: on' <<<"$(in_ns "$n" ethtool -k "$i")"; then
      fail "TSO/GSO/GRO still on for $i in $NS-$n"
    fi
  done
  # UDP echo on port 9 in each server: the answer is the server's number (read the datagram
  # before answering, or socat may find the pipe closed)
  for i in 1 2; do
    spawn "echo-s$i" ip netns exec "$NS-s$i" socat "UDP4-RECVFROM:$UDP_PORT,fork" \
      SYSTEM:"dd bs=64 count=1 status=none >/dev/null; printf $i"
  done
  # a process that lives in c, whose /proc/PID/net/dev is c's (read without forking)
  spawn c-anchor ip netns exec "$NS-c" sleep "$MAX_SECS"
  cat >"$WORK/udp64.trafgen" <<EOF
/* 14 + 20 + 8 + 18 = 60 bytes: 64 on the wire with the FCS */
{
  eth(da=$LBC_MAC, sa=$C_MAC),
  ipv4(saddr=$C_IP, daddr=$VIP, ttl=64, df),
  udp(sp=dinc($SPORT, $((SPORT + FLOWS - 1))), dp=$UDP_PORT),
  fill(0x41, 18)
}
EOF
}

# lb with no forwarding, no rules, no connections, and RPS on lb-c set to MASK
lb_neutral() {                                   # lb_neutral MASK
  local t
  in_ns lb sysctl -qw net.ipv4.ip_forward=0
  if (( USE_NFT )); then
    in_ns lb nft flush ruleset
  else
    for t in raw mangle nat filter; do in_ns lb iptables -t "$t" -F; in_ns lb iptables -t "$t" -X; done
  fi
  in_ns lb conntrack -F >/dev/null 2>&1 || true
  in_ns lb sh -c "echo $1 > /sys/class/net/lb-c/queues/rx-0/rps_cpus"
}

# the kernel contender: new UDP flows alternate between the servers (statistic nth, in the
# nat table, so per flow), TCP by source address (a DNAT range hashes it); conntrack un-NATs
# the replies; lb's receive softirq goes to CPU1 through RPS
kernel_up() {
  local i n=${#S_IP[@]}
  lb_neutral "$FWD_MASK"
  for ((i = 0; i < n; i++)); do
    in_ns lb iptables -t nat -A PREROUTING -i lb-c -d "$VIP" -p udp --dport "$UDP_PORT" \
      -m statistic --mode nth --every $((n - i)) --packet 0 -j DNAT --to-destination "${S_IP[i]}"
  done
  in_ns lb iptables -t nat -A PREROUTING -i lb-c -d "$VIP" -p tcp --dport "$TCP_PORT" \
    -j DNAT --to-destination "${S_IP[0]}-${S_IP[n - 1]}"
  in_ns lb sysctl -qw net.ipv4.ip_forward=1
}

# a candidate director in lb, pinned to CPU1, lb's receive softirq left on CPU0
cand_up() {                                      # cand_up NAME ROUND
  lb_neutral 0
  spawn "$1-r$2" ip netns exec "$NS-lb" taskset -c "$FWD_CPU" env \
    MODE=nat VIP="$VIP" CLIENT_IF=lb-c SERVER_IF=lb-s \
    BACKENDS="${S_IP[0]}@${S_MAC[0]},${S_IP[1]}@${S_MAC[1]}" UDP_PORTS="$UDP_PORT" TCP_PORTS="$TCP_PORT" \
    CLIENT_NEXTHOP="$C_IP@$C_MAC" FWD_CPU="$FWD_CPU" bash -c "${EXTRA_CMD[$1]}"
}

alive() {                                        # alive NAME ROUND: a candidate still runs
  [[ $1 == kernel ]] && return 0
  is_child "$(pid_of "$1-r$2")" && return 0
  tail -n 20 "$WORK/$1-r$2.log" >&2
  fail "$1 exited (log: $WORK/$1-r$2.log)"
}

# probe N: N datagrams to VIP:9, each from a new socket; one character per answer (- if none)
probe() {
  local i a out=""
  for ((i = 0; i < $1; i++)); do
    a=$(echo p | in_ns c timeout --foreground 2 socat -t 0.2 -T 0.5 - "UDP4:$VIP:$UDP_PORT" 2>/dev/null) || true
    out+=${a:--}
  done
  echo "$out"
}

ready() {                                        # ready NAME ROUND SECS
  local t0=$SECONDS got
  until [[ $(probe 1) == [12] ]]; do
    alive "$1" "$2"
    (( SECONDS - t0 < $3 )) || fail "$1: no answer from $VIP:$UDP_PORT within $3 s"
  done
  got=$(probe 16)
  [[ $got =~ ^[12]{16}$ ]] || fail "$1: UDP through $VIP lost probes: $got"
  [[ $got == *1* && $got == *2* ]] || say "warning: $1 sent all 16 probe flows to one server ($got)"
}

# ---------- counters ----------
# rx/tx frames of eth0 in the namespace of process PID, from /proc/PID/net/dev
frames() {                                       # frames PID rx|tx -> count
  local line name f
  while IFS= read -r line; do
    name=${line%%:*}; name=${name// /}
    [[ $name == eth0 ]] || continue
    read -ra f <<<"${line#*:}"
    if [[ $2 == rx ]]; then echo "${f[1]}"; else echo "${f[9]}"; fi
    return 0
  done <"/proc/$1/net/dev"
  fail "no eth0 in /proc/$1/net/dev"
}
served() { echo $(( $(frames "$(pid_of echo-s1)" rx) + $(frames "$(pid_of echo-s2)" rx) )); }

# sample: "time user..steal of cpu0 (8 fields) the same of cpu1, c's tx frames, s1+s2 rx frames"
sample() {
  local l cpu0="" cpu1="" a b
  while read -r l; do
    case $l in "cpu0 "*) cpu0=${l#cpu0 } ;; "cpu1 "*) cpu1=${l#cpu1 } ;; esac
  done </proc/stat
  read -ra a <<<"$cpu0"; read -ra b <<<"$cpu1"
  echo "$EPOCHREALTIME ${a[*]:0:8} ${b[*]:0:8} $(frames "$(pid_of c-anchor)" tx) $(served)"
}

# window A B -> "secs cpu0_busy cpu0_softirq cpu1_busy offered_pps delivered_pps" (fractions)
# Busy comes from the idle, iowait and steal counters, which are exact under NO_HZ; the busy
# counters are tick samples. The softirq share splits CPU0's busy time by those samples.
window() {
  awk -v tck="$TICKS_PER_SEC" '{
    secs = $20 - $1
    for (i = 0; i < 8; i++) { z[i] = $(21 + i) - $(2 + i); o[i] = $(29 + i) - $(10 + i) }
    b0 = 1 - (z[3] + z[4] + z[7]) / (secs * tck); b1 = 1 - (o[3] + o[4] + o[7]) / (secs * tck)
    b0 = b0 < 0 ? 0 : (b0 > 1 ? 1 : b0); b1 = b1 < 0 ? 0 : (b1 > 1 ? 1 : b1)
    work0 = z[0] + z[1] + z[2] + z[5] + z[6]
    printf "%.4f %.4f %.4f %.4f %.0f %.0f\n", secs, b0, (work0 > 0 ? b0 * z[6] / work0 : 0), b1,
      ($37 - $18) / secs, ($38 - $19) / secs }' <<<"$1 $2"
}

sink_drops() {
  local i total=0 n
  for i in 1 2; do
    n=$(in_ns "s$i" iptables -t raw -nvxL PREROUTING | awk '$3 == "DROP" { s += $1 } END { print s + 0 }')
    total=$((total + n))
  done
  echo "$total"
}

RUNS=$WORK/runs.tsv
printf 'round\tcontender\ttest\toffered_pps\tdelivered_pps\tcpu1_busy\tcpu0_busy\tcpu0_softirq\tgbps\tsink_ok_pct\tforeign_cores\n' >"$RUNS"

# udp_run / tcp_run NAME ROUND: one run; its runs.tsv row in ROW. (Not run in a subshell:
# what they spawn must stay this shell's children, for halt and the EXIT trap.)
ROW=""
udp_run() {
  local name=$1 round=$2 gen a b rx0 rx1 prev i w0 w1 foreign sink c0 s0 c1 off del
  alive "$name" "$round"
  for i in 1 2; do in_ns "s$i" iptables -t raw -Z PREROUTING; done
  rx0=$(served)
  proc_snap "$WORK/.p0"; w0=$EPOCHREALTIME
  gen=trafgen-$name-r$round
  # -t 0: trafgen's sendto() path (blocks while the socket buffer is full; its ring path
  # gives up on veth); -P 1: one process; no changes to IRQ affinity or socket memory
  spawn "$gen" ip netns exec "$NS-c" timeout -k 2 -s INT $((WARM + SECS + 1)) \
    taskset -c "$GEN_CPU" trafgen -o eth0 -i "$WORK/udp64.trafgen" -P 1 --no-sock-mem -Q -t 0
  sleep "$WARM"; a=$(sample)
  sleep "$SECS"; b=$(sample)
  wait "$(pid_of "$gen")" || true
  halt "$gen"
  grep -q 'packets outgoing' "$WORK/$gen.log" || { tail -n 5 "$WORK/$gen.log" >&2; fail "trafgen failed"; }
  w1=$EPOCHREALTIME; proc_snap "$WORK/.p1"
  prev=-1                                        # a director may still drain its queue
  for ((i = 0; i < 20; i++)); do rx1=$(served); (( rx1 == prev )) && break; prev=$rx1; sleep 0.1; done
  sink=$(awk -v d="$(sink_drops)" -v n=$((rx1 - rx0)) 'BEGIN { printf "%.2f", (n > 0 ? 100 * d / n : 0) }')
  foreign=$(proc_delta "$WORK/.p0" "$WORK/.p1" 0 "$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')" | cut -d' ' -f2)
  read -r _ c0 s0 c1 off del <<<"$(window "$a" "$b")"
  printf -v ROW '%s\t%s\tudp\t%s\t%s\t%s\t%s\t%s\t-\t%s\t%s' "$round" "$name" "$off" "$del" "$c1" "$c0" "$s0" "$sink" "$foreign"
}

tcp_run() {
  local name=$1 round=$2 i k a b w0 w1 foreign gbps cli log c0 s0 c1
  alive "$name" "$round"
  for i in 1 2; do
    spawn "iperf3-s$i" ip netns exec "$NS-s$i" timeout $((TCP_SECS + 30)) taskset -c "$GEN_CPU" \
      iperf3 -s -1 -p "$TCP_PORT"
  done
  for i in 1 2; do
    for ((k = 0; k < 50; k++)); do
      [[ -n $(in_ns "s$i" ss -Hltn "( sport = :$TCP_PORT )") ]] && break
      sleep 0.1
    done
  done
  cli=iperf3-$name-r$round log=$WORK/$cli.log
  proc_snap "$WORK/.p0"; w0=$EPOCHREALTIME; a=$(sample)
  spawn "$cli" ip netns exec "$NS-c" timeout $((TCP_SECS + 15)) taskset -c "$GEN_CPU" \
    iperf3 -c "$VIP" -p "$TCP_PORT" -t "$TCP_SECS" -O 1 -f m --connect-timeout 3000
  wait "$(pid_of "$cli")" || true
  halt "$cli"
  b=$(sample); w1=$EPOCHREALTIME; proc_snap "$WORK/.p1"
  for i in 1 2; do halt "iperf3-s$i"; done
  gbps=$(awk '/receiver/ { for (i = 1; i < NF; i++) if ($(i + 1) == "Mbits/sec") v = $i }
              END { if (v != "") printf "%.3f", v / 1000; else print "failed" }' "$log")
  [[ $gbps == failed ]] && say "  tcp $name: iperf3 failed: $(grep -m1 -iE 'error|refused|timeout' "$log" || tail -n 1 "$log")"
  foreign=$(proc_delta "$WORK/.p0" "$WORK/.p1" 0 "$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')" | cut -d' ' -f2)
  read -r _ c0 s0 c1 _ _ <<<"$(window "$a" "$b")"
  printf -v ROW '%s\t%s\ttcp\t-\t-\t%s\t%s\t%s\t%s\t-\t%s' "$round" "$name" "$c1" "$c0" "$s0" "$gbps" "$foreign"
}

# one test of one contender, redone while disturbed by other processes (at most REDO times)
run_test() {                                     # run_test TEST NAME ROUND
  local try row
  for ((try = 0; try <= REDO; try++)); do
    quiet_wait
    "$1_run" "$2" "$3"; row=$ROW
    say "  $(awk -F'\t' '$3 == "udp" { printf "udp %s: offered %.0f kpps, delivered %.0f kpps, CPU1 %.0f%%, CPU0 softirq %.0f%%, %.0f kpps per core with it, sink ok %s%%", $2, $4 / 1000, $5 / 1000, 100 * $6, 100 * $8, $5 / ($6 + $8) / 1000, $10 }
      $3 == "tcp" { printf "tcp %s: %s Gbit/s, CPU1 %.0f%%", $2, $9, 100 * $6 } { printf ", foreign %s cores", $11 }' <<<"$row")"
    if (( try < REDO )) && disturbed "$(cut -f11 <<<"$row")"; then
      say "  other processes were busy: doing the run again"; echo "$row" >>"$WORK/runs-disturbed.tsv"
      continue
    fi
    break
  done
  echo "$row" >>"$RUNS"
}

# ---------- summary ----------
summary() {
  awk -F'\t' -v flows="$FLOWS" -v secs="$SECS" -v tsecs="$TCP_SECS" -v rounds="$ROUNDS" '
    function sorted(list, v,   n, i, j, x) {
      n = split(list, v, " ")
      for (i = 2; i <= n; i++) { x = v[i] + 0; for (j = i - 1; j > 0 && v[j] + 0 > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
      return n
    }
    function cell(list, scale, fmt,   v, n, m) {   # "median (min-max)"
      n = sorted(list, v); if (n == 0) return "-"
      m = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      return sprintf(fmt " (" fmt "-" fmt ")", m / scale, v[1] / scale, v[n] / scale)
    }
    NR == 1 { next }
    { c = $2; if (!(c in seen)) { seen[c] = 1; order[++nc] = c }; fo = fo " " $11 }
    $3 == "udp" {
      k = c; busy = $6 + $8
      uo[k] = uo[k] " " $4; ud[k] = ud[k] " " $5; u1[k] = u1[k] " " 100 * $6; us[k] = us[k] " " 100 * $8
      u0[k] = u0[k] " " 100 * $7
      up[k] = up[k] " " ($6 > 0 ? $5 / $6 : 0); ux[k] = ux[k] " " (busy > 0 ? $5 / busy : 0)
      udr[k] = udr[k] " " ($4 > $5 ? 100 * (1 - $5 / $4) : 0); sink = sink " " $10
      D[c, $1] = $5; X[c, $1] = (busy > 0 ? $5 / busy : 0); P[c, $1] = ($6 > 0 ? $5 / $6 : 0); anyu = 1
    }
    $3 == "tcp" {
      if ($9 == "failed") { tf[c]++; next }
      tg[c] = tg[c] " " $9; t1[c] = t1[c] " " 100 * $6; tp[c] = tp[c] " " ($6 > 0 ? $9 / $6 : 0)
      G[c, $1] = $9; anyt = 1
    }
    { R[$1] = 1 }
    END {
      if (anyu) {
        printf "\n### UDP: 64-byte frames, %d flows, %d s per run, median (min-max) of %d rounds\n\n", flows, secs, rounds
        print "| contender | offered kpps | delivered kpps | CPU1 busy % | kpps per CPU1 core | CPU0 busy % | CPU0 softirq % | kpps per core, CPU1 + CPU0 softirq | drop % |"
        print "|---|---|---|---|---|---|---|---|---|"
        for (i = 1; i <= nc; i++) { c = order[i]; if (!(c in ud)) continue
          printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c, cell(uo[c], 1000, "%.0f"), cell(ud[c], 1000, "%.0f"),
            cell(u1[c], 1, "%.0f"), cell(up[c], 1000, "%.0f"), cell(u0[c], 1, "%.0f"), cell(us[c], 1, "%.0f"), cell(ux[c], 1000, "%.0f"), cell(udr[c], 1, "%.1f") }
        for (i = 1; i <= nc; i++) { c = order[i]; if (c == "kernel" || !(c in ud)) continue
          rd = rx = rp = ""
          for (r in R) if (((c, r) in D) && (("kernel", r) in D) && D["kernel", r] > 0) {
            rd = rd " " D[c, r] / D["kernel", r]; rp = rp " " P[c, r] / P["kernel", r]; rx = rx " " X[c, r] / X["kernel", r] }
          if (rd != "") printf "\n%s / kernel, paired by round: delivered %s, per CPU1 core %s, per core counting CPU0 softirq %s\n",
            c, cell(rd, 1, "%.2f"), cell(rp, 1, "%.2f"), cell(rx, 1, "%.2f") }
        printf "\nFrames reaching the servers correctly DNATed: %s %%\n", cell(sink, 1, "%.1f")
      }
      if (anyt) {
        printf "\n### TCP: one iperf3 stream c -> VIP, %d s per run (+1 s left out), median (min-max) of %d rounds\n\n", tsecs, rounds
        print "| contender | Gbit/s | CPU1 busy % | Gbit/s per CPU1 core | failed runs |"
        print "|---|---|---|---|---|"
        for (i = 1; i <= nc; i++) { c = order[i]
          printf "| %s | %s | %s | %s | %d |\n", c, cell(tg[c], 1, "%.2f"), cell(t1[c], 1, "%.0f"), cell(tp[c], 1, "%.2f"), tf[c] }
        for (i = 1; i <= nc; i++) { c = order[i]; if (c == "kernel") continue
          rg = ""
          for (r in R) if (((c, r) in G) && (("kernel", r) in G) && G["kernel", r] > 0) rg = rg " " G[c, r] / G["kernel", r]
          if (rg != "") printf "\n%s / kernel, paired by round: Gbit/s %s\n", c, cell(rg, 1, "%.2f") }
      }
      printf "\nOther processes (not this harness) used %s cores during the runs.\n", cell(fo, 1, "%.2f")
    }' "$RUNS"
}

# ---------- main ----------
say "lab $NS-*: ${CONTENDERS[*]}, $ROUNDS rounds, about ${estimate}s; work dir $WORK"
lab_up
lb_neutral 0
for ((round = 1; round <= ROUNDS; round++)); do
  for ((j = 0; j < ${#CONTENDERS[@]}; j++)); do
    name=${CONTENDERS[(j + round - 1) % ${#CONTENDERS[@]}]}   # the order turns each round
    say "round $round/$ROUNDS: $name"
    if [[ $name == kernel ]]; then kernel_up; ready kernel "$round" 5
    else cand_up "$name" "$round"; ready "$name" "$round" 30
    fi
    for t in udp tcp; do want "$t" && run_test "$t" "$name" "$round"; done
    [[ $name == kernel ]] || halt "$name-r$round"
    lb_neutral 0
  done
done
{
  echo "## benches/compare/l4.sh $ARGS, $(date -u +%Y-%m-%dT%H:%M:%SZ), Linux $(uname -r), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo
  echo "slb: ${SLB_BIN:-(not run)} ${link_env:+($link_env)}$(for x in "${EXTRA_NAMES[@]}"; do printf '; %s: %s' "$x" "${EXTRA_CMD[$x]}"; done);"\
       "trafgen $(trafgen -v 2>/dev/null | awk 'NR == 1 { print $2 }' || true), iperf3 $(iperf3 -v 2>/dev/null | awk 'NR == 1 { print $2 }')"
  summary
} | tee "$WORK/summary.md"
