#!/bin/sh
# Install the bundle built by packaging/build.sh:
#   <root>/opt/divertgui/                       the bundle (divertgui, divert, _internal/)
#   <root><prefix>/bin/divertgui, divert        symlinks into /opt/divertgui
#   <root><prefix>/share/applications/divertgui.desktop
#   <root><prefix>/share/icons/hicolor/*/apps/divertgui.{png,svg}
#   <root>/usr/lib/tmpfiles.d/divertgui.conf    /run/divertgui, the rule lock, made at boot
# and make the capture program the one privileged part, as Wireshark does with
# dumpcap: `divert` (which the window starts as `divert serve`) gets
# CAP_NET_ADMIN and CAP_NET_RAW as file capabilities and is installed
# root:divertgui mode 0750, so only members of the group divertgui can run it.
# The group is created when missing and the user who ran sudo (SUDO_USER) is
# added to it. `divertgui`, the window, gets no capabilities.
#
#   install-linux.sh [--bundle DIR] [--prefix /usr] [--root DIR] [--no-capabilities]
#
# --root DIR installs into a scratch root (paths inside it are those above;
# the group goes into DIR/etc/group). Everything written is listed in
# /opt/divertgui/install-manifest, which packaging/uninstall-linux.sh follows
# to remove every trace, the group too when this script created it.
#
# Capabilities, not polkit: diverting needs CAP_NET_ADMIN (netfilter rules,
# NFQUEUE) and CAP_NET_RAW (re-injection through raw sockets) in the process
# that talks to the kernel. polkit can only start a program as root (pkexec).
# File capabilities give exactly these two privileges to the capture program
# alone, for the members of its group, and nothing else of root's.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
bundle="$repo/dist/divertgui"
prefix=/usr
root=""
capabilities=yes
CAPS="cap_net_admin,cap_net_raw+ep"
GROUP=divertgui

usage() {
    echo "usage: install-linux.sh [--bundle DIR] [--prefix DIR] [--root DIR] [--no-capabilities]" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) [ $# -ge 2 ] || usage; bundle=$2; shift 2 ;;
        --prefix) [ $# -ge 2 ] || usage; prefix=$2; shift 2 ;;
        --root) [ $# -ge 2 ] || usage; root=$2; shift 2 ;;
        --no-capabilities) capabilities=no; shift ;;
        -h|--help) usage ;;
        *) echo "install-linux.sh: unknown argument $1" >&2; usage ;;
    esac
done

