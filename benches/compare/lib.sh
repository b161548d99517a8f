# shellcheck shell=bash
# lib.sh - helpers shared by benches/compare/l7.sh and l4.sh; sourced, not run.
#
# What it gives a harness:
#   - say / fail: timestamped messages on stderr; fail exits 1 (the EXIT trap cleans up).
#   - require TAG CMD...: every CMD must be on PATH, or the harness stops and names the
#     install command (benches/compare/install.sh TAG).
#   - workdir DIR|"": the harness's work dir in $WORK (DIR kept; else a temp dir removed at
#     exit unless the run failed).
#   - spawn NAME CMD... / halt NAME / halt_all: every long-lived process runs in its own
#     session (setsid), so its PID is its process-group id; it is stopped by that group (TERM,
#     KILL after 5 s) and only while it is still this shell's child, so a recycled PID is never
#     signalled. halt_all runs from the EXIT trap: on success, failure and Ctrl-C alike.
#   - proc_snap FILE / proc_delta A B PGID SECS: CPU ticks of every process from /proc, and
#     between two snapshots the CPU seconds of one process group and the cores used by
#     processes that are not descendants of this shell (other people's work: "foreign").
#   - quiet_wait: before a run, wait (at most QUIET_WAIT s) until foreign load < QUIET cores.
#
# Callers set before sourcing nothing; after sourcing they set QUIET (cores or "off") and
# QUIET_WAIT (seconds) and call `trap on_exit EXIT` themselves, adding their own cleanup
# through the EXIT_HOOKS array (commands run before the processes are stopped).

HARNESS=${HARNESS:-$(basename "$0" .sh)}
COMPARE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TICKS_PER_SEC=$(getconf CLK_TCK)
export LC_ALL=C                                  # '.' decimals from printf and EPOCHREALTIME

say() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "$HARNESS" "$*" >&2; }
fail() { say "error: $*"; exit 1; }

