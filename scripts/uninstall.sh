#!/bin/sh
# Removes what scripts/install.sh laid out, given the same PREFIX, DESTDIR, SYSCONFDIR and
# UNITDIR. Stop memfd-bind.service first, so that it releases its bindings. Kept on purpose:
# $SYSCONFDIR/memfd-bind.d when it still holds an administrator's files, and the state in
# /var/lib/memfd-bind.
set -eu

PREFIX=${PREFIX:-/usr}
DESTDIR=${DESTDIR:-}
SYSCONFDIR=${SYSCONFDIR:-/etc}
UNITDIR=${UNITDIR:-$PREFIX/lib/systemd/system}

DATADIR=$PREFIX/share

for dir in "$PREFIX" "$SYSCONFDIR" "$UNITDIR"; do
	case $dir in
	/*) ;;
	*)
		printf 'uninstall.sh: %s is not an absolute path\n' "$dir" >&2
		exit 1
		;;
	esac
done

rm -f "$DESTDIR$PREFIX/bin/memfdctl" \
	"$DESTDIR$PREFIX/sbin/memfd-bindd" \
	"$DESTDIR$DATADIR/dbus-1/system.d/org.opencontainers.MemfdBind.conf" \
	"$DESTDIR$DATADIR/dbus-1/system-services/org.opencontainers.MemfdBind.service" \
	"$DESTDIR$DATADIR/dbus-1/interfaces/org.opencontainers.MemfdBind1.xml" \
	"$DESTDIR$DATADIR/polkit-1/actions/org.opencontainers.memfdbind.policy" \
	"$DESTDIR$UNITDIR/memfd-bind.service" \
	"$DESTDIR$UNITDIR/memfd-bind@.service" \
	"$DESTDIR$SYSCONFDIR/apt/apt.conf.d/80memfd-bind"
rm -rf "$DESTDIR$PREFIX/lib/memfd-bind" "$DESTDIR$DATADIR/doc/memfd-bind"
rmdir "$DESTDIR$SYSCONFDIR/memfd-bind.d" 2>/dev/null || true