case "$prefix" in /*) ;; *) echo "install-linux.sh: --prefix must be an absolute path, not $prefix" >&2; exit 2 ;; esac
if [ -n "$root" ]; then
    [ -d "$root" ] || { echo "install-linux.sh: --root $root is not a directory" >&2; exit 2; }
    root=$(cd "$root" && pwd)
fi
for program in divertgui divert; do
    [ -x "$bundle/$program" ] || {
        echo "install-linux.sh: no bundle at $bundle ($program missing): run packaging/build.sh first, or pass --bundle DIR" >&2
        exit 1
    }
done
icons="$repo/resources/icons"
desktop="$repo/resources/divertgui.desktop"
for f in "$icons/divertgui.svg" "$desktop"; do
    [ -f "$f" ] || { echo "install-linux.sh: $f is missing from the source tree" >&2; exit 1; }
done

opt="$root/opt/divertgui"
manifest="$opt/install-manifest"
if [ -e "$opt" ]; then
    echo "install-linux.sh: $opt exists already: run packaging/uninstall-linux.sh${root:+ --root $root} first" >&2
    exit 1
fi
share="$root$prefix/share"
bin="$root$prefix/bin"
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install-linux.sh: installing into /opt and $prefix needs root: run it with sudo (or use --root DIR)" >&2
    exit 1
fi

# Directories are recorded as created only when they did not exist, so that
# uninstalling removes them and nothing that was there before.
created=""
make_dir() {
    missing=""
    dir=$1
    while [ ! -d "$dir" ]; do
        missing="$dir
$missing"
        dir=$(dirname "$dir")
    done
    mkdir -p "$1"
    created="$created$missing"
}

make_dir "$opt"
make_dir "$bin"
make_dir "$share/applications"
for size in 16 24 32 48 64 128 256; do
    make_dir "$share/icons/hicolor/${size}x${size}/apps"
done
make_dir "$share/icons/hicolor/scalable/apps"
tmpfiles="$root$prefix/lib/tmpfiles.d"
make_dir "$tmpfiles"

files=""
record() { files="$files$1
"; }

cp -a "$bundle/." "$opt/"
if [ "$(id -u)" -eq 0 ]; then
    # Root's, whoever built the bundle: a file its builder could still change would run with
    # the capture program's capabilities, and in every user's window.
    chown -R root:root "$opt"
    chmod -R go-w "$opt"
fi
ln -s "/opt/divertgui/divertgui" "$bin/divertgui"
record "$bin/divertgui"
ln -s "/opt/divertgui/divert" "$bin/divert"
record "$bin/divert"
# The entry starts the installed program by its full path: a double-click must
# not depend on $PATH.
sed -e "s|^Exec=divertgui|Exec=/opt/divertgui/divertgui|" -e "s|^TryExec=divertgui|TryExec=/opt/divertgui/divertgui|" \
    "$desktop" > "$share/applications/divertgui.desktop"
record "$share/applications/divertgui.desktop"
for size in 16 24 32 48 64 128 256; do
    cp "$icons/divertgui-$size.png" "$share/icons/hicolor/${size}x${size}/apps/divertgui.png"
    record "$share/icons/hicolor/${size}x${size}/apps/divertgui.png"
done
cp "$icons/divertgui.svg" "$share/icons/hicolor/scalable/apps/divertgui.svg"
record "$share/icons/hicolor/scalable/apps/divertgui.svg"
# The rule lock's directory: root's, writable by no one else (divertgui.engine.backends.netfilter_rules).
echo "d /run/divertgui 0755 root root -" > "$tmpfiles/divertgui.conf"
# The handle registry: the capture group may add entries, each writer may remove only its own
# (divertgui.engine.backends.handle_registry).
echo "d /run/divertgui/handles 1775 root divertgui -" >> "$tmpfiles/divertgui.conf"
# The rule lock itself: whoever can open it can hold it, so the capture group only.
echo "f /run/divertgui/rules.lock 0640 root divertgui -" >> "$tmpfiles/divertgui.conf"
record "$tmpfiles/divertgui.conf"
if [ -z "$root" ]; then
    mkdir -p /run/divertgui && chmod 0755 /run/divertgui
    mkdir -p /run/divertgui/handles && chmod 1775 /run/divertgui/handles
fi

# The group that may run the capture program; in a scratch root, that root's group file.
groups="$root/etc/group"
group_made=no
member_added=""
if [ "$(id -u)" -ne 0 ]; then
    echo "install-linux.sh: not root: $opt/divert stays yours and runnable by you only" >&2
    chmod 0700 "$opt/divert"
elif [ ! -f "$groups" ]; then
    echo "install-linux.sh: $groups does not exist: no group $GROUP; $opt/divert runs for root only" >&2
    chown root:root "$opt/divert"
    chmod 0700 "$opt/divert"
else
    prefix_option=""
    [ -n "$root" ] && prefix_option="-P $root"
    if ! grep -q "^$GROUP:" "$groups"; then
        # shellcheck disable=SC2086
        groupadd $prefix_option -r "$GROUP"
        group_made=yes
    fi
    gid=$(grep "^$GROUP:" "$groups" | cut -d: -f3)
    chown "root:$gid" "$opt/divert"
    if [ -z "$root" ]; then
        chgrp "$gid" /run/divertgui/handles
        # A lock that is there already (made at boot, or left by an earlier install) gets the same owner.
        if [ -e /run/divertgui/rules.lock ]; then
            chown "root:$gid" /run/divertgui/rules.lock && chmod 0640 /run/divertgui/rules.lock
        else
            install -m 0640 -o root -g "$gid" /dev/null /run/divertgui/rules.lock
        fi
    fi
    chmod 0750 "$opt/divert"
    user=${SUDO_USER:-}
    if [ -n "$user" ] && [ "$user" != root ]; then
        members=$(grep "^$GROUP:" "$groups" | cut -d: -f4)
        case ",$members," in
            *",$user,"*) ;;
            *)
                # shellcheck disable=SC2086
                if usermod $prefix_option -a -G "$GROUP" "$user"; then
                    member_added=$user
                fi ;;
        esac
    fi
fi

if [ "$capabilities" = yes ]; then
    if ! command -v setcap >/dev/null 2>&1; then
        echo "install-linux.sh: setcap not found (Debian package libcap2-bin): capture will need root" >&2
    elif ! setcap "$CAPS" "$opt/divert" 2>/tmp/divertgui-setcap.$$; then
        echo "install-linux.sh: could not give $opt/divert $CAPS ($(cat /tmp/divertgui-setcap.$$));" \
             "the filesystem may not support extended attributes: capture will need root" >&2
    fi
    rm -f /tmp/divertgui-setcap.$$
fi

# Paths are stored relative to the root, so that the tree can be moved as a whole.
{
    echo "# divertgui install manifest: uninstall-linux.sh removes these"
    printf '%s' "$files" | sed -e '/^$/d' -e "s|^$root|file |"
    echo "tree /opt/divertgui"
    printf '%s' "$created" | sed -e '/^$/d' -e "s|^$root|dir |"
    [ "$group_made" = yes ] && echo "group $GROUP"
    [ -n "$member_added" ] && echo "member $member_added"
    true
} > "$manifest"

# An icon cache that exists must learn the new icon; none is created where there was none.
if [ -f "$share/icons/hicolor/icon-theme.cache" ] && command -v gtk-update-icon-cache >/dev/null 2>&1; then
    gtk-update-icon-cache -q -t "$share/icons/hicolor" || true
fi
echo "installed divertgui in $opt"
if [ -n "$member_added" ]; then
    echo "added $member_added to the group $GROUP, whose members may capture: log out and in again" \
         "(a new login) for it to take effect"
fi
