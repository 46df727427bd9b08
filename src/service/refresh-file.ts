// Refreshing a binding: copy the file now on disk beneath it while the old copy stays mounted,
// then swap the mounts, putting the old one back if anything fails.
import { closeSync, fstatSync } from 'node:fs';
import { ErrorName } from '../common/names.js';
import { quote } from '../common/quote.js';
import {
	MS_BIND,
	O_CLOEXEC,
	O_NOFOLLOW,
	O_PATH,
	O_RDONLY,
	isErrno,
	mount,
	openRaw,
	openTreeClone,
} from '../common/libc.js';
import {
	closeAll,
	checkSize,
	copyAndHold,
	openTarget,
	toBinding,
	undoBind,
	verifyMounted,
} from './bind-file.js';
import type { Binding } from './binder.js';
import { BindError, describeErrno, failure } from './errors.js';
import { HOLDER_FD, stopHolder } from './holder.js';
import { log } from './log.js';
import { unmountTop } from './mount-table.js';

/**
 * Replaces `old` with a copy of the file now on disk beneath it. The new copy is made while the
 * old one is still mounted, so a refresh that fails (file too large, vanished, replaced) keeps
 * the old binding, and the path never leaves the set of bindings.
 */
export async function refreshFile(old: Binding, maxSize: number): Promise<Binding> {
	const path = old.path;
	const fds: number[] = [];
	let holderPid = 0;
	let lifted = false;
	let mounted = false;
	try {
		const sourceFd = openDiskFile(path);
		fds.push(sourceFd);
		const stat = fstatSync(sourceFd);
		if (!stat.isFile()) {
			throw new BindError(
				ErrorName.NotRegularFile,
				`Failed to refresh ${quote(path)}: the file on disk is no longer a regular file`,
			);
		}
		checkSize(path, stat, maxSize);
		const held = await copyAndHold(path, sourceFd, stat, fds);
		holderPid = held.holderPid;

		unmountTop(path, old.holderPid);
		lifted = true;
		const targetFd = openTarget(path);
		fds.push(targetFd);
		const now = fstatSync(targetFd);
		if (now.dev !== stat.dev || now.ino !== stat.ino) {
			throw new BindError(
				ErrorName.Failed,
				`Failed to refresh ${quote(path)}: the file on disk was replaced during the refresh`,
			);
		}
		mount(`/proc/self/fd/${held.linkFd}`, `/proc/self/fd/${targetFd}`, MS_BIND);
		mounted = true;
		verifyMounted(path, holderPid);
		stopHolder(old.holderPid, old.memfdName);
		return toBinding(path, held.copy, stat, old.boundBy, holderPid);
	} catch (error: unknown) {
		undoBind(path, holderPid, mounted);
		if (lifted) {
			remount(old);
		}
		throw failure('refresh', path, error);
	} finally {
		closeAll(fds);
	}
}

// Puts a binding back after a failed refresh: its holder still runs.
function remount(old: Binding): void {
	const fds: number[] = [];
	try {
		fds.push(openRaw(`/proc/${old.holderPid}/fd/${HOLDER_FD}`, O_PATH | O_NOFOLLOW | O_CLOEXEC));
		fds.push(openTarget(old.path));
		mount(`/proc/self/fd/${fds[0]}`, `/proc/self/fd/${fds[1]}`, MS_BIND);
	} catch (error: unknown) {
		// The state file still names the path: the next start binds it afresh.
		log.error(`Failed to put back the binding of ${quote(old.path)}: ${describeErrno(error)}`);
	} finally {
		closeAll(fds);
	}
}

// The file on disk beneath any mount at `path`, read through a non-recursive clone of its
// directory's mount.
function openDiskFile(path: string): number {
	const slash = path.lastIndexOf('/');
	const tree = openTreeClone(path.slice(0, slash) || '/');
	try {
		return openRaw(
			`/proc/self/fd/${tree}/${path.slice(slash + 1)}`,
			O_RDONLY | O_NOFOLLOW | O_CLOEXEC,
		);
	} catch (error: unknown) {
		if (isErrno(error, 'ENOENT')) {
			throw new BindError(
				ErrorName.NotFound,
				`Failed to refresh ${quote(path)}: the file on disk is gone`,
			);
		}
		throw error;
	} finally {
		closeSync(tree);
	}
}