require() {                                      # require TAG CMD...
  local tag=$1 c missing=()
  shift
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
  (( ${#missing[@]} == 0 )) ||
    fail "missing ${missing[*]}; install with: sudo $COMPARE_DIR/install.sh $tag"
}

# ---------- work dir ----------
WORK="" KEEP_WORK=0
workdir() {
  if [[ -n $1 ]]; then
    mkdir -p "$1" || fail "cannot create $1"
    WORK=$(cd "$1" && pwd) KEEP_WORK=1
  else
    WORK=$(mktemp -d -t "slb-$HARNESS.XXXXXX")
  fi
}

# ---------- processes ----------
declare -A PGID_OF=()                            # name -> pid (= its process-group id)
SPAWN_ORDER=()
EXIT_HOOKS=()

spawn() {                                        # spawn NAME CMD...: log in $WORK/NAME.log
  local name=$1 pid
  shift
  setsid "$@" >"$WORK/$name.log" 2>&1 &
  pid=$!
  PGID_OF[$name]=$pid
  SPAWN_ORDER+=("$name")
  sleep 0.05
  # setsid forks only when its caller leads a process group, which a background job of a
  # non-interactive shell never does; check anyway, since stopping relies on it.
  if kill -0 "$pid" 2>/dev/null; then
    [[ $(ps -o pgid= -p "$pid" | tr -d ' ') == "$pid" ]] ||
      fail "$name ($pid) did not get its own process group"
  fi
}

pid_of() { echo "${PGID_OF[$1]:-}"; }

is_child() {                                     # is_child PID: alive, not a zombie, ours
  local stat state ppid
  [[ -n $1 ]] || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  read -r state ppid _ <<<"${stat##*) }"
  [[ $state != Z && $ppid == "$$" ]]
}

halt() {                                         # halt NAME: stop its process group
  local name=$1 pid i
  pid=${PGID_OF[$name]:-}
  [[ -n $pid ]] || return 0
  if is_child "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do is_child "$pid" || break; sleep 0.1; done
    if is_child "$pid"; then
      say "$name did not stop within 5 s of SIGTERM: SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
  unset "PGID_OF[$name]"
}

halt_all() {
  local i
  for ((i = ${#SPAWN_ORDER[@]} - 1; i >= 0; i--)); do halt "${SPAWN_ORDER[i]}"; done
  SPAWN_ORDER=()
}

on_exit() {
  local rc=$? hook
  trap '' INT TERM
  for hook in "${EXIT_HOOKS[@]}"; do eval "$hook" || true; done
  halt_all
  (( rc == 0 )) || say "stopped with status $rc"
  if (( KEEP_WORK )); then
    say "work files: $WORK"
  elif (( rc != 0 )) && [[ -n $WORK ]]; then
    say "failed (status $rc); work files kept in $WORK"
  elif [[ -n $WORK ]]; then
    rm -rf "$WORK"
  fi
  exit "$rc"
}
set -E                                           # functions and subshells inherit the ERR trap
trap 'say "failed (status $?) at line $LINENO: $BASH_COMMAND"' ERR
trap 'say "interrupted (SIGINT)"; exit 130' INT
trap 'say "stopped by SIGTERM (or the time limit)"; exit 143' TERM

# ---------- CPU from /proc ----------
# proc_snap FILE: one line per process, "pid ppid pgrp ticks kernel_thread", where ticks is
# utime + stime + cutime + cstime (a reaped child's time is in its parent's cutime/cstime).
# A process that exits between the glob and cat makes cat fail: not an error here.
proc_snap() {
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{
    pid = $1; sub(/^.*\) /, "")                  # drop "pid (comm) ": $1 is now the state
    print pid, $2, $3, $12 + $13 + $14 + $15, (pid == 2 || $2 == 2) }' >"$1"
}

# proc_delta A B PGID SECS -> "pgid_cpu_seconds foreign_cores"
# pgid_cpu_seconds: CPU used between the snapshots by processes of process group PGID (0: none).
# foreign_cores: CPU used by user processes that are neither this shell nor its descendants,
# divided by SECS. A process that exited between the snapshots is counted through its parent's
# cutime, which also holds its time from before A: that part is taken off again.
proc_delta() {
  awk -v pg="$3" -v me=$$ -v secs="$4" -v tck="$TICKS_PER_SEC" '
    FNR == NR { a_t[$1] = $4; a_pp[$1] = $2; a_kt[$1] = $5; next }
    { pp[$1] = $2; grp[$1] = $3; t[$1] = $4; kt[$1] = $5 }
    function ours(p,   n) {
      for (n = 0; n < 100 && p > 1; n++) { if (p == me) return 1; p = (p in pp) ? pp[p] : a_pp[p] }
      return 0
    }
    END {
      for (p in t) {
        d = t[p] - ((p in a_t) ? a_t[p] : 0)
        if (pg != 0 && grp[p] == pg) g += d
        if (!kt[p] && !ours(p)) f += d
      }
      for (p in a_t) if (!(p in t) && !a_kt[p] && !ours(p)) f -= a_t[p]
      printf "%.2f %.2f\n", g / tck, (f > 0 ? f : 0) / tck / secs
    }' "$1" "$2"
}

# foreign cores over the next second
foreign_now() {
  proc_snap "$WORK/.q0"; sleep 1; proc_snap "$WORK/.q1"
  proc_delta "$WORK/.q0" "$WORK/.q1" 0 1 | cut -d' ' -f2
}

above() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }   # above X LIMIT: X >= LIMIT

quiet_wait() {
  local f waited=0
  [[ $QUIET == off ]] && return 0
  while f=$(foreign_now); above "$f" "$QUIET"; do
    (( waited == 0 )) && say "other processes use $f cores (limit $QUIET): waiting up to ${QUIET_WAIT}s"
    if (( ++waited >= QUIET_WAIT )); then say "still $f cores busy elsewhere: measuring anyway"; return 0; fi
  done
}

# disturbed FOREIGN_CORES: true if a run's foreign load breaks the quiet gate
disturbed() { [[ $QUIET != off ]] && above "$1" "$QUIET"; }

# the build of an example of this repository; prints the binary's path
build_example() {                                # build_example NAME [CARGO ARGS...]
  local name=$1 root target
  shift
  root=$(cd "$COMPARE_DIR/../.." && pwd)
  target=${CARGO_TARGET_DIR:-$root/target}
  say "cargo build --release --example $name $* (target dir $target)"
  (cd "$root" && cargo build --quiet --release --example "$name" "$@") >&2 ||
    fail "cargo build of example $name failed"
  [[ -x $target/release/examples/$name ]] || fail "no binary at $target/release/examples/$name"
  echo "$target/release/examples/$name"
}
