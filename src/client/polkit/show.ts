// memfdctl polkit show: our polkit actions as pkaction describes them, and the rules files in
// polkitd's folders that mention them.
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { quote } from '../../common/quote.js';
import { ACTIONS, describePaths } from './grants.js';
import type { Grant } from './grants.js';
import { MARKER, RulesFileError, describeError, parseRules, syntaxError } from './rules-text.js';

/** What `memfdctl polkit show` prints, and what it found broken on the way. */
export interface ActionReport {
	text: string;
	problems: Error[];
}

/** Describes every action (through pkaction) and the rules files in `dirs` that mention it. */
export async function showActions(dirs: string[]): Promise<ActionReport> {
	const problems: Error[] = [];
	const files = await rulesFiles(dirs, problems);
	let text = '';
	for (const id of ACTIONS) {
		const result = await execa('pkaction', ['--action-id', id, '--verbose'], { reject: false });
		if (result.exitCode === 0) {
			const field = (name: string) =>
				new RegExp(`^\\s*${name}:[ \\t]*(.*)$`, 'm').exec(result.stdout)?.[1] ?? '?';
			text += `${id}: ${field('description')}\n`;
			text += `  implicit any:      ${field('implicit any')}\n`;
			text += `  implicit inactive: ${field('implicit inactive')}\n`;
			text += `  implicit active:   ${field('implicit active')}\n`;
		} else {
			const reason = (
				result.stderr ||
				result.stdout ||
				result.message ||
				`exit code ${result.exitCode}`
			)
				.trim()
				.split('\n')[0];
			text += `${id}: could not be looked up (pkaction failed)\n`;
			problems.push(new Error(`pkaction --action-id ${id} failed: ${reason}`));
		}
		const mentioning = files.filter((entry) => mentions(entry.text, id));
		text += mentioning.length === 0 ? '  rules:             none\n' : '  rules:\n';
		for (const entry of mentioning) {
			text += `    ${entry.file}\n`;
			for (const grant of entry.grants) {
				text += `      memfd-bind grant: group ${grant.group}, ${describePaths(grant.paths)}\n`;
			}
		}
	}
	return { text, problems };
}

/** Whether a rules file names the action, or the common prefix of our actions. */
export function mentions(text: string, id: string): boolean {
	const prefix = id.slice(0, id.lastIndexOf('.') + 1);
	return text.includes(id) || new RegExp(`${prefix.replace(/\./g, '\\.')}["'\`]`).test(text);
}

interface RulesFileEntry {
	file: string;
	text: string;
	grants: Grant[];
}

// Reads the *.rules files of `dirs`; files that mention our actions but are broken become problems.
async function rulesFiles(dirs: string[], problems: Error[]): Promise<RulesFileEntry[]> {
	const entries: RulesFileEntry[] = [];
	for (const dir of dirs) {
		let names: string[];
		try {
			names = (await readdir(dir)).filter((name) => name.endsWith('.rules')).sort();
		} catch (error: unknown) {
			if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
				problems.push(
					new Error(`Failed to read rules folder ${quote(dir)}: ${describeError(error)}`),
				);
			}
			continue;
		}
		for (const name of names) {
			const file = join(dir, name);
			let text: string;
			try {
				text = await readFile(file, 'utf8');
			} catch (error: unknown) {
				problems.push(
					new Error(`Failed to read rules file ${quote(file)}: ${describeError(error)}`),
				);
				continue;
			}
			if (!ACTIONS.some((id) => mentions(text, id))) {
				continue;
			}
			let grants: Grant[] = [];
			const syntax = syntaxError(text);
			if (syntax !== undefined) {
				problems.push(
					new RulesFileError(file, `does not parse as JavaScript (${syntax}); polkitd skips it`),
				);
			} else if (text.startsWith(`${MARKER}\n`)) {
				try {
					grants = parseRules(file, text);
				} catch (error: unknown) {
					problems.push(error as Error);
				}
			}
			entries.push({ file, text, grants });
		}
	}
	return entries;
}
