// memfdctl's exit codes, fixed so scripts can tell the outcomes apart.
import { ErrorName } from '../common/names.js';

export const ExitCode = {
	Success: 0,
	Failure: 1,
	Usage: 2,
	NotAuthorized: 4,
	// sysexits.h EX_UNAVAILABLE
	Unavailable: 69,
} as const;

const UNAVAILABLE = new Set([
	'org.freedesktop.DBus.Error.ServiceUnknown',
	'org.freedesktop.DBus.Error.NameHasNoOwner',
	'org.freedesktop.DBus.Error.NoReply',
	'org.freedesktop.DBus.Error.Spawn.ChildExited',
	'org.freedesktop.DBus.Error.Spawn.ExecFailed',
	'org.freedesktop.DBus.Error.Spawn.ServiceNotFound',
	'org.freedesktop.DBus.Error.NoServer',
	'org.freedesktop.DBus.Error.Disconnected',
	'org.freedesktop.systemd1.NoSuchUnit',
]);

const NOT_AUTHORIZED = new Set<string>([
	ErrorName.AccessDenied,
	ErrorName.InteractiveAuthorizationRequired,
	'org.freedesktop.DBus.Error.AuthFailed',
]);

/** Maps a D-Bus error name to the exit code memfdctl ends with. */
export function exitCodeFor(busName: string): number {
	if (NOT_AUTHORIZED.has(busName)) {
		return ExitCode.NotAuthorized;
	}
	if (UNAVAILABLE.has(busName)) {
		return ExitCode.Unavailable;
	}
	return ExitCode.Failure;
}

// Short reasons by error name, used when the service's message cannot be shortened.
const REASONS: Record<string, string> = {
	[ErrorName.InvalidPath]: 'invalid path',
	[ErrorName.NotFound]: 'no such file',
	[ErrorName.NotRegularFile]: 'not a regular file',
	[ErrorName.AlreadyBound]: 'already bound',
	[ErrorName.NotBound]: 'not bound',
	[ErrorName.TooLarge]: 'file too large',
	[ErrorName.AccessDenied]: 'not authorized',
	[ErrorName.InteractiveAuthorizationRequired]:
		'authentication required (run without --no-ask-password, or as root)',
};

/** The reason printed after `memfdctl: cannot <verb> <path>:`. */
export function reasonFor(busName: string, text: string): string {
	// "Failed to bind '/x': no such file" carries the path already (cut as "'/x…' (N bytes)" when
	// long); keep what follows it.
	const match =
		/^(?:Failed to [^']*|Invalid path )'(?:[^'\\]|\\.)*'(?: \(\d+ bytes\))?: (.*)$/s.exec(text);
	if (match !== null) {
		return match[1];
	}
	if (UNAVAILABLE.has(busName)) {
		return `the memfd-bind service is not available (${text})`;
	}
	return text || REASONS[busName] || busName;
}
