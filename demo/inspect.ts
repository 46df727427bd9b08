// Checks the demo makes on its own, apart from memfdctl: what a path opens to, and what is left
// in the namespace once everything has been stopped.
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { magicLinkOf, readMountInfo } from '../src/common/mountinfo.js';
import { openedAs, sealsAt } from '../test/helpers/mounts.js';

/** What opening `path` gives right now. */
export interface PathView {
	sha256: string;
	size: number;
	/** `dev:ino` of the file reached through the path. */
	inode: string;
	/** readlink of the opened file, e.g. `/memfd:memfd-bind:/usr/bin/crun (deleted)`. */
	openedAs: string;
	memfd: boolean;
	seals?: number;
}

/** Looks at `path` the way a container runtime starting from it would. */
export function viewPath(path: string): PathView {
	const bytes = readFileSync(path);
	const stat = statSync(path);
	const target = openedAs(path);
	return {
		sha256: createHash('sha256').update(bytes).digest('hex'),
		size: bytes.length,
		inode: `${stat.dev}:${stat.ino}`,
		openedAs: target,
		memfd: target.startsWith('/memfd:'),
		seals: sealsAt(path),
	};
}

/** Memfd magic-link mounts in this mount namespace, as `mount point <- /pid/fd/n` lines. */
export function memfdMounts(): string[] {
	return readMountInfo()
		.filter((entry) => magicLinkOf(entry) !== undefined)
		.map((entry) => `${entry.mountPoint} <- ${entry.root}`);
}

/** Processes in this pid namespace other than this one, as `pid name (state)`. */
export function otherProcesses(): string[] {
	return processes()
		.filter((entry) => entry.pid !== process.pid)
		.map((entry) => `${entry.pid} ${entry.comm} (${entry.state})`);
}

/** Pids in this pid namespace whose command name is `comm`. */
export function processesNamed(comm: string): number[] {
	return processes()
		.filter((entry) => entry.comm === comm)
		.map((entry) => entry.pid);
}

function processes(): { pid: number; comm: string; state: string }[] {
	const found = [];
	for (const name of readdirSync('/proc').filter((entry) => /^\d+$/.test(entry))) {
		try {
			const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
			// comm may hold spaces and parentheses; the state follows the last ')'.
			const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
			const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
			found.push({ pid: Number(name), comm, state });
		} catch {
			// Gone between readdir and read: not left behind.
		}
	}
	return found;
}
