#!/usr/bin/env bash
# Makes sure the tools Palisade drives are here: iptables (nft and legacy flavours), ipset and
# iproute2; with --for-tests also what the test suite builds and runs (etcd and Go 1.19 for
# the kube-apiserver it tests against, rsync, openssl, curl, python3-venv for the chart
# tools). Installs what is missing with apt-get when run as root on Debian or Ubuntu;
# otherwise stops at once with one line saying what to install.
# `make demo` runs it, `make test` runs it with --for-tests.
set -euo pipefail

tools=(iptables-nft-restore iptables-legacy-restore ip6tables-nft-restore ipset ip)
packages=(iptables ipset iproute2)
if [[ "${1:-}" == --for-tests ]]; then
    tools+=(etcd rsync openssl curl python3 modprobe /usr/lib/go-1.19/bin/go)
    packages+=(kmod etcd-server rsync golang-1.19-go dpkg-dev openssl curl ca-certificates python3-venv)
fi

missing=()
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${packages[*]} (missing: ${missing[*]})" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null
    exit 0
fi
echo "palisade needs ${missing[*]}: install the packages ${packages[*]} (as root: apt-get install ${packages[*]})" >&2
exit 1
