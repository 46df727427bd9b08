// `npm run demo`, the part inside the private mount and pid namespace that scripts/demo.mjs
// makes: a private system bus with our policy, the real service and memfdctl, a real binary
// bound and released, and the Shmem a binding saves on 20 concurrent runc-style launches.
import { existsSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildLauncher } from '../test/helpers/launcher.js';
import { MEMFDCTL, startSandbox } from '../test/helpers/sandbox.js';
import type { Sandbox, Service } from '../test/helpers/sandbox.js';
import { memfdMounts, otherProcesses, processesNamed, viewPath } from './inspect.js';
import type { PathView } from './inspect.js';
import { PAYLOAD_MB, measureLaunches, printFigures, shmemKib } from './launches.js';
import { DemoError, deltaMib, expect, mib, note, runShown, section, shown } from './transcript.js';

const RUNC_SEALS = 0xf;
// A normal run takes well under a minute; only a hang gets this far.
const WATCHDOG_MS = 180_000;

/** A binary the demo can bind, and why it is the one shown. */
interface Candidate {
	path: string;
	why: string;
}

// runc and crun are what memfd-bind is for: each copies itself into a sealed memfd at every
// start unless it already runs from one. Without them, a real executable shows the binding.
const CANDIDATES: Candidate[] = [
	{ path: '/usr/bin/runc', why: 'runc, which copies itself at every start unless bound' },
	{ path: '/usr/sbin/runc', why: 'runc, which copies itself at every start unless bound' },
	{ path: '/usr/bin/crun', why: 'crun, which copies itself at every start unless bound' },
	{
		path: '/usr/bin/git',
		why: 'neither runc nor crun is installed (apt-get install crun to see one), so git, a\n           real multi-MiB binary, stands in: bound the same way, though git never checks seals',
	},
	{ path: '/usr/bin/busctl', why: 'neither runc, crun nor git is installed; busctl stands in' },
];

/** Runs every step; exits 0 when all of them worked, 1 with the reason otherwise. */
export async function main(): Promise<void> {
	refuseOutsideNamespace();
	const watchdog = setTimeout(() => {
		process.stdout.write(`\ndemo failed: no end after ${WATCHDOG_MS / 1000} s, giving up\n`);
		process.exit(1);
	}, WATCHDOG_MS);
	watchdog.unref();
	// As pid 1 of its namespace the demo gets Ctrl-C only with a handler; its exit ends the rest.
	process.once('SIGINT', () => {
		process.stdout.write('\ndemo interrupted: everything in its namespace ends with it\n');
		process.exit(130);
	});
	recordNamespaces();

	let sandbox: Sandbox | undefined;
	let service: Service | undefined;
	try {
		const target = chooseBinary(process.argv[2]);
		intro(target);
		// The launcher compiles (or comes from its cache) while the bus and the service start.
		const launcher = timed(buildLauncher({ payloadMb: PAYLOAD_MB }));
		launcher.catch(() => undefined);

		const bus = await startBus();
		sandbox = bus;
		service = await startService(bus);
		const original = viewPath(target.path);
		const targetBinding = await bindTarget(bus, target.path, original);
		const built = await launcher;
		const launches = await measureLaunches((args) => memfdctl(bus, args), built.value, built.ms);
		printFigures(target.path, { targetBinding, ...launches });
		releaseTarget(bus, target.path, original);
		await stopAll(bus, service);
		sandbox = undefined;
		await checkNothingLeft();
	} catch (error: unknown) {
		process.stdout.write(`\ndemo failed: ${(error as Error).message}\n`);
		if (service !== undefined) {
			process.stdout.write(`\nmemfd-bindd's log:\n${service.log()}`);
		}
		await sandbox?.stop().catch(() => undefined);
		process.exit(1);
	}
	process.exit(0);
}

// Mounts made outside a private mount namespace would reach the host; refuse to make any.
function refuseOutsideNamespace(): void {
	if (process.getuid?.() === 0 && process.env.MEMFD_BIND_DEMO_NS === '1' && process.pid === 1) {
		return;
	}
	process.stderr.write(
		'demo: start it with `npm run demo` as root: that builds it and runs it inside a private\n' +
			'mount and pid namespace. Started any other way, its mounts could reach the host.\n',
	);
	process.exit(1);
}

// scripts/demo.mjs checks, once the demo has ended, that no process is left in its namespaces.
function recordNamespaces(): void {
	const file = process.env.MEMFD_BIND_DEMO_NS_FILE;
	if (file !== undefined) {
		const ids = { pid: readlinkSync('/proc/self/ns/pid'), mnt: readlinkSync('/proc/self/ns/mnt') };
		writeFileSync(file, `${JSON.stringify(ids)}\n`);
	}
}

function chooseBinary(asked: string | undefined): Candidate {
	if (asked !== undefined) {
		expect(existsSync(asked), `Failed to find '${asked}', the binary named on the command line`);
		return { path: asked, why: 'named on the command line' };
	}
	const found = CANDIDATES.find((candidate) => existsSync(candidate.path));
	if (found === undefined) {
		const paths = CANDIDATES.map((candidate) => candidate.path).join(', ');
		throw new DemoError(`Failed to find a binary to bind: none of ${paths} exists`);
	}
	return found;
}

