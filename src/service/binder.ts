// The binding logic: sealed copy, holder process, bind mount, and their removal. The bus layer
// calls these methods after authorization; nothing here knows about D-Bus or callers.
import { closeSync, fstatSync, lstatSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { ErrorName } from '../common/names.js';
import { quote } from '../common/quote.js';
import { BindError, describeErrno, failure, isBindError } from './errors.js';
import {
	HOLDER_FD,
	fdTarget,
	findHolders,
	isHolder,
	processName,
	spawnHolder,
	stopHolder,
} from './holder.js';
import {
	MNT_DETACH,
	MS_BIND,
	O_CLOEXEC,
	O_NOFOLLOW,
	O_PATH,
	O_RDONLY,
	RUNC_SEALS,
	getSeals,
	isErrno,
	mount,
	openRaw,
	openTreeClone,
	umount2,
} from '../common/libc.js';
import { log } from './log.js';
import { magicLinkOf, readMountInfo } from '../common/mountinfo.js';
import type { MagicLink, MountEntry } from '../common/mountinfo.js';
import { canonicalPath } from './paths.js';
import { PathLocks } from './path-locks.js';
import { createSealedCopy, hashFd } from './sealed-copy.js';

export type BindingState = 'active' | 'stale' | 'foreign' | 'outdated';

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
	holderPid: number;
	holderName?: string;
}

export interface BinderOptions {
	/** Largest file, in bytes, that Bind copies. */
	maxSize: number;
	/** Called after every change to the set of bindings. */
	onChange?: () => void;
}

const MEMFD_PREFIX = '/memfd:memfd-bind:';

/** Owns the bindings and serialises every operation per path. */
export class Binder {
	readonly bindings = new Map<string, Binding>();
	private readonly locks = new PathLocks();

	constructor(private readonly options: BinderOptions) {}

