// The org.opencontainers.MemfdBind1 interface: one handler per method. Each handler reads its
// arguments, validates them (bad input never reaches polkit), authorizes, acts, logs the change,
// emits the signal and replies.
import type { Message as BusMessage, MessageBus } from 'dbus-next';
import { Action, ErrorName, INTERFACE } from '../common/names.js';
import type { ActionId } from '../common/names.js';
import { quote } from '../common/quote.js';
import type { Authorizer } from './authorize.js';
import type { Binder, Binding } from './binder.js';
import { emitSignal, loadInterfaceXml } from './bus.js';
import type { ObjectSpec } from './bus.js';
import { BindError, describeErrno } from './errors.js';
import { log } from './log.js';
import { canonicalPath, tryCanonicalPath, validatePath } from './paths.js';
import { encodeRecord } from './record.js';
import type { SavedBinding, StateStore } from './state.js';

// What polkit's message names, through $(path), for calls that act on more than one path. A
// rule granting single paths never matches these.
const EVERY_BINDING = 'every bound binary';
const AUTHORIZATION_ERRORS = new Set<string>([
	ErrorName.AccessDenied,
	ErrorName.InteractiveAuthorizationRequired,
]);
const EVERY_STALE_MOUNT = 'every stale memfd mount';

export interface ManagerOptions {
	bus: MessageBus;
	binder: Binder;
	authorizer: Authorizer;
	state: StateStore;
	version: string;
}

/** Holds what the interface needs and tracks calls in flight for the idle timer. */
export class Manager {
	inFlight = 0;
	lastActivity = Date.now();
	/** Paths lifted by Suspend, to be bound again by Resume. */
	private readonly suspended = new Map<string, SavedBinding>();
	private persisting = true;
	private stopping = false;

	constructor(private readonly options: ManagerOptions) {}

	/** The object spec served on the bus. */
	spec(): ObjectSpec {
		return {
			interface: INTERFACE,
			introspection: loadInterfaceXml(`${INTERFACE}.xml`),
			onCall: () => (this.lastActivity = Date.now()),
			properties: { Version: { signature: 's', get: () => this.options.version } },
			methods: {
				Bind: { in: 's', out: 'a{sv}', handler: (msg) => this.track(() => this.bind(msg)) },
				Release: { in: 's', out: '', handler: (msg) => this.track(() => this.release(msg)) },
				Refresh: { in: 's', out: 'a{sv}', handler: (msg) => this.track(() => this.refresh(msg)) },
				Cleanup: { in: 's', out: 'as', handler: (msg) => this.track(() => this.cleanup(msg)) },
				List: { in: '', out: 'aa{sv}', handler: async () => [this.listRecords()] },
				Suspend: { in: '', out: 'as', handler: (msg) => this.track(() => this.suspend(msg)) },
				Resume: { in: '', out: 'aa{sv}', handler: (msg) => this.track(() => this.resume(msg)) },
			},
		};
	}

	/** Writes the set of paths that should be bound (bindings plus suspended ones). */
	persist(): void {
		if (!this.persisting) {
			return;
		}
		const saved: SavedBinding[] = [...this.suspended.values()];
		for (const binding of this.options.binder.bindings.values()) {
			saved.push({ path: binding.path, boundBy: binding.boundBy, boundAt: binding.boundAt });
		}
		try {
			this.options.state.save(saved);
		} catch (error: unknown) {
			log.error(
				`Failed to save bindings in ${quote(this.options.state.stateDir)}: ${describeErrno(error)}`,
			);
		}
	}

	/** Stops writing the state file, so a shutdown's releases are not remembered as wishes. */
	freezeState(): void {
		this.persisting = false;
	}

	/** Remembers suspended paths found in the state file at start-up. */
	restoreSuspended(entries: SavedBinding[]): void {
		for (const entry of entries) {
			this.suspended.set(entry.path, { ...entry, suspended: true });
		}
	}

	private async bind(msg: BusMessage): Promise<unknown[]> {
		const path = argumentPath(msg);

		const { uid, canonical } = await this.authorizePath(msg, Action.bind, path);

		const binding = await this.options.binder.bind(canonical, uid);
		if (this.suspended.delete(binding.path)) {
			this.persist();
		}
		logBound('Bound', binding, uid);
		emitSignal(this.options.bus, INTERFACE, 'Bound', 's', [binding.path]);
		return [encodeRecord({ ...binding, state: 'active' })];
	}

	private async release(msg: BusMessage): Promise<unknown[]> {
		const path = argumentPath(msg);

		const { uid, canonical } = await this.authorizePath(msg, Action.release, path);

		// A binding lifted by Suspend is only remembered: releasing it means forgetting it.
		if (this.suspended.delete(canonical)) {
			this.persist();
			log.info(`Forgot the suspended binding of ${quote(canonical)} (requested by uid=${uid})`);
			return [];
		}
		await this.options.binder.release(canonical);
		log.info(`Released ${quote(canonical)} (requested by uid=${uid})`);
		emitSignal(this.options.bus, INTERFACE, 'Released', 's', [canonical]);
		return [];
	}

