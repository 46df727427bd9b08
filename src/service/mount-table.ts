// The mount table as memfd-bind sees it: which mount sits exactly at a path, whether a memfd
// magic-link mount is still alive, how to remove one, and the file on disk beneath it.
import { closeSync, lstatSync, readFileSync, statSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { ErrorName } from '../common/names.js';
import { quote } from '../common/quote.js';
import {
	MNT_DETACH,
	O_CLOEXEC,
	O_NOFOLLOW,
	O_PATH,
	O_RDONLY,
	getSeals,
	openRaw,
	openTreeClone,
	umount2,
} from '../common/libc.js';
import { magicLinkOf, readMountInfo } from '../common/mountinfo.js';
import type { MagicLink, MountEntry } from '../common/mountinfo.js';
import type { BindingView, Origin } from './binder.js';
import { BindError } from './errors.js';
import { HOLDER_FD, fdTarget, processName } from './holder.js';
import { log } from './log.js';

/** Tells whether the file at `path` can be opened and is a memfd sealed exactly 0xF. */
export function pathSeals(path: string): number | undefined {
	let fd = -1;
	try {
		fd = openRaw(path, O_RDONLY | O_CLOEXEC);
		return getSeals(fd);
	} catch {
		return undefined;
	} finally {
		if (fd >= 0) {
			closeSync(fd);
		}
	}
}

// Unmounts through an O_PATH|O_NOFOLLOW descriptor: a path name would follow the magic link,
// which fails once the holder is gone.
export function unmountTop(path: string, holderPid: number | undefined): void {
	const top = topMountAt(path);
	try {
		const link = top === undefined ? undefined : magicLinkOf(top.entry);
		if (
			top === undefined ||
			link === undefined ||
			(holderPid !== undefined && link.pid !== holderPid)
		) {
			throw new BindError(
				ErrorName.NotBound,
				`Failed to unmount ${quote(path)}: the memfd mount is no longer there`,
			);
		}
		umount2(`/proc/self/fd/${top.fd}`, MNT_DETACH);
	} finally {
		if (top !== undefined) {
			closeSync(top.fd);
		}
	}
}

/** The mount of a holder's magic link, wherever it landed (even at a path renamed meanwhile). */
export function findHolderMount(holderPid: number): MountEntry | undefined {
	return readMountInfo().find((entry) => {
		const link = magicLinkOf(entry);
		return link?.pid === holderPid && link.fd === HOLDER_FD;
	});
}

/**
 * Unmounts exactly `entry`, through an O_PATH descriptor of its mount point, when it is the
 * top mount there; returns false when it is not (something was mounted over it, or it is gone).
 */
export function unmountExactly(entry: MountEntry): boolean {
	let fd: number;
	try {
		fd = openRaw(entry.mountPointBytes, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	} catch {
		return false;
	}
	try {
		if (topMountOf(fd)?.mountId !== entry.mountId) {
			return false;
		}
		umount2(`/proc/self/fd/${fd}`, MNT_DETACH);
		return true;
	} finally {
		closeSync(fd);
	}
}

// Removes stale memfd mounts stacked at `path`, top first, until the top one is something else.
export function removeStaleMounts(path: string): string[] {
	const removed: string[] = [];
	for (let round = 0; round < 64; round++) {
		const top = topMountAt(path);
		if (top === undefined) {
			break;
		}
		try {
			const link = magicLinkOf(top.entry);
			if (link === undefined) {
				break;
			}
			if (isLinkAlive(path)) {
				if (removed.length === 0) {
					throw new BindError(ErrorName.AlreadyBound, describeForeignMount(path, link));
				}
				break;
			}
			umount2(`/proc/self/fd/${top.fd}`, MNT_DETACH);
			removed.push(path);
			log.info(`Removed stale memfd mount at ${quote(path)} (holder pid ${link.pid} is gone)`);
		} finally {
			closeSync(top.fd);
		}
	}
	return removed;
}

/** The mount whose root sits exactly at `path`, with an O_PATH fd the caller must close. */
export function topMountAt(path: string): { fd: number; entry: MountEntry } | undefined {
	let fd: number;
	try {
		fd = openRaw(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	} catch {
		return undefined;
	}
	const entry = topMountOf(fd);
	if (entry === undefined || entry.mountPoint !== path) {
		closeSync(fd);
		return undefined;
	}
	return { fd, entry };
}

export function topMountOf(fd: number): MountEntry | undefined {
	const fdinfo = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
	const match = /^mnt_id:\s*(\d+)$/m.exec(fdinfo);
	if (match === null) {
		return undefined;
	}
	const mountId = Number(match[1]);
	return readMountInfo().find((entry) => entry.mountId === mountId);
}

// Following the mount's magic link fails once the process holding the memfd is gone.
export function isLinkAlive(path: string): boolean {
	try {
		statSync(path);
		return true;
	} catch {
		return false;
	}
}

/**
 * Stats the file on disk beneath any mount at `path`: a non-recursive clone of the directory's
 * mount does not carry the file mounts made inside it.
 */
export function diskFileOrigin(path: string): Origin | undefined {
	const slash = path.lastIndexOf('/');
	let tree = -1;
	try {
		tree = openTreeClone(path.slice(0, slash) || '/');
		return originOf(lstatSync(`/proc/self/fd/${tree}/${path.slice(slash + 1)}`));
	} catch {
		return undefined;
	} finally {
		if (tree >= 0) {
			closeSync(tree);
		}
	}
}

export function originOf(stat: Stats): Origin {
	return { dev: stat.dev, ino: stat.ino, size: stat.size, mtimeMs: stat.mtimeMs };
}

export function foreignView(entry: MountEntry, link: MagicLink): BindingView {
	const alive = isLinkAlive(entry.mountPoint);
	const target = alive ? fdTarget(link.pid, link.fd) : undefined;
	return {
		path: entry.mountPoint,
		state: alive ? 'foreign' : 'stale',
		holderPid: link.pid,
		holderName: alive ? processName(link.pid) : undefined,
		memfdName: target?.replace(/^\/memfd:/, '').replace(/ \(deleted\)$/, ''),
		seals: alive ? pathSeals(entry.mountPoint) : undefined,
	};
}

export function describeForeignMount(path: string, link: MagicLink): string {
	const name = processName(link.pid);
	if (!isLinkAlive(path) || name === undefined) {
		return `Failed to bind ${quote(path)}: a stale memfd mount is there (holder pid ${link.pid} is gone); remove it with Cleanup`;
	}
	return `Failed to bind ${quote(path)}: it is already bound to a memfd held by pid ${link.pid} (${name})`;
}