	/** Binds a sealed copy of the file at `path` over it; `path` must be validated already. */
	async bind(path: string, boundBy: number): Promise<Binding> {
		const canonical = canonicalPath(path);
		return this.locks.run(canonical, async () => {
			const existing = this.bindings.get(canonical);
			if (existing !== undefined && isHolder(existing.holderPid)) {
				throw alreadyBoundByUs(existing);
			}
			if (existing !== undefined) {
				// Our holder died (killed by hand): the stale mount goes, and the binding is made anew.
				removeStaleMounts(canonical);
				this.bindings.delete(canonical);
			}
			const binding = await bindFile(canonical, boundBy, this.options.maxSize);
			this.bindings.set(canonical, binding);
			this.options.onChange?.();
			return binding;
		});
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
			unbindFile(old);
			this.bindings.delete(canonical);
			this.options.onChange?.();
			const binding = await bindFile(canonical, boundBy, this.options.maxSize);
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
			if (this.bindings.has(canonical) && isHolder(this.bindings.get(canonical)!.holderPid)) {
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
			} catch (error: unknown) {
				log.warning(`Failed to release ${quote(path)}: ${describeErrno(error)}, ignoring`);
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
			if (!target.startsWith(MEMFD_PREFIX) || !isHolder(link.pid)) {
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
			const binding = this.bindings.get(mountPoint);
			if (binding !== undefined && isHolder(binding.holderPid)) {
				continue;
			}
			await this.locks.run(mountPoint, async () => {
				removed.push(...removeStaleMounts(mountPoint));
				if (this.bindings.delete(mountPoint)) {
					this.options.onChange?.();
				}
			});
		}
		return removed;
	}
}

/** Tells whether the file at `path` can be opened and is a memfd sealed exactly 0xF. */
export function pathSeals(path: string): number | undefined {
	let fd = -1;
	try {
		fd = openRaw(path, O_RDONLY | O_CLOEXEC);
		return getSeals(fd);
	} catch {
		return undefined;
	} finally {
		if (fd >= 0) {
			closeSync(fd);
		}
	}
}

async function bindFile(path: string, boundBy: number, maxSize: number): Promise<Binding> {
	const targetFd = openTarget(path);
	const fds = [targetFd];
	let holderPid = 0;
	let mounted = false;
	try {
		const stat = fstatSync(targetFd);
		checkFileType(path, targetFd, stat);
		if (readlinkSync(`/proc/self/fd/${targetFd}`) !== path) {
			throw new BindError(
				ErrorName.Failed,
				`Failed to bind ${quote(path)}: the path changed while it was being opened`,
			);
		}
		if (stat.size > maxSize) {
			throw new BindError(
				ErrorName.TooLarge,
				`Failed to bind ${quote(path)}: ${stat.size} bytes is larger than the limit of ${maxSize} bytes`,
			);
		}

		// Read from a reopen of the very inode we will mount onto, never from the name again.
		const sourceFd = openRaw(`/proc/self/fd/${targetFd}`, O_RDONLY | O_CLOEXEC);
		fds.push(sourceFd);
		refuseSealedMemfd(path, sourceFd);
		const copy = await createSealedCopy({
			fd: sourceFd,
			path,
			size: stat.size,
			mode: stat.mode,
			uid: stat.uid,
			gid: stat.gid,
		});
		fds.push(copy.fd);

		holderPid = spawnHolder(copy.fd);
		const linkFd = openHolderLink(path, holderPid, copy.name);
		fds.push(linkFd);
		mount(`/proc/self/fd/${linkFd}`, `/proc/self/fd/${targetFd}`, MS_BIND);
		mounted = true;
		verifyMounted(path, holderPid);

		return {
			path,
			size: copy.size,
			sha256: copy.sha256,
			seals: copy.seals,
			mode: stat.mode & 0o777,
			uid: stat.uid,
			gid: stat.gid,
			boundAt: Date.now() * 1000,
			boundBy,
			memfdName: copy.name,
			holderPid,
			origin: originOf(stat),
		};
	} catch (error: unknown) {
		undoBind(path, holderPid, mounted);
		throw failure('bind', path, error);
	} finally {
		for (const fd of fds) {
			closeSync(fd);
		}
	}
}

function openTarget(path: string): number {
	try {
		return openRaw(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	} catch (error: unknown) {
		if (isErrno(error, 'ENOENT')) {
			throw new BindError(ErrorName.NotFound, `Failed to bind ${quote(path)}: no such file`);
		}
		throw failure('open', path, error);
	}
}

// A symlink here is either someone's memfd mount (its root is a proc magic link) or a plain
// symlink, which is refused: the mount would land on whatever it points to.
function checkFileType(path: string, fd: number, stat: Stats): void {
	if (stat.isFile()) {
		return;
	}
	if (stat.isSymbolicLink()) {
		const top = topMountOf(fd);
		const link = top === undefined ? undefined : magicLinkOf(top);
		if (top !== undefined && link !== undefined) {
			throw new BindError(ErrorName.AlreadyBound, describeForeignMount(path, link));
		}
		throw new BindError(
			ErrorName.NotRegularFile,
			`Failed to bind ${quote(path)}: it is a symbolic link; bind the file it points to`,
		);
	}
	const kind = stat.isDirectory()
		? 'a directory'
		: stat.isFIFO()
			? 'a fifo'
			: stat.isSocket()
				? 'a socket'
				: stat.isCharacterDevice() || stat.isBlockDevice()
					? 'a device'
					: 'not a regular file';
	throw new BindError(
		ErrorName.NotRegularFile,
		`Failed to bind ${quote(path)}: it is ${kind}, not a regular file`,
	);
}

function refuseSealedMemfd(path: string, fd: number): void {
	let seals: number;
	try {
		seals = getSeals(fd);
	} catch {
		return; // EINVAL: a file that cannot carry seals, as files on disk are
	}
	if ((seals & RUNC_SEALS) === RUNC_SEALS) {
		throw new BindError(
			ErrorName.AlreadyBound,
			`Failed to bind ${quote(path)}: it already is a sealed memfd (seals 0x${seals.toString(16)})`,
		);
	}
}

function openHolderLink(path: string, holderPid: number, memfdName: string): number {
	const linkPath = `/proc/${holderPid}/fd/${HOLDER_FD}`;
	// O_NOFOLLOW gives the magic link itself; mounting that is what keeps the memfd reachable.
	const fd = openRaw(linkPath, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fdTarget(holderPid, HOLDER_FD) !== `/memfd:${memfdName} (deleted)`) {
		closeSync(fd);
		throw new BindError(
			ErrorName.Failed,
			`Failed to bind ${quote(path)}: holder ${holderPid} does not hold the new memfd`,
		);
	}
	return fd;
}

function verifyMounted(path: string, holderPid: number): void {
	const seals = pathSeals(path);
	const top = topMountAt(path);
	const link = top === undefined ? undefined : magicLinkOf(top.entry);
	if (top !== undefined) {
		closeSync(top.fd);
	}
	if (seals !== RUNC_SEALS || link?.pid !== holderPid) {
		throw new BindError(
			ErrorName.Failed,
			`Failed to bind ${quote(path)}: after mounting, the path does not show the sealed copy`,
		);
	}
}

function undoBind(path: string, holderPid: number, mounted: boolean): void {
	if (mounted) {
		try {
			unmountTop(path, holderPid);
		} catch (error: unknown) {
			log.warning(`Failed to undo the mount at ${quote(path)}: ${describeErrno(error)}`);
		}
	}
	if (holderPid !== 0) {
		stopHolder(holderPid);
	}
}

function unbindFile(binding: Binding): void {
	try {
		unmountTop(binding.path, binding.holderPid);
	} catch (error: unknown) {
		if (!isBindError(error, ErrorName.NotBound)) {
			throw failure('unmount', binding.path, error);
		}
		log.warning(`${error.message}; forgetting the binding`);
	}
	stopHolder(binding.holderPid);
}

// Unmounts through an O_PATH|O_NOFOLLOW descriptor: a path name would follow the magic link,
// which fails once the holder is gone.
function unmountTop(path: string, holderPid: number | undefined): void {
	const top = topMountAt(path);
	try {
		const link = top === undefined ? undefined : magicLinkOf(top.entry);
		if (
			top === undefined ||
			link === undefined ||
			(holderPid !== undefined && link.pid !== holderPid)
		) {
			throw new BindError(
				ErrorName.NotBound,
				`Failed to unmount ${quote(path)}: the memfd mount is no longer there`,
			);
		}
		umount2(`/proc/self/fd/${top.fd}`, MNT_DETACH);
	} finally {
		if (top !== undefined) {
			closeSync(top.fd);
		}
	}
}

// Removes stale memfd mounts stacked at `path`, top first, until the top one is something else.
function removeStaleMounts(path: string): string[] {
	const removed: string[] = [];
	for (let round = 0; round < 64; round++) {
		const top = topMountAt(path);
		if (top === undefined) {
			break;
		}
		try {
			const link = magicLinkOf(top.entry);
			if (link === undefined) {
				break;
			}
			if (isLinkAlive(path)) {
				if (removed.length === 0) {
					throw new BindError(ErrorName.AlreadyBound, describeForeignMount(path, link));
				}
				break;
			}
			umount2(`/proc/self/fd/${top.fd}`, MNT_DETACH);
			removed.push(path);
			log.info(`Removed stale memfd mount at ${quote(path)} (holder pid ${link.pid} is gone)`);
		} finally {
			closeSync(top.fd);
		}
	}
	return removed;
}

/** The mount whose root sits exactly at `path`, with an O_PATH fd the caller must close. */
function topMountAt(path: string): { fd: number; entry: MountEntry } | undefined {
	let fd: number;
	try {
		fd = openRaw(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	} catch {
		return undefined;
	}
	const entry = topMountOf(fd);
	if (entry === undefined || entry.mountPoint !== path) {
		closeSync(fd);
		return undefined;
	}
	return { fd, entry };
}

function topMountOf(fd: number): MountEntry | undefined {
	const fdinfo = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
	const match = /^mnt_id:\s*(\d+)$/m.exec(fdinfo);
	if (match === null) {
		return undefined;
	}
	const mountId = Number(match[1]);
	return readMountInfo().find((entry) => entry.mountId === mountId);
}

// Following the mount's magic link fails once the process holding the memfd is gone.
function isLinkAlive(path: string): boolean {
	try {
		statSync(path);
		return true;
	} catch {
		return false;
	}
}

function stateOf(binding: Binding): BindingState {
	if (!isHolder(binding.holderPid) || !isLinkAlive(binding.path)) {
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

/**
 * Stats the file on disk beneath any mount at `path`: a non-recursive clone of the directory's
 * mount does not carry the file mounts made inside it.
 */
export function diskFileOrigin(path: string): Origin | undefined {
	const slash = path.lastIndexOf('/');
	let tree = -1;
	try {
		tree = openTreeClone(path.slice(0, slash) || '/');
		return originOf(lstatSync(`/proc/self/fd/${tree}/${path.slice(slash + 1)}`));
	} catch {
		return undefined;
	} finally {
		if (tree >= 0) {
			closeSync(tree);
		}
	}
}

function originOf(stat: Stats): Origin {
	return { dev: stat.dev, ino: stat.ino, size: stat.size, mtimeMs: stat.mtimeMs };
}

async function adoptHolder(path: string, link: MagicLink): Promise<Binding | undefined> {
	let fd = -1;
	try {
		fd = openRaw(`/proc/${link.pid}/fd/${link.fd}`, O_RDONLY | O_CLOEXEC);
		const stat = fstatSync(fd);
		const seals = getSeals(fd);
		const started = statSync(`/proc/${link.pid}`).mtimeMs;
		return {
			path,
			size: stat.size,
			sha256: await hashFd(fd, stat.size),
			seals,
			mode: stat.mode & 0o777,
			uid: stat.uid,
			gid: stat.gid,
			boundAt: Math.round(started * 1000),
			boundBy: 0,
			memfdName: (fdTarget(link.pid, link.fd) ?? '')
				.replace(/^\/memfd:/, '')
				.replace(/ \(deleted\)$/, ''),
			holderPid: link.pid,
			origin: diskFileOrigin(path),
		};
	} catch (error: unknown) {
		log.warning(`Failed to adopt the binding at ${quote(path)}: ${describeErrno(error)}, ignoring`);
		return undefined;
	} finally {
		if (fd >= 0) {
			closeSync(fd);
		}
	}
}

function foreignView(entry: MountEntry, link: MagicLink): BindingView {
	const alive = isLinkAlive(entry.mountPoint);
	const target = alive ? fdTarget(link.pid, link.fd) : undefined;
	return {
		path: entry.mountPoint,
		state: alive ? 'foreign' : 'stale',
		holderPid: link.pid,
		holderName: alive ? processName(link.pid) : undefined,
		memfdName: target?.replace(/^\/memfd:/, '').replace(/ \(deleted\)$/, ''),
		seals: alive ? pathSeals(entry.mountPoint) : undefined,
	};
}

function alreadyBoundByUs(binding: Binding): BindError {
	return new BindError(
		ErrorName.AlreadyBound,
		`Failed to bind ${quote(binding.path)}: it is already bound by memfd-bind (holder pid ${binding.holderPid})`,
	);
}

function describeForeignMount(path: string, link: MagicLink): string {
	const name = processName(link.pid);
	if (!isLinkAlive(path) || name === undefined) {
		return `Failed to bind ${quote(path)}: a stale memfd mount is there (holder pid ${link.pid} is gone); remove it with Cleanup`;
	}
	return `Failed to bind ${quote(path)}: it is already bound to a memfd held by pid ${link.pid} (${name})`;
}
