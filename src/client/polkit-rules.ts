// memfdctl polkit: shows our polkit actions and the rules that mention them, and keeps one rules
// file of group grants. The file is rebuilt from its own grant lines, checked by running it
// against a stub polkit, and renamed into place; a file changed by hand is reported, never replaced.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join, posix } from 'node:path';
import type { Command } from 'commander';
import { execa } from 'execa';
import { Action } from '../common/names.js';
import { quote } from '../common/quote.js';
import { ExitCode } from './exit-codes.js';

export const DEFAULT_RULES_DIR = '/etc/polkit-1/rules.d';
// Where polkitd reads rules from, in the order it prefers a file name found in both.
export const RULES_DIRS = [DEFAULT_RULES_DIR, '/usr/share/polkit-1/rules.d'];
export const RULES_FILE = '60-memfd-bind.rules';
export const ACTIONS: readonly string[] = [Action.bind, Action.release, Action.cleanup];

const MARKER =
	'// memfd-bind: polkit grants kept by `memfdctl polkit allow` and `memfdctl polkit revoke`.';
const GRANT_PREFIX = '// memfd-bind-grant: ';
const GROUP_PATTERN = /^[A-Za-z_][A-Za-z0-9_.-]*\$?$/;
const GROUP_MAX = 32;
const PATH_MAX_BYTES = 4095;

/** Members of `group` may bind, release and clean up `paths`, or any path when it is empty. */
export interface Grant {
	group: string;
	paths: string[];
}

/** A group name or path that cannot go into a rules file. */
export class GrantArgumentError extends Error {
	constructor(message: string) {
		super(message);
		Object.defineProperty(this, 'name', { value: 'GrantArgumentError', enumerable: false });
	}
}

/** A rules file that memfdctl will not read or replace, with the reason. */
export class RulesFileError extends Error {
	constructor(
		readonly file: string,
		reason: string,
		options?: { cause?: unknown },
	) {
		super(`rules file ${quote(file)} ${reason}`, options);
		Object.defineProperty(this, 'name', { value: 'RulesFileError', enumerable: false });
	}
}

/** Adds `memfdctl polkit show|allow|revoke` to the program, inheriting its settings. */
export function addPolkitCommands(program: Command): void {
	const polkit = program
		.command('polkit')
		.description('show the polkit actions, and grant them to a group or revoke a grant');

	polkit
		.command('show')
		.description(
			'print each action with its implicit authorizations and the rules files that mention it',
		)
		.option('--rules-dir <dir>', 'also look in this rules folder')
		.action(async (options: { rulesDir?: string }) => {
			const dirs = [...RULES_DIRS, ...(options.rulesDir === undefined ? [] : [options.rulesDir])];
			const report = await showActions([...new Set(dirs)]);
			process.stdout.write(report.text);
			for (const problem of report.problems) {
				fail('show', 'polkit actions', problem);
			}
		});

	polkit
		.command('allow')
		.description(
			`grant the actions to members of GROUP (replacing an earlier grant for it), in ${RULES_FILE}`,
		)
		.requiredOption('--group <group>', 'a group name')
		.option('--path <path...>', 'only for these absolute paths (default: any path)')
		.option('--rules-dir <dir>', 'the rules folder', DEFAULT_RULES_DIR)
		.action(async (options: { group: string; path?: string[]; rulesDir: string }) => {
			const file = join(options.rulesDir, RULES_FILE);
			try {
				const grant = {
					group: validateGroup(options.group),
					paths: [...new Set((options.path ?? []).map(validatePath))],
				};
				await requireGroup(grant.group);
				const grants = (await readGrants(file)).filter((old) => old.group !== grant.group);
				await writeGrants(file, [...grants, grant]);
				process.stdout.write(
					`${file}: group ${grant.group} may bind, release and clean up ${describePaths(grant.paths)}\n`,
				);
			} catch (error: unknown) {
				fail('allow group', options.group, error);
			}
		});

	polkit
		.command('revoke')
		.description(`remove the grant for GROUP from ${RULES_FILE}, and the file once it holds none`)
		.requiredOption('--group <group>', 'a group name')
		.option('--rules-dir <dir>', 'the rules folder', DEFAULT_RULES_DIR)
		.action(async (options: { group: string; rulesDir: string }) => {
			const file = join(options.rulesDir, RULES_FILE);
			try {
				const group = validateGroup(options.group);
				const grants = await readGrants(file);
				const kept = grants.filter((grant) => grant.group !== group);
				if (kept.length === grants.length) {
					process.stdout.write(`${file}: group ${group} had no grant\n`);
					return;
				}
				await writeGrants(file, kept);
				process.stdout.write(
					`${file}: group ${group} no longer granted${kept.length === 0 ? ', file removed' : ''}\n`,
				);
			} catch (error: unknown) {
				fail('revoke group', options.group, error);
			}
		});
}

