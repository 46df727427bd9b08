// The binding logic: the set of bindings, one operation at a time per path, adoption at start
// and the state of each binding. The bus layer calls these methods after authorization; nothing
// here knows about D-Bus or callers. One binding is made in bind-file.ts.
import { ErrorName } from '../common/names.js';
import { quote } from '../common/quote.js';
import { magicLinkOf, readMountInfo } from '../common/mountinfo.js';
import { adoptHolder } from './adopt.js';
import { bindFile, unbindFile } from './bind-file.js';
import { refreshFile } from './refresh-file.js';
import { BindError, describeErrno } from './errors.js';
import {
	HELD_MEMFD_PREFIX,
	fdTarget,
	findHolders,
	holdsMemfd,
	isHolder,
	stopHolder,
} from './holder.js';
import { log } from './log.js';
import { diskFileOrigin, foreignView, isLinkAlive, removeStaleMounts } from './mount-table.js';
import { canonicalPath } from './paths.js';
import { PathLocks } from './path-locks.js';

export type BindingState = 'active' | 'stale' | 'foreign' | 'outdated' | 'suspended' | 'failed';

/** The identity of the file on disk that a binding copied. */
export interface Origin {
	dev: number;
	ino: number;
	size: number;
	mtimeMs: number;
}

/** A binding this service holds. */
export interface Binding {
	path: string;
	size: number;
	sha256: string;
	seals: number;
	mode: number;
	uid: number;
	gid: number;
	boundAt: number;
	boundBy: number;
	memfdName: string;
	holderPid: number;
	origin?: Origin;
}

/** What `list()` reports: a binding of ours, or a memfd mount someone else left. */
export interface BindingView extends Partial<Binding> {
	path: string;
	state: BindingState;
	holderPid?: number;
	holderName?: string;
	/** Why the last attempt to bind a parked path failed. */
	error?: string;
}

export interface BinderOptions {
	/** Largest file, in bytes, that Bind copies. */
	maxSize: number;
	/** Called after every change to the set of bindings. */
	onChange?: () => void;
}

/** Owns the bindings and serialises every operation per path. */
export class Binder {
	readonly bindings = new Map<string, Binding>();
	private readonly locks = new PathLocks();

	constructor(private readonly options: BinderOptions) {}

	/** Binds a sealed copy of the file at `path` over it; `path` must be validated already. */
	async bind(path: string, boundBy: number, stillWanted = () => true): Promise<Binding> {
		const canonical = canonicalPath(path);
		return this.locks.run(canonical, async () => {
			if (!stillWanted()) {
				throw new BindError(
					ErrorName.NotBound,
					`Failed to bind ${quote(canonical)}: it was released while the call waited`,
				);
			}
			const existing = this.bindings.get(canonical);
			if (existing !== undefined && holderAlive(existing)) {
				throw alreadyBoundByUs(existing);
			}
			if (existing !== undefined) {
				// Our holder died (killed by hand): the stale mount goes, and the binding is made
				// anew. The record stays until then, so a failed attempt does not forget the path.
				removeStaleMounts(canonical);
			}
			const binding = await bindFile(canonical, boundBy, this.options.maxSize);
			this.bindings.set(canonical, binding);
			this.options.onChange?.();
			return binding;
		});
	}

	/** Runs `task` while no other operation on `path` (canonical) runs. */
	async withLock<T>(path: string, task: () => Promise<T>): Promise<T> {
		return this.locks.run(path, task);
	}

	/** Unmounts the binding at `path` and stops its holder. */
	async release(path: string): Promise<void> {
		const canonical = canonicalPath(path);
		await this.locks.run(canonical, async () => {
			const binding = this.bindings.get(canonical);
			if (binding === undefined) {
				throw new BindError(
					ErrorName.NotBound,
					`Failed to release ${quote(canonical)}: it is not bound by memfd-bind`,
				);
			}
			unbindFile(binding);
			this.bindings.delete(canonical);
			this.options.onChange?.();
		});
	}

	/** Replaces the binding at `path` with a copy of the file now on disk. */
	async refresh(path: string, boundBy: number): Promise<Binding> {
		const canonical = canonicalPath(path);
		return this.locks.run(canonical, async () => {
			const old = this.bindings.get(canonical);
			if (old === undefined) {
				throw new BindError(
					ErrorName.NotBound,
					`Failed to refresh ${quote(canonical)}: it is not bound by memfd-bind`,
				);
			}
			// The file stays executable throughout: for a moment it is the file on disk itself.
			const binding = await refreshFile(old, this.options.maxSize);
			binding.boundBy = boundBy;
			this.bindings.set(canonical, binding);
			this.options.onChange?.();
			return binding;
		});
	}

