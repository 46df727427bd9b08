// Authorization end to end: the real polkitd on the private bus with our actions and the tests'
// rules bind-mounted over polkit's folders (inside the test's private mount namespace), the real
// service, and real non-root callers (nobody, daemon) through busctl, dbus-send and memfdctl.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
	chmodSync,
	copyFileSync,
	existsSync,
	mkdirSync,
	readFileSync,
	readdirSync,
	symlinkSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { mountTable, mountsAt } from '../helpers/mounts.js';
import { removeRules, startPolkitd, writeRules } from '../helpers/polkitd.js';
import type { Polkitd } from '../helpers/polkitd.js';
import {
	BUS_NAME,
	INTERFACE,
	MEMFDCTL,
	OBJECT_PATH,
	REPO,
	asUser,
	integrationSkipReason,
	startSandbox,
	waitFor,
} from '../helpers/sandbox.js';
import type { Sandbox, Service } from '../helpers/sandbox.js';

const skip = integrationSkipReason();
const ACCESS_DENIED = 'org.freedesktop.DBus.Error.AccessDenied';
const INTERACTIVE_REQUIRED = 'org.freedesktop.DBus.Error.InteractiveAuthorizationRequired';
const RULES_LOADED = 'Finished loading, compiling and executing';
const METHODS: Array<[method: string, action: string]> = [
	['Bind', 'org.opencontainers.memfdbind.bind'],
	['Release', 'org.opencontainers.memfdbind.release'],
	['Cleanup', 'org.opencontainers.memfdbind.cleanup'],
];

