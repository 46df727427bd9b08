// The text of our one rules file: rendered from its grants, parsed back from its own grant lines,
// and checked by running it against a stub polkit.
import { quote } from '../../common/quote.js';
import { ACTIONS, validateGroup, validatePath } from './grants.js';
import type { Grant } from './grants.js';

// The first line of every rules file memfdctl writes.
export const MARKER =
	'// memfd-bind: polkit grants kept by `memfdctl polkit allow` and `memfdctl polkit revoke`.';
const GRANT_PREFIX = '// memfd-bind-grant: ';

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

/** The message of a thrown value, for use inside a longer message. */
export function describeError(error: unknown): string {
	return error instanceof Error ? error.message : String(error);
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
