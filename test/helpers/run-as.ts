// Running a command as another existing account, for tests that need a caller other than root.
import { execa, execaSync } from 'execa';
import type { Options, ResultPromise } from 'execa';

// Runs argv as an existing account: its uid, its primary group, and its groups from /etc/group.
export function runAs<OptionsType extends Options = {}>(
	user: string,
	argv: readonly string[],
	options?: OptionsType,
): ResultPromise<OptionsType> {
	const entry = execaSync('getent', ['passwd', user], { reject: false }).stdout;
	const [, , uid, gid, , home] = entry.split(':');
	if (uid === undefined || gid === undefined || home === undefined) {
		throw new Error(`Failed to find account '${user}' in the passwd database`);
	}
	// setpriv keeps the environment; only the identity variables change.
	const env = { HOME: home, USER: user, LOGNAME: user, ...options?.env };
	const setpriv = ['--reuid', uid, '--regid', gid, '--init-groups', '--', ...argv];
	// execa types its result from the options; adding env changes nothing that typing looks at.
	return execa('setpriv', setpriv, { ...options, env }) as unknown as ResultPromise<OptionsType>;
}
