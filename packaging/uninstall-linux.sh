#!/bin/sh
# Remove what packaging/install-linux.sh installed, following the manifest it
# wrote: the files it placed, /opt/divertgui as a whole, and the directories
# it had to create (only those, and only when they are empty again), and the
# group divertgui if it created it.
#
#   uninstall-linux.sh [--root DIR]
set -eu

root=""
while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || { echo "usage: uninstall-linux.sh [--root DIR]" >&2; exit 2; }; root=$2; shift 2 ;;
        *) echo "usage: uninstall-linux.sh [--root DIR]" >&2; exit 2 ;;
    esac
done
if [ -n "$root" ]; then
    [ -d "$root" ] || { echo "uninstall-linux.sh: --root $root is not a directory" >&2; exit 2; }
    root=$(cd "$root" && pwd)
fi

manifest="$root/opt/divertgui/install-manifest"
if [ ! -f "$manifest" ]; then
    echo "uninstall-linux.sh: $manifest not found: divertgui is not installed${root:+ under $root}" >&2
    exit 1
fi
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    echo "uninstall-linux.sh: removing files from /opt and /usr needs root: run it with sudo" >&2
    exit 1
fi

# Read everything first: the manifest lives inside the tree that goes.
entries=$(grep -v '^#' "$manifest")

echo "$entries" | while read -r kind path; do
    case "$kind" in
        file) rm -f "$root$path" ;;
    esac
done
echo "$entries" | while read -r kind path; do
    case "$kind" in
        tree) rm -rf "$root$path" ;;
    esac
done
# The group goes if the installer made it; otherwise the user it added leaves it.
prefix_option=""
[ -n "$root" ] && prefix_option="-P $root"
echo "$entries" | while read -r kind name; do
    case "$kind" in
        # shellcheck disable=SC2086
        group) groupdel $prefix_option "$name" ;;
    esac
done
if ! echo "$entries" | grep -q '^group '; then
    echo "$entries" | while read -r kind name; do
        case "$kind" in
            member) gpasswd ${root:+-Q "$root"} -d "$name" divertgui >/dev/null || true ;;
        esac
    done
fi
# Deepest directories first; a directory someone has since put files in stays.
echo "$entries" | grep '^dir ' | sort -r | while read -r kind path; do
    rmdir "$root$path" 2>/dev/null || true
done

share_icons=$(echo "$entries" | sed -n 's|^file \(.*/share/icons/hicolor\)/scalable/apps/divertgui.svg$|\1|p')
if [ -n "$share_icons" ] && [ -f "$root$share_icons/icon-theme.cache" ] && command -v gtk-update-icon-cache >/dev/null 2>&1; then
    gtk-update-icon-cache -q -t "$root$share_icons" || true
fi
echo "removed divertgui${root:+ from $root}"