/** Returns `group` when it is a plausible group name; throws GrantArgumentError otherwise. */
export function validateGroup(group: string): string {
	if (group.length > GROUP_MAX || !GROUP_PATTERN.test(group)) {
		throw new GrantArgumentError(
			`invalid group name ${quote(group)}: expected up to ${GROUP_MAX} of A-Z a-z 0-9 _ . - not starting with a digit, dot or dash`,
		);
	}
	return group;
}

/** Returns `path` when it is absolute and normalised, as the service sends it to polkit. */
export function validatePath(path: string): string {
	const problem = pathProblem(path);
	if (problem !== undefined) {
		throw new GrantArgumentError(`invalid path ${quote(path)}: ${problem}`);
	}
	return path;
}

/** The rules file for `grants`: a marker, one machine-readable line per grant, then one rule. */
export function renderRules(grants: Grant[]): string {
	const sorted = [...grants].sort((a, b) => (a.group < b.group ? -1 : a.group > b.group ? 1 : 0));
	const lines = sorted.map((grant) => jsonForJs({ group: grant.group, paths: grant.paths }));
	// ES5 only: Debian's polkitd runs rules with duktape.
	return `${MARKER}
// Edit these grants with those commands; memfdctl refuses to replace this file once it was
// changed by hand.
${lines.map((line) => `${GRANT_PREFIX}${line}`).join('\n')}

polkit.addRule(function (action, subject) {
	var actions = ${jsonForJs(ACTIONS)};
	var grants = [
${lines.map((line) => `\t\t${line}`).join(',\n')}
	];
	if (actions.indexOf(action.id) < 0) {
		return polkit.Result.NOT_HANDLED;
	}
	var path = action.lookup("path");
	for (var i = 0; i < grants.length; i++) {
		var grant = grants[i];
		if (subject.isInGroup(grant.group) && (grant.paths.length === 0 || grant.paths.indexOf(path) >= 0)) {
			return polkit.Result.YES;
		}
	}
	return polkit.Result.NOT_HANDLED;
});
`;
}

/** The grants a rules file written by memfdctl holds; throws RulesFileError for any other file. */
export function parseRules(file: string, text: string): Grant[] {
	if (!text.startsWith(`${MARKER}\n`)) {
		throw new RulesFileError(
			file,
			'was not written by memfdctl (its first line is not the memfd-bind marker); move it away or merge it by hand',
		);
	}
	const syntax = syntaxError(text);
	if (syntax !== undefined) {
		throw new RulesFileError(file, `does not parse as JavaScript (${syntax}); fix it or remove it`);
	}
	const grants: Grant[] = [];
	for (const [index, line] of text.split('\n').entries()) {
		if (line.startsWith(GRANT_PREFIX)) {
			grants.push(parseGrantLine(file, index + 1, line.slice(GRANT_PREFIX.length), grants));
		}
	}
	if (renderRules(grants) !== text) {
		throw new RulesFileError(
			file,
			'was changed by hand: it differs from what its memfd-bind-grant lines describe; fix it or remove it',
		);
	}
	return grants;
}

/** Why `text` does not compile as JavaScript, or undefined when it does. Nothing is run. */
export function syntaxError(text: string): string | undefined {
	try {
		new Function('polkit', text);
		return undefined;
	} catch (error: unknown) {
		return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
	}
}

/**
 * Runs `text` against a stub polkit and checks that its rule grants exactly `grants`: YES for a
 * member on a granted path, NOT_HANDLED for anyone else, any other path and any other action.
 */
