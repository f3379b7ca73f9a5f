#!/bin/sh
# Debian packages divertgui needs at run time (iproute2, Qt's X/EGL
# libraries; its netfilter rules are made over netlink, with no program), for
# its tests (nft lists the rules they check; tshark reads the capture files we
# write; a test starts its own sshd in a namespace to capture through ssh) and
# for bench/passthru.py (the NetfilterQueue C binding builds on libnetfilter-queue).
set -eu

packages="python3-venv nftables iproute2 tshark libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libglib2.0-0 libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libcap2-bin openssh-server openssh-client curl netcat-openbsd libnetfilter-queue-dev"

missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing system packages:$missing (install them with your package manager)" >&2
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
echo "installing:$missing"
$sudo apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing >/dev/null
