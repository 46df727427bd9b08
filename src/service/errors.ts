// Every failure leaves the service as one of the names in `ErrorName`, with a message that
// names the path and the reason; errno codes are mapped here and nowhere else.
import { getSystemErrorMap } from 'node:util';
import { ErrorName } from '../common/names.js';
import { quote } from '../common/quote.js';
import type { SystemError } from '../common/libc.js';

/** A failure with the D-Bus error name it is sent as. */
export class BindError extends Error {
	readonly busName: string;

	constructor(busName: string, message: string, options?: { cause?: unknown }) {
		super(message, options);
		this.busName = busName;
		Object.defineProperty(this, 'name', { value: 'BindError', enumerable: false });
	}
}

/** Tells whether `error` is a BindError, possibly with the given bus name. */
export function isBindError(error: unknown, busName?: string): error is BindError {
	return error instanceof BindError && (busName === undefined || error.busName === busName);
}

/** Formats an errno code the same way everywhere: `ENOENT (No such file or directory)`. */
export function describeErrno(error: unknown): string {
	const system = error as Partial<SystemError>;
	if (typeof system.code !== 'string') {
		return error instanceof Error ? error.message : String(error);
	}
	const text =
		typeof system.errno === 'number' ? getSystemErrorMap().get(system.errno)?.[1] : undefined;
	return text === undefined ? system.code : `${system.code} (${text})`;
}

// errno codes that say something specific about the caller's path.
const errnoNames: Record<string, string> = {
	ENOENT: ErrorName.NotFound,
	ENOTDIR: ErrorName.NotFound,
	ELOOP: ErrorName.NotRegularFile,
	ENAMETOOLONG: ErrorName.InvalidPath,
	EFBIG: ErrorName.TooLarge,
};

/** Turns a failed step into a BindError: "Failed to <verb> '<path>': CODE (text)". */
export function failure(verb: string, path: string, error: unknown): BindError {
	if (isBindError(error)) {
		return error;
	}
	const code = (error as Partial<SystemError>).code ?? '';
	const busName = errnoNames[code] ?? ErrorName.Failed;
	return new BindError(busName, `Failed to ${verb} ${quote(path)}: ${describeErrno(error)}`, {
		cause: error,
	});
}
