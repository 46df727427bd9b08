// Holder processes: one `sleep infinity` per binding keeps the memfd open as its fd 3, so the
// mount's magic link `/proc/<holder>/fd/3` stays valid when the service itself restarts.
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';

/** argv[0] of every holder; `ps` and the adoption at start-up recognise holders by it. */
export const HOLDER_NAME = 'memfd-bind-holder';
export const HOLDER_FD = 3;
/** How a holder's fd 3 reads once its memfd is made: `/memfd:memfd-bind:<path> (deleted)`. */
export const HELD_MEMFD_PREFIX = '/memfd:memfd-bind:';
const SLEEP = '/bin/sleep';

/** Starts a holder that keeps `memfd` open; returns its pid once it runs. */
export function spawnHolder(memfd: number): number {
	// stdio slot 3 is dup2'ed to fd 3 in the child, which clears close-on-exec there only.
	const child = spawn(SLEEP, ['infinity'], {
		argv0: HOLDER_NAME,
		detached: true,
		stdio: ['ignore', 'ignore', 'ignore', memfd],
	});
	// spawn() reports exec failures asynchronously; a pid proves the child exists.
	child.on('error', () => {});
	child.unref();
	if (child.pid === undefined) {
		throw Object.assign(new Error(`spawn ${SLEEP}: no pid`), { code: 'ESPAWN' });
	}
	// The kernel must never pick a holder when memory runs short: its death breaks a binary.
	try {
		writeFileSync(`/proc/${child.pid}/oom_score_adj`, '-1000');
	} catch {
		// Without CAP_SYS_RESOURCE the score stays as inherited; the binding still works.
	}
	return child.pid;
}

/** Tells whether `pid` is a running holder (argv[0] is HOLDER_NAME). */
export function isHolder(pid: number): boolean {
	try {
		const argv0 = readFileSync(`/proc/${pid}/cmdline`).toString('utf8').split('\0')[0];
		return argv0 === HOLDER_NAME;
	} catch {
		return false;
	}
}

/** Tells whether `pid` is the holder of the memfd named `memfdName` (not a reused pid). */
export function holdsMemfd(pid: number, memfdName: string): boolean {
	return isHolder(pid) && fdTarget(pid, HOLDER_FD) === `/memfd:${memfdName} (deleted)`;
}

/** Returns the memfd name behind a process's fd, e.g. `/memfd:memfd-bind:/x (deleted)`. */
export function fdTarget(pid: number, fd: number): string | undefined {
	try {
		return readlinkSync(`/proc/${pid}/fd/${fd}`);
	} catch {
		return undefined;
	}
}

/** Returns a process's command name, or undefined once it is gone. */
export function processName(pid: number): string | undefined {
	try {
		return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
	} catch {
		return undefined;
	}
}

/**
 * Stops a holder. Does nothing unless the pid still is a holder of a memfd-bind memfd (named
 * `memfdName` when given), so a pid reused by another process, even another holder, is spared.
 */
export function stopHolder(pid: number, memfdName?: string): boolean {
	const held =
		memfdName === undefined
			? isHolder(pid) && (fdTarget(pid, HOLDER_FD) ?? '').startsWith(HELD_MEMFD_PREFIX)
			: holdsMemfd(pid, memfdName);
	if (!held) {
		return false;
	}
	try {
		process.kill(pid, 'SIGKILL');
		return true;
	} catch {
		return false;
	}
}

/**
 * Lists holders in this mount namespace. Holders of another namespace belong to another
 * service instance, whose mounts this one cannot see.
 */
export function findHolders(): number[] {
	const ownNamespace = namespaceOf('self');
	return readdirSync('/proc')
		.filter((name) => /^\d+$/.test(name))
		.map(Number)
		.filter((pid) => isHolder(pid) && namespaceOf(String(pid)) === ownNamespace);
}

function namespaceOf(pid: string): string | undefined {
	try {
		return readlinkSync(`/proc/${pid}/ns/mnt`);
	} catch {
		return undefined;
	}
}
