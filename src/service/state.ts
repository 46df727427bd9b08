// The set of paths that should be bound, kept on disk so a restart or a reboot binds them again.
// Written atomically: a temporary file, fsync, rename, then fsync of the folder.
import {
	closeSync,
	fsyncSync,
	mkdirSync,
	openSync,
	readFileSync,
	readdirSync,
	renameSync,
	writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { quote } from '../common/quote.js';
import type { Origin } from './binder.js';
import { describeErrno } from './errors.js';
import { log } from './log.js';

const STATE_FILE = 'bindings.json';

/**
 * One remembered binding; `suspended` marks bindings lifted by Suspend, `failed` why the last
 * attempt to bind it again failed.
 */
export interface SavedBinding {
	path: string;
	boundBy: number;
	boundAt: number;
	suspended?: boolean;
	failed?: string;
	/** The file on disk that the copy was made from, to tell an outdated binding after a restart. */
	origin?: Origin;
}

/** Reads and writes `<stateDir>/bindings.json`. */
export class StateStore {
	constructor(readonly stateDir: string) {}

	/** Returns the saved bindings; a missing file is an empty set, a broken one is logged. */
	load(): SavedBinding[] {
		const file = join(this.stateDir, STATE_FILE);
		let text: string;
		try {
			text = readFileSync(file, 'utf8');
		} catch (error: unknown) {
			if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
				log.warning(
					`Failed to read ${quote(file)}: ${describeErrno(error)}, starting with no saved bindings`,
				);
			}
			return [];
		}
		try {
			const data = JSON.parse(text) as { bindings?: unknown[] };
			return (data.bindings ?? []).filter(isSavedBinding);
		} catch (error: unknown) {
			// Kept aside, not overwritten by the next save: it may be the only record of what an
			// administrator bound.
			const aside = `${file}.broken-${Date.now()}`;
			renameSync(file, aside);
			log.error(
				`Failed to parse ${quote(file)}: ${(error as Error).message}; moved it to ${quote(aside)}, starting with no saved bindings`,
			);
			return [];
		}
	}

	/** Replaces the saved set. */
	save(bindings: SavedBinding[]): void {
		mkdirSync(this.stateDir, { recursive: true, mode: 0o755 });
		const file = join(this.stateDir, STATE_FILE);
		const temporary = `${file}.tmp`;
		const fd = openSync(temporary, 'w', 0o644);
		try {
			writeSync(fd, `${JSON.stringify({ version: 1, bindings }, null, '\t')}\n`);
			fsyncSync(fd);
		} finally {
			closeSync(fd);
		}
		renameSync(temporary, file);
		const dir = openSync(this.stateDir, 'r');
		try {
			fsyncSync(dir);
		} finally {
			closeSync(dir);
		}
	}
}

// A record as the service writes it; anything else in the file is ignored.
function isSavedBinding(entry: unknown): entry is SavedBinding {
	const candidate = entry as Partial<SavedBinding> | null;
	return (
		typeof candidate?.path === 'string' &&
		Number.isSafeInteger(candidate.boundBy) &&
		(candidate.boundBy ?? -1) >= 0 &&
		Number.isSafeInteger(candidate.boundAt) &&
		(candidate.suspended === undefined || typeof candidate.suspended === 'boolean') &&
		(candidate.failed === undefined || typeof candidate.failed === 'string')
	);
}

/** A path an administrator declared in a config file, with where it came from. */
export interface DeclaredPath {
	path: string;
	file: string;
	line: number;
}

/**
 * Reads `*.conf` in `configDir`: one absolute path a line, `#` starts a comment. A bad line is
 * logged with its file and line number and skipped.
 */
export function readDeclaredPaths(
	configDir: string,
	validate: (path: string) => void,
): DeclaredPath[] {
	let names: string[];
	try {
		names = readdirSync(configDir)
			.filter((name) => name.endsWith('.conf'))
			.sort();
	} catch (error: unknown) {
		if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
			log.warning(`Failed to read ${quote(configDir)}: ${describeErrno(error)}, ignoring`);
		}
		return [];
	}
	const declared: DeclaredPath[] = [];
	for (const name of names) {
		const file = join(configDir, name);
		let text: string;
		try {
			text = readFileSync(file, 'utf8');
		} catch (error: unknown) {
			log.warning(`Failed to read ${quote(file)}: ${describeErrno(error)}, ignoring`);
			continue;
		}
		text.split('\n').forEach((raw, index) => {
			const path = raw.replace(/#.*/, '').trim();
			if (path === '') {
				return;
			}
			try {
				validate(path);
				declared.push({ path, file, line: index + 1 });
			} catch (error: unknown) {
				log.warning(`Skipping ${file}:${index + 1}: ${(error as Error).message}`);
			}
		});
	}
	return declared;
}
