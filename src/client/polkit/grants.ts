// A polkit grant: which group may use our actions, on which paths, and the checks a group name or a
// path must pass before it goes into a rules file.
import { posix } from 'node:path';
import { Action } from '../../common/names.js';
import { quote } from '../../common/quote.js';

export const ACTIONS: readonly string[] = [Action.bind, Action.release, Action.cleanup];

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

/** The paths of a grant as `memfdctl polkit` prints them. */
export function describePaths(paths: string[]): string {
	return paths.length === 0 ? 'any path' : paths.map(quote).join(', ');
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