	/**
	 * Removes stale memfd mounts (their holder is gone) at `path`, or anywhere when `path` is
	 * empty, and returns the mount points it removed. Mounts of any other kind stay.
	 */
	async cleanup(path: string): Promise<string[]> {
		if (path === '') {
			return this.cleanupEverywhere();
		}
		const canonical = canonicalPath(path);
		return this.locks.run(canonical, async () => {
			const current = this.bindings.get(canonical);
			if (current !== undefined && holderAlive(current)) {
				throw new BindError(
					ErrorName.AlreadyBound,
					`Failed to clean up ${quote(canonical)}: it is bound by this service; use Release`,
				);
			}
			const removed = removeStaleMounts(canonical);
			if (this.bindings.delete(canonical)) {
				this.options.onChange?.();
			}
			return removed;
		});
	}

	/** Lists our bindings and every other memfd magic-link mount in the mount table. */
	list(): BindingView[] {
		const views: BindingView[] = [];
		const mounts = readMountInfo();
		for (const binding of this.bindings.values()) {
			views.push({ ...binding, state: stateOf(binding) });
		}
		for (const entry of mounts) {
			const link = magicLinkOf(entry);
			if (link === undefined || this.bindings.has(entry.mountPoint)) {
				continue;
			}
			views.push(foreignView(entry, link));
		}
		return views;
	}

	/** Releases every binding, continuing past failures; used on SIGTERM and before upgrades. */
	async releaseAll(): Promise<string[]> {
		const released: string[] = [];
		for (const path of [...this.bindings.keys()]) {
			try {
				await this.release(path);
				released.push(path);
				log.info(`Released ${quote(path)}`);
			} catch (error: unknown) {
				// The error names the path and the reason already.
				log.warning(`${describeErrno(error)}, ignoring`);
			}
		}
		return released;
	}

	/**
	 * Takes over bindings left by an earlier run of the service: memfd mounts whose holder is
	 * still one of ours. Reports stale mounts and live foreign ones, and stops holders that no
	 * mount uses (left by a crash between starting a holder and mounting).
	 */
	async adopt(): Promise<{
		adopted: Binding[];
		stale: string[];
		foreign: BindingView[];
		orphans: number[];
	}> {
		const adopted: Binding[] = [];
		const stale: string[] = [];
		const foreign: BindingView[] = [];
		const used = new Set<number>();
		for (const entry of readMountInfo()) {
			const link = magicLinkOf(entry);
			if (link === undefined) {
				continue;
			}
			used.add(link.pid);
			if (this.bindings.has(entry.mountPoint)) {
				continue;
			}
			const target = fdTarget(link.pid, link.fd);
			if (target === undefined) {
				stale.push(entry.mountPoint);
				continue;
			}
			if (!target.startsWith(HELD_MEMFD_PREFIX) || !isHolder(link.pid)) {
				foreign.push(foreignView(entry, link));
				continue;
			}
			const binding = await adoptHolder(entry.mountPoint, link);
			if (binding !== undefined) {
				this.bindings.set(binding.path, binding);
				adopted.push(binding);
			}
		}
		const orphans = findHolders().filter((pid) => !used.has(pid));
		for (const pid of orphans) {
			stopHolder(pid);
		}
		return { adopted, stale, foreign, orphans };
	}

	private async cleanupEverywhere(): Promise<string[]> {
		const removed: string[] = [];
		const candidates = new Set<string>();
		for (const entry of readMountInfo()) {
			const link = magicLinkOf(entry);
			if (link !== undefined && !isLinkAlive(entry.mountPoint)) {
				candidates.add(entry.mountPoint);
			}
		}
		for (const mountPoint of candidates) {
			await this.locks.run(mountPoint, async () => {
				// Checked under the lock: a Bind that held it may have just made a live binding here.
				const binding = this.bindings.get(mountPoint);
				if (binding !== undefined && holderAlive(binding)) {
					return;
				}
				removed.push(...removeStaleMounts(mountPoint));
				if (this.bindings.delete(mountPoint)) {
					this.options.onChange?.();
				}
			});
		}
		return removed;
	}
}

function holderAlive(binding: Binding): boolean {
	return holdsMemfd(binding.holderPid, binding.memfdName);
}

function stateOf(binding: Binding): BindingState {
	if (!holderAlive(binding) || !isLinkAlive(binding.path)) {
		return 'stale';
	}
	return isOutdated(binding) ? 'outdated' : 'active';
}

/** Tells whether the file on disk under the binding is no longer the one that was copied. */
function isOutdated(binding: Binding): boolean {
	if (binding.origin === undefined) {
		return false;
	}
	const current = diskFileOrigin(binding.path);
	if (current === undefined) {
		return true;
	}
	const origin = binding.origin;
	return (
		current.dev !== origin.dev ||
		current.ino !== origin.ino ||
		current.size !== origin.size ||
		current.mtimeMs !== origin.mtimeMs
	);
}

function alreadyBoundByUs(binding: Binding): BindError {
	return new BindError(
		ErrorName.AlreadyBound,
		`Failed to bind ${quote(binding.path)}: it is already bound by memfd-bind (holder pid ${binding.holderPid})`,
	);
}
