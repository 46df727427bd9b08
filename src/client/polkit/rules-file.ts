// Reading and replacing the one rules file of group grants. The file is rebuilt from its own grant
// lines, checked by running it against a stub polkit, and renamed into place; a file changed by
// hand is reported, never replaced.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { quote } from '../../common/quote.js';
import type { Grant } from './grants.js';
import { checkRules, describeError, parseRules, renderRules, syntaxError } from './rules-text.js';

export const DEFAULT_RULES_DIR = '/etc/polkit-1/rules.d';
// Where polkitd reads rules from, in the order it prefers a file name found in both.
export const RULES_DIRS = [DEFAULT_RULES_DIR, '/usr/share/polkit-1/rules.d'];
export const RULES_FILE = '60-memfd-bind.rules';

/** The grants in `file`, none when it does not exist. */
export async function readGrants(file: string): Promise<Grant[]> {
	let text: string;
	try {
		text = await readFile(file, 'utf8');
	} catch (error: unknown) {
		if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
			return [];
		}
		throw new Error(`Failed to read rules file ${quote(file)}: ${describeError(error)}`, {
			cause: error,
		});
	}
	return parseRules(file, text);
}

/**
 * Replaces `file` with the rules for `grants`, or removes it when there are none. The new text goes
 * to a temporary file in the same folder (a name polkitd ignores), is read back and checked, and
 * is renamed over the old file, so polkitd only ever sees a whole, working file.
 * TODO: two memfdctl processes changing grants at once both read the old file, so the grant
 * written first is lost; there is no lock between readGrants and writeGrants.
 */
export async function writeGrants(file: string, grants: Grant[]): Promise<void> {
	if (grants.length === 0) {
		await unlink(file).catch((error: unknown) => {
			if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
				throw new Error(`Failed to remove rules file ${quote(file)}: ${describeError(error)}`, {
					cause: error,
				});
			}
		});
		await syncFolder(dirname(file));
		return;
	}
	const text = renderRules(grants);
	const temporary = join(dirname(file), `.${basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
	try {
		const handle = await open(
			temporary,
			constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
			0o644,
		);
		try {
			await handle.writeFile(text);
			// The umask may have taken bits away; polkitd (not root) must read the file.
			await handle.chmod(0o644);
			await handle.sync();
		} finally {
			await handle.close();
		}
		const written = await readFile(temporary, 'utf8');
		const syntax = syntaxError(written);
		if (syntax !== undefined) {
			throw new Error(`the new rules do not parse (${syntax})`);
		}
		checkRules(written, grants);
		await rename(temporary, file);
	} catch (error: unknown) {
		await unlink(temporary).catch(() => undefined);
		throw new Error(`Failed to write rules file ${quote(file)}: ${describeError(error)}`, {
			cause: error,
		});
	}
	await syncFolder(dirname(file));
}

async function syncFolder(dir: string): Promise<void> {
	const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
	try {
		await handle.sync();
	} finally {
		await handle.close();
	}
}
