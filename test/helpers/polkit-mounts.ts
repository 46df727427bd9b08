// The mounts the polkit helpers make, and the guard that refuses to make any outside a private
// mount namespace (scripts/run-tests.mjs). Each mount made here is undone by the matching stop().
// Findings behind each choice: docs/notes/polkit-testing.md.
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';

// Inode numbers of the initial namespaces (MNT_NS_INIT_INO needs Linux 6.x; PID since 3.8).
const INITIAL_MNT_NS = 'mnt:[4026531832]';
const INITIAL_PID_NS = 'pid:[4026531836]';

// Makes a private bus reachable at /run/dbus/system_bus_socket, where the setuid
// polkit-agent-helper-1 connects: it ignores DBUS_SYSTEM_BUS_ADDRESS, so without this a correct
// password still ends in "Error getting authority: ... Could not connect".
export async function exposeSystemBusSocket(
	socketPath: string,
): Promise<{ stop(): Promise<void> }> {
	assertPrivateMountNamespace('expose the system bus socket');
	const mounted: string[] = [];
	try {
		await execa('mount', ['-t', 'tmpfs', '-o', 'mode=0755,size=64k', 'tmpfs', '/run/dbus']);
		mounted.push('/run/dbus');
		await writeFile('/run/dbus/system_bus_socket', '');
		await execa('mount', ['--bind', socketPath, '/run/dbus/system_bus_socket']);
		mounted.push('/run/dbus/system_bus_socket');
	} catch (error: unknown) {
		await unmountAll(mounted.reverse());
		throw error;
	}
	return { stop: () => unmountAll(mounted.reverse()) };
}

// Replaces polkit's PAM stack with one that accepts only `password`, for any identity (root
// included), so pkttyagent prompts can be answered; the accounts themselves are left untouched.
export async function overridePolkitPam(password: string): Promise<{ stop(): Promise<void> }> {
	assertPrivateMountNamespace('override the polkit-1 PAM stack');
	if (!/^[A-Za-z0-9]+$/.test(password)) {
		throw new Error(`Invalid test password '${password}': use letters and digits only`);
	}
	// libpam reads /etc/pam.d first and falls back to the vendor copy Debian ships.
	const target = ['/etc/pam.d/polkit-1', '/usr/lib/pam.d/polkit-1'].find((path) =>
		existsSync(path),
	);
	if (target === undefined) {
		throw new Error('Failed to find polkit-1 in /etc/pam.d or /usr/lib/pam.d');
	}
	const dir = await mkdtemp(join(tmpdir(), 'polkit-pam-'));
	await chmod(dir, 0o755);
	const check = join(dir, 'check-password');
	// pam_exec hands the typed password to the script on stdin (expose_authtok).
	await writeFile(check, `#!/bin/sh\nIFS= read -r typed\n[ "$typed" = '${password}' ]\n`, {
		mode: 0o755,
	});
	const config = join(dir, 'polkit-1');
	const stack = [
		`auth required pam_exec.so expose_authtok quiet ${check}`,
		'account required pam_permit.so',
		'',
	].join('\n');
	await writeFile(config, stack, { mode: 0o644 });
	try {
		await execa('mount', ['--bind', config, target]);
	} catch (error: unknown) {
		await rm(dir, { recursive: true, force: true });
		throw error;
	}
	return {
		async stop() {
			await unmountAll([target]);
			await rm(dir, { recursive: true, force: true });
		},
	};
}

// Refuses to mount anything unless this process has left the host's mount namespace and its root
// mount does not propagate. Under `unshare --pid --fork --mount-proc` pid 1 shares our mount
// namespace, so a private pid namespace with its own /proc counts as proof too.
export function assertPrivateMountNamespace(what: string): void {
	if (process.getuid?.() !== 0) {
		throw new Error(`Failed to ${what}: needs root`);
	}
	const self = readlinkSync('/proc/self/ns/mnt');
	let init: string | undefined;
	try {
		init = readlinkSync('/proc/1/ns/mnt');
	} catch {
		init = undefined;
	}
	const nspid = /^NSpid:\s*(.*)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '';
	const ownPidNs =
		readlinkSync('/proc/self/ns/pid') !== INITIAL_PID_NS && nspid.trim().split(/\s+/).length === 1;
	const separate = init !== undefined && init !== self;
	if (self === INITIAL_MNT_NS || !(separate || (init === self && ownPidNs))) {
		throw new Error(
			`Failed to ${what}: not in a private mount namespace; run under unshare --mount --propagation private --pid --fork --mount-proc`,
		);
	}
	const root = readFileSync('/proc/self/mountinfo', 'utf8')
		.split('\n')
		.filter((line) => line.split(' ')[4] === '/')
		.at(-1);
	if (root?.includes(' shared:') === true) {
		throw new Error(`Failed to ${what}: / propagates mounts (shared); use --propagation private`);
	}
}

// Unmounts `targets` in order, trying every one, and empties the list; throws if any failed.
export async function unmountAll(targets: string[]): Promise<void> {
	const failures: unknown[] = [];
	for (const target of targets) {
		await execa('umount', [target]).catch((error: unknown) => failures.push(error));
	}
	targets.length = 0;
	if (failures.length > 0) {
		throw new AggregateError(failures, `Failed to unmount ${failures.length} polkit test mount(s)`);
	}
}
