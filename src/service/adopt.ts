// Taking over a binding left by an earlier run of the service: its holder still runs and its
// mount is in place; only a copy made for this very path and sealed as runc expects qualifies.
import { closeSync, fstatSync, statSync } from 'node:fs';
import { quote } from '../common/quote.js';
import { O_CLOEXEC, O_RDONLY, RUNC_SEALS, getSeals, openRaw } from '../common/libc.js';
import type { MagicLink } from '../common/mountinfo.js';
import type { Binding } from './binder.js';
import { describeErrno } from './errors.js';
import { fdTarget } from './holder.js';
import { log } from './log.js';
import { diskFileOrigin } from './mount-table.js';
import { hashFd, memfdNameFor } from './sealed-copy.js';

/** Returns the binding a holder keeps at `path`, or undefined when it does not qualify. */
export async function adoptHolder(path: string, link: MagicLink): Promise<Binding | undefined> {
	let fd = -1;
	try {
		fd = openRaw(`/proc/${link.pid}/fd/${link.fd}`, O_RDONLY | O_CLOEXEC);
		const stat = fstatSync(fd);
		const seals = getSeals(fd);
		const memfdName = (fdTarget(link.pid, link.fd) ?? '')
			.replace(/^\/memfd:/, '')
			.replace(/ \(deleted\)$/, '');
		// Only a copy made for this very path, sealed as runc expects, is taken over; a mount that
		// moved with a renamed directory keeps the old path in its memfd name.
		if (memfdName !== memfdNameFor(path) || seals !== RUNC_SEALS) {
			log.warning(
				`Not adopting the memfd mount at ${quote(path)}: its memfd is ${quote(memfdName)} with seals 0x${seals.toString(16)}`,
			);
			return undefined;
		}
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
			memfdName,
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
