// Bindings outlive the service process: a crash, a restart, stale mounts, the state folder,
// declared paths, package upgrades (suspend and resume), idle exit and D-Bus activation.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
	chmodSync,
	closeSync,
	copyFileSync,
	existsSync,
	mkdirSync,
	readFileSync,
	readdirSync,
	readlinkSync,
	renameSync,
	symlinkSync,
	writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MFD_CLOEXEC, memfdCreate } from '../../src/common/libc.js';
import { clientsFor } from '../helpers/clients.js';
import type { Clients } from '../helpers/clients.js';
import { foreignMemfdMount, killAndWait, mountsAt, sealsAt } from '../helpers/mounts.js';
import {
	BUS_NAME,
	INTERFACE,
	MEMFDCTL,
	MEMFD_BINDD,
	OBJECT_PATH,
	integrationSkipReason,
	startSandbox,
	waitFor,
} from '../helpers/sandbox.js';
import type { Sandbox } from '../helpers/sandbox.js';

const skip = integrationSkipReason();

// How many memfds a process holds open (the service holds one while it copies).
function memfdsOf(pid: number): number {
	return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
		try {
			return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('/memfd:memfd-bind:');
		} catch {
			return false;
		}
	}).length;
}

describe('bindings across crashes, restarts and upgrades', { skip }, () => {
	let sandbox: Sandbox;
	let files: string;

	let clients: Clients;
	let executable: Clients['executable'];
	let list: Clients['list'];

	before(async () => {
		sandbox = await startSandbox();
		files = join(sandbox.dir, 'files');
		clients = clientsFor(sandbox);
		({ executable, list } = clients);
	});

	after(async () => {
		await sandbox?.stop();
	});

	function memfdctl(...args: string[]) {
		return clients.memfdctl(args);
	}

	function sha256(path: string): string {
		return createHash('sha256').update(readFileSync(path)).digest('hex');
	}

	test('kill -9 of the service never breaks a bound binary, and the restart adopts all 10 bindings', async () => {
		const service = await sandbox.startService();
		const paths = Array.from({ length: 10 }, (_, i) => executable(`crash-${i}`));
		assert.equal(memfdctl('bind', ...paths).status, 0);
		const before = new Map(list().map((record) => [record.Path, record.Sha256]));

		// A shell loop executes every bound path every 10 ms and counts failures.
		const loop = spawn('sh', [
			'-c',
			`fails=0; runs=0; end=$(($(date +%s) + 3)); while [ $(date +%s) -lt $end ]; do for p in ${paths.map((p) => `'${p}'`).join(' ')}; do "$p" || fails=$((fails+1)); runs=$((runs+1)); done; sleep 0.01; done; echo "$runs $fails"`,
		]);
		let output = '';
		loop.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
		await new Promise((resolve) => setTimeout(resolve, 500));
		await service.stop('SIGKILL');
		await new Promise((resolve) => setTimeout(resolve, 500));
		const restarted = await sandbox.startService();
		await new Promise((resolve) => loop.on('exit', resolve));

		const [runs, fails] = output.trim().split(' ').map(Number);
		assert.ok(runs > 100, `the loop ran ${runs} times`);
		assert.equal(fails, 0, `executions failed ${fails} of ${runs} times`);
		const after = list();
		for (const path of paths) {
			const record = after.find((entry) => entry.Path === path);
			assert.equal(record?.State, 'active', path);
			assert.equal(record?.Sha256, before.get(path));
		}
		assert.match(restarted.log(), /Adopted the binding of/);
		assert.equal(memfdctl('release', ...paths).status, 0);
		await restarted.stop();
	});

	test('SIGTERM releases every binding and the next start binds them again from the state folder', async () => {
		const service = await sandbox.startService();
		const path = executable('persisted');
		assert.equal(memfdctl('bind', path).status, 0);
		const state = JSON.parse(readFileSync(join(sandbox.dir, 'state/bindings.json'), 'utf8'));
		assert.deepEqual(
			state.bindings.map((entry: { path: string }) => entry.path),
			[path],
		);

		assert.equal(await service.stop('SIGTERM'), 0);
		assert.equal(mountsAt(path).length, 0, 'a clean stop releases the mount');
		assert.equal(sealsAt(path), undefined);

		const restarted = await sandbox.startService();
		assert.equal(sealsAt(path), 0xf, 'the binding is back after the restart');
		assert.match(restarted.log(), /Restored the binding of/);
		assert.equal(memfdctl('release', path).status, 0);
		const saved = JSON.parse(readFileSync(join(sandbox.dir, 'state/bindings.json'), 'utf8'));
		assert.deepEqual(saved.bindings, [], 'Release forgets the path');
		await restarted.stop();
	});

	test('a start removes a stale mount at a managed path and binds it again', async () => {
		const service = await sandbox.startService();
		const path = executable('healed');
		assert.equal(memfdctl('bind', path).status, 0);
		const record = list().find((entry) => entry.Path === path)!;
		await service.stop('SIGKILL');
		await killAndWait(record.HolderPid as number);
		assert.notEqual(sandbox.run(path, []).status, 0, 'stale before the restart');

		const restarted = await sandbox.startService();
		assert.equal(mountsAt(path).length, 1, 'exactly one mount: the stale one is gone');
		assert.equal(sealsAt(path), 0xf);
		assert.equal(sandbox.run(path, []).status, 0);
		assert.equal(memfdctl('release', path).status, 0);
		await restarted.stop();
	});

	test('a start stops holders that no mount uses and keeps the ones that bindings use', async () => {
		const service = await sandbox.startService();
		const path = executable('kept-holder');
		assert.equal(memfdctl('bind', path).status, 0);
		const kept = list().find((entry) => entry.Path === path)?.HolderPid as number;
		await service.stop('SIGKILL');
		// What a crash between starting a holder and mounting leaves: a holder nobody mounts.
		const memfd = memfdCreate('memfd-bind:/never/mounted', MFD_CLOEXEC);
		const orphan = spawn('/bin/sleep', ['infinity'], {
			argv0: 'memfd-bind-holder',
			detached: true,
			stdio: ['ignore', 'ignore', 'ignore', memfd],
		});
		closeSync(memfd);
		// Same name, no memfd: a pid that merely looks like a holder is never killed.
		const lookalike = spawn('/bin/sleep', ['infinity'], {
			argv0: 'memfd-bind-holder',
			detached: true,
			stdio: 'ignore',
		});

		const restarted = await sandbox.startService();
		await waitFor(
			() => orphan.exitCode !== null || orphan.signalCode !== null,
			5000,
			() => 'the orphan holder still runs',
		);
		assert.equal(orphan.signalCode, 'SIGKILL');
		assert.equal(lookalike.exitCode, null, 'the lookalike still runs');
		lookalike.kill('SIGKILL');
		assert.ok(existsSync(`/proc/${kept}/fd/3`), 'the holder of the binding still runs');
		assert.match(restarted.log(), new RegExp(`Stopped holder pid ${orphan.pid}: no mount uses it`));
		assert.equal(memfdctl('release', path).status, 0);
		await restarted.stop();
	});

	test('paths declared in memfd-bind.d are bound at start, and a bad line is logged and skipped', async () => {
		const path = executable('declared');
		const configDir = join(sandbox.dir, 'memfd-bind.d');
		mkdirSync(configDir, { recursive: true });
		writeFileSync(
			join(configDir, 'runtimes.conf'),
			`# container runtimes\n${path}\nrelative/path\n\n`,
		);
		const service = await sandbox.startService();
		assert.equal(sealsAt(path), 0xf);
		assert.match(
			service.log(),
			/runtimes\.conf:3: Invalid path 'relative\/path': the path is not absolute/,
		);
		assert.equal(memfdctl('release', path).status, 0);
		await service.stop();
		writeFileSync(join(configDir, 'runtimes.conf'), '');
	});

	test('suspend and resume around a package upgrade bind the new file', async () => {
		const service = await sandbox.startService();
		const path = executable('upgraded', '/usr/bin/true');
		assert.equal(memfdctl('bind', path).status, 0);

		// What dpkg does between the hooks: write the new version aside and rename it over.
		const suspended = memfdctl('suspend');
		assert.equal(suspended.status, 0, suspended.stderr);
		assert.equal(suspended.stdout, `${path}: suspended\n`);
		copyFileSync('/usr/bin/false', `${path}.dpkg-new`);
		renameSync(`${path}.dpkg-new`, path);
		const resumed = memfdctl('resume');
		assert.equal(resumed.status, 0, resumed.stderr);

		const record = list().find((entry) => entry.Path === path);
		assert.equal(record?.Sha256, sha256('/usr/bin/false'));
		assert.equal(sealsAt(path), 0xf);
		assert.equal(sandbox.run(path, []).status, 1, 'the bound binary is the new one (false)');
		assert.equal(memfdctl('release', path).status, 0);
		await service.stop();
	});

	test('while suspended, list shows the binding as suspended and release forgets it', async () => {
		const service = await sandbox.startService();
		const kept = executable('suspended-kept');
		const forgotten = executable('suspended-forgotten');
		assert.equal(memfdctl('bind', kept, forgotten).status, 0);
		assert.equal(memfdctl('suspend').status, 0);

		const states = new Map(list().map((entry) => [entry.Path, entry.State]));
		assert.equal(states.get(kept), 'suspended');
		assert.equal(states.get(forgotten), 'suspended');
		assert.equal(memfdctl('release', forgotten).status, 0);
		const saved = JSON.parse(readFileSync(join(sandbox.dir, 'state/bindings.json'), 'utf8'));
		assert.deepEqual(
			saved.bindings.map((entry: { path: string }) => entry.path),
			[kept],
		);

		const resumed = memfdctl('resume');
		assert.equal(resumed.stdout, `${kept}: bound, sha256 ${sha256(kept)}\n`);
		assert.equal(sealsAt(kept), 0xf);
		assert.equal(sealsAt(forgotten), undefined, 'a released path is not bound again');
		assert.equal(memfdctl('release', kept).status, 0);
		await service.stop();
	});

	test('a file changed on disk under its binding shows as outdated, and bind --refresh replaces it', async () => {
		const service = await sandbox.startService();
		const dir = join(files, 'outdated-dir');
		mkdirSync(dir);
		const path = join(dir, 'tool');
		copyFileSync('/usr/bin/true', path);
		assert.equal(memfdctl('bind', path).status, 0);

		// A second, non-recursive view of the folder reaches the file beneath the mount.
		const view = join(files, 'outdated-view');
		mkdirSync(view);
		assert.equal(sandbox.run('mount', ['--bind', dir, view]).status, 0);
		// rename() over a mount point fails with EBUSY, so the change is written in place.
		copyFileSync('/usr/bin/false', join(view, 'tool'));
		assert.equal(list().find((entry) => entry.Path === path)?.State, 'outdated');

		const refreshed = memfdctl('bind', '--refresh', path);
		assert.equal(refreshed.status, 0, refreshed.stderr);
		const record = list().find((entry) => entry.Path === path);
		assert.equal(record?.State, 'active');
		assert.equal(record?.Sha256, sha256('/usr/bin/false'));
		assert.equal(mountsAt(path).length, 1);
		assert.equal(memfdctl('release', path).status, 0);
		assert.equal(sandbox.run('umount', [view]).status, 0);
		await service.stop();
	});

	test('a directory swapped for a symlink during the copy leaves no mount and a runnable original', async () => {
		const service = await sandbox.startService(['--max-size', '1G']);
		const dir = join(files, 'swapped');
		mkdirSync(dir);
		const original = join(dir, 'tool');
		// A real executable with 256 MiB appended runs as before and takes a while to copy.
		writeFileSync(
			original,
			Buffer.concat([readFileSync('/usr/bin/true'), Buffer.alloc(256 << 20, 1)]),
		);
		chmodSync(original, 0o755);
		const elsewhere = join(files, 'elsewhere');
		mkdirSync(elsewhere);
		copyFileSync('/usr/bin/false', join(elsewhere, 'tool'));

		const bind = spawn(process.execPath, [MEMFDCTL, 'bind', original], { env: sandbox.env });
		let stderr = '';
		bind.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
		await waitFor(
			() => memfdsOf(service.process.pid!) > 0,
			10_000,
			() => 'the copy never started',
		);
		renameSync(dir, `${dir}.old`);
		symlinkSync(elsewhere, dir);
		const status = await new Promise<number | null>((resolve) => bind.on('exit', resolve));

		assert.equal(status, 1);
		assert.match(stderr, /moved, replaced or removed/);
		assert.equal(mountsAt(join(`${dir}.old`, 'tool')).length, 0, 'no mount on the original');
		assert.equal(mountsAt(join(elsewhere, 'tool')).length, 0, 'no mount on the symlink target');
		assert.equal(sandbox.run(join(`${dir}.old`, 'tool'), []).status, 0, 'the original still runs');
		assert.deepEqual(list(), []);
		await service.stop();
	});

	test('the service exits 0 when idle without bindings, and a call activates it again', async () => {
		const servicedir = join(sandbox.dir, 'services');
		mkdirSync(servicedir);
		const activated = await startSandbox({ extraConfig: `<servicedir>${servicedir}</servicedir>` });
		try {
			const log = join(activated.dir, 'service.log');
			writeFileSync(
				join(servicedir, `${BUS_NAME}.service`),
				`[D-BUS Service]\nName=${BUS_NAME}\nExec=/bin/sh -c 'exec ${process.execPath} ${MEMFD_BINDD} --idle-timeout 1 --state-dir ${activated.dir}/state --config-dir ${activated.dir}/conf 2>>${log}'\nUser=root\n`,
			);
			const first = activated.run('busctl', ['call', BUS_NAME, OBJECT_PATH, INTERFACE, 'List']);
			assert.equal(first.status, 0, first.stderr);
			assert.equal(first.stdout.trim(), 'aa{sv} 0');
			await waitFor(
				() => readFileSync(log, 'utf8').includes('Idle for 1 s with no bindings, exiting'),
				10_000,
				() => readFileSync(log, 'utf8'),
			);
			await waitFor(
				() => activated.run('busctl', ['status', BUS_NAME]).status !== 0,
				5000,
				() => 'the name is still owned',
			);

			const second = activated.run('busctl', [
				'get-property',
				BUS_NAME,
				OBJECT_PATH,
				INTERFACE,
				'Version',
			]);
			assert.equal(second.status, 0, second.stderr);
			assert.match(second.stdout, /^s "\d+\.\d+\.\d+"/);
			// The reply can overtake the second instance's start-up line in the log.
			const starts = () =>
				readFileSync(log, 'utf8').match(/Serving org\.opencontainers\.MemfdBind/g)?.length ?? 0;
			await waitFor(
				() => starts() === 2,
				5000,
				() => `started ${starts()} times, expected 2`,
			);
		} finally {
			await activated.stop();
		}
	});

	test('a refresh that fails keeps the old binding bound and remembered', async () => {
		const service = await sandbox.startService(['--max-size', '1M']);
		const dir = join(files, 'refresh-too-large');
		mkdirSync(dir);
		const path = join(dir, 'tool');
		copyFileSync('/usr/bin/true', path);
		assert.equal(memfdctl('bind', path).status, 0);
		const before = list().find((entry) => entry.Path === path);

		const view = join(files, 'refresh-too-large-view');
		mkdirSync(view);
		assert.equal(sandbox.run('mount', ['--bind', dir, view]).status, 0);
		writeFileSync(join(view, 'tool'), Buffer.alloc(2 << 20, 1));
		const refreshed = memfdctl('bind', '--refresh', path);
		assert.equal(refreshed.status, 1);
		assert.match(refreshed.stderr, /larger than the limit/);

		const after = list().find((entry) => entry.Path === path);
		assert.equal(after?.State, 'outdated');
		assert.equal(after?.Sha256, before?.Sha256);
		assert.equal(sealsAt(path), 0xf);
		assert.equal(sandbox.run(path, []).status, 0);
		const saved = JSON.parse(readFileSync(join(sandbox.dir, 'state/bindings.json'), 'utf8'));
		assert.ok(saved.bindings.some((entry: { path: string }) => entry.path === path));
		assert.equal(sandbox.run('umount', [view]).status, 0);
		assert.equal(memfdctl('release', path).status, 0);
		await service.stop();
	});

	test('kill -9 during a refresh leaves the path bound after the restart', async () => {
		const service = await sandbox.startService(['--max-size', '1G']);
		const path = join(files, 'refresh-killed');
		writeFileSync(path, Buffer.concat([readFileSync('/usr/bin/true'), Buffer.alloc(256 << 20, 2)]));
		chmodSync(path, 0o755);
		assert.equal(memfdctl('bind', path).status, 0);

		const refresh = spawn(process.execPath, [MEMFDCTL, 'bind', '--refresh', path], {
			env: sandbox.env,
		});
		await waitFor(
			() => memfdsOf(service.process.pid!) > 0,
			10_000,
			() => 'the copy never started',
		);
		await service.stop('SIGKILL');
		await new Promise((resolve) => refresh.on('exit', resolve));

		const restarted = await sandbox.startService(['--max-size', '1G']);
		assert.equal(list().find((entry) => entry.Path === path)?.State, 'active');
		assert.equal(sealsAt(path), 0xf);
		assert.equal(mountsAt(path).length, 1);
		assert.equal(memfdctl('release', path).status, 0);
		await restarted.stop();
	});

	test('a binding that cannot be restored at start stays remembered as failed until resume binds it', async () => {
		let service = await sandbox.startService();
		const path = executable('restore-later');
		assert.equal(memfdctl('bind', path).status, 0);
		assert.equal(await service.stop('SIGTERM'), 0);
		renameSync(path, `${path}.away`);

		service = await sandbox.startService();
		const failed = list().find((entry) => entry.Path === path);
		assert.equal(failed?.State, 'failed');
		assert.match(String(failed?.Error), /no such file/);
		const saved = JSON.parse(readFileSync(join(sandbox.dir, 'state/bindings.json'), 'utf8'));
		assert.ok(saved.bindings.some((entry: { path: string }) => entry.path === path));

		const early = memfdctl('resume');
		assert.equal(early.status, 1);
		assert.match(early.stderr, /^memfdctl: cannot resume .*restore-later: .*no such file\n$/m);
		renameSync(`${path}.away`, path);
		const resumed = memfdctl('resume');
		assert.equal(resumed.status, 0, resumed.stderr);
		assert.equal(sealsAt(path), 0xf);
		assert.equal(memfdctl('release', path).status, 0);
		await service.stop();
	});

	test('a declared path suspended before a restart stays suspended until resume', async () => {
		const path = executable('declared-suspended');
		const configDir = join(sandbox.dir, 'memfd-bind.d');
		mkdirSync(configDir, { recursive: true });
		writeFileSync(join(configDir, 'suspended.conf'), `${path}\n`);
		let service = await sandbox.startService();
		assert.equal(sealsAt(path), 0xf);
		assert.equal(memfdctl('suspend').status, 0);
		await service.stop('SIGKILL');

		service = await sandbox.startService();
		assert.equal(sealsAt(path), undefined, 'not bound while dpkg may be running');
		assert.equal(list().find((entry) => entry.Path === path)?.State, 'suspended');
		copyFileSync('/usr/bin/false', `${path}.new`);
		renameSync(`${path}.new`, path);
		assert.equal(memfdctl('resume').status, 0);
		assert.equal(sealsAt(path), 0xf);
		assert.equal(memfdctl('release', path).status, 0);
		await service.stop();
		writeFileSync(join(configDir, 'suspended.conf'), '');
	});

	test('with a binding the service never exits for idleness', async () => {
		const service = await sandbox.startService(['--idle-timeout', '1']);
		const path = executable('keeps-alive');
		assert.equal(memfdctl('bind', path).status, 0);
		await new Promise((resolve) => setTimeout(resolve, 2500));
		assert.equal(service.process.exitCode, null, 'still running after 2.5 idle seconds');
		assert.doesNotMatch(service.log(), /Idle for/);
		assert.equal(memfdctl('release', path).status, 0);
		await service.stop();
	});

	test('a start leaves a live memfd mount of another tool alone and says so; status names its holder', async () => {
		const path = executable('other-tools');
		const holder = foreignMemfdMount(path, readFileSync('/usr/bin/true'));
		const service = await sandbox.startService();
		assert.match(
			service.log(),
			new RegExp(
				`A memfd mount of another tool is at '${path}' \\(pid ${holder}\\); leaving it alone`,
			),
		);
		assert.equal(mountsAt(path).length, 1);
		assert.equal(sandbox.run(path, []).status, 0);
		const status = JSON.parse(memfdctl('status', '--json', path).stdout);
		assert.deepEqual(
			{ kind: status.holder.kind, pid: status.holder.pid },
			{ kind: 'other', pid: holder },
		);
		await service.stop();
		await killAndWait(holder);
	});

	test('the service exits non-zero when the bus goes away, and its bindings keep working', async () => {
		const other = await startSandbox();
		try {
			const service = await other.startService();
			const path = executable('bus-lost');
			assert.equal(other.run(process.execPath, [MEMFDCTL, 'bind', path]).status, 0);
			const listed = other.run(process.execPath, [MEMFDCTL, 'list', '--json']);
			const holder = (JSON.parse(listed.stdout) as Array<{ HolderPid: number }>)[0].HolderPid;
			assert.ok(existsSync(`/proc/${holder}`));

			spawn('pkill', ['-f', `dbus-daemon --config-file ${other.dir}`]);
			const code = await Promise.race([
				new Promise<number | null>((resolve) =>
					service.process.once('exit', (status) => resolve(status)),
				),
				new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 5000)),
			]);
			assert.equal(code, 1);
			assert.match(service.log(), /Lost the connection to the system bus/);
			assert.equal(other.run(path, []).status, 0, 'the bound binary still runs');
			assert.equal(sealsAt(path), 0xf);
			// The stale mount left by this holder dies with the test's private mount namespace.
			await killAndWait(holder);
		} finally {
			await other.stop();
		}
	});
});