function intro(target: Candidate): void {
	process.stdout.write(
		[
			'',
			`Binary:    ${target.path}: ${target.why}`,
			'Isolation: a private mount and pid namespace, with this demo as its pid 1: the host',
			'           mount table is never touched, and every process started here ends with it',
			'memfdctl:  bin/memfdctl of this checkout, talking to memfd-bindd on the private bus',
			'',
		].join('\n'),
	);
}

async function startBus(): Promise<Sandbox> {
	section('Start a private system bus with our bus policy');
	const sandbox = await startSandbox();
	shown(`dbus-daemon --config-file ${join(sandbox.dir, 'bus.conf')} --nofork --nopidfile &`);
	note("bus.conf: Debian's system bus defaults plus dbus/org.opencontainers.MemfdBind.conf");
	shown(`export DBUS_SYSTEM_BUS_ADDRESS=${sandbox.address}`);
	return sandbox;
}

async function startService(sandbox: Sandbox): Promise<Service> {
	section('Start the service');
	shown(`memfd-bindd --state-dir ${join(sandbox.dir, 'state')} --idle-timeout 0 --debug &`);
	const service = await sandbox.startService();
	note(`pid ${service.process.pid}, owns org.opencontainers.MemfdBind on the private bus`);
	return service;
}

// Binds the chosen binary, lists, runs it, and checks that runc and crun would take it as cloned.
// Returns the Shmem the binding costs.
async function bindTarget(sandbox: Sandbox, path: string, original: PathView): Promise<number> {
	section(`Bind ${path}`);
	runShown(`sha256sum ${path}`, ['sha256sum', path]);
	expect(!original.memfd, `${path} is a memfd already (${original.openedAs}); release it first`);

	const before = await shmemKib();
	memfdctl(sandbox, ['bind', path]);
	const cost = (await shmemKib()) - before;
	note(`Shmem ${deltaMib(cost)}: the one sealed copy of ${path} (${mib(original.size / 1024)})`);

	const list = memfdctl(sandbox, ['list']);
	expect(list.includes(path), `memfdctl list does not show ${path}`);
	runShown(`${path} --version`, [path, '--version']);
	const status = memfdctl(sandbox, ['status', path]);

	const bound = viewPath(path);
	expect(bound.memfd, `${path} does not open as a memfd once bound: ${bound.openedAs}`);
	expect(
		bound.seals === RUNC_SEALS,
		`${path} carries seals ${hex(bound.seals)} once bound, not 0xf`,
	);
	expect(bound.sha256 === original.sha256, `${path} reads other bytes once bound`);
	expect(
		status.includes('sealed memfd') && /exactly 0xf\): yes/.test(status),
		`memfdctl status does not report ${path} as a memfd sealed 0xf that runc and crun accept`,
	);
	note(`opening ${path} now gives ${bound.openedAs}: seals 0xf, same sha256`);
	return cost;
}

// Gives the original file back and shows it is the file on disk again.
function releaseTarget(sandbox: Sandbox, path: string, original: PathView): void {
	section(`Release ${path}`);
	memfdctl(sandbox, ['release', path]);
	const status = memfdctl(sandbox, ['status', path]);
	const sha = runShown(`sha256sum ${path}`, ['sha256sum', path]).stdout.split(' ')[0];

	const now = viewPath(path);
	expect(!now.memfd, `${path} still opens as a memfd after release: ${now.openedAs}`);
	expect(status.includes('not a memfd'), `memfdctl status does not report ${path} as not a memfd`);
	expect(
		sha === original.sha256 && now.sha256 === original.sha256,
		`${path} reads other bytes after release`,
	);
	expect(
		now.inode === original.inode,
		`${path} is inode ${now.inode} after release, not ${original.inode}`,
	);
	note(`the file on disk again: same sha256 and same inode (${now.inode}) as before the bind`);
}

async function stopAll(sandbox: Sandbox, service: Service): Promise<void> {
	section('Stop the service and the bus');
	shown(`kill -TERM ${service.process.pid}    # memfd-bindd: releases what is still bound, exits`);
	const code = await service.stop('SIGTERM');
	expect(code === 0, `memfd-bindd exited with ${code} on SIGTERM, not 0`);
	note('memfd-bindd exited with 0');
	const bus = processesNamed('dbus-daemon').join(' ') || '<dbus-daemon>';
	shown(`kill -TERM ${bus}    # the private bus; the sandbox folder is removed`);
	await sandbox.stop();
}

// Everything the demo started has ended and every mount it made is gone.
async function checkNothingLeft(): Promise<void> {
	section('Check that nothing is left');
	const mounts = memfdMounts();
	expect(mounts.length === 0, `memfd mounts are left: ${mounts.join('; ')}`);
	note('memfd mounts in this mount namespace: none');

	let others = otherProcesses();
	for (let tries = 0; others.length > 0 && tries < 100; tries++) {
		await new Promise((resolve) => setTimeout(resolve, 20));
		others = otherProcesses();
	}
	expect(others.length === 0, `processes are left in the namespace: ${others.join('; ')}`);
	note('processes in this pid namespace besides the demo: none');
}

function memfdctl(sandbox: Sandbox, args: string[]): string {
	const argv = [process.execPath, MEMFDCTL, ...args];
	return runShown(`memfdctl ${args.join(' ')}`, argv, { env: sandbox.env }).stdout;
}

async function timed<T>(promise: Promise<T>): Promise<{ value: T; ms: number }> {
	const start = Date.now();
	return { value: await promise, ms: Date.now() - start };
}

function hex(value: number | undefined): string {
	return value === undefined ? 'none' : `0x${value.toString(16)}`;
}
