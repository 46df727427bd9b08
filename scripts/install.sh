#!/bin/sh
# Lays out memfd-bind for a distribution from a built tree (run "npm run build" first).
#
#   PREFIX      where the program lives; default /usr. dbus-daemon reads system bus policies only
#               from /usr/share/dbus-1/system.d and /etc/dbus-1/system.d, and polkitd reads
#               actions only from /usr/share/polkit-1/actions, so with any other PREFIX those
#               two files must be linked into place by hand.
#   DESTDIR     staging root prepended to every path, for packaging; default empty.
#   SYSCONFDIR  default /etc; receives the apt hook and the empty memfd-bind.d/.
#   UNITDIR     systemd system unit directory; default $PREFIX/lib/systemd/system.
#
# Paths to the programs inside the unit, activation and apt files are written for /usr in the
# repository and rewritten here for the chosen PREFIX. Nothing is started or reloaded.
set -eu
umask 022

PREFIX=${PREFIX:-/usr}
DESTDIR=${DESTDIR:-}
SYSCONFDIR=${SYSCONFDIR:-/etc}
UNITDIR=${UNITDIR:-$PREFIX/lib/systemd/system}

BINDIR=$PREFIX/bin
SBINDIR=$PREFIX/sbin
LIBDIR=$PREFIX/lib/memfd-bind
DATADIR=$PREFIX/share
DOCDIR=$DATADIR/doc/memfd-bind

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)

# Prints a failure and stops.
fail() {
	printf 'install.sh: %s\n' "$*" >&2
	exit 1
}

