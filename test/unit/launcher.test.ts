import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { execa } from 'execa';
import { buildLauncher, runLauncher, startLauncher } from '../helpers/launcher.js';

const exactSeals = 0xf;
const payloadMb = 2;
const payloadFill = 0xa5;

describe('launcher fixture', () => {
	test('launcher run from a plain file copies itself into a memfd sealed exactly 0xF', async () => {
		const launcher = await buildLauncher();

		const report = await runLauncher(launcher);

		assert.equal(report.copied, true);
		assert.equal(report.seals, exactSeals);
		assert.equal(report.exact, true);
		assert.equal(report.superset, true);
		assert.ok(report.exe.startsWith('/memfd:runc_cloned'), `exe is '${report.exe}'`);
	});

	test("launcher started from a held launcher's sealed memfd runs without copying", async () => {
		const launcher = await buildLauncher();
		const holder = await startLauncher(launcher);

		try {
			// /proc/<pid>/exe leads to the holder's sealed memfd, as a bind mount of it would.
			const report = await runLauncher(`/proc/${holder.report.pid}/exe`);

			assert.equal(report.copied, false);
			assert.equal(report.exact, true);
			assert.equal(report.exe, holder.report.exe);
		} finally {
			await holder.stop();
		}
	});

	for (const args of [['--check', 'superset'], ['--check=superset'], ['--check', 'exact']]) {
		test(`launcher accepts ${args.join(' ')} and still copies from a plain file`, async () => {
			const launcher = await buildLauncher();

			const report = await runLauncher(launcher, args);

			assert.equal(report.copied, true);
			assert.equal(report.superset, true);
		});
	}

	for (const [args, message] of [
		[['--check', 'bogus'], /invalid --check value 'bogus'/],
		[['--check'], /--check needs a value/],
		[['--verbose'], /unknown argument '--verbose'/],
	] as const) {
		test(`launcher rejects ${args.join(' ')} with a message on stderr`, async () => {
			const launcher = await buildLauncher();

			await assert.rejects(runLauncher(launcher, args), message);
		});
	}

	test('launcher stops instead of copying again when its re-executed copy fails the check', async () => {
		const launcher = await buildLauncher();

		// A plain file started as if it were the copy must not loop through copy and re-exec.
		const result = await execa(launcher, [], {
			reject: false,
			env: { MEMFD_LAUNCHER_REEXEC: '1' },
		});

		assert.equal(result.exitCode, 1);
		assert.equal(result.stdout, '');
		assert.match(result.stderr, /re-executed copy still fails the exact seal check/);
	});

	test('launcher --hold keeps running after its report until SIGTERM, then exits 0', async () => {
		const launcher = await buildLauncher();
		const held = await startLauncher(launcher);

		assert.equal(held.report.copied, true);
		process.kill(held.report.pid, 0);

		await held.stop();
		assert.throws(() => process.kill(held.report.pid, 0), { code: 'ESRCH' });
	});

	test(`launcher built with payloadMb ${payloadMb} carries that many MiB of data in the file`, async () => {
		const launcher = await buildLauncher({ payloadMb });

		const contents = await readFile(launcher);
		const fillBytes = contents.reduce((count, byte) => count + (byte === payloadFill ? 1 : 0), 0);
		assert.ok((await stat(launcher)).size >= payloadMb * 1024 * 1024);
		assert.ok(fillBytes >= payloadMb * 1024 * 1024, `only ${fillBytes} payload bytes`);

		const report = await runLauncher(launcher);
		assert.equal(report.copied, true);
		assert.equal(report.exact, true);
	});

	test('buildLauncher reuses the previous build of the same source and flags', async () => {
		const first = await buildLauncher();
		const firstModified = (await stat(first)).mtimeMs;

		const second = await buildLauncher();

		assert.equal(second, first);
		assert.equal((await stat(second)).mtimeMs, firstModified);
	});

	test('buildLauncher builds a different binary for a different payload', async () => {
		assert.notEqual(await buildLauncher({ payloadMb: 1 }), await buildLauncher());
	});

	for (const payload of [-1, 1.5, Number.NaN]) {
		test(`buildLauncher rejects payloadMb ${payload}`, async () => {
			await assert.rejects(buildLauncher({ payloadMb: payload }), RangeError);
		});
	}
});
