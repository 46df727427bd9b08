// scripts/install.sh and scripts/uninstall.sh run on a copy of the built tree into temporary
// DESTDIRs: the files laid out, the paths written into them, and what systemd-analyze,
// dbus-daemon, busctl, xmllint and apt-config make of them. Nothing is written outside the
// temporary folder.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { SpawnSyncReturns } from 'node:child_process';
import {
	chmodSync,
	copyFileSync,
	cpSync,
	existsSync,
	lstatSync,
	mkdirSync,
	mkdtempSync,
	readdirSync,
	readFileSync,
	readlinkSync,
	rmSync,
	symlinkSync,
	writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import dbus from 'dbus-next';
import { systemBusConfig } from '../helpers/sandbox.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const BUS_NAME = 'org.opencontainers.MemfdBind';
const OBJECT_PATH = '/org/opencontainers/MemfdBind';
const INTERFACE = 'org.opencontainers.MemfdBind1';
const INTERFACE_XML = 'dbus/org.opencontainers.MemfdBind1.xml';
const POLKIT_DTD = '/usr/share/polkit-1/policyconfig-1.dtd';

// Copied from the repository into the source tree the scripts run from.
const SOURCE_ENTRIES = [
	'package.json',
	'package-lock.json',
	'README.md',
	'bin',
	'dbus',
	'polkit',
	'systemd',
	'apt',
	'scripts',
	'dist/src',
];

let work: string;
let source: string;

before(() => {
	work = mkdtempSync(join(tmpdir(), 'memfd-bind-install-test-'));
	// Readable by the unprivileged bus clients of the D-Bus policy test.
	chmodSync(work, 0o755);
	source = makeSourceTree(join(work, 'source'));
});

after(() => {
	if (work !== undefined) {
		rmSync(work, { recursive: true, force: true });
	}
});

for (const prefix of ['/usr', '/opt/mb']) {
	describe(`install.sh with PREFIX=${prefix}`, () => {
		let destdir: string;
		let result: SpawnSyncReturns<string>;
		let hostBefore: Map<string, string>;
		let sourceBefore: string[];

		before(() => {
			destdir = join(work, `dest${prefix.replaceAll('/', '-')}`);
			hostBefore = snapshot(hostPaths(prefix));
			sourceBefore = listTree(source, ['node_modules']);
			result = install(destdir, { PREFIX: prefix });
		});

		test('install.sh succeeds', () => {
			assert.equal(result.status, 0, result.stderr);
		});

		test('install.sh lays out exactly the expected files, links and folders', () => {
			const lib = `${prefix.slice(1)}/lib/memfd-bind`;
			assert.deepEqual(
				listTree(destdir, [`${lib}/dist`, `${lib}/node_modules`]),
				expectedEntries(prefix),
			);
		});

		test('install.sh gives programs mode 0755 and data files mode 0644', () => {
			const lib = join(destdir, prefix, 'lib/memfd-bind');
			assert.equal(modeOf(join(lib, 'bin/memfdctl')), 0o755);
			assert.equal(modeOf(join(lib, 'bin/memfd-bindd')), 0o755);
			assert.equal(modeOf(join(destdir, 'etc/memfd-bind.d')), 0o755);
			for (const file of [
				join(lib, 'package.json'),
				join(destdir, prefix, 'lib/systemd/system/memfd-bind.service'),
				join(destdir, prefix, 'share/dbus-1/system.d/org.opencontainers.MemfdBind.conf'),
				join(destdir, 'etc/apt/apt.conf.d/80memfd-bind'),
			]) {
				assert.equal(modeOf(file), 0o644, file);
			}
		});

		test('install.sh copies the built dist/src tree as it is', () => {
			assert.deepEqual(
				listTree(join(destdir, prefix, 'lib/memfd-bind/dist/src')),
				listTree(join(source, 'dist/src')),
			);
		});

		test('install.sh copies every production package and no development package', () => {
			const modules = join(destdir, prefix, 'lib/memfd-bind/node_modules');
			const production = productionPackages(source);
			for (const dir of production) {
				assert.ok(existsSync(join(modules, '..', dir, 'package.json')), `${dir} is missing`);
			}
			const topLevel = production
				.map((dir) => dir.slice('node_modules/'.length))
				.filter((name) => !name.includes('/node_modules/'));
			assert.deepEqual(installedPackages(modules), topLevel.sort());
			for (const name of ['typescript', 'prettier', '@types/node']) {
				assert.equal(existsSync(join(modules, name)), false, `${name} was installed`);
			}
		});

		test(`unit, activation and apt files name the programs under ${prefix}`, () => {
			const units = join(destdir, prefix, 'lib/systemd/system');
			const service = readFileSync(join(units, 'memfd-bind.service'), 'utf8');
			const template = readFileSync(join(units, 'memfd-bind@.service'), 'utf8');
			const activation = readFileSync(
				join(destdir, prefix, 'share/dbus-1/system-services/org.opencontainers.MemfdBind.service'),
				'utf8',
			);
			const hook = readFileSync(join(destdir, 'etc/apt/apt.conf.d/80memfd-bind'), 'utf8');

			assert.deepEqual(settings(service, 'ExecStart'), [`${prefix}/sbin/memfd-bindd`]);
			assert.deepEqual(settings(activation, 'Exec'), [`${prefix}/sbin/memfd-bindd`]);
			assert.deepEqual(settings(service, 'Documentation'), [
				`file:${prefix}/share/doc/memfd-bind/README.md`,
			]);
			for (const key of ['ExecStart', 'ExecStop']) {
				const [command] = settings(template, key);
				assert.match(command, new RegExp(`'exec ${prefix}/bin/memfdctl --no-ask-password `));
			}
			const hookCommands = hook.split('\n').filter((line) => line.startsWith('DPkg::'));
			assert.equal(hookCommands.length, 2);
			for (const line of hookCommands) {
				assert.equal(line.split(`${prefix}/bin/memfdctl`).length - 1, 2, line);
			}
			if (prefix !== '/usr') {
				for (const text of [activation, hook, ...settings(service, 'ExecStart')]) {
					assert.doesNotMatch(text, /\/usr\//);
				}
			}
		});

		test('installed memfdctl and memfd-bindd run through their links', () => {
			const client = run(join(destdir, prefix, 'bin/memfdctl'), ['--help']);
			assert.equal(client.status, 0, client.stderr);
			assert.match(client.stdout, /^Usage: memfdctl /);
			const service = run(join(destdir, prefix, 'sbin/memfd-bindd'), ['--help']);
			assert.equal(service.status, 0, service.stderr);
			assert.match(service.stdout, /^Usage: memfd-bindd /);
		});

		test(
			'systemd-analyze verify accepts the installed service and template units',
			{ skip: missingTools('systemd-analyze') },
			() => {
				const root = verifyRoot(destdir, join(work, `verify${prefix.replaceAll('/', '-')}`));
				const units = [
					'memfd-bind.service',
					'memfd-bind@usr-bin-runc.service',
					'memfd-bind@-usr-bin-runc.service',
				];
				const verify = run(
					'systemd-analyze',
					['verify', '--man=no', '--recursive-errors=no', `--root=${root}`, ...units],
					// Finds the units of a PREFIX outside systemd's own search path too.
					{ env: { ...process.env, SYSTEMD_UNIT_PATH: `${prefix}/lib/systemd/system:` } },
				);
				assert.equal(verify.stdout + verify.stderr, '');
				assert.equal(verify.status, 0);
			},
		);

		test('the apt hook succeeds whether memfdctl is absent or fails', () => {
			const hook = join(destdir, 'etc/apt/apt.conf.d/80memfd-bind');
			const memfdctl = `${prefix}/bin/memfdctl`;
			const failing = join(work, `failing-memfdctl${prefix.replaceAll('/', '-')}`);
			const calls = `${failing}.calls`;
			writeFileSync(failing, `#!/bin/sh\necho "$@" >>'${calls}'\nexit 3\n`, { mode: 0o755 });

			for (const command of hookCommands(hook)) {
				assert.ok(command.includes(memfdctl), command);
				const absent = command.replaceAll(memfdctl, join(work, 'absent/memfdctl'));
				assert.equal(run('sh', ['-c', absent]).status, 0, absent);
				const failed = command.replaceAll(memfdctl, failing);
				assert.equal(run('sh', ['-c', failed]).status, 0, failed);
			}
			assert.deepEqual(readFileSync(calls, 'utf8').split('\n').sort(), [
				'',
				'resume --quiet',
				'suspend --quiet',
			]);
		});

		test('install.sh leaves the host and the source tree untouched', () => {
			assert.deepEqual(snapshot(hostPaths(prefix)), hostBefore);
			assert.deepEqual(listTree(source, ['node_modules']), sourceBefore);
		});
	});
}

describe('the installed D-Bus files', () => {
	let destdir: string;
	let daemon: ReturnType<typeof spawn> | undefined;
	let address: string;
	const skip = missingTools('dbus-daemon', 'busctl');

	before(async () => {
		destdir = join(work, 'dest-dbus');
		const result = install(destdir, {});
		assert.equal(result.status, 0, result.stderr);
		if (skip !== undefined) {
			return;
		}
		const dir = join(work, 'bus');
		mkdirSync(dir, { mode: 0o755 });
		const socket = join(dir, 'system_bus_socket');
		const config = join(dir, 'bus.conf');
		writeFileSync(config, busConfig(socket, join(destdir, 'usr/share/dbus-1')));
		daemon = spawn('dbus-daemon', ['--config-file', config, '--nofork', '--nopidfile'], {
			stdio: 'ignore',
		});
		address = `unix:path=${socket}`;
		await waitFor(() => existsSync(socket), 'dbus-daemon to listen');
	});

	after(() => {
		daemon?.kill();
	});

	test('the D-Bus policy is well-formed XML', { skip: missingTools('xmllint') }, () => {
		const conf = join(destdir, 'usr/share/dbus-1/system.d/org.opencontainers.MemfdBind.conf');
		const lint = run('xmllint', ['--noout', '--nonet', conf]);
		assert.equal(lint.status, 0, lint.stderr);
	});

	test('dbus-daemon loads the policy and lists the activatable name', { skip }, () => {
		const names = run('busctl', [`--address=${address}`, 'list', '--activatable', '--no-legend']);
		assert.equal(names.status, 0, names.stderr);
		assert.match(names.stdout, new RegExp(`^${BUS_NAME.replaceAll('.', '\\.')} `, 'm'));
	});

	test(
		'the D-Bus policy lets only root own the name and lets anyone call the service',
		{ skip: skip ?? notRoot() ?? missingTools('setpriv') },
		async () => {
			const owner = dbus.sessionBus({ busAddress: address });
			try {
				owner.addMethodHandler((msg: dbus.Message) => {
					if (msg.path !== OBJECT_PATH) {
						return false;
					}
					owner.send(dbus.Message.newMethodReturn(msg, 's', ['answered']));
					return true;
				});
				assert.equal(await owner.requestName(BUS_NAME, 0), 1, 'root could not own the name');

				// Asynchronous, so that this process can answer the calls it makes.
				const nobody = (...args: string[]) =>
					runAsync('setpriv', [
						'--reuid=nobody',
						'--regid=nogroup',
						'--clear-groups',
						'busctl',
						`--address=${address}`,
						...args,
					]);
				const call = (iface: string, method: string, ...args: string[]) =>
					nobody('call', BUS_NAME, OBJECT_PATH, iface, method, ...args);

				for (const [iface, method, ...args] of [
					[INTERFACE, 'List'],
					['org.freedesktop.DBus.Introspectable', 'Introspect'],
					['org.freedesktop.DBus.Properties', 'GetAll', 's', INTERFACE],
					['org.freedesktop.DBus.Peer', 'Ping'],
				]) {
					const reply = await call(iface, method, ...args);
					assert.equal(reply.status, 0, `${iface}.${method}: ${reply.stderr}`);
					assert.equal(reply.stdout, 's "answered"\n');
				}

				const undeclared = await call('org.example.Undeclared', 'Poke');
				assert.notEqual(undeclared.status, 0);
				assert.match(undeclared.stderr, /Access denied/);

				const own = await nobody(
					'call',
					'org.freedesktop.DBus',
					'/org/freedesktop/DBus',
					'org.freedesktop.DBus',
					'RequestName',
					'su',
					BUS_NAME,
					'4',
				);
				assert.notEqual(own.status, 0);
				assert.match(own.stderr, /Access denied/);
			} finally {
				owner.disconnect();
			}
		},
	);

	test(
		"the polkit actions are valid against polkit's DTD and never allowed by default",
		{
			skip: missingTools('xmllint') ?? (existsSync(POLKIT_DTD) ? undefined : `needs ${POLKIT_DTD}`),
		},
		() => {
			const policy = join(
				destdir,
				'usr/share/polkit-1/actions/org.opencontainers.memfdbind.policy',
			);
			const lint = run('xmllint', ['--noout', '--nonet', '--dtdvalid', POLKIT_DTD, policy]);
			assert.equal(lint.status, 0, lint.stderr);

			const text = readFileSync(policy, 'utf8');
			const actions = [...text.matchAll(/<action id="([^"]+)">([\s\S]*?)<\/action>/g)];
			assert.deepEqual(
				actions.map(([, id, body]) => [id, defaults(body)]),
				[
					['org.opencontainers.memfdbind.bind', 'auth_admin_keep'],
					['org.opencontainers.memfdbind.release', 'auth_admin_keep'],
					['org.opencontainers.memfdbind.cleanup', 'auth_admin'],
				],
			);
			for (const [, , body] of actions) {
				assert.match(body, /<message>[^<]*\$\(path\)[^<]*<\/message>/);
			}
		},
	);
});

// Settings that give a unit a mount namespace of its own (systemd.exec(5), and exec_needs_mount_namespace()
// in systemd's src/core/execute.c): the service's bind mounts would then stay invisible to the host.
const MOUNT_NAMESPACE_SETTINGS = [
	'PrivateTmp',
	'PrivateDevices',
	'PrivateMounts',
	'PrivateNetwork',
	'PrivateIPC',
	'PrivatePIDs',
	'PrivateUsers',
	'ProtectSystem',
	'ProtectHome',
	'ProtectKernelTunables',
	'ProtectKernelModules',
	'ProtectKernelLogs',
	'ProtectControlGroups',
	'ProtectProc',
	'ProcSubset',
	'ReadWritePaths',
	'ReadOnlyPaths',
	'InaccessiblePaths',
	'ExecPaths',
	'NoExecPaths',
	'TemporaryFileSystem',
	'BindPaths',
	'BindReadOnlyPaths',
	'MountAPIVFS',
	'RootDirectory',
	'RootImage',
	'MountImages',
	'ExtensionImages',
	'ExtensionDirectories',
	'LogNamespace',
	'MountFlags',
	'DynamicUser',
];

test('memfd-bind.service keeps the host mount namespace and lets holders outlive a crash', () => {
	const unit = readFileSync(join(source, 'systemd/memfd-bind.service'), 'utf8');
	const keys = unit
		.split('\n')
		.filter((line) => /^[A-Za-z]+=/.test(line))
		.map((line) => line.slice(0, line.indexOf('=')));

	for (const key of [...MOUNT_NAMESPACE_SETTINGS, 'MemoryDenyWriteExecute']) {
		assert.equal(keys.includes(key), false, `${key}= is set`);
	}
	assert.deepEqual(settings(unit, 'KillMode'), ['process']);
	assert.deepEqual(settings(unit, 'Type'), ['dbus']);
	assert.deepEqual(settings(unit, 'BusName'), [BUS_NAME]);
});

test('install.sh stops and names the entry module when dist is not built', () => {
	const tree = join(work, 'unbuilt');
	cpSync(source, tree, { recursive: true, verbatimSymlinks: true });
	const entry = entryModules(tree)[0];
	rmSync(join(tree, entry));
	const destdir = join(work, 'dest-unbuilt');

	const result = run('sh', [join(tree, 'scripts/install.sh')], {
		env: { ...process.env, DESTDIR: destdir },
	});

	assert.equal(result.status, 1);
	assert.equal(
		result.stderr,
		`install.sh: missing ${join(tree, entry)} (run 'npm run build' first)\n`,
	);
	assert.equal(existsSync(destdir), false);
});

test('install.sh refuses a relative PREFIX', () => {
	const destdir = join(work, 'dest-relative');
	const result = install(destdir, { PREFIX: 'usr' });
	assert.equal(result.status, 1);
	assert.match(result.stderr, /PREFIX must be an absolute path, got 'usr'/);
	assert.equal(existsSync(destdir), false);
});

test("uninstall.sh removes what install.sh laid out and keeps administrators' files", () => {
	const destdir = join(work, 'dest-uninstall');
	const env = { PREFIX: '/opt/mb' };
	assert.equal(install(destdir, env).status, 0);
	writeFileSync(join(destdir, 'etc/memfd-bind.d/runc.conf'), '/usr/bin/runc\n');

	const result = run('sh', [join(source, 'scripts/uninstall.sh')], {
		env: { ...process.env, ...env, DESTDIR: destdir },
	});

	assert.equal(result.status, 0, result.stderr);
	const left = listTree(destdir).filter((entry) => !entry.endsWith('/'));
	assert.deepEqual(left, ['etc/memfd-bind.d/runc.conf']);
});

// Copies what the scripts read from the repository, with the build's node_modules linked in.
function makeSourceTree(dir: string): string {
	for (const entry of SOURCE_ENTRIES) {
		if (existsSync(join(REPO, entry))) {
			cpSync(join(REPO, entry), join(dir, entry), { recursive: true, verbatimSymlinks: true });
		}
	}
	symlinkSync(join(REPO, 'node_modules'), join(dir, 'node_modules'));
	return dir;
}

// Runs install.sh from the source tree into `destdir`.
function install(destdir: string, env: NodeJS.ProcessEnv): SpawnSyncReturns<string> {
	return run('sh', [join(source, 'scripts/install.sh')], {
		env: {
			...process.env,
			PREFIX: undefined,
			SYSCONFDIR: undefined,
			UNITDIR: undefined,
			...env,
			DESTDIR: destdir,
		},
	});
}

function run(
	command: string,
	args: string[],
	options: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): SpawnSyncReturns<string> {
	return spawnSync(command, args, { encoding: 'utf8', timeout: 60_000, ...options });
}

// Every file, link (with its target) and empty folder below `root`, as sorted relative paths.
function listTree(root: string, skip: string[] = []): string[] {
	const entries: string[] = [];
	const walk = (rel: string) => {
		const children = readdirSync(join(root, rel), { withFileTypes: true });
		if (children.length === 0 && rel !== '') {
			entries.push(`${rel}/`);
		}
		for (const child of children) {
			const path = rel === '' ? child.name : `${rel}/${child.name}`;
			if (skip.includes(path)) {
				continue;
			}
			if (child.isSymbolicLink()) {
				entries.push(`${path} -> ${readlinkSync(join(root, path))}`);
			} else if (child.isDirectory()) {
				walk(path);
			} else {
				entries.push(path);
			}
		}
	};
	walk('');
	return entries.sort();
}

// What listTree should find under DESTDIR, leaving out dist/ and node_modules/.
function expectedEntries(prefix: string): string[] {
	const p = prefix.slice(1);
	const lib = `${p}/lib/memfd-bind`;
	const entries = [
		'etc/apt/apt.conf.d/80memfd-bind',
		'etc/memfd-bind.d/',
		`${p}/bin/memfdctl -> ../lib/memfd-bind/bin/memfdctl`,
		`${p}/sbin/memfd-bindd -> ../lib/memfd-bind/bin/memfd-bindd`,
		`${lib}/bin/memfd-bindd`,
		`${lib}/bin/memfdctl`,
		`${lib}/package-lock.json`,
		`${lib}/package.json`,
		`${p}/lib/systemd/system/memfd-bind.service`,
		`${p}/lib/systemd/system/memfd-bind@.service`,
		`${p}/share/dbus-1/system-services/org.opencontainers.MemfdBind.service`,
		`${p}/share/dbus-1/system.d/org.opencontainers.MemfdBind.conf`,
		`${p}/share/polkit-1/actions/org.opencontainers.memfdbind.policy`,
	];
	if (existsSync(join(source, INTERFACE_XML))) {
		entries.push(
			`${lib}/${INTERFACE_XML}`,
			`${p}/share/dbus-1/interfaces/org.opencontainers.MemfdBind1.xml`,
		);
	}
	if (existsSync(join(source, 'README.md'))) {
		entries.push(`${p}/share/doc/memfd-bind/README.md`);
	}
	return entries.sort();
}

// The host paths an install without DESTDIR would write, with their parent folders.
function hostPaths(prefix: string): string[] {
	const paths = new Set<string>([`${prefix}/lib/.memfd-bind.new`]);
	for (const entry of expectedEntries(prefix)) {
		let path = `/${entry.replace(/ -> .*$/, '').replace(/\/$/, '')}`;
		while (path !== '/') {
			paths.add(path);
			path = dirname(path);
		}
	}
	return [...paths].sort();
}

// Identity and modification time of each path, or "absent".
function snapshot(paths: string[]): Map<string, string> {
	const state = new Map<string, string>();
	for (const path of paths) {
		try {
			const stat = lstatSync(path);
			state.set(path, `${stat.ino} ${stat.mtimeMs} ${stat.size}`);
		} catch {
			state.set(path, 'absent');
		}
	}
	return state;
}

function modeOf(path: string): number {
	return lstatSync(path).mode & 0o7777;
}

// The values of `key=` lines in a unit or desktop-entry style file.
function settings(text: string, key: string): string[] {
	return text
		.split('\n')
		.filter((line) => line.startsWith(`${key}=`))
		.map((line) => line.slice(key.length + 1));
}

// The package folders npm counts as production dependencies, relative to the tree.
function productionPackages(tree: string): string[] {
	const ls = run('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: tree });
	assert.equal(ls.status, 0, ls.stderr);
	return ls.stdout
		.split('\n')
		.filter((line) => line.startsWith(`${tree}/node_modules/`))
		.map((line) => relative(tree, line));
}

// Top-level package names in a node_modules folder, scoped ones as @scope/name.
function installedPackages(modules: string): string[] {
	const names: string[] = [];
	for (const name of readdirSync(modules)) {
		if (name.startsWith('.')) {
			continue;
		}
		if (name.startsWith('@')) {
			names.push(...readdirSync(join(modules, name)).map((inner) => `${name}/${inner}`));
		} else {
			names.push(name);
		}
	}
	return names.sort();
}

// The dist/ modules the bin scripts import.
function entryModules(tree: string): string[] {
	return ['bin/memfdctl', 'bin/memfd-bindd'].flatMap((bin) =>
		[
			...readFileSync(join(tree, bin), 'utf8').matchAll(
				/^import ["']\.\.\/(dist\/[^"']+)["'];?$/gm,
			),
		].map((match) => match[1]),
	);
}

// The shell commands of the apt hook, as apt itself parses them.
function hookCommands(hook: string): string[] {
	if (missingTools('apt-config') !== undefined) {
		return [...readFileSync(hook, 'utf8').matchAll(/^DPkg::\S+ \{ "(.*)"; \};$/gm)].map(
			(m) => m[1],
		);
	}
	const dump = run('apt-config', ['-c', hook, 'dump']);
	assert.equal(dump.status, 0, dump.stderr);
	return [...dump.stdout.matchAll(/^DPkg::(?:Pre|Post)-Invoke:: "(.*memfdctl.*)";$/gm)].map(
		(m) => m[1],
	);
}

// The one default of an action, after checking that allow_any, allow_inactive and allow_active
// agree.
function defaults(action: string): string {
	const values = ['allow_any', 'allow_inactive', 'allow_active'].map(
		(key) => new RegExp(`<${key}>([^<]*)</${key}>`).exec(action)?.[1],
	);
	assert.equal(new Set(values).size, 1, `defaults differ: ${values.join(', ')}`);
	return values[0] ?? '';
}

// A copy of DESTDIR with the host's system units and /bin/sh, so that systemd-analyze --root
// finds what the units depend on and run.
function verifyRoot(destdir: string, root: string): string {
	const units = join(root, 'usr/lib/systemd/system');
	mkdirSync(units, { recursive: true });
	cpSync('/usr/lib/systemd/system', units, { recursive: true, verbatimSymlinks: true });
	if (!existsSync(join(units, 'dbus.socket'))) {
		writeFileSync(
			join(units, 'dbus.socket'),
			'[Socket]\nListenStream=/run/dbus/system_bus_socket\n',
		);
	}
	cpSync(destdir, root, { recursive: true, verbatimSymlinks: true, force: true });
	mkdirSync(join(root, 'bin'), { recursive: true });
	copyFileSync('/bin/sh', join(root, 'bin/sh'));
	chmodSync(join(root, 'bin/sh'), 0o755);
	return root;
}

// A system-bus-like configuration with the installed policy and activation file.
function busConfig(socket: string, dbusDir: string): string {
	return systemBusConfig(
		socket,
		`<servicedir>${dbusDir}/system-services</servicedir>`,
		`${dbusDir}/system.d/org.opencontainers.MemfdBind.conf`,
	);
}

// Like run, without blocking the event loop.
function runAsync(command: string, args: string[]): Promise<RunResult> {
	return new Promise((resolve, reject) => {
		const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
		let stdout = '';
		let stderr = '';
		child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
		child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
		child.on('error', reject);
		child.on('close', (status) => resolve({ status, stdout, stderr }));
	});
}

interface RunResult {
	status: number | null;
	stdout: string;
	stderr: string;
}

async function waitFor(condition: () => boolean, what: string): Promise<void> {
	for (let waited = 0; waited < 5000; waited += 50) {
		if (condition()) {
			return;
		}
		await new Promise((resolve) => setTimeout(resolve, 50));
	}
	throw new Error(`Timed out waiting for ${what}`);
}

// Why a test cannot run: the first tool missing from PATH.
function missingTools(...tools: string[]): string | undefined {
	const missing = tools.find((tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0);
	return missing === undefined ? undefined : `needs ${missing}, which is not installed`;
}

function notRoot(): string | undefined {
	return process.getuid?.() === 0 ? undefined : 'needs root to run busctl as nobody';
}
