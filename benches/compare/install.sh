#!/usr/bin/env bash
# install.sh - install, with apt, everything benches/compare/l7.sh and l4.sh run.
#
#   sudo benches/compare/install.sh          # both harnesses
#   sudo benches/compare/install.sh l7       # only what l7.sh needs
#   sudo benches/compare/install.sh l4       # only what l4.sh needs
#   benches/compare/install.sh -n [l7|l4]    # only list what is missing (no root needed)
#
# Debian 12 / Ubuntu package names. Idempotent: packages already installed are left alone and
# apt is not called at all when nothing is missing. shellcheck is added for people who edit
# the scripts. The Rust toolchain (cargo) is not installed here.
set -euo pipefail

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; exit "${1:-0}"; }

check_only=0
if [[ ${1:-} == -n ]]; then check_only=1; shift; fi
case ${1:-all} in
  -h | --help) usage 0 ;;
  l7 | l4 | all) which=${1:-all} ;;
  *) usage 2 ;;
esac

# command -> package, per harness (keep in step with the `require` lines of l7.sh and l4.sh)
common=(curl:curl ss:iproute2 ip:iproute2 taskset:util-linux setsid:util-linux
        flock:util-linux timeout:coreutils ps:procps sysctl:procps awk:mawk)
l7=(nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client openssl:openssl)
l4=(tc:iproute2 bridge:iproute2 ethtool:ethtool iptables:iptables nft:nftables
    conntrack:conntrack trafgen:netsniff-ng iperf3:iperf3 socat:socat)
dev=(shellcheck:shellcheck)

wanted=("${common[@]}")
[[ $which == l4 ]] || wanted+=("${l7[@]}")
[[ $which == l7 ]] || wanted+=("${l4[@]}")
[[ $which == all ]] && wanted+=("${dev[@]}")

missing=()
for pair in "${wanted[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 && continue
  [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
done

if (( ${#missing[@]} == 0 )); then
  echo "install.sh: everything for '$which' is installed"
  exit 0
fi
echo "install.sh: missing packages: ${missing[*]}"
(( check_only )) && exit 1
[[ $(id -u) == 0 ]] || { echo "install.sh: run as root to install them" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install.sh: installed ${missing[*]}"
