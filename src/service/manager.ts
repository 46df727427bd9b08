// The org.opencontainers.MemfdBind1 interface: one handler per method. Each handler reads its
// arguments, validates them (bad input never reaches polkit), authorizes, acts, logs the change,
// emits the signal and replies.
import type { Message as BusMessage, MessageBus } from 'dbus-next';
import { Action, ErrorName, INTERFACE } from '../common/names.js';
import type { ActionId } from '../common/names.js';
import { quote } from '../common/quote.js';
import type { Authorizer } from './authorize.js';
import type { Binder, Binding, BindingView } from './binder.js';
import { emitSignal, loadInterfaceXml } from './bus.js';
import type { ObjectSpec } from './bus.js';
import { BindError, describeErrno, isBindError } from './errors.js';
import { log } from './log.js';
import { canonicalPath, validatePath } from './paths.js';
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
	/**
	 * Paths that should be bound but are not: lifted by Suspend (bound again by Resume), or
	 * whose last bind failed (`failed` says why; tried again at start and by Resume).
	 */
	private readonly parked = new Map<string, SavedBinding>();
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

	/** Writes the set of paths that should be bound: live bindings, then parked ones. */
	persist(): void {
		if (!this.persisting) {
			return;
		}
		const live = this.options.binder.bindings;
		const saved: SavedBinding[] = [...live.values()].map((binding) => ({
			path: binding.path,
			boundBy: binding.boundBy,
			boundAt: binding.boundAt,
			origin: binding.origin,
		}));
		saved.push(...[...this.parked.values()].filter((entry) => !live.has(entry.path)));
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

	/** Remembers a path that should be bound but is not (suspended, or its bind failed). */
	park(entry: SavedBinding): void {
		this.parked.set(entry.path, entry);
	}

	/** Tells whether `path` waits for Resume. */
	isSuspended(path: string): boolean {
		return this.parked.get(path)?.suspended === true;
	}

	private async bind(msg: BusMessage): Promise<unknown[]> {
		const path = argumentPath(msg);

		const { uid, canonical } = await this.authorizePath(msg, Action.bind, path);

		const binding = await this.options.binder.bind(canonical, uid);
		if (this.parked.delete(binding.path)) {
			this.persist();
		}
		logBound('Bound', binding, uid);
		emitSignal(this.options.bus, INTERFACE, 'Bound', 's', [binding.path]);
		return [encodeRecord({ ...binding, state: 'active' })];
	}

	private async release(msg: BusMessage): Promise<unknown[]> {
		const path = argumentPath(msg);

		const { uid, canonical } = await this.authorizePath(msg, Action.release, path);

		// A parked path is only remembered: releasing it means forgetting it. Under the path's
		// lock, so a Resume binding it right now either finishes first or sees it forgotten.
		const binder = this.options.binder;
		const forgotten = await binder.withLock(canonical, async () => {
			const parked = this.parked.delete(canonical);
			if (parked) {
				this.persist();
			}
			return parked && !binder.bindings.has(canonical);
		});
		if (forgotten) {
			log.info(`Forgot the parked binding of ${quote(canonical)} (requested by uid=${uid})`);
			return [];
		}
		await binder.release(canonical);
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

		// Each path is parked before its release, so the state file holds it at every moment.
		const lifted: string[] = [];
		for (const binding of [...this.options.binder.bindings.values()]) {
			const { path, boundBy, boundAt } = binding;
			this.parked.set(path, { path, boundBy, boundAt, suspended: true });
			try {
				await this.options.binder.release(path);
				lifted.push(path);
				emitSignal(this.options.bus, INTERFACE, 'Released', 's', [path]);
			} catch (error: unknown) {
				this.parked.delete(path);
				log.warning(`${describeErrno(error)}; ${quote(path)} stays bound`);
			}
		}
		this.persist();
		log.info(`Suspended ${lifted.length} binding(s) (requested by uid=${uid})`);
		return [lifted];
	}

	private async resume(msg: BusMessage): Promise<unknown[]> {
		const { uid } = await this.options.authorizer.authorize(msg, Action.bind, EVERY_BINDING);

		const records: unknown[] = [];
		for (const entry of [...this.parked.values()]) {
			const binding = await this.bindParked(entry);
			if (binding !== undefined) {
				logBound('Resumed', binding, uid);
				records.push(encodeRecord({ ...binding, state: 'active' }));
			} else if (this.parked.has(entry.path)) {
				records.push(encodeRecord(parkedView(this.parked.get(entry.path)!)));
			}
		}
		this.persist();
		return [records];
	}

	/**
	 * Binds a parked path; a failure keeps it parked with the reason, so it is neither lost
	 * from the state file nor bound behind the administrator's back.
	 */
	async bindParked(entry: SavedBinding, requireParked = true): Promise<Binding | undefined> {
		try {
			// A Release of the path while this waited for the lock wins: it stays forgotten.
			const stillWanted = () => !requireParked || this.parked.has(entry.path);
			const binding = await this.options.binder.bind(entry.path, entry.boundBy, stillWanted);
			this.parked.delete(entry.path);
			emitSignal(this.options.bus, INTERFACE, 'Bound', 's', [binding.path]);
			return binding;
		} catch (error: unknown) {
			if (this.options.binder.bindings.has(entry.path) || isBindError(error, ErrorName.NotBound)) {
				this.parked.delete(entry.path);
				return undefined;
			}
			const reason = (error as Error).message;
			this.parked.set(entry.path, { ...entry, suspended: undefined, failed: reason });
			log.error(`${reason}; ${quote(entry.path)} stays in the state file, to be bound again later`);
			return undefined;
		} finally {
			this.persist();
		}
	}

	private listRecords(): unknown[] {
		const views = this.options.binder.list();
		const live = new Set(views.map((view) => view.path));
		for (const entry of this.parked.values()) {
			if (!live.has(entry.path)) {
				views.push(parkedView(entry));
			}
		}
		return views.map((view) => encodeRecord(view));
	}

	/**
	 * Authorizes a call on `path` and returns the canonical path to act on. Root's path is
	 * resolved first. Anyone else's is not touched before polkit answers, and polkit (and so the
	 * caller's own password prompt) sees it exactly as sent: nothing tells an unauthorized
	 * caller whether a directory exists or where a symlink in it leads, and a slow file system
	 * cannot stall the service for a caller nobody authorized. An authorized caller must then
	 * name the canonical path, so a rule granting one path never covers another.
	 */
	private async authorizePath(
		msg: BusMessage,
		action: ActionId,
		path: string,
	): Promise<{ uid: number; canonical: string }> {
		const authorizer = this.options.authorizer;
		const uid = await authorizer.callerUid(msg.sender, action, path);
		if (uid === 0) {
			const canonical = canonicalPath(path);
			await authorizer.authorize(msg, action, canonical, path, uid);
			return { uid, canonical };
		}

		await authorizer.authorize(msg, action, path, path, uid);
		const canonical = canonicalPath(path);
		if (canonical !== path) {
			throw new BindError(
				ErrorName.InvalidPath,
				`Invalid path ${quote(path)}: it resolves to ${quote(canonical)}; call again with that path`,
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

function parkedView(entry: SavedBinding): BindingView {
	return {
		path: entry.path,
		state: entry.suspended === true ? 'suspended' : 'failed',
		boundBy: entry.boundBy,
		boundAt: entry.boundAt,
		error: entry.failed,
	};
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