# Rejects a directory variable that is not absolute or that sed and unit files could not carry
# verbatim.
check_dir() {
	case $2 in
	/*) ;;
	*) fail "$1 must be an absolute path, got '$2'" ;;
	esac
	case $2 in
	*[!A-Za-z0-9._/+-]*) fail "$1 may hold only letters, digits and . _ / + -, got '$2'" ;;
	esac
}

check_dir PREFIX "$PREFIX"
check_dir SYSCONFDIR "$SYSCONFDIR"
check_dir UNITDIR "$UNITDIR"
if [ -n "$DESTDIR" ]; then
	case $DESTDIR in
	/*) ;;
	*) fail "DESTDIR must be an absolute path, got '$DESTDIR'" ;;
	esac
fi

for f in bin/memfdctl bin/memfd-bindd package.json package-lock.json dist/src; do
	[ -e "$SRCDIR/$f" ] || fail "missing $SRCDIR/$f (run 'npm ci' and 'npm run build' first)"
done
# The entry modules are whatever the bin scripts import.
sed -n "s|^import [\"']\.\./\(dist/[^\"']*\)[\"'];*\$|\1|p" "$SRCDIR/bin/memfdctl" "$SRCDIR/bin/memfd-bindd" |
	while IFS= read -r f; do
		[ -e "$SRCDIR/$f" ] || fail "missing $SRCDIR/$f (run 'npm run build' first)"
	done

# Copies a file and sets its mode: put MODE SOURCE TARGET.
put() {
	mkdir -p "$(dirname "$3")"
	cp "$2" "$3"
	chmod "$1" "$3"
}

# Like put, but points the programs' paths at PREFIX.
put_rewritten() {
	mkdir -p "$(dirname "$3")"
	sed -e "s|/usr/sbin/memfd-bindd|$SBINDIR/memfd-bindd|g" \
		-e "s|/usr/bin/memfdctl|$BINDIR/memfdctl|g" \
		-e "s|file:/usr/share/doc/memfd-bind/|file:$DOCDIR/|g" \
		"$2" >"$3"
	chmod "$1" "$3"
}

# The program tree is built next to its final place and swapped in at the end, so a failed run
# leaves the previous installation whole.
target=$DESTDIR$LIBDIR
stage=$DESTDIR$PREFIX/lib/.memfd-bind.new
rm -rf "$stage"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/dist" "$stage/bin" "$stage/node_modules"

put 0644 "$SRCDIR/package.json" "$stage/package.json"
put 0644 "$SRCDIR/package-lock.json" "$stage/package-lock.json"
put 0755 "$SRCDIR/bin/memfdctl" "$stage/bin/memfdctl"
put 0755 "$SRCDIR/bin/memfd-bindd" "$stage/bin/memfd-bindd"
cp -R -P "$SRCDIR/dist/src" "$stage/dist/src"
# The service reads its introspection data from dbus/ beside dist/ at start-up.
if [ -e "$SRCDIR/dbus/org.opencontainers.MemfdBind1.xml" ]; then
	put 0644 "$SRCDIR/dbus/org.opencontainers.MemfdBind1.xml" "$stage/dbus/org.opencontainers.MemfdBind1.xml"
fi

# Production packages are copied as the build tree has them, found with "npm ls", which only
# reads. "npm prune --omit=dev" or "npm ci --omit=dev" would instead re-resolve the lock file and
# bring back optional packages the build left out (dbus-next's usocket, with node-gyp and some
# hundred more). Sorting puts every package before the ones nested inside it, which its copy
# already holds.
if ! (cd "$SRCDIR" && npm ls --omit=dev --all --parseable >"$stage/.packages" 2>"$stage/.npm-ls.err"); then
	cat "$stage/.npm-ls.err" >&2
	fail "production packages in $SRCDIR/node_modules are missing or invalid (run 'npm ci' first)"
fi
LC_ALL=C sort "$stage/.packages" | while IFS= read -r dir; do
	case $dir in
	"$SRCDIR"/node_modules/*) ;;
	*) continue ;;
	esac
	rel=${dir#"$SRCDIR"/}
	[ -e "$stage/$rel" ] && continue
	mkdir -p "$(dirname "$stage/$rel")"
	cp -R -P "$dir" "$stage/$rel"
done
rm -f "$stage/.packages" "$stage/.npm-ls.err"

rm -rf "$target"
mv "$stage" "$target"
trap - EXIT

# Relative links, so that the tree works the same under DESTDIR and after relocation.
mkdir -p "$DESTDIR$BINDIR" "$DESTDIR$SBINDIR"
ln -sf ../lib/memfd-bind/bin/memfdctl "$DESTDIR$BINDIR/memfdctl"
ln -sf ../lib/memfd-bind/bin/memfd-bindd "$DESTDIR$SBINDIR/memfd-bindd"

put 0644 "$SRCDIR/dbus/org.opencontainers.MemfdBind.conf" \
	"$DESTDIR$DATADIR/dbus-1/system.d/org.opencontainers.MemfdBind.conf"
put_rewritten 0644 "$SRCDIR/dbus/org.opencontainers.MemfdBind.service" \
	"$DESTDIR$DATADIR/dbus-1/system-services/org.opencontainers.MemfdBind.service"
if [ -e "$SRCDIR/dbus/org.opencontainers.MemfdBind1.xml" ]; then
	put 0644 "$SRCDIR/dbus/org.opencontainers.MemfdBind1.xml" \
		"$DESTDIR$DATADIR/dbus-1/interfaces/org.opencontainers.MemfdBind1.xml"
fi
put 0644 "$SRCDIR/polkit/org.opencontainers.memfdbind.policy" \
	"$DESTDIR$DATADIR/polkit-1/actions/org.opencontainers.memfdbind.policy"

put_rewritten 0644 "$SRCDIR/systemd/memfd-bind.service" "$DESTDIR$UNITDIR/memfd-bind.service"
put_rewritten 0644 "$SRCDIR/systemd/memfd-bind@.service" "$DESTDIR$UNITDIR/memfd-bind@.service"

put_rewritten 0644 "$SRCDIR/apt/80memfd-bind" "$DESTDIR$SYSCONFDIR/apt/apt.conf.d/80memfd-bind"

# Administrators declare the paths to bind in *.conf files here.
mkdir -p "$DESTDIR$SYSCONFDIR/memfd-bind.d"
chmod 0755 "$DESTDIR$SYSCONFDIR/memfd-bind.d"

if [ -e "$SRCDIR/README.md" ]; then
	put 0644 "$SRCDIR/README.md" "$DESTDIR$DOCDIR/README.md"
fi

if [ "$PREFIX" != /usr ]; then
	printf 'install.sh: note: link %s and %s into /usr/share for dbus-daemon and polkitd to read them\n' \
		"$DATADIR/dbus-1/system.d/org.opencontainers.MemfdBind.conf" \
		"$DATADIR/polkit-1/actions/org.opencontainers.memfdbind.policy" >&2
fi
