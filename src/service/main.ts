// memfd-bindd: connects to the system bus, takes over or restores bindings, owns the bus name,
// and serves until SIGTERM (release everything), idleness (exit 0) or a lost bus (exit 1).
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import dbus from 'dbus-next';
import type { MessageBus } from 'dbus-next';
import { BUS_NAME } from '../common/names.js';
import { quote } from '../common/quote.js';
import { Authorizer } from './authorize.js';
import { Binder } from './binder.js';
import { serveObject } from './bus.js';
import { describeErrno } from './errors.js';
import { log, setDebug } from './log.js';
import { Manager } from './manager.js';
import { tryCanonicalPath, validatePath } from './paths.js';
import { StateStore, readDeclaredPaths } from './state.js';
import type { SavedBinding } from './state.js';

interface Options {
	stateDir: string;
	configDir: string;
	maxSize: number;
	idleTimeout: number;
	debug: boolean;
}

const VERSION = readVersion();

/** Runs the service until it is told to stop. */
export async function main(argv: string[]): Promise<void> {
	const options = parseOptions(argv);
	setDebug(options.debug);

	const bus = dbus.systemBus();
	watchBus(bus);
	const state = new StateStore(options.stateDir);
	let manager: Manager | undefined;
	const binder = new Binder({ maxSize: options.maxSize, onChange: () => manager?.persist() });
	manager = new Manager({ bus, binder, authorizer: new Authorizer(bus), state, version: VERSION });

	await restore(binder, manager, state, options.configDir);
	serveObject(bus, manager.spec());
	const reply = await bus.requestName(BUS_NAME, dbus.NameFlag.DO_NOT_QUEUE);
	if (reply !== dbus.RequestNameReply.PRIMARY_OWNER) {
		log.error(`Failed to own the bus name ${BUS_NAME}: another process owns it`);
		process.exit(1);
	}
	log.info(
		`Serving ${BUS_NAME} (version ${VERSION}, ${binder.bindings.size} binding(s), state in ${quote(options.stateDir)})`,
	);

	const stop = (signal: string) => void shutdown(bus, binder, manager!, signal);
	process.once('SIGTERM', () => stop('SIGTERM'));
	process.once('SIGINT', () => stop('SIGINT'));
	if (options.idleTimeout > 0) {
		watchIdle(bus, binder, manager, options.idleTimeout * 1000);
	}
}

// Takes over holders left by an earlier run, removes stale mounts at managed paths, then binds
// what the state folder and /etc/memfd-bind.d ask for and is not bound yet.
async function restore(
	binder: Binder,
	manager: Manager,
	state: StateStore,
	configDir: string,
): Promise<void> {
	const { adopted, stale, foreign, orphans } = await binder.adopt();
	const saved = state.load();
	for (const binding of adopted) {
		// The state file remembers who asked and when; the holder only knows when it started.
		const entry = saved.find((candidate) => candidate.path === binding.path);
		binding.boundBy = entry?.boundBy ?? binding.boundBy;
		binding.boundAt = entry?.boundAt ?? binding.boundAt;
		// The file as it was when copied: a file upgraded while the service was down is outdated.
		binding.origin = entry?.origin ?? binding.origin;
		log.info(`Adopted the binding of ${quote(binding.path)} (holder pid ${binding.holderPid})`);
	}
	for (const view of foreign) {
		log.notice(
			`A memfd mount of another tool is at ${quote(view.path)} (pid ${view.holderPid}); leaving it alone`,
		);
	}
	for (const pid of orphans) {
		log.warning(`Stopped holder pid ${pid}: no mount uses it (left by an interrupted call)`);
	}

	// A suspended path stays lifted until Resume, even when it is also declared in a config file:
	// a restart in the middle of a dpkg run must not bind files that dpkg is about to replace.
	// A path that is bound (adopted) is simply bound.
	const wanted = new Map<string, SavedBinding>();
	let suspended = 0;
	for (const entry of saved) {
		if (entry.suspended && !binder.bindings.has(entry.path)) {
			manager.park(entry);
			suspended++;
		} else if (!entry.suspended) {
			wanted.set(entry.path, entry);
		}
	}
	if (suspended > 0) {
		log.notice(
			`${suspended} binding(s) are suspended (the apt hook lifts them while dpkg runs); memfdctl resume binds them again`,
		);
	}
	// Declared paths are compared in canonical form: /bin/runc is /usr/bin/runc on merged /usr.
	for (const declared of readDeclaredPaths(configDir, validatePath)) {
		const path = tryCanonicalPath(declared.path) ?? declared.path;
		if (!wanted.has(path) && !manager.isSuspended(path)) {
			wanted.set(path, { path, boundBy: 0, boundAt: Date.now() * 1000 });
		}
	}

	for (const path of stale.filter((path) => wanted.has(path))) {
		try {
			await binder.cleanup(path);
		} catch (error: unknown) {
			log.warning(
				`Failed to remove the stale mount at ${quote(path)}: ${describeErrno(error)}, ignoring`,
			);
		}
	}
	// A path that cannot be bound now (file missing, too large...) stays in the state file as
	// failed, and is tried again at the next start or by Resume.
	for (const entry of wanted.values()) {
		if (binder.bindings.has(entry.path)) {
			continue;
		}
		const binding = await manager.bindParked(entry, false);
		if (binding !== undefined) {
			log.info(
				`Restored the binding of ${quote(binding.path)} sha256=${binding.sha256} holder=${binding.holderPid}`,
			);
		}
	}
	for (const path of stale.filter((path) => !wanted.has(path))) {
		log.notice(
			`A stale memfd mount is at ${quote(path)}; not managed here, remove it with Cleanup`,
		);
	}
	manager.persist();
}

