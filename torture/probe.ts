// What the torture looks at from outside the service: the mount table, holder processes,
// memfds held anywhere in this pid namespace, the service's fds and memory, the state file.
// All of it comes from /proc, which run.ts mounts for a private pid namespace.
import { readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { magicLinkOf, parseMountInfo, readMountInfo } from '../src/common/mountinfo.js';
import { HOLDER_NAME } from '../src/service/holder.js';
import type { BusClient } from './client.js';

/** A memfd magic-link mount, as the mount table shows it. */
export interface MemfdMount {
	mountPoint: string;
	pid: number;
	fd: number;
	/** The magic link still resolves (its holder keeps the memfd open). */
	alive: boolean;
}

/** A process keeping a memfd-bind memfd open. */
export interface MemfdHolder {
	pid: number;
	fd: number;
	/** The memfd's name without the `/memfd:` prefix and ` (deleted)` suffix. */
	name: string;
	isHolder: boolean;
}

/** The memfd magic-link mounts at or under `dir`, in the caller's mount namespace or `pid`'s. */
export function memfdMounts(dir: string, pid: number | 'self' = 'self'): MemfdMount[] {
	const mounts: MemfdMount[] = [];
	for (const entry of readMountInfoOf(pid)) {
		const link = magicLinkOf(entry);
		if (link === undefined || !isUnder(entry.mountPoint, dir)) {
			continue;
		}
		mounts.push({
			mountPoint: entry.mountPoint,
			pid: link.pid,
			fd: link.fd,
			alive: resolves(entry.mountPoint),
		});
	}
	return mounts;
}

/** The whole mount table without mount ids, so two snapshots compare equal when nothing moved. */
export function mountTable(pid: number | 'self' = 'self'): string[] {
	return readMountInfoOf(pid)
		.map((entry) => `${entry.mountPoint} ${entry.root} ${entry.fsType} ${entry.source}`)
		.sort();
}

/** Every fd in this pid namespace that refers to a memfd-bind memfd made for a path under `dir`. */
export function memfdHolders(dir: string): MemfdHolder[] {
	const held: MemfdHolder[] = [];
	for (const pid of livePids()) {
		let fds: string[];
		try {
			fds = readdirSync(`/proc/${pid}/fd`);
		} catch {
			continue;
		}
		for (const fd of fds) {
			let target: string;
			try {
				target = readlinkSync(`/proc/${pid}/fd/${fd}`);
			} catch {
				continue;
			}
			const name = /^\/memfd:(memfd-bind:.*?)(?: \(deleted\))?$/.exec(target)?.[1];
			if (name !== undefined && isUnder(name.slice('memfd-bind:'.length), dir)) {
				held.push({ pid, fd: Number(fd), name, isHolder: argv0(pid) === HOLDER_NAME });
			}
		}
	}
	return held;
}

/** Live (not zombie) holder processes whose memfd belongs to a path under `dir`. */
export function holderPids(dir: string): number[] {
	const pids = new Set<number>();
	for (const held of memfdHolders(dir)) {
		if (held.isHolder) {
			pids.add(held.pid);
		}
	}
	return [...pids].sort((a, b) => a - b);
}

/** Open fds of a process. */
export function fdCount(pid: number): number {
	return readdirSync(`/proc/${pid}/fd`).length;
}

/** Resident memory of a process, in KiB. */
export function rssKiB(pid: number): number {
	return statusField(`/proc/${pid}/status`, 'VmRSS');
}

/** Machine-wide shared memory (tmpfs and memfds), in KiB, from /proc/meminfo. */
export function shmemKiB(): number {
	return statusField('/proc/meminfo', 'Shmem');
}

/** Paths the state folder says should be bound (suspended ones left out). */
export function statePaths(stateDir: string): string[] {
	try {
		const data = JSON.parse(readFileSync(join(stateDir, 'bindings.json'), 'utf8')) as {
			bindings?: Array<{ path: string; suspended?: boolean }>;
		};
		return (data.bindings ?? [])
			.filter((entry) => entry.suspended !== true)
			.map((entry) => entry.path)
			.sort();
	} catch {
		return [];
	}
}

/**
 * Checks that the mount table, List, the state folder and the holder processes tell one story
 * about the paths under `dir`: each bound path has exactly one live memfd mount, one holder,
 * one active List record and one state entry, and nothing else holds a memfd.
 */
export async function checkAgreement(
	client: BusClient,
	dir: string,
	stateDir: string,
): Promise<string[]> {
	// A holder the service just killed takes a moment to exit: only what persists is a problem.
	const deadline = Date.now() + 2000;
	for (;;) {
		const problems = await findDisagreement(client, dir, stateDir);
		if (problems.length === 0 || Date.now() > deadline) {
			return problems;
		}
		await sleep(50);
	}
}

async function findDisagreement(
	client: BusClient,
	dir: string,
	stateDir: string,
): Promise<string[]> {
	const problems: string[] = [];
	const mounts = memfdMounts(dir);
	const listed = (await client.list()).filter((record) => isUnder(record.Path, dir));
	const saved = statePaths(stateDir);
	const held = memfdHolders(dir);

	const mounted = mounts.map((mount) => mount.mountPoint).sort();
	for (const mount of mounts) {
		if (!mount.alive) {
			problems.push(`stale memfd mount at '${mount.mountPoint}' (holder pid ${mount.pid} is gone)`);
		}
	}
	const stacked = mounted.filter((path, index) => mounted.indexOf(path) !== index);
	if (stacked.length > 0) {
		problems.push(
			`memfd mounts stacked at ${[...new Set(stacked)].map((path) => `'${path}'`).join(', ')}`,
		);
	}
	for (const record of listed.filter((record) => record.State !== 'active')) {
		problems.push(`List shows '${record.Path}' as ${record.State}`);
	}
	const listedPaths = listed.map((record) => record.Path).sort();
	compareSets(problems, 'the mount table', mounted, 'List', listedPaths);
	compareSets(problems, 'the mount table', [...new Set(mounted)], 'the state folder', saved);

	const mountPids = new Set(mounts.map((mount) => mount.pid));
	for (const entry of held) {
		if (!entry.isHolder) {
			problems.push(
				`pid ${entry.pid} (${argv0(entry.pid) ?? '?'}) holds memfd '${entry.name}' as fd ${entry.fd}`,
			);
		} else if (!mountPids.has(entry.pid)) {
			problems.push(
				`holder pid ${entry.pid} keeps memfd '${entry.name}' but no mount uses it (orphan)`,
			);
		}
	}
	for (const record of listed) {
		if (record.HolderPid !== undefined && !mountPids.has(record.HolderPid)) {
			problems.push(
				`List says holder ${record.HolderPid} for '${record.Path}', the mount table does not`,
			);
		}
	}
	return problems;
}

/** Waits until `condition` holds or `timeout` ms pass; returns whether it held. */
export async function settle(condition: () => boolean, timeout: number): Promise<boolean> {
	const deadline = Date.now() + timeout;
	while (!condition()) {
		if (Date.now() > deadline) {
			return false;
		}
		await sleep(20);
	}
	return true;
}

export function sleep(ms: number): Promise<void> {
	return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Tells whether `path` is `dir` or inside it. */
export function isUnder(path: string, dir: string): boolean {
	return path === dir || path.startsWith(`${dir}/`);
}

/** argv[0] of a process, or undefined once it is gone. */
export function argv0(pid: number): string | undefined {
	try {
		return readFileSync(`/proc/${pid}/cmdline`).toString('utf8').split('\0')[0];
	} catch {
		return undefined;
	}
}

/** Pids of processes in this pid namespace that are not zombies. */
export function livePids(): number[] {
	const pids: number[] = [];
	for (const name of readdirSync('/proc')) {
		if (!/^\d+$/.test(name)) {
			continue;
		}
		try {
			const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
			if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z') {
				pids.push(Number(name));
			}
		} catch {
			// The process ended while we looked.
		}
	}
	return pids;
}

function compareSets(
	problems: string[],
	leftName: string,
	left: string[],
	rightName: string,
	right: string[],
): void {
	const onlyLeft = left.filter((path) => !right.includes(path));
	const onlyRight = right.filter((path) => !left.includes(path));
	if (onlyLeft.length > 0) {
		problems.push(
			`${leftName} has ${onlyLeft.map((path) => `'${path}'`).join(', ')}, ${rightName} does not`,
		);
	}
	if (onlyRight.length > 0) {
		problems.push(
			`${rightName} has ${onlyRight.map((path) => `'${path}'`).join(', ')}, ${leftName} does not`,
		);
	}
}

// Another process's table (the service in its own mount namespace) goes through the same parser.
function readMountInfoOf(pid: number | 'self') {
	return pid === 'self' ? readMountInfo() : parseMountInfo(readFileSync(`/proc/${pid}/mountinfo`));
}

function resolves(path: string): boolean {
	try {
		statSync(path);
		return true;
	} catch {
		return false;
	}
}

function statusField(file: string, key: string): number {
	const match = new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(readFileSync(file, 'utf8'));
	return match === null ? 0 : Number(match[1]);
}