export function checkRules(text: string, grants: Grant[]): void {
	const rules: Array<(action: unknown, subject: unknown) => unknown> = [];
	const polkit = {
		Result: {
			NO: 'no',
			YES: 'yes',
			AUTH_SELF: 'auth_self',
			AUTH_SELF_KEEP: 'auth_self_keep',
			AUTH_ADMIN: 'auth_admin',
			AUTH_ADMIN_KEEP: 'auth_admin_keep',
			NOT_HANDLED: null,
		},
		addRule: (rule: (action: unknown, subject: unknown) => unknown) => rules.push(rule),
		addAdminRule: () => undefined,
		log: () => undefined,
	};
	new Function('polkit', text)(polkit);
	if (rules.length !== 1) {
		throw new Error(`the rules add ${rules.length} rules, expected 1`);
	}
	const decide = (id: string, path: string, group: string | undefined) =>
		rules[0](
			{ id, lookup: (key: string) => (key === 'path' ? path : undefined) },
			{ user: 'memfd-bind-check', isInGroup: (name: string) => name === group },
		);
	for (const grant of grants) {
		const granted = grant.paths[0] ?? '/usr/bin/memfd-bind-check';
		const other = `${grant.paths.join('')}/memfd-bind-check`;
		for (const id of ACTIONS) {
			expectResult(
				decide(id, granted, grant.group),
				'yes',
				`${id} on ${quote(granted)} for group ${grant.group}`,
			);
			expectResult(
				decide(id, granted, undefined),
				null,
				`${id} on ${quote(granted)} for a non-member`,
			);
			if (grant.paths.length > 0) {
				expectResult(
					decide(id, other, grant.group),
					null,
					`${id} on ${quote(other)} for group ${grant.group}`,
				);
			}
		}
		expectResult(decide('org.freedesktop.other', granted, grant.group), null, 'another action');
	}
}

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

function parseGrantLine(file: string, lineNumber: number, json: string, earlier: Grant[]): Grant {
	try {
		const value = JSON.parse(json) as unknown;
		const { group, paths, ...rest } = (value ?? {}) as Record<string, unknown>;
		if (
			typeof group !== 'string' ||
			!Array.isArray(paths) ||
			paths.some((path) => typeof path !== 'string') ||
			Object.keys(rest).length > 0
		) {
			throw new Error('expected {"group": string, "paths": [string...]}');
		}
		if (earlier.some((grant) => grant.group === group)) {
			throw new Error(`group ${group} is granted twice`);
		}
		return { group: validateGroup(group), paths: (paths as string[]).map(validatePath) };
	} catch (error: unknown) {
		throw new RulesFileError(
			file,
			`has a corrupt memfd-bind-grant line ${lineNumber}: ${describeError(error)}; fix it or remove it`,
			{ cause: error },
		);
	}
}

function pathProblem(path: string): string | undefined {
	if (!path.startsWith('/')) {
		return 'not absolute';
	}
	if (path.includes('\0')) {
		return 'contains a NUL byte';
	}
	// What argv bytes that are not UTF-8 decode to; the service could not receive such a path.
	if (path.includes('\uFFFD')) {
		return 'not valid UTF-8';
	}
	if (posix.normalize(path) !== path || (path !== '/' && path.endsWith('/'))) {
		return 'not normalised';
	}
	if (Buffer.byteLength(path) > PATH_MAX_BYTES) {
		return `longer than ${PATH_MAX_BYTES} bytes`;
	}
	return undefined;
}

// JSON, with the two characters escaped that end a line (and so a // comment) in ES5.
function jsonForJs(value: unknown): string {
	return JSON.stringify(value)
		.replace(/\u2028/g, '\\u2028')
		.replace(/\u2029/g, '\\u2029');
}

function expectResult(actual: unknown, expected: string | null, what: string): void {
	if (actual !== expected) {
		throw new Error(
			`the new rules answer ${String(actual)} for ${what}, expected ${String(expected)}`,
		);
	}
}

// A group that does not exist would make a grant that silently grants nothing.
async function requireGroup(group: string): Promise<void> {
	const result = await execa('getent', ['group', group], { reject: false });
	if (result.exitCode !== 0) {
		throw new GrantArgumentError(`no group named ${group} (getent group ${group} found none)`);
	}
}

async function syncFolder(dir: string): Promise<void> {
	const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
	try {
		await handle.sync();
	} finally {
		await handle.close();
	}
}

function describePaths(paths: string[]): string {
	return paths.length === 0 ? 'any path' : paths.map(quote).join(', ');
}

function describeError(error: unknown): string {
	return error instanceof Error ? error.message : String(error);
}

// Prints "memfdctl: cannot <verb> <object>: <reason>" and keeps the first failure's exit code.
function fail(verb: string, object: string, error: unknown): void {
	const reason = error instanceof Error ? error.message : String(error);
	const target = object === '' ? '' : ` ${object}`;
	process.stderr.write(`memfdctl: cannot ${verb}${target}: ${reason}\n`);
	const code = error instanceof GrantArgumentError ? ExitCode.Usage : ExitCode.Failure;
	if (process.exitCode === undefined || process.exitCode === ExitCode.Success) {
		process.exitCode = code;
	}
}
