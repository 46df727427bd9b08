// Checks a path the caller sent before anything touches the file system, and finds the
// canonical name the binding is kept under.
import { realpathSync } from 'node:fs';
import { posix } from 'node:path';
import { ErrorName } from '../common/names.js';
import { quote } from '../common/quote.js';
import { BindError, failure } from './errors.js';

// Linux PATH_MAX includes the terminating NUL.
const PATH_MAX = 4096;
const FORBIDDEN_ROOTS = ['/proc', '/sys', '/dev'];

/** Throws InvalidPath unless `path` is absolute, normalised and outside /proc, /sys and /dev. */
export function validatePath(path: string): void {
	const reason = invalidReason(path);
	if (reason !== undefined) {
		throw new BindError(ErrorName.InvalidPath, `Invalid path ${quote(path)}: ${reason}`);
	}
}

/**
 * Returns `path` with its directory resolved (symlinks, mounts), keeping the last component as
 * it is: bindings are made on the file itself, never on what a final symlink points to.
 */
export function canonicalPath(path: string): string {
	const dir = posix.dirname(path);
	let realDir: string;
	try {
		realDir = realpathSync(dir);
	} catch (error: unknown) {
		throw failure('resolve the directory of', path, error);
	}
	const canonical = posix.join(realDir, posix.basename(path));
	validatePath(canonical);
	return canonical;
}

/** canonicalPath without its errors: undefined when the path cannot be resolved or is refused. */
export function tryCanonicalPath(path: string): string | undefined {
	try {
		return canonicalPath(path);
	} catch {
		return undefined;
	}
}

function invalidReason(path: string): string | undefined {
	if (path.length === 0) {
		return 'the path is empty';
	}
	if (path.includes('\0')) {
		return 'the path contains a NUL byte';
	}
	if (Buffer.byteLength(path) >= PATH_MAX) {
		return `the path is longer than ${PATH_MAX - 1} bytes`;
	}
	if (!path.startsWith('/')) {
		return 'the path is not absolute';
	}
	if (path === '/') {
		return 'the root directory cannot be bound';
	}
	if (path.endsWith('/') || path.includes('//')) {
		return 'the path is not normalised (empty component or trailing slash)';
	}
	if (path.split('/').some((part) => part === '.' || part === '..')) {
		return "the path is not normalised ('.' or '..' component)";
	}
	const root = FORBIDDEN_ROOTS.find((dir) => path === dir || path.startsWith(`${dir}/`));
	if (root !== undefined) {
		return `paths under ${root} are not allowed`;
	}
	return undefined;
}
