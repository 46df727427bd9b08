// A private system-like bus with our own bus policy, and the real service on it, for integration
// tests. Everything lives in a temporary folder; tests run inside a private mount namespace
// (scripts/run-tests.mjs puts them there), so mounts never reach the host.
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess, SpawnSyncReturns } from 'node:child_process';
import { chmodSync, closeSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
	MNT_DETACH,
	O_CLOEXEC,
	O_NOFOLLOW,
	O_PATH,
	openRaw,
	umount2,
} from '../../src/common/libc.js';
import { parseMountInfo } from '../../src/common/mountinfo.js';

export const REPO = fileURLToPath(new URL('../../../', import.meta.url));
export const MEMFDCTL = join(REPO, 'bin/memfdctl');
export const MEMFD_BINDD = join(REPO, 'bin/memfd-bindd');
export const BUS_NAME = 'org.opencontainers.MemfdBind';
export const OBJECT_PATH = '/org/opencontainers/MemfdBind';
export const INTERFACE = 'org.opencontainers.MemfdBind1';

/** Why integration tests cannot run here, or undefined when they can. */
export function integrationSkipReason(): string | undefined {
	if (process.getuid?.() !== 0) {
		return 'needs root (mounts and memfd holders); run npm test as root';
	}
	if (process.env.MEMFD_BIND_TEST_NS !== '1') {
		return 'needs a private mount namespace; run through npm test (scripts/run-tests.mjs)';
	}
	return undefined;
}

export interface BusOptions {
	/** Extra busconfig XML, e.g. a <servicedir>. */
	extraConfig?: string;
}

export interface Sandbox {
	dir: string;
	address: string;
	env: NodeJS.ProcessEnv;
	/** Runs a command with the sandbox's bus as the system bus. */
	run(command: string, args: string[], options?: RunOptions): SpawnSyncReturns<string>;
	startService(args?: string[]): Promise<Service>;
	stop(): Promise<void>;
}

export interface RunOptions {
	/** Run as this existing account, with its groups. */
	user?: string;
	input?: string;
	env?: NodeJS.ProcessEnv;
	timeout?: number;
}

