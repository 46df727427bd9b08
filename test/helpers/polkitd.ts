// The real polkitd for integration tests: started on a private bus, with the tests' own actions and
// rules bind-mounted over polkit's folders. Only for a root process inside a private mount
// namespace (scripts/run-tests.mjs); every mount made here is undone by the matching stop().
// Findings behind each choice: docs/notes/polkit-testing.md.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, realpath, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { execa } from 'execa';
import { assertPrivateMountNamespace, unmountAll } from './polkit-mounts.js';

const POLKITD = '/usr/lib/polkit-1/polkitd';
// The bus name polkitd owns.
export const POLKIT_NAME = 'org.freedesktop.PolicyKit1';
const ACTIONS_DIR = '/usr/share/polkit-1/actions';
const RULES_DIR = '/etc/polkit-1/rules.d';
const VENDOR_RULES_DIR = '/usr/share/polkit-1/rules.d';
// polkitd prints this after every (re)load of the rules folders, unless started with --no-debug.
const RULES_LOADED = 'Finished loading, compiling and executing';

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