async function shutdown(
	bus: MessageBus,
	binder: Binder,
	manager: Manager,
	signal: string,
): Promise<void> {
	log.info(`Received ${signal}, stopping`);
	manager.beginShutdown();
	// A Bind still copying would otherwise finish after the release and leave its mount behind.
	const deadline = Date.now() + 60_000;
	while (manager.inFlight > 0 && Date.now() < deadline) {
		await new Promise((resolve) => setTimeout(resolve, 50));
	}
	manager.freezeState();
	shuttingDown = true;
	log.info(
		`Releasing ${binder.bindings.size} binding(s) before exiting; they stay in the state folder`,
	);
	// A bus that is gone never answers; the bindings are released either way.
	await withTimeout(bus.releaseName(BUS_NAME), 2000).catch(() => undefined);
	await binder.releaseAll();
	bus.disconnect();
	process.exit(0);
}

// Without bindings and calls for `timeout` ms, give the name back and exit: the next call
// starts the service again through D-Bus activation.
function watchIdle(bus: MessageBus, binder: Binder, manager: Manager, timeout: number): void {
	const timer = setInterval(
		() => {
			const idle = Date.now() - manager.lastActivity >= timeout;
			if (!idle || binder.bindings.size > 0 || manager.inFlight > 0) {
				return;
			}
			clearInterval(timer);
			log.info(`Idle for ${timeout / 1000} s with no bindings, exiting`);
			void (async () => {
				shuttingDown = true;
				// Calls still queued for this instance are answered but change nothing: a new
				// instance may already be starting, and two must never manage bindings at once.
				manager.beginShutdown();
				await withTimeout(bus.releaseName(BUS_NAME), 2000).catch(() => undefined);
				// Calls already queued for us still get their answers before we go.
				while (manager.inFlight > 0 || Date.now() - manager.lastActivity < 200) {
					await new Promise((resolve) => setTimeout(resolve, 50));
				}
				bus.disconnect();
				process.exit(0);
			})();
		},
		Math.min(1000, timeout),
	);
}

// A lost bus must not look like a clean exit: systemd restarts the service, and the holders
// keep every binding working meanwhile.
function watchBus(bus: MessageBus): void {
	bus.on('error', (error: unknown) => {
		if (shuttingDown) {
			return;
		}
		log.error(`Lost the connection to the system bus: ${describeErrno(error)}`);
		process.exit(1);
	});
	const stream = (bus as unknown as { _connection?: { stream?: NodeJS.EventEmitter } })._connection
		?.stream;
	stream?.on('close', () => {
		if (shuttingDown) {
			return;
		}
		log.error('Lost the connection to the system bus: the bus closed the connection');
		process.exit(1);
	});
}

// Set once SIGTERM or SIGINT is being handled: the bus closing then is expected.
let shuttingDown = false;

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
	let timer: NodeJS.Timeout | undefined;
	const expired = new Promise<never>((_, reject) => {
		timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
	});
	return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

function parseOptions(argv: string[]): Options {
	const program = new Command('memfd-bindd')
		.description('D-Bus service that keeps sealed memfd copies of binaries bind-mounted over them')
		.version(VERSION)
		.option('--state-dir <dir>', 'where the bindings to restore are kept', '/var/lib/memfd-bind')
		.option(
			'--config-dir <dir>',
			'folder of *.conf files declaring paths to bind',
			'/etc/memfd-bind.d',
		)
		.option('--max-size <bytes>', 'largest file Bind copies', parseSize, 256 << 20)
		.option(
			'--idle-timeout <seconds>',
			'exit after this long with no bindings and no calls; 0 never',
			parseSeconds,
			60,
		)
		.option('--debug', 'log debug messages too', false)
		.showHelpAfterError();
	program.parse(argv);
	return program.opts<Options>();
}

function parseSize(value: string): number {
	const match = /^(\d+)([KMG]i?B?)?$/i.exec(value);
	if (match === null) {
		throw new InvalidArgumentError(`'${value}' is not a size (bytes, or with K, M or G)`);
	}
	const unit =
		{ '': 1, k: 1 << 10, m: 1 << 20, g: 1 << 30 }[(match[2] ?? '').charAt(0).toLowerCase()] ?? 1;
	return Number(match[1]) * unit;
}

function parseSeconds(value: string): number {
	if (!/^\d+$/.test(value)) {
		throw new InvalidArgumentError(`'${value}' is not a whole number of seconds`);
	}
	return Number(value);
}

function readVersion(): string {
	const url = new URL('../../../package.json', import.meta.url);
	return (JSON.parse(readFileSync(url, 'utf8')) as { version: string }).version;
}
