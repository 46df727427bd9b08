// Mount-table helpers for integration tests, and a stand-in for "another tool" that leaves its
// own memfd mount behind. Only ever used inside the test's private mount namespace.
import { spawn } from 'node:child_process';
import { closeSync, readFileSync, readlinkSync, writeSync } from 'node:fs';
import {
	MFD_ALLOW_SEALING,
	MFD_CLOEXEC,
	MS_BIND,
	O_CLOEXEC,
	O_NOFOLLOW,
	O_PATH,
	O_RDONLY,
	RUNC_SEALS,
	addSeals,
	getSeals,
	memfdCreate,
	mount,
	openRaw,
} from '../../src/common/libc.js';
import { parseMountInfo } from '../../src/common/mountinfo.js';
import type { MountEntry } from '../../src/common/mountinfo.js';

/** The mount table of this process, one normalised line per mount (ids left out). */
export function mountTable(): string[] {
	return parseMountInfo(readFileSync('/proc/self/mountinfo')).map(
		(entry) => `${entry.mountPoint} ${entry.root} ${entry.fsType} ${entry.source}`,
	);
}

/** The mounts stacked at `path`, bottom first. */
export function mountsAt(path: string): MountEntry[] {
	return parseMountInfo(readFileSync('/proc/self/mountinfo')).filter(
		(entry) => entry.mountPoint === path,
	);
}

/** F_GET_SEALS of the file `path` opens to, or undefined when it carries none. */
export function sealsAt(path: string): number | undefined {
	const fd = openRaw(path, O_RDONLY | O_CLOEXEC);
	try {
		return getSeals(fd);
	} catch {
		return undefined;
	} finally {
		closeSync(fd);
	}
}

/** Where `path` leads once opened, e.g. `/memfd:memfd-bind:/x (deleted)`. */
export function openedAs(path: string): string {
	const fd = openRaw(path, O_RDONLY | O_CLOEXEC);
	try {
		return readlinkSync(`/proc/self/fd/${fd}`);
	} finally {
		closeSync(fd);
	}
}

/**
 * Mounts a sealed memfd holding `content` over `path` the way other tools do (runc's
 * memfd-bind), held by a process named `name` that is not ours. Returns the holder's pid.
 */
export function foreignMemfdMount(path: string, content: Buffer, name = 'other-tool'): number {
	const memfd = memfdCreate('other-tool', MFD_CLOEXEC | MFD_ALLOW_SEALING);
	writeSync(memfd, content);
	addSeals(memfd, RUNC_SEALS);
	const child = spawn('/bin/sleep', ['infinity'], {
		argv0: name,
		detached: true,
		stdio: ['ignore', 'ignore', 'ignore', memfd],
	});
	child.unref();
	closeSync(memfd);
	const link = openRaw(`/proc/${child.pid}/fd/3`, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	const target = openRaw(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	try {
		mount(`/proc/self/fd/${link}`, `/proc/self/fd/${target}`, MS_BIND);
	} finally {
		closeSync(link);
		closeSync(target);
	}
	return child.pid!;
}

/** Kills a process and waits until it is gone (a zombie counts as gone: its fds are closed). */
export async function killAndWait(pid: number): Promise<void> {
	process.kill(pid, 'SIGKILL');
	for (let i = 0; i < 250; i++) {
		try {
			const status = readFileSync(`/proc/${pid}/status`, 'utf8');
			if (/^State:\s+Z/m.test(status)) {
				return;
			}
		} catch {
			return;
		}
		await new Promise((resolve) => setTimeout(resolve, 20));
	}
	throw new Error(`process ${pid} did not die`);
}
