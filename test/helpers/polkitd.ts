// The real polkitd for integration tests: started on a private bus, with the tests' own actions and
// rules bind-mounted over polkit's folders. Only for a root process inside a private mount
// namespace (scripts/run-tests.mjs); every mount made here is undone by the matching stop().
// Findings behind each choice: docs/notes/polkit-testing.md.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { chmod, mkdtemp, realpath, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import dbus from 'dbus-next';
import type { MessageBus, Variant as BusVariant } from 'dbus-next';
import { execa, execaSync } from 'execa';
import type { Options, ResultPromise } from 'execa';

const { Message, Variant, DBusError } = dbus;

const POLKITD = '/usr/lib/polkit-1/polkitd';
const POLKIT_NAME = 'org.freedesktop.PolicyKit1';
const AUTHORITY_PATH = '/org/freedesktop/PolicyKit1/Authority';
const AUTHORITY = 'org.freedesktop.PolicyKit1.Authority';
const AGENT = 'org.freedesktop.PolicyKit1.AuthenticationAgent';
const ACTIONS_DIR = '/usr/share/polkit-1/actions';
const RULES_DIR = '/etc/polkit-1/rules.d';
const VENDOR_RULES_DIR = '/usr/share/polkit-1/rules.d';
// polkitd prints this after every (re)load of the rules folders, unless started with --no-debug.
const RULES_LOADED = 'Finished loading, compiling and executing';
// Inode numbers of the initial namespaces (MNT_NS_INIT_INO needs Linux 6.x; PID since 3.8).
const INITIAL_MNT_NS = 'mnt:[4026531832]';
const INITIAL_PID_NS = 'pid:[4026531836]';

export type PolkitdOptions = {
	// Address of a running bus whose policy includes org.freedesktop.PolicyKit1.conf.
	busAddress: string;
	// Mounted over /usr/share/polkit-1/actions; holds the *.policy files to test.
	actionsDir: string;
	// Mounted over /etc/polkit-1/rules.d; writeRules() puts test rules here.
	rulesDir: string;
	// Mounted over /usr/share/polkit-1/rules.d; an empty folder when left out, so the host's
	// rules (50-default.rules makes group sudo the administrators) never apply.
	vendorRulesDir?: string;
	// Milliseconds to wait for polkitd to own its name; 10 s when left out.
	timeout?: number;
};

export type Polkitd = {
	pid: number;
	// Everything polkitd wrote so far: stdout (rule loading, agents) and stderr (polkit.log()).
	log(): string;
	stop(): Promise<void>;
};

type Running = {
	log(): string;
	polkitPathOf(name: string): string;
};

// Test folders (real paths) mounted for the polkitd this process runs, so writeRules() can wait.
const running = new Map<string, Running>();

// Starts polkitd on `busAddress` and resolves once it owns org.freedesktop.PolicyKit1.
export async function startPolkitd(options: PolkitdOptions): Promise<Polkitd> {
	assertPrivateMountNamespace('start polkitd');
	if (running.size > 0) {
		throw new Error('Failed to start polkitd: one is already running in this process');
	}
	const ownVendorDir =
		options.vendorRulesDir === undefined ? await mkdtemp(join(tmpdir(), 'polkit-vendor-')) : '';
	const mounts: [string, string][] = [
		[options.actionsDir, ACTIONS_DIR],
		[options.rulesDir, RULES_DIR],
		[options.vendorRulesDir ?? ownVendorDir, VENDOR_RULES_DIR],
	];
	const mounted: string[] = [];
	const undo = async (): Promise<void> => {
		for (const [source] of mounts) {
			running.delete(await realpath(source).catch(() => source));
		}
		await unmountAll(mounted.reverse());
		if (ownVendorDir !== '') {
			await rm(ownVendorDir, { recursive: true, force: true });
		}
	};

	let output = '';
	try {
		for (const [source, target] of mounts) {
			// polkitd drops to user polkitd before reading; a mkdtemp folder (0700) would be
			// skipped with "Error opening rules directory: ... Permission denied" and not watched.
			await chmod(source, 0o755);
			await execa('mount', ['--bind', source, target]);
			mounted.push(target);
		}
		// No --no-debug: without it polkitd reports each rules reload, which writeRules() waits for.
		const child = spawn(POLKITD, [], {
			env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: options.busAddress },
			stdio: ['ignore', 'pipe', 'pipe'],
		});
		child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
		child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
		const exited = once(child, 'exit');
		await waitForOwner(options.busAddress, child.pid ?? -1, options.timeout ?? 10_000, () =>
			child.exitCode === null && child.signalCode === null
				? undefined
				: `polkitd exited (${child.exitCode ?? child.signalCode}): ${output}`,
		).catch(async (error: unknown) => {
			child.kill('SIGKILL');
			await exited;
			throw error;
		});

		for (const [source, target] of mounts) {
			running.set(await realpath(source), {
				log: () => output,
				polkitPathOf: (name) => join(target, name),
			});
		}
		return {
			pid: child.pid ?? -1,
			log: () => output,
			async stop() {
				if (child.exitCode === null && child.signalCode === null) {
					child.kill('SIGTERM');
					await Promise.race([exited, delay(5000)]);
					if (child.exitCode === null && child.signalCode === null) {
						child.kill('SIGKILL');
						await exited;
					}
				}
				await undo();
			},
		};
	} catch (error: unknown) {
		await undo();
		throw error;
	}
}