describe('polkit authorization with the real polkitd', { skip }, () => {
	let sandbox: Sandbox;
	let service: Service;
	let polkitd: Polkitd;
	let rulesDir: string;
	let files: string;

	before(async () => {
		sandbox = await startSandbox();
		const actionsDir = join(sandbox.dir, 'actions');
		rulesDir = join(sandbox.dir, 'rules');
		files = join(sandbox.dir, 'files');
		for (const dir of [actionsDir, rulesDir, files]) {
			mkdirSync(dir);
			chmodSync(dir, 0o755);
		}
		const policy = 'org.opencontainers.memfdbind.policy';
		copyFileSync(join(REPO, 'polkit', policy), join(actionsDir, policy));
		polkitd = await startPolkitd({ busAddress: sandbox.address, actionsDir, rulesDir });
		service = await sandbox.startService();
	});

	after(async () => {
		await polkitd?.stop();
		await sandbox?.stop();
	});

	// A fresh copy of a real executable, so every test binds its own file.
	function executable(name: string): string {
		const path = join(files, name);
		copyFileSync('/usr/bin/true', path);
		return path;
	}

	function busctl(user: string | undefined, interactive: boolean, ...args: string[]) {
		const flag = `--allow-interactive-authorization=${interactive ? 'yes' : 'no'}`;
		return sandbox.run('busctl', [flag, 'call', BUS_NAME, OBJECT_PATH, INTERFACE, ...args], {
			user,
		});
	}

	// dbus-send never sets the interactive flag and prints the error name.
	function dbusSend(user: string, method: string, path: string) {
		const member = `${INTERFACE}.${method}`;
		return sandbox.run(
			'dbus-send',
			['--system', '--print-reply', `--dest=${BUS_NAME}`, OBJECT_PATH, member, `string:${path}`],
			{ user },
		);
	}

	function memfdctl(args: string[], user?: string) {
		return sandbox.run(process.execPath, [MEMFDCTL, '--no-ask-password', ...args], { user });
	}

	// Waits for the service to log a line matching `pattern` (its stderr arrives asynchronously).
	async function logged(pattern: RegExp): Promise<void> {
		await waitFor(
			() => pattern.test(service.log()),
			5000,
			() => `not logged: ${pattern}\n${service.log()}`,
		);
	}

	// Runs `memfdctl polkit ...` as root, then waits until polkitd has reloaded its rules.
	async function polkitTool(args: string[]) {
		const since = polkitd.log().length;
		const result = sandbox.run(process.execPath, [MEMFDCTL, 'polkit', ...args]);
		assert.equal(result.status, 0, result.stderr);
		await waitFor(
			() => polkitd.log().slice(since).includes(RULES_LOADED),
			5000,
			() => `polkitd did not reload: ${polkitd.log().slice(since)}`,
		);
		// One rename makes polkitd reload twice in a row; let both finish.
		await delay(100);
		return result;
	}

	test('nobody gets InteractiveAuthorizationRequired for Bind, Release and Cleanup without the interactive flag', async () => {
		const path = executable('nobody-not-interactive');
		const bound = executable('nobody-not-interactive-bound');
		assert.equal(memfdctl(['bind', bound]).status, 0, 'root binds without polkit');
		const before = mountTable();

		for (const [method, action] of METHODS) {
			const target = method === 'Bind' ? path : bound;
			const viaBusctl = busctl('nobody', false, method, 's', target);
			assert.notEqual(viaBusctl.status, 0);
			assert.match(
				viaBusctl.stderr,
				new RegExp(`Authentication is required for ${action.replace(/\./g, '\\.')} on '`),
			);
			const viaDbusSend = dbusSend('nobody', method, target);
			assert.match(
				viaDbusSend.stderr,
				new RegExp(`^Error ${INTERACTIVE_REQUIRED.replace(/\./g, '\\.')}: `),
				viaDbusSend.stderr,
			);
			const verb = method.toLowerCase();
			const viaCli = memfdctl([verb, target], 'nobody');
			assert.equal(viaCli.status, 4, viaCli.stderr);
			assert.match(
				viaCli.stderr,
				new RegExp(
					`^memfdctl: cannot ${verb === 'cleanup' ? 'clean up' : verb} .*: Authentication is required for ${action.replace(/\./g, '\\.')}`,
				),
			);
		}
		assert.deepEqual(mountTable(), before);
		await logged(
			/Denied org\.opencontainers\.memfdbind\.cleanup on .* for uid=65534: authentication required, call is not interactive/,
		);
		assert.equal(memfdctl(['release', bound]).status, 0);
	});

	test('nobody gets AccessDenied with the interactive flag when no agent is there to ask', () => {
		const path = executable('nobody-no-agent');
		const before = mountTable();
		const result = busctl('nobody', true, 'Bind', 's', path);
		assert.notEqual(result.status, 0);
		assert.match(
			result.stderr,
			/Access denied|Not authorized to perform org\.opencontainers\.memfdbind\.bind/,
		);
		assert.deepEqual(mountTable(), before);
	});

	test('nobody gets AccessDenied for Bind, Release and Cleanup when a rule says NO, interactive or not', async () => {
		const path = executable('nobody-rule-no');
		const bound = executable('nobody-rule-no-bound');
		assert.equal(memfdctl(['bind', bound]).status, 0);
		await writeRules(
			rulesDir,
			'10-deny-nobody.rules',
			`polkit.addRule(function (action, subject) {
	if (action.id.indexOf("org.opencontainers.memfdbind.") === 0 && subject.user === "nobody") {
		return polkit.Result.NO;
	}
	return polkit.Result.NOT_HANDLED;
});
`,
		);
		try {
			const before = mountTable();
			for (const [method, action] of METHODS) {
				const target = method === 'Bind' ? path : bound;
				for (const interactive of [false, true]) {
					// busctl prints its own text for AccessDenied; dbus-send below shows the message.
					const viaBusctl = busctl('nobody', interactive, method, 's', target);
					assert.match(viaBusctl.stderr, /Access denied/);
				}
				await logged(
					new RegExp(
						`Denied ${action.replace(/\./g, '\\.')} on .*nobody-rule-no.* for uid=65534: not allowed by polkit`,
					),
				);
				const viaDbusSend = dbusSend('nobody', method, target);
				assert.match(
					viaDbusSend.stderr,
					new RegExp(`^Error ${ACCESS_DENIED.replace(/\./g, '\\.')}: Not authorized`),
					viaDbusSend.stderr,
				);
				const viaCli = memfdctl([method.toLowerCase(), target], 'nobody');
				assert.equal(viaCli.status, 4, viaCli.stderr);
				assert.match(viaCli.stderr, /: Not authorized to perform .*: not allowed by polkit\n$/);
			}
			assert.deepEqual(mountTable(), before);
		} finally {
			await removeRules(rulesDir, '10-deny-nobody.rules');
			assert.equal(memfdctl(['release', bound]).status, 0);
		}
	});

	test('List, Version and introspection work for nobody', () => {
		const listed = sandbox.run(
			process.execPath,
			[MEMFDCTL, '--no-ask-password', 'list', '--json'],
			{ user: 'nobody' },
		);
		assert.equal(listed.status, 0, listed.stderr);
		assert.ok(Array.isArray(JSON.parse(listed.stdout)));
		assert.equal(busctl('nobody', false, 'List').status, 0);
		const version = sandbox.run(
			'busctl',
			['get-property', BUS_NAME, OBJECT_PATH, INTERFACE, 'Version'],
			{
				user: 'nobody',
			},
		);
		assert.match(version.stdout, /^s "\d+\.\d+\.\d+"/, version.stderr);
		const introspected = sandbox.run('busctl', ['introspect', BUS_NAME, OBJECT_PATH], {
			user: 'nobody',
		});
		assert.equal(introspected.status, 0, introspected.stderr);
	});

	test('an authorized caller naming a path through a symlinked folder is asked for the canonical path', async () => {
		const path = executable('daemon-canonical');
		const alias = join(sandbox.dir, 'alias-dir');
		symlinkSync(dirname(path), alias);
		const aliased = join(alias, basename(path));
		await polkitTool(['allow', '--group', 'daemon', '--path', aliased, '--rules-dir', rulesDir]);
		try {
			const before = mountTable();
			const refused = memfdctl(['bind', aliased], 'daemon');
			assert.equal(refused.status, 1, refused.stderr);
			assert.equal(
				refused.stderr,
				`memfdctl: cannot bind ${aliased}: it resolves to '${path}'; call again with that path\n`,
			);
			assert.deepEqual(mountTable(), before);
		} finally {
			await polkitTool(['revoke', '--group', 'daemon', '--rules-dir', rulesDir]);
		}
	});

	test('a grant from memfdctl polkit allow lets daemon bind and release its path only, until revoked', async () => {
		const path = executable('daemon-granted');
		const other = executable('daemon-not-granted');
		const file = join(rulesDir, '60-memfd-bind.rules');
		await polkitTool(['allow', '--group', 'daemon', '--path', path, '--rules-dir', rulesDir]);
		assert.ok(existsSync(file));

		const bound = memfdctl(['bind', path], 'daemon');
		assert.equal(bound.status, 0, bound.stderr);
		assert.equal(mountsAt(path).length, 1);
		await logged(
			new RegExp(
				`Authorized org\\.opencontainers\\.memfdbind\\.bind on '${path}' for uid=1 by polkit`,
			),
		);
		const listed = JSON.parse(memfdctl(['list', '--json']).stdout) as Array<{
			Path: string;
			BoundBy: number;
		}>;
		assert.equal(listed.find((record) => record.Path === path)?.BoundBy, 1);

		const before = mountTable();
		const refused = memfdctl(['bind', other], 'daemon');
		assert.equal(refused.status, 4, refused.stderr);
		assert.match(
			refused.stderr,
			/Authentication is required for org\.opencontainers\.memfdbind\.bind/,
		);
		assert.equal(memfdctl(['bind', path], 'nobody').status, 4, 'nobody is not in group daemon');
		assert.equal(memfdctl(['release', path], 'nobody').status, 4);
		assert.deepEqual(mountTable(), before);

		const released = memfdctl(['release', path], 'daemon');
		assert.equal(released.status, 0, released.stderr);
		assert.equal(mountsAt(path).length, 0);

		const shown = sandbox.run(process.execPath, [MEMFDCTL, 'polkit', 'show']);
		assert.equal(shown.status, 0, shown.stderr);
		for (const [, action] of METHODS) {
			assert.match(
				shown.stdout,
				new RegExp(
					`^${action.replace(/\./g, '\\.')}: .*\n  implicit any: +auth_admin(_keep)?\n`,
					'm',
				),
			);
		}
		assert.match(
			shown.stdout,
			/^ {4}\/etc\/polkit-1\/rules\.d\/60-memfd-bind\.rules\n {6}memfd-bind grant: group daemon, '.*daemon-granted'$/m,
		);

		await polkitTool(['revoke', '--group', 'daemon', '--rules-dir', rulesDir]);
		assert.ok(!existsSync(file), 'the last revoke removes the file');
		assert.equal(memfdctl(['bind', path], 'daemon').status, 4);
		assert.equal(mountsAt(path).length, 0);
	});

	test('one rules file holds grants for two groups, hostile paths included, and polkitd applies each', async () => {
		const hostile = executable(`it's "quoted"\nline\u2028sep`);
		const plain = executable('nogroup-granted');
		const file = join(rulesDir, '60-memfd-bind.rules');
		await polkitTool(['allow', '--group', 'daemon', '--path', hostile, '--rules-dir', rulesDir]);
		await polkitTool(['allow', '--group', 'nogroup', '--path', plain, '--rules-dir', rulesDir]);
		assert.doesNotMatch(polkitd.log(), /Error compiling script/);

		for (const [user, own, foreign] of [
			['daemon', hostile, plain],
			['nobody', plain, hostile],
		]) {
			const refused = memfdctl(['bind', foreign], user);
			assert.equal(refused.status, 4, `${user} binds ${foreign}: ${refused.stderr}`);
			const bound = memfdctl(['bind', own], user);
			assert.equal(bound.status, 0, `${user} binds ${own}: ${bound.stderr}`);
			assert.equal(mountsAt(own).length, 1);
			assert.equal(memfdctl(['release', own], user).status, 0);
			assert.equal(mountsAt(own).length, 0);
		}

		await polkitTool(['revoke', '--group', 'nogroup', '--rules-dir', rulesDir]);
		assert.ok(existsSync(file), 'the grant for daemon is kept');
		assert.equal(memfdctl(['bind', plain], 'nobody').status, 4);
		assert.equal(memfdctl(['bind', hostile], 'daemon').status, 0);
		assert.equal(memfdctl(['release', hostile], 'daemon').status, 0);
		await polkitTool(['revoke', '--group', 'daemon', '--rules-dir', rulesDir]);
		assert.ok(!existsSync(file));
	});

	test('memfdctl polkit allow and show report a rules file broken by hand and leave it alone', async () => {
		const file = join(rulesDir, '60-memfd-bind.rules');
		await polkitTool(['allow', '--group', 'daemon', '--rules-dir', rulesDir]);
		const broken = `${readFileSync(file, 'utf8')}polkit.addRule(function (\n`;
		await writeRules(rulesDir, '60-memfd-bind.rules', broken).catch(() => undefined);

		const allowed = sandbox.run(process.execPath, [
			MEMFDCTL,
			'polkit',
			'allow',
			'--group',
			'adm',
			'--rules-dir',
			rulesDir,
		]);
		assert.equal(allowed.status, 1);
		assert.match(
			allowed.stderr,
			/^memfdctl: cannot allow group adm: rules file '.*60-memfd-bind\.rules' does not parse as JavaScript/,
		);
		const shown = sandbox.run(process.execPath, [MEMFDCTL, 'polkit', 'show']);
		assert.equal(shown.status, 1);
		assert.match(
			shown.stderr,
			/rules file '\/etc\/polkit-1\/rules\.d\/60-memfd-bind\.rules' does not parse/,
		);
		assert.equal(readFileSync(file, 'utf8'), broken);
		await removeRules(rulesDir, '60-memfd-bind.rules');
	});

	test("a non-root memfdctl bind on a terminal shows pkttyagent's prompt, and EOF ends it with exit 4 and no change", async () => {
		const path = executable('pty-dismissed');
		const before = mountTable();
		const session = promptingBind(sandbox, path);
		await session.prompted;
		assert.match(session.output(), /AUTHENTICATING FOR org\.opencontainers\.memfdbind\.bind/);
		assert.match(
			session.output(),
			new RegExp(`Authentication is required to bind a sealed in-memory copy over ${path}\\.`),
		);
		assert.match(session.output(), /Password: $/);

		const code = await session.sendEof();
		assert.equal(code, 4, session.output());
		assert.match(
			session.output(),
			/memfdctl: cannot bind .*pty-dismissed: Not authorized to perform org\.opencontainers\.memfdbind\.bind on .*: not allowed by polkit \(a rule said no, or the authentication failed or was dismissed\)/,
		);
		assert.deepEqual(mountTable(), before);
	});

	test('50 concurrent List calls are all answered while a Bind waits at a password prompt', async () => {
		const path = executable('pty-waiting');
		const session = promptingBind(sandbox, path);
		await session.prompted;

		const started = Date.now();
		const codes = await Promise.all(
			Array.from({ length: 50 }, () =>
				runAsync(['busctl', 'call', BUS_NAME, OBJECT_PATH, INTERFACE, 'List'], sandbox.env),
			),
		);
		const elapsed = Date.now() - started;
		assert.deepEqual(
			codes.filter((code) => code !== 0),
			[],
			'every List succeeds',
		);
		assert.ok(elapsed < 10_000, `50 List calls took ${elapsed} ms`);
		assert.match(session.output(), /Password: $/, 'the Bind is still waiting');

		assert.equal(await session.sendEof(), 4);
		assert.equal(mountsAt(path).length, 0);
	});

	test('a caller killed at the password prompt gets nothing bound, and the service goes on', async () => {
		const path = executable('pty-caller-killed');
		const before = mountTable();
		const session = promptingBind(sandbox, path);
		await session.prompted;

		await session.killCaller();
		await logged(
			/Denied org\.opencontainers\.memfdbind\.bind on '.*pty-caller-killed' for uid=65534/,
		);
		assert.deepEqual(mountTable(), before);
		assert.equal(memfdctl(['list']).status, 0);
	});

	test('with polkitd stopped root still binds and releases, and everyone else is refused', async () => {
		await polkitd.stop();
		const path = executable('polkitd-stopped');

		const bound = memfdctl(['bind', path]);
		assert.equal(bound.status, 0, bound.stderr);
		const before = mountTable();
		for (const user of ['nobody', 'daemon']) {
			const refused = memfdctl(['release', path], user);
			assert.equal(refused.status, 4, refused.stderr);
			assert.match(refused.stderr, /polkit is unavailable, and only root is allowed without it/);
			const viaBusctl = busctl(user, true, 'Bind', 's', executable(`polkitd-stopped-${user}`));
			assert.match(viaBusctl.stderr, /Access denied/);
		}
		await logged(
			/Denied org\.opencontainers\.memfdbind\.bind on .* for uid=1: polkit is unavailable/,
		);
		assert.deepEqual(mountTable(), before);
		assert.equal(memfdctl(['release', path]).status, 0);
		assert.equal(mountsAt(path).length, 0);
	});
});