export interface Service {
	process: ChildProcess;
	/** Everything the service wrote to stderr so far. */
	log(): string;
	stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts a dbus-daemon with a system-bus-like policy that includes dbus/*.conf. */
export async function startSandbox(options: BusOptions = {}): Promise<Sandbox> {
	const dir = mkdtempSync(join(tmpdir(), 'memfd-bind-test-'));
	chmodSync(dir, 0o755);
	const socket = join(dir, 'system_bus_socket');
	const config = join(dir, 'bus.conf');
	writeFileSync(config, systemBusConfig(socket, options.extraConfig ?? ''));
	const daemon = spawn('dbus-daemon', ['--config-file', config, '--nofork', '--nopidfile'], {
		stdio: ['ignore', 'ignore', 'pipe'],
	});
	let daemonLog = '';
	daemon.stderr?.on('data', (chunk: Buffer) => (daemonLog += chunk.toString()));
	const address = `unix:path=${socket}`;
	const env = { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: address };
	const services: Service[] = [];

	const sandbox: Sandbox = {
		dir,
		address,
		env,
		run(command, args, runOptions = {}) {
			const argv =
				runOptions.user === undefined
					? [command, ...args]
					: asUser(runOptions.user, [command, ...args]);
			return spawnSync(argv[0], argv.slice(1), {
				encoding: 'utf8',
				env: { ...env, ...runOptions.env },
				input: runOptions.input ?? '',
				timeout: runOptions.timeout ?? 60_000,
			});
		},
		async startService(args = []) {
			// One service per bus: one left running by a failed test must not fail the next ones.
			for (const earlier of services) {
				await earlier.stop('SIGTERM');
			}
			const service = await startService(sandbox, args);
			services.push(service);
			return service;
		},
		async stop() {
			for (const service of services) {
				await service.stop('SIGTERM');
			}
			daemon.kill('SIGTERM');
			unmountUnder(dir);
			rmSync(dir, { recursive: true, force: true });
		},
	};
	await waitFor(
		() => sandbox.run('busctl', ['--address', address, 'status']).status === 0,
		5000,
		() => `dbus-daemon did not start: ${daemonLog}`,
	);
	return sandbox;
}

/** Detaches every mount below `dir` (stale memfd mounts included), deepest first. */
export function unmountUnder(dir: string): void {
	const mounts = parseMountInfo(readFileSync('/proc/self/mountinfo'))
		.filter((entry) => entry.mountPoint.startsWith(`${dir}/`))
		.reverse();
	for (const entry of mounts) {
		try {
			const fd = openRaw(entry.mountPoint, O_PATH | O_NOFOLLOW | O_CLOEXEC);
			try {
				umount2(`/proc/self/fd/${fd}`, MNT_DETACH);
			} finally {
				closeSync(fd);
			}
		} catch {
			// Already gone with a mount above it.
		}
	}
}

/** Prefixes argv so it runs as an existing account with that account's groups. */
export function asUser(user: string, argv: string[]): string[] {
	return ['setpriv', `--reuid=${user}`, `--regid=${primaryGroup(user)}`, '--init-groups', ...argv];
}

function primaryGroup(user: string): string {
	const line = readFileSync('/etc/passwd', 'utf8')
		.split('\n')
		.find((entry) => entry.split(':')[0] === user);
	if (line === undefined) {
		throw new Error(`no account named ${user}`);
	}
	return line.split(':')[3];
}

async function startService(sandbox: Sandbox, args: string[]): Promise<Service> {
	const stateDir = join(sandbox.dir, 'state');
	const configDir = join(sandbox.dir, 'memfd-bind.d');
	const child = spawn(
		process.execPath,
		[
			MEMFD_BINDD,
			'--state-dir',
			stateDir,
			'--config-dir',
			configDir,
			'--idle-timeout',
			'0',
			'--debug',
			...args,
		],
		{ env: sandbox.env, stdio: ['ignore', 'ignore', 'pipe'] },
	);
	let output = '';
	child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
	const exited = new Promise<number | null>((resolve) =>
		child.once('exit', (code) => resolve(code)),
	);
	await waitFor(
		() => output.includes('Serving org.opencontainers.MemfdBind') || child.exitCode !== null,
		20_000,
		() => `memfd-bindd did not start: ${output}`,
	);
	if (child.exitCode !== null) {
		throw new Error(`memfd-bindd exited with ${child.exitCode}: ${output}`);
	}
	return {
		process: child,
		log: () => output,
		async stop(signal = 'SIGTERM') {
			if (child.exitCode === null && child.signalCode === null) {
				child.kill(signal);
			}
			return exited;
		},
	};
}

/** Polls `condition` every 20 ms until it holds or `timeout` ms pass. */
export async function waitFor(
	condition: () => boolean,
	timeout: number,
	describe: () => string,
): Promise<void> {
	const deadline = Date.now() + timeout;
	while (!condition()) {
		if (Date.now() > deadline) {
			throw new Error(describe());
		}
		await new Promise((resolve) => setTimeout(resolve, 20));
	}
}

/** Skips the test with the reason when integration tests cannot run here. */
export function skipUnlessIntegration(t: TestContext): boolean {
	const reason = integrationSkipReason();
	if (reason !== undefined) {
		t.skip(reason);
		return true;
	}
	return false;
}

/**
 * A bus configuration shaped after Debian's /usr/share/dbus-1/system.conf: nobody may own
 * names, method calls are denied unless a policy file allows them; then our policy (from the
 * repository unless `policyFile` says otherwise) and polkit's are included.
 */
export function systemBusConfig(
	socket: string,
	extra = '',
	policyFile = join(REPO, 'dbus/org.opencontainers.MemfdBind.conf'),
): string {
	return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=${socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.systemd1.Activator"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.systemd1.Activator"/>
  </policy>
  <include>${policyFile}</include>
  <include ignore_missing="yes">/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf</include>
  ${extra}
</busconfig>
`;
}