// Writes `js` to rulesDir/name atomically and, when polkitd is running on that folder, waits until
// it has loaded the file; throws if polkitd could not compile it.
export async function writeRules(rulesDir: string, name: string, js: string): Promise<void> {
	assertRulesName(name);
	const instance = running.get(await realpath(rulesDir));
	const since = instance?.log().length ?? 0;
	// polkitd loads only *.rules files, so the temporary name is never read half-written.
	const partial = join(rulesDir, `.${name}.tmp`);
	await writeFile(partial, js, { mode: 0o644 });
	await rename(partial, join(rulesDir, name));
	if (instance !== undefined) {
		await waitForReload(instance, since, name);
	}
}

// Deletes rulesDir/name and, when polkitd is running on that folder, waits for the reload.
export async function removeRules(rulesDir: string, name: string): Promise<void> {
	assertRulesName(name);
	const instance = running.get(await realpath(rulesDir));
	const since = instance?.log().length ?? 0;
	await rm(join(rulesDir, name));
	if (instance !== undefined) {
		await waitForReload(instance, since, name);
	}
}

// Runs argv as an existing account: its uid, its primary group, and its groups from /etc/group.
export function runAs<OptionsType extends Options = {}>(
	user: string,
	argv: readonly string[],
	options?: OptionsType,
): ResultPromise<OptionsType> {
	const entry = execaSync('getent', ['passwd', user], { reject: false }).stdout;
	const [, , uid, gid, , home] = entry.split(':');
	if (uid === undefined || gid === undefined || home === undefined) {
		throw new Error(`Failed to find account '${user}' in the passwd database`);
	}
	// setpriv keeps the environment; only the identity variables change.
	const env = { HOME: home, USER: user, LOGNAME: user, ...options?.env };
	const setpriv = ['--reuid', uid, '--regid', gid, '--init-groups', '--', ...argv];
	// execa types its result from the options; adding env changes nothing that typing looks at.
	return execa('setpriv', setpriv, { ...options, env }) as unknown as ResultPromise<OptionsType>;
}

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

// What a test agent answers when polkitd asks it to authenticate.
export type AgentAnswer =
	| 'grant' // authenticated: the check returns is_authorized (auth_*_keep: kept for that process)
	| 'dismiss' // like closing a dialog: not authorized, details polkit.dismissed = 'true'
	| 'fail' // like a wrong password: not authorized, no polkit.dismissed
	| 'wait'; // never answers until CancelCheckAuthorization or stop()

export type TestAgent = {
	// Action id and message of each request polkitd made, in order.
	requests: { actionId: string; message: string }[];
	// May be changed between checks.
	answer: AgentAnswer;
	stop(): Promise<void>;
};

// Registers an authentication agent for process `pid`, answering as told and without any
// terminal. It runs as root in this process: polkitd lets uid 0 register for anyone's process and
// accepts AuthenticationAgentResponse2 only from uid 0.
export async function startTestAgent(options: {
	busAddress: string;
	pid: number;
	answer: AgentAnswer;
}): Promise<TestAgent> {
	const bus = dbus.sessionBus({ busAddress: options.busAddress });
	// A bus that goes away before stop() must not crash the test process; the calls report it.
	bus.on('error', () => {});
	const pending = new Map<string, (error: Error) => void>();
	const agent: TestAgent = {
		requests: [],
		answer: options.answer,
		async stop() {
			for (const reject of pending.values()) {
				reject(new DBusError('org.freedesktop.PolicyKit1.Error.Cancelled', 'agent stopped'));
			}
			bus.disconnect();
		},
	};
	const iface = new AgentInterface(AGENT);
	iface.begin = async (actionId, message, cookie, identities) => {
		agent.requests.push({ actionId, message });
		if (agent.answer === 'grant') {
			// The uid argument must be that of the agent's own connection, which is root here.
			await callAuthority(bus, 'AuthenticationAgentResponse2', 'us(sa{sv})', [
				0,
				cookie,
				identities[0],
			]);
		} else if (agent.answer !== 'wait') {
			const [name, text] =
				agent.answer === 'dismiss'
					? ['Cancelled', 'dismissed by the test']
					: ['Failed', 'failed by the test'];
			throw new DBusError(`org.freedesktop.PolicyKit1.Error.${name}`, text);
		} else {
			await new Promise<never>((_resolve, reject) => pending.set(cookie, reject));
		}
	};
	iface.cancel = (cookie) => {
		pending.get(cookie)?.(new DBusError('org.freedesktop.PolicyKit1.Error.Cancelled', 'cancelled'));
		pending.delete(cookie);
	};
	const objectPath = '/org/opencontainers/memfdbind/TestAgent';
	bus.export(objectPath, iface);
	const subject = [
		'unix-process',
		{
			pid: new Variant('u', options.pid),
			'start-time': new Variant('t', startTimeOf(options.pid)),
		},
	];
	try {
		await callAuthority(bus, 'RegisterAuthenticationAgent', '(sa{sv})ss', [
			subject,
			'C',
			objectPath,
		]);
	} catch (error: unknown) {
		bus.disconnect();
		throw new Error(`Failed to register a test agent for pid ${options.pid}`, { cause: error });
	}
	return agent;
}