	private async refresh(msg: BusMessage): Promise<unknown[]> {
		const path = argumentPath(msg);

		const { uid, canonical } = await this.authorizePath(msg, Action.bind, path);

		const binding = await this.options.binder.refresh(canonical, uid);
		logBound('Refreshed', binding, uid);
		emitSignal(this.options.bus, INTERFACE, 'Bound', 's', [binding.path]);
		return [encodeRecord({ ...binding, state: 'active' })];
	}

	private async cleanup(msg: BusMessage): Promise<unknown[]> {
		const path = msg.body[0] as string;
		if (path !== '') {
			validatePath(path);
		}

		const { uid, canonical } =
			path === ''
				? {
						...(await this.options.authorizer.authorize(msg, Action.cleanup, EVERY_STALE_MOUNT)),
						canonical: '',
					}
				: await this.authorizePath(msg, Action.cleanup, path);

		const removed = await this.options.binder.cleanup(canonical);
		const where = canonical === '' ? 'anywhere' : `at ${quote(canonical)}`;
		if (removed.length === 0) {
			log.debug(`Cleanup found no stale memfd mount ${where} (requested by uid=${uid})`);
		} else {
			log.info(
				`Cleanup removed ${removed.length} stale memfd mount(s) ${where} (requested by uid=${uid})`,
			);
		}
		return [removed];
	}

	private async suspend(msg: BusMessage): Promise<unknown[]> {
		const { uid } = await this.options.authorizer.authorize(msg, Action.release, EVERY_BINDING);

		const bindings = [...this.options.binder.bindings.values()];
		for (const binding of bindings) {
			this.suspended.set(binding.path, {
				path: binding.path,
				boundBy: binding.boundBy,
				boundAt: binding.boundAt,
				suspended: true,
			});
		}
		const lifted = await this.options.binder.releaseAll();
		for (const path of lifted) {
			emitSignal(this.options.bus, INTERFACE, 'Released', 's', [path]);
		}
		this.persist();
		log.info(`Suspended ${lifted.length} binding(s) (requested by uid=${uid})`);
		return [lifted];
	}

	private async resume(msg: BusMessage): Promise<unknown[]> {
		const { uid } = await this.options.authorizer.authorize(msg, Action.bind, EVERY_BINDING);

		const records: unknown[] = [];
		for (const entry of [...this.suspended.values()]) {
			this.suspended.delete(entry.path);
			try {
				const binding = await this.options.binder.bind(entry.path, entry.boundBy);
				logBound('Resumed', binding, uid);
				emitSignal(this.options.bus, INTERFACE, 'Bound', 's', [binding.path]);
				records.push(encodeRecord({ ...binding, state: 'active' }));
			} catch (error: unknown) {
				log.error(
					`Failed to resume the binding of ${quote(entry.path)}: ${(error as Error).message}`,
				);
			}
		}
		this.persist();
		return [records];
	}

	private listRecords(): unknown[] {
		const views = this.options.binder.list();
		for (const entry of this.suspended.values()) {
			views.push({
				path: entry.path,
				state: 'suspended',
				boundBy: entry.boundBy,
				boundAt: entry.boundAt,
			});
		}
		return views.map((view) => encodeRecord(view));
	}

	/**
	 * Authorizes a call on `path` and returns the canonical path to act on. For a caller that is
	 * not root the path is resolved only quietly before polkit answers: an error that tells
	 * whether a directory exists, or where a symlink leads, reaches only an authorized caller.
	 */
	private async authorizePath(
		msg: BusMessage,
		action: ActionId,
		path: string,
	): Promise<{ uid: number; canonical: string }> {
		const resolved = tryCanonicalPath(path);
		const { uid } = await this.options.authorizer.authorize(msg, action, resolved ?? path, path);

		const canonical = canonicalPath(path);
		if (uid !== 0 && canonical !== (resolved ?? path)) {
			throw new BindError(
				ErrorName.AccessDenied,
				`Not authorized to perform ${action} on ${quote(path)}: the path resolved differently after authorization`,
			);
		}
		return { uid, canonical };
	}

	/** Refuses new changing calls from now on; List still answers. */
	beginShutdown(): void {
		this.stopping = true;
	}

	// Counts a call as in flight so the idle timer never stops the service under a caller, and
	// a shutdown waits for it instead of leaving a half-made binding behind.
	private async track<T>(task: () => Promise<T>): Promise<T> {
		if (this.stopping) {
			throw new BindError(
				ErrorName.Failed,
				'Failed to start the call: memfd-bindd is shutting down',
			);
		}
		this.inFlight++;
		try {
			return await task();
		} catch (error: unknown) {
			// Denials are logged where they are decided; every other failure is logged here, once.
			if (error instanceof BindError && !AUTHORIZATION_ERRORS.has(error.busName)) {
				log.notice(`${error.message} (${error.busName.replace(/^.*\./, '')})`);
			}
			throw error;
		} finally {
			this.inFlight--;
			this.lastActivity = Date.now();
		}
	}
}

function argumentPath(msg: BusMessage): string {
	const path = msg.body[0] as string;
	validatePath(path);
	return path;
}

function logBound(verb: string, binding: Binding, requestedBy: number): void {
	log.info(
		`${verb} ${quote(binding.path)}: memfd ${quote(binding.memfdName)} size=${binding.size} seals=0x${binding.seals.toString(16)} sha256=${binding.sha256} holder=${binding.holderPid} (requested by uid=${requestedBy})`,
	);
}
