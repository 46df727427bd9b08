// `memfdctl status`: a local look at a path, needing no service. It reports what runc and crun
// will see: whether the path opens as a memfd and which seals it carries.
import { closeSync, readlinkSync } from 'node:fs';
import { getSystemErrorMap } from 'node:util';
import { O_CLOEXEC, O_RDONLY, RUNC_SEALS, getSeals, isErrno, openRaw } from '../common/libc.js';
import { magicLinkOf, readMountInfo } from '../common/mountinfo.js';
import { MemfdBindProxy } from './proxy.js';

export interface PathStatus {
	path: string;
	/** readlink of the opened file, e.g. `/memfd:memfd-bind:/usr/bin/runc (deleted)`. */
	target?: string;
	memfd: boolean;
	seals?: number;
	/** runc 1.1.x and crun: seals must equal 0xF. */
	clonedExact: boolean;
	/** runc 1.2 and later: seals must include 0xF. */
	clonedSuperset: boolean;
	/** Who keeps the memfd mounted here: memfd-bind, another process, or a stale mount. */
	holder?: { kind: 'memfd-bind' | 'other' | 'stale'; pid: number; name?: string };
	error?: string;
}

/** Inspects `path` the way a container runtime would at start. */
export async function localStatus(path: string): Promise<PathStatus> {
	const status: PathStatus = { path, memfd: false, clonedExact: false, clonedSuperset: false };
	let fd = -1;
	try {
		fd = openRaw(path, O_RDONLY | O_CLOEXEC);
		status.target = readlinkSync(`/proc/self/fd/${fd}`);
		status.memfd = status.target.startsWith('/memfd:');
		status.seals = getSeals(fd);
	} catch (error: unknown) {
		if (!isErrno(error, 'EINVAL')) {
			const code = (error as NodeJS.ErrnoException).code ?? 'error';
			const errno = (error as NodeJS.ErrnoException).errno;
			const text = errno === undefined ? undefined : getSystemErrorMap().get(errno)?.[1];
			status.error = text === undefined ? code : `${code} (${text})`;
		}
	} finally {
		if (fd >= 0) {
			closeSync(fd);
		}
	}
	if (status.seals !== undefined) {
		status.clonedExact = status.memfd && status.seals === RUNC_SEALS;
		status.clonedSuperset = status.memfd && (status.seals & RUNC_SEALS) === RUNC_SEALS;
	}
	status.holder = await findHolder(path);
	return status;
}

async function findHolder(path: string): Promise<PathStatus['holder']> {
	const entry = readMountInfo()
		.filter((mount) => mount.mountPoint === path && magicLinkOf(mount) !== undefined)
		.pop();
	if (entry === undefined) {
		return undefined;
	}
	const link = magicLinkOf(entry)!;
	let name: string | undefined;
	try {
		name = readlinkSync(`/proc/${link.pid}/exe`);
	} catch {
		name = undefined;
	}
	const ours = await serviceHolds(path, link.pid);
	if (ours) {
		return { kind: 'memfd-bind', pid: link.pid, name };
	}
	return { kind: name === undefined ? 'stale' : 'other', pid: link.pid, name };
}

// Asks the service, without starting it, whether it holds the binding.
async function serviceHolds(path: string, pid: number): Promise<boolean> {
	let proxy: MemfdBindProxy | undefined;
	try {
		proxy = MemfdBindProxy.connect({ interactive: false });
		// A bus that does not answer must not hold up a local check for long.
		let timer: NodeJS.Timeout | undefined;
		const records = await Promise.race([
			proxy.list(false),
			new Promise<never>(
				(_, reject) => (timer = setTimeout(() => reject(new Error('timeout')), 2000)),
			),
		]).finally(() => clearTimeout(timer));
		return records.some(
			(record) => record.Path === path && record.HolderPid === pid && record.State !== 'foreign',
		);
	} catch {
		return false;
	} finally {
		proxy?.disconnect();
	}
}
