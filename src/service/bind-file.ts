// Making and removing one binding: open the target once, copy it into a sealed memfd, start
// its holder, mount the holder's magic link onto the target, and undo all of it on failure.
import { closeSync, fstatSync, readlinkSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { ErrorName } from '../common/names.js';
import { quote } from '../common/quote.js';
import {
	MS_BIND,
	O_CLOEXEC,
	O_NOFOLLOW,
	O_PATH,
	O_RDONLY,
	RUNC_SEALS,
	getSeals,
	isErrno,
	mount,
	openRaw,
} from '../common/libc.js';
import { magicLinkOf } from '../common/mountinfo.js';
import type { Binding } from './binder.js';
import { BindError, failure, isBindError } from './errors.js';
import { HOLDER_FD, fdTarget, spawnHolder, stopHolder } from './holder.js';
import { log } from './log.js';
import {
	describeForeignMount,
	findHolderMount,
	unmountExactly,
	originOf,
	pathSeals,
	topMountAt,
	topMountOf,
	unmountTop,
} from './mount-table.js';
import { createSealedCopy } from './sealed-copy.js';
import type { SealedCopy } from './sealed-copy.js';

/** Binds a sealed copy of the regular file at `path` over it. */
export async function bindFile(path: string, boundBy: number, maxSize: number): Promise<Binding> {
	const targetFd = openTarget(path);
	const fds = [targetFd];
	let holderPid = 0;
	let mounted = false;
	try {
		const stat = fstatSync(targetFd);
		checkFileType(path, targetFd, stat);
		if (readlinkSync(`/proc/self/fd/${targetFd}`) !== path) {
			throw new BindError(
				ErrorName.Failed,
				`Failed to bind ${quote(path)}: the path changed while it was being opened`,
			);
		}
		checkSize(path, stat, maxSize);

		// Read from a reopen of the very inode we will mount onto, never from the name again.
		const sourceFd = openRaw(`/proc/self/fd/${targetFd}`, O_RDONLY | O_CLOEXEC);
		fds.push(sourceFd);
		refuseSealedMemfd(path, sourceFd);
		const held = await copyAndHold(path, sourceFd, stat, fds);
		holderPid = held.holderPid;

		checkStillThere(path, targetFd);
		mountOver(path, held.linkFd, targetFd);
		mounted = true;
		verifyMounted(path, holderPid);
		return toBinding(path, held.copy, stat, boundBy, holderPid);
	} catch (error: unknown) {
		undoBind(path, holderPid, mounted);
		throw failure('bind', path, error);
	} finally {
		closeAll(fds);
	}
}

// mount(2) fails with ENOENT when the target was unlinked after the last check: say what happened.
function mountOver(path: string, linkFd: number, targetFd: number): void {
	try {
		mount(`/proc/self/fd/${linkFd}`, `/proc/self/fd/${targetFd}`, MS_BIND);
	} catch (error: unknown) {
		if (isErrno(error, 'ENOENT')) {
			throw new BindError(
				ErrorName.Failed,
				`Failed to bind ${quote(path)}: the file was moved, replaced or removed during the copy`,
				{ cause: error },
			);
		}
		throw error;
	}
}

// The sealed copy and the holder that keeps it; the fds opened go into `fds` for the caller
// to close.
export async function copyAndHold(
	path: string,
	sourceFd: number,
	stat: Stats,
	fds: number[],
): Promise<{ copy: SealedCopy; holderPid: number; linkFd: number }> {
	const copy = await createSealedCopy({
		fd: sourceFd,
		path,
		size: stat.size,
		mode: stat.mode,
		uid: stat.uid,
		gid: stat.gid,
	});
	fds.push(copy.fd);
	const holderPid = spawnHolder(copy.fd);
	try {
		const linkFd = openHolderLink(path, holderPid, copy.name);
		fds.push(linkFd);
		return { copy, holderPid, linkFd };
	} catch (error: unknown) {
		stopHolder(holderPid);
		throw error;
	}
}

export function checkSize(path: string, stat: Stats, maxSize: number): void {
	if (stat.size > maxSize) {
		throw new BindError(
			ErrorName.TooLarge,
			`Failed to bind ${quote(path)}: ${stat.size} bytes is larger than the limit of ${maxSize} bytes`,
		);
	}
}

export function toBinding(
	path: string,
	copy: SealedCopy,
	stat: Stats,
	boundBy: number,
	holderPid: number,
): Binding {
	return {
		path,
		size: copy.size,
		sha256: copy.sha256,
		seals: copy.seals,
		mode: stat.mode & 0o777,
		uid: stat.uid,
		gid: stat.gid,
		boundAt: Date.now() * 1000,
		boundBy,
		memfdName: copy.name,
		holderPid,
		origin: originOf(stat),
	};
}

export function closeAll(fds: number[]): void {
	for (const fd of fds) {
		closeSync(fd);
	}
}

export function openTarget(path: string): number {
	try {
		return openRaw(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	} catch (error: unknown) {
		if (isErrno(error, 'ENOENT')) {
			throw new BindError(ErrorName.NotFound, `Failed to bind ${quote(path)}: no such file`);
		}
		throw failure('open', path, error);
	}
}

// A symlink here is either someone's memfd mount (its root is a proc magic link) or a plain
// symlink, which is refused: the mount would land on whatever it points to.
function checkFileType(path: string, fd: number, stat: Stats): void {
	if (stat.isFile()) {
		return;
	}
	if (stat.isSymbolicLink()) {
		const top = topMountOf(fd);
		const link = top === undefined ? undefined : magicLinkOf(top);
		if (top !== undefined && link !== undefined) {
			throw new BindError(ErrorName.AlreadyBound, describeForeignMount(path, link));
		}
		throw new BindError(
			ErrorName.NotRegularFile,
			`Failed to bind ${quote(path)}: it is a symbolic link; bind the file it points to`,
		);
	}
	const kind = stat.isDirectory()
		? 'a directory'
		: stat.isFIFO()
			? 'a fifo'
			: stat.isSocket()
				? 'a socket'
				: stat.isCharacterDevice() || stat.isBlockDevice()
					? 'a device'
					: 'not a regular file';
	throw new BindError(
		ErrorName.NotRegularFile,
		`Failed to bind ${quote(path)}: it is ${kind}, not a regular file`,
	);
}

function refuseSealedMemfd(path: string, fd: number): void {
	let seals: number;
	try {
		seals = getSeals(fd);
	} catch {
		return; // EINVAL: a file that cannot carry seals, as files on disk are
	}
	if ((seals & RUNC_SEALS) === RUNC_SEALS) {
		throw new BindError(
			ErrorName.AlreadyBound,
			`Failed to bind ${quote(path)}: it already is a sealed memfd (seals 0x${seals.toString(16)})`,
		);
	}
}

function openHolderLink(path: string, holderPid: number, memfdName: string): number {
	const linkPath = `/proc/${holderPid}/fd/${HOLDER_FD}`;
	// O_NOFOLLOW gives the magic link itself; mounting that is what keeps the memfd reachable.
	const fd = openRaw(linkPath, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fdTarget(holderPid, HOLDER_FD) !== `/memfd:${memfdName} (deleted)`) {
		closeSync(fd);
		throw new BindError(
			ErrorName.Failed,
			`Failed to bind ${quote(path)}: holder ${holderPid} does not hold the new memfd`,
		);
	}
	return fd;
}

// The copy took a while: the file may have been renamed, replaced or removed meanwhile.
function checkStillThere(path: string, targetFd: number): void {
	const where = readlinkSync(`/proc/self/fd/${targetFd}`);
	if (where !== path || fstatSync(targetFd).nlink === 0) {
		throw new BindError(
			ErrorName.Failed,
			`Failed to bind ${quote(path)}: the file was moved, replaced or removed during the copy`,
		);
	}
}

// The top mount at the path must be this holder's magic link: a path renamed in the last moment
// shows something else there, and undoBind then finds the mount by its holder wherever it landed.
export function verifyMounted(path: string, holderPid: number): void {
	const top = topMountAt(path);
	const link = top === undefined ? undefined : magicLinkOf(top.entry);
	if (top !== undefined) {
		closeSync(top.fd);
	}
	if (link?.pid !== holderPid || link.fd !== HOLDER_FD || pathSeals(path) !== RUNC_SEALS) {
		throw new BindError(
			ErrorName.Failed,
			`Failed to bind ${quote(path)}: the path was moved or replaced while it was being mounted`,
		);
	}
}

// Removes what a failed Bind made. A holder whose mount cannot be removed is left running:
// killing it would leave a binary that can neither run nor be unmounted by name.
export function undoBind(path: string, holderPid: number, mounted: boolean): void {
	if (holderPid === 0) {
		return;
	}
	const ours = mounted ? findHolderMount(holderPid) : undefined;
	if (ours !== undefined && !unmountExactly(ours)) {
		log.warning(
			`Failed to undo the mount of holder ${holderPid} at ${quote(ours.mountPoint)}: another mount covers it; leaving the holder running`,
		);
		return;
	}
	stopHolder(holderPid);
}

/**
 * Unmounts a binding and stops its holder. The holder is stopped only once no mount uses it:
 * killing it under a mount that something covers, or that moved with a renamed directory, would
 * leave a binary that can neither run nor be unmounted by name.
 */
export function unbindFile(binding: Binding): void {
	try {
		unmountTop(binding.path, binding.holderPid);
	} catch (error: unknown) {
		if (!isBindError(error, ErrorName.NotBound)) {
			throw failure('unmount', binding.path, error);
		}
		const elsewhere = findHolderMount(binding.holderPid);
		if (elsewhere !== undefined && !unmountExactly(elsewhere)) {
			throw new BindError(
				ErrorName.Failed,
				`Failed to release ${quote(binding.path)}: its mount at ${quote(elsewhere.mountPoint)} is covered by another mount; the copy stays in place`,
			);
		}
		if (elsewhere === undefined) {
			log.warning(
				`The memfd mount of ${quote(binding.path)} was already gone; forgetting the binding`,
			);
		}
	}
	if (findHolderMount(binding.holderPid) === undefined) {
		stopHolder(binding.holderPid, binding.memfdName);
	}
}