interface PromptSession {
	/** Resolves once pkttyagent asks for the password. */
	prompted: Promise<void>;
	output(): string;
	/** Types Ctrl-D at the prompt and resolves with memfdctl's exit code. */
	sendEof(): Promise<number | null>;
	/** Kills memfdctl itself (SIGKILL) and waits until the terminal session ends. */
	killCaller(): Promise<void>;
}

// Runs `memfdctl bind` as nobody on a pseudo-terminal (script(1)), so it starts pkttyagent.
function promptingBind(sandbox: Sandbox, path: string): PromptSession {
	const { CI: _ci, ...env } = sandbox.env;
	const command = `exec ${process.execPath} ${MEMFDCTL} bind '${path}'`;
	const argv = asUser('nobody', [
		'script',
		'--quiet',
		'--return',
		'--command',
		command,
		'/dev/null',
	]);
	const child = spawn(argv[0], argv.slice(1), {
		env: { ...env, TERM: 'dumb' },
		stdio: ['pipe', 'pipe', 'pipe'],
	});
	let output = '';
	child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
	child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
	const exited = new Promise<number | null>((resolve) =>
		child.once('exit', (code) => resolve(code)),
	);
	const prompted = waitFor(
		() => /Password: $/.test(output) || child.exitCode !== null,
		20_000,
		() => `no password prompt: ${JSON.stringify(output)}`,
	).then(() => {
		if (child.exitCode !== null) {
			throw new Error(
				`memfdctl ended before a prompt (${child.exitCode}): ${JSON.stringify(output)}`,
			);
		}
	});
	return {
		prompted,
		output: () => output.replace(/\r/g, ''),
		async sendEof() {
			child.stdin.write('\x04');
			const code = await Promise.race([exited, delay(20_000).then(() => 'timeout' as const)]);
			child.stdin.end();
			if (code === 'timeout') {
				child.kill('SIGKILL');
				throw new Error(`memfdctl did not end after EOF: ${JSON.stringify(output)}`);
			}
			return code;
		},
		async killCaller() {
			const argv = [process.execPath, MEMFDCTL, 'bind', path].join('\0');
			const pid = readdirSync('/proc')
				.filter((name) => /^\d+$/.test(name))
				.find((name) => {
					try {
						return readFileSync(`/proc/${name}/cmdline`, 'utf8') === `${argv}\0`;
					} catch {
						return false;
					}
				});
			assert.ok(pid !== undefined, 'memfdctl is running');
			process.kill(Number(pid), 'SIGKILL');
			child.stdin.end();
			await exited;
		},
	};
}

function runAsync(argv: string[], env: NodeJS.ProcessEnv): Promise<number | null> {
	return new Promise((resolve) => {
		const child = spawn(argv[0], argv.slice(1), { env, stdio: 'ignore' });
		child.once('exit', (code) => resolve(code));
		child.once('error', () => resolve(null));
	});
}