type Identity = [string, Record<string, BusVariant>];

// The org.freedesktop.PolicyKit1.AuthenticationAgent object polkitd calls into.
class AgentInterface extends dbus.interface.Interface {
	begin: (actionId: string, message: string, cookie: string, ids: Identity[]) => Promise<void> =
		async () => {};
	cancel: (cookie: string) => void = () => {};

	async BeginAuthentication(
		actionId: string,
		message: string,
		_iconName: string,
		_details: Record<string, string>,
		cookie: string,
		identities: Identity[],
	): Promise<void> {
		await this.begin(actionId, message, cookie, identities);
	}

	CancelAuthentication(cookie: string): void {
		this.cancel(cookie);
	}
}
AgentInterface.configureMembers({
	methods: {
		BeginAuthentication: { inSignature: 'sssa{ss}sa(sa{sv})', outSignature: '' },
		CancelAuthentication: { inSignature: 's', outSignature: '' },
	},
});

async function callAuthority(
	bus: MessageBus,
	member: string,
	signature: string,
	body: unknown[],
): Promise<void> {
	await bus.call(
		new Message({
			destination: POLKIT_NAME,
			path: AUTHORITY_PATH,
			interface: AUTHORITY,
			member,
			signature,
			body,
		}),
	);
}

// Field 22 of /proc/<pid>/stat, which polkit pairs with the pid to name a process.
function startTimeOf(pid: number): bigint {
	const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
	const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
	return BigInt(fields[19]);
}

// Polls the bus until polkitd's own process owns org.freedesktop.PolicyKit1.
async function waitForOwner(
	busAddress: string,
	pid: number,
	timeout: number,
	failure: () => string | undefined,
): Promise<void> {
	const deadline = Date.now() + timeout;
	for (;;) {
		const reply = await execa(
			'busctl',
			[
				`--address=${busAddress}`,
				'--json=short',
				'call',
				'org.freedesktop.DBus',
				'/org/freedesktop/DBus',
				'org.freedesktop.DBus',
				'GetConnectionUnixProcessID',
				's',
				POLKIT_NAME,
			],
			{ reject: false },
		);
		if (reply.exitCode === 0) {
			const owner = (JSON.parse(reply.stdout) as { data: number[] }).data[0];
			if (owner === pid) {
				return;
			}
			throw new Error(`Failed to start polkitd: ${POLKIT_NAME} is owned by pid ${owner}`);
		}
		const reason = failure();
		if (reason !== undefined) {
			throw new Error(`Failed to start polkitd: ${reason}`);
		}
		if (Date.now() > deadline) {
			throw new Error(`Failed to start polkitd: ${POLKIT_NAME} not owned after ${timeout} ms`);
		}
		await delay(10);
	}
}

// Waits until polkitd has reloaded after a change to `name`, and the reloads have settled: one
// rename makes polkitd reload twice, about 1 ms apart.
async function waitForReload(instance: Running, since: number, name: string): Promise<void> {
	const deadline = Date.now() + 5000;
	const loads = (): number => instance.log().slice(since).split(RULES_LOADED).length - 1;
	while (loads() === 0) {
		if (Date.now() > deadline) {
			throw new Error(`Failed to see polkitd reload rules after changing '${name}' within 5000 ms`);
		}
		await delay(5);
	}
	for (let seen = loads(); ; seen = loads()) {
		await delay(30);
		if (loads() === seen) {
			break;
		}
	}
	const path = instance.polkitPathOf(name);
	const error = instance
		.log()
		.slice(since)
		.split('\n')
		.find((line) => line.includes(`Error compiling script ${path}`));
	if (error !== undefined) {
		throw new Error(`Failed to load rules '${name}': ${error.trim()}`);
	}
}

function assertRulesName(name: string): void {
	if (basename(name) !== name || name.startsWith('.') || !name.endsWith('.rules')) {
		throw new Error(`Invalid rules file name '${name}': expected a plain name ending in .rules`);
	}
}

// Refuses to mount anything unless this process has left the host's mount namespace and its root
// mount does not propagate. Under `unshare --pid --fork --mount-proc` pid 1 shares our mount
// namespace, so a private pid namespace with its own /proc counts as proof too.
function assertPrivateMountNamespace(what: string): void {
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

async function unmountAll(targets: string[]): Promise<void> {
	const failures: unknown[] = [];
	for (const target of targets) {
		await execa('umount', [target]).catch((error: unknown) => failures.push(error));
	}
	targets.length = 0;
	if (failures.length > 0) {
		throw new AggregateError(failures, `Failed to unmount ${failures.length} polkit test mount(s)`);
	}
}
