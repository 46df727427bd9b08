// Bind, List, Release and Cleanup against the real service on a private bus, through busctl,
// gdbus and memfdctl, with real memfds and mounts inside the test's private mount namespace.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
	chmodSync,
	chownSync,
	mkdirSync,
	statSync,
	readFileSync,
	symlinkSync,
	writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execFileSync } from 'node:child_process';
import {
	foreignMemfdMount,
	killAndWait,
	mountTable,
	mountsAt,
	openedAs,
	sealsAt,
} from '../helpers/mounts.js';
import { clientsFor } from '../helpers/clients.js';
import type { Clients } from '../helpers/clients.js';
import {
	BUS_NAME,
	INTERFACE,
	MEMFDCTL,
	OBJECT_PATH,
	integrationSkipReason,
	startSandbox,
} from '../helpers/sandbox.js';
import type { Sandbox, Service } from '../helpers/sandbox.js';

const skip = integrationSkipReason();
const ERROR = `${INTERFACE}.Error`;

describe('bind, list, release and cleanup', { skip }, () => {
	let sandbox: Sandbox;
	let service: Service;
	let files: string;

	let executable: Clients['executable'];
	let busctl: Clients['busctl'];
	let gdbus: Clients['gdbus'];
	let gdbusCall: Clients['gdbusCall'];
	let memfdctl: Clients['memfdctl'];

	before(async () => {
		sandbox = await startSandbox();
		service = await sandbox.startService(['--max-size', '8M']);
		files = join(sandbox.dir, 'files');
		({ executable, busctl, gdbus, gdbusCall, memfdctl } = clientsFor(sandbox));
	});

	after(async () => {
		await sandbox?.stop();
	});

	test('Bind through busctl mounts a memfd sealed exactly 0xF holding the same bytes', () => {
		const path = executable('busctl-bound');
		const original = readFileSync(path);

		const result = busctl('Bind', 's', path);
		assert.equal(result.status, 0, result.stderr);
		const record = JSON.parse(result.stdout).data[0];

		assert.equal(record.Path.data, path);
		assert.equal(record.Seals.data, 0xf);
		assert.equal(record.Size.data, original.length);
		assert.equal(record.Sha256.data, createHash('sha256').update(original).digest('hex'));
		assert.equal(record.Mode.data, 0o755);
		assert.equal(record.BoundBy.data, 0);
		assert.equal(record.MemfdName.data, `memfd-bind:${path}`);
		const [mount] = mountsAt(path);
		assert.equal(mount.fsType, 'proc');
		assert.equal(mount.root, `/${record.HolderPid.data}/fd/3`);
		assert.equal(sealsAt(path), 0xf);
		assert.equal(openedAs(path), `/memfd:memfd-bind:${path} (deleted)`);
		assert.deepEqual(readFileSync(path), original);
		assert.equal(sandbox.run(path, []).status, 0, 'the bound binary runs');
	});

	test('Bind keeps the owner and permission bits but drops setuid and setgid', () => {
		const path = executable('setuid-tool');
		const daemon = Number(execFileSync('id', ['-u', 'daemon'], { encoding: 'utf8' }).trim());
		chownSync(path, daemon, daemon);
		chmodSync(path, 0o6751);

		const record = JSON.parse(busctl('Bind', 's', path).stdout).data[0];
		assert.equal(record.Mode.data, 0o751);
		assert.equal(record.Uid.data, daemon);
		assert.equal(record.Gid.data, daemon);
		const seen = statSync(path);
		assert.equal(seen.mode & 0o7777, 0o751, 'the bound path shows no setuid or setgid bit');
		assert.equal(seen.uid, daemon);
		assert.equal(busctl('Release', 's', path).status, 0);
		assert.equal(statSync(path).mode & 0o7777, 0o6751, 'the file on disk is untouched');
	});

	test('List through gdbus shows the binding and Release through memfdctl restores the file', () => {
		const path = executable('gdbus-listed');
		const before = mountTable();
		assert.equal(memfdctl(['bind', path]).status, 0);

		const listed = gdbus('List', []);
		assert.equal(listed.status, 0, listed.stderr);
		assert.match(listed.stdout, new RegExp(`'Path': <'${path}'>`));
		assert.match(listed.stdout, /'Seals': <uint32 15>/);
		assert.match(listed.stdout, /'State': <'active'>/);

		const released = memfdctl(['release', path]);
		assert.equal(released.status, 0, released.stderr);
		assert.deepEqual(mountTable(), before);
		assert.equal(sealsAt(path), undefined);
		assert.equal(openedAs(path), path);
	});

	test('memfdctl list --json and status --json report the binding and what runc would see', () => {
		const path = executable('cli-status');
		assert.equal(memfdctl(['bind', path]).status, 0);

		const list = JSON.parse(memfdctl(['list', '--json']).stdout) as Array<Record<string, unknown>>;
		const entry = list.find((record) => record.Path === path);
		assert.equal(entry?.State, 'active');
		assert.equal(entry?.Seals, 15);

		const status = JSON.parse(memfdctl(['status', '--json', path]).stdout);
		assert.equal(status.seals, 15);
		assert.equal(status.clonedExact, true);
		assert.equal(status.clonedSuperset, true);
		assert.equal(status.holder.kind, 'memfd-bind');

		assert.equal(memfdctl(['release', path]).status, 0);
		const after = JSON.parse(memfdctl(['status', '--json', path]).stdout);
		assert.equal(after.memfd, false);
		assert.equal(after.clonedExact, false);
	});

	test('Bind refuses bad input with the right error name and leaves the mount table alone', () => {
		const dir = join(files, 'a-directory');
		mkdirSync(dir);
		const link = join(files, 'a-symlink');
		symlinkSync(executable('symlink-target'), link);
		const fifo = join(files, 'a-fifo');
		execFileSync('mkfifo', [fifo]);
		const big = join(files, 'too-big');
		writeFileSync(big, Buffer.alloc(9 << 20, 1));
		const bound = executable('bound-twice');
		assert.equal(busctl('Bind', 's', bound).status, 0);
		const before = mountTable();

		const cases: Array<[string, string, RegExp]> = [
			['relative/path', `${ERROR}.InvalidPath`, /not absolute/],
			[`${files}/../x`, `${ERROR}.InvalidPath`, /not normalised/],
			[`${files}//x`, `${ERROR}.InvalidPath`, /not normalised/],
			['/proc/self/exe', `${ERROR}.InvalidPath`, /under \/proc/],
			['/dev/null', `${ERROR}.InvalidPath`, /under \/dev/],
			[`/${'a'.repeat(4096)}`, `${ERROR}.InvalidPath`, /longer than/],
			[join(files, 'missing'), `${ERROR}.NotFound`, /no such file/],
			[join(files, 'no-dir/x'), `${ERROR}.NotFound`, /ENOENT/],
			[dir, `${ERROR}.NotRegularFile`, /directory/],
			[link, `${ERROR}.NotRegularFile`, /symbolic link/],
			[fifo, `${ERROR}.NotRegularFile`, /fifo/],
			[big, `${ERROR}.TooLarge`, /larger than the limit/],
			[bound, `${ERROR}.AlreadyBound`, /already bound by memfd-bind/],
		];
		for (const [path, name, reason] of cases) {
			const result = busctl('Bind', 's', path);
			assert.notEqual(result.status, 0, `Bind ${path} succeeded`);
			const output = result.stderr.trim();
			assert.match(output, reason, `${path}: ${output}`);
			const viaGdbus = gdbus('Bind', [path]);
			assert.match(
				viaGdbus.stderr,
				new RegExp(name.replace(/\./g, '\\.')),
				`${path}: ${viaGdbus.stderr}`,
			);
		}
		assert.deepEqual(mountTable(), before);
		assert.equal(
			sandbox.run(process.execPath, [MEMFDCTL, 'list']).status,
			0,
			'the service still answers',
		);
		assert.doesNotMatch(service.log(), /at .*\.js:\d+/, 'no stack trace in the log for bad input');
		assert.equal(busctl('Release', 's', bound).status, 0);
	});

	test('a wrong signature, an unknown method and Release of an unbound path get their error names', () => {
		const wrong = busctl('Bind', 'u', '42');
		assert.match(wrong.stderr, /signature is 'u', expected 's'/);
		const unknown = busctl('Explode', 's', '/x');
		assert.match(unknown.stderr, /Unknown method 'Explode'/);
		const unbound = memfdctl(['release', executable('never-bound')]);
		assert.equal(unbound.status, 1);
		assert.match(
			unbound.stderr,
			/^memfdctl: cannot release .*never-bound: it is not bound by memfd-bind\n$/,
		);
	});

	test('memfdctl prints one clear line and exits 1 for a missing file, never a stack trace', () => {
		const result = memfdctl(['bind', join(files, 'does-not-exist')]);
		assert.equal(result.status, 1);
		assert.equal(
			result.stderr,
			`memfdctl: cannot bind ${join(files, 'does-not-exist')}: no such file\n`,
		);
		assert.equal(result.stdout, '');
	});

	test('memfdctl exits 69 with one line when the system bus cannot be reached', () => {
		const result = sandbox.run(process.execPath, [MEMFDCTL, 'list'], {
			env: { DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${join(sandbox.dir, 'no-such-socket')}` },
		});
		assert.equal(result.status, 69);
		assert.match(
			result.stderr,
			/^memfdctl: cannot list bindings: cannot reach the system bus \(ENOENT: [^\n]*\)\n$/,
		);
	});

	test('a caller running as nobody gets AccessDenied and nothing is mounted', () => {
		const path = executable('nobody-target');
		const before = mountTable();
		const viaBusctl = sandbox.run(
			'busctl',
			['call', BUS_NAME, OBJECT_PATH, INTERFACE, 'Bind', 's', path],
			{ user: 'nobody' },
		);
		assert.notEqual(viaBusctl.status, 0);
		assert.match(viaBusctl.stderr, /Access denied/);
		const viaGdbus = gdbus('Bind', [path], 'nobody');
		assert.match(
			viaGdbus.stderr,
			/org\.freedesktop\.DBus\.Error\.AccessDenied: Not authorized to perform org\.opencontainers\.memfdbind\.bind/,
		);
		const viaCli = memfdctl(['bind', path], 'nobody');
		assert.equal(viaCli.status, 4, viaCli.stderr);
		assert.match(viaCli.stderr, /^memfdctl: cannot bind .*: Not authorized/);
		assert.deepEqual(mountTable(), before);
		const listed = sandbox.run(process.execPath, [MEMFDCTL, 'list'], { user: 'nobody' });
		assert.equal(listed.status, 0, `List works for nobody: ${listed.stderr}`);
	});

	test('a caller that is not authorized learns nothing about paths it cannot see', () => {
		const hidden = join(sandbox.dir, 'hidden');
		mkdirSync(join(hidden, 'exists'), { recursive: true });
		symlinkSync('/proc/self', join(hidden, 'exists', 'to-proc'));
		chmodSync(hidden, 0o700);
		const answers = [
			join(hidden, 'exists', 'tool'),
			join(hidden, 'missing', 'tool'),
			join(hidden, 'exists', 'to-proc', 'exe'),
		].map((path) => memfdctl(['bind', path], 'nobody'));
		for (const answer of answers) {
			assert.equal(answer.status, 4, answer.stderr);
			assert.match(answer.stderr, /Not authorized to perform org\.opencontainers\.memfdbind\.bind/);
			assert.doesNotMatch(answer.stderr, /ENOENT|not allowed|\/proc/);
		}
	});

	test('properties of an unknown interface and calls on an unknown object get their own error names', () => {
		const getAll = gdbusCall(OBJECT_PATH, 'org.freedesktop.DBus.Properties.GetAll', [
			'org.example.Nope',
		]);
		assert.match(getAll.stderr, /org\.freedesktop\.DBus\.Error\.UnknownInterface/);
		const elsewhere = gdbusCall('/org/opencontainers/Nope', `${INTERFACE}.List`, []);
		assert.match(elsewhere.stderr, /org\.freedesktop\.DBus\.Error\.UnknownObject/);
		const tree = sandbox.run('busctl', ['tree', BUS_NAME]);
		assert.match(tree.stdout, /\/org\/opencontainers\/MemfdBind/);
		const version = sandbox.run('busctl', [
			'get-property',
			BUS_NAME,
			OBJECT_PATH,
			INTERFACE,
			'Version',
		]);
		assert.match(version.stdout, /^s "\d+\.\d+\.\d+"\n$/);
	});

	test('paths with spaces, quotes and newlines bind, list and release', () => {
		const path = executable("odd name 'q'\nline");
		assert.equal(busctl('Bind', 's', path).status, 0);
		assert.equal(mountsAt(path).length, 1);
		const list = JSON.parse(memfdctl(['list', '--json']).stdout) as Array<{ Path: string }>;
		assert.ok(list.some((record) => record.Path === path));
		assert.equal(busctl('Release', 's', path).status, 0);
		assert.equal(mountsAt(path).length, 0);
	});

	test('a killed holder leaves a stale mount that Cleanup removes, and the original runs again', async () => {
		const path = executable('holder-killed');
		const record = JSON.parse(busctl('Bind', 's', path).stdout).data[0];
		await killAndWait(record.HolderPid.data);

		assert.notEqual(sandbox.run(path, []).status, 0, 'a stale mount cannot be executed');
		const list = JSON.parse(memfdctl(['list', '--json']).stdout) as Array<Record<string, unknown>>;
		assert.equal(list.find((entry) => entry.Path === path)?.State, 'stale');

		const cleaned = memfdctl(['cleanup', path]);
		assert.equal(cleaned.status, 0, cleaned.stderr);
		assert.equal(cleaned.stdout, `${path}\n`);
		assert.equal(mountsAt(path).length, 0);
		assert.equal(sandbox.run(path, []).status, 0, 'the original file runs again');
	});

	test('Cleanup leaves a tmpfs and a plain bind mount alone, and removes a stale mount on top', async () => {
		const dir = join(files, 'tmpfs-dir');
		mkdirSync(dir);
		execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', dir]);
		const file = executable('plain-bound');
		execFileSync('mount', ['--bind', '/usr/bin/true', file]);
		const holder = foreignMemfdMount(file, readFileSync('/usr/bin/false'));
		await killAndWait(holder);
		const before = mountTable();

		assert.deepEqual(JSON.parse(busctl('Cleanup', 's', dir).stdout).data[0], []);
		assert.deepEqual(mountTable(), before);

		const removed = JSON.parse(busctl('Cleanup', 's', file).stdout).data[0];
		assert.deepEqual(removed, [file]);
		const left = mountsAt(file);
		assert.equal(left.length, 1, 'only the plain bind mount is left');
		assert.notEqual(left[0].fsType, 'proc');
		assert.equal(mountsAt(dir).length, 1);
		execFileSync('umount', [file]);
		execFileSync('umount', [dir]);
	});

	test('Cleanup of everything removes stale memfd mounts and leaves live foreign ones', async () => {
		const stale = executable('stale-foreign');
		await killAndWait(foreignMemfdMount(stale, readFileSync('/usr/bin/false')));
		const live = executable('live-foreign');
		const liveHolder = foreignMemfdMount(live, readFileSync('/usr/bin/false'));

		const removed = JSON.parse(busctl('Cleanup', 's', '').stdout).data[0] as string[];
		assert.ok(removed.includes(stale), `removed: ${removed}`);
		assert.ok(!removed.includes(live));
		assert.equal(mountsAt(stale).length, 0);
		assert.equal(mountsAt(live).length, 1);

		const targeted = busctl('Cleanup', 's', live);
		assert.match(targeted.stderr, /already bound to a memfd held by pid \d+ \(sleep\)/);
		const list = JSON.parse(memfdctl(['list', '--json']).stdout) as Array<Record<string, unknown>>;
		assert.equal(list.find((entry) => entry.Path === live)?.State, 'foreign');
		const bind = busctl('Bind', 's', live);
		assert.match(bind.stderr, /already bound to a memfd held by pid/);

		await killAndWait(liveHolder);
		assert.deepEqual(JSON.parse(busctl('Cleanup', 's', live).stdout).data[0], [live]);
	});
});
