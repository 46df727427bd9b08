// A file that changes while Bind copies it: a writer process waits until the service holds the
// new memfd, then appends to the file, cuts it short, or overwrites its start and end in place.
// Bind must fail with Failed, leave nothing mounted and keep no memfd; a Bind that wins the race
// must hold an exact copy of the file as it was before or after the change, never a mix.
import { spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorName } from '../../src/common/names.js';
import { unwrap } from '../client.js';
import { fdCount, holderPids, memfdHolders, memfdMounts, settle, shmemKiB } from '../probe.js';
import { Tally } from '../report.js';
import type { AttackResult } from '../report.js';
import { openStage } from '../stage.js';
import type { Stage } from '../stage.js';

export interface ResizeOptions {
	/** Rounds of each kind of change. */
	rounds: number;
	kinds?: Kind[];
	/** Size of the file, in bytes; large enough that the copy takes a while. */
	size?: number;
}

const RACER = fileURLToPath(new URL('../racer.js', import.meta.url));

/** How the writer changes the file: append 1 MiB, cut it in half, overwrite 1 MiB at each end. */
export type Kind = 'grow' | 'shrink' | 'rewrite';

/** Binds a large file while a writer grows or shrinks it, `rounds` times each. */
export async function resizeDuringCopy(options: ResizeOptions): Promise<AttackResult> {
	const tally = new Tally('grow-shrink');
	const stage = await openStage();
	try {
		const size = options.size ?? 128 << 20;
		const path = join(stage.files, 'big');
		const content = randomFillSync(Buffer.alloc(size));
		const sha256 = createHash('sha256').update(content).digest('hex');
		const pid = stage.service.process.pid!;
		await stage.warmUp();
		const fdsBefore = fdCount(pid);
		const shmemBefore = shmemKiB();

		const kinds = options.kinds ?? ['grow', 'shrink', 'rewrite'];
		const rewritten = Buffer.from(content);
		rewritten.fill(0x42, 0, 1 << 20).fill(0x42, size - (1 << 20));
		const rewrittenSha256 = createHash('sha256').update(rewritten).digest('hex');
		for (let round = 0; round < options.rounds * kinds.length; round++) {
			const how = kinds[round % kinds.length];
			writeFileSync(path, content, { mode: 0o755 });
			const change = how === 'shrink' ? String(size / 2) : String(1 << 20);
			const writer = await startWriter(pid, path, how, change);
			const outcome = await stage.client.call('Bind', 's', [path], { timeout: 60_000 });
			const fired = await writer.done;
			tally.tried++;
			if (outcome.ok) {
				const record = unwrap(outcome.body[0] as Record<string, { value: unknown }>);
				tally.count(`${how}:bound-${fired}`);
				const exact =
					record.Sha256 === sha256 || (how === 'rewrite' && record.Sha256 === rewrittenSha256);
				if (!exact || record.Size !== BigInt(size)) {
					tally.loss(
						`a Bind that overlapped a ${how} bound a torn copy (size ${record.Size}, sha256 ${record.Sha256}), neither the file before nor after`,
					);
				}
				await stage.client.call('Release', 's', [path]);
			} else {
				tally.failed++;
				tally.count(`${how}:${outcome.error.replace(/^.*\.Error\./, '')}-${fired}`);
				if (outcome.error !== ErrorName.Failed) {
					tally.loss(
						`Bind during a ${how} failed with ${outcome.error}, expected Failed: ${outcome.text}`,
					);
				}
			}
			await expectNothingLeft(tally, stage, fdsBefore, `after ${how} round ${round}`);
		}
		tally.alive = await stage.isAlive();
		if (!tally.alive) {
			tally.loss('the service died', 'alive');
		}
		// Each copy was `size` bytes of shared memory; all of it must be given back.
		const back = await settle(() => shmemKiB() <= shmemBefore + size / 1024 / 4, 5000);
		tally.notes.push(
			`Shmem ${shmemBefore} -> ${shmemKiB()} KiB (machine-wide; each copy is ${size >> 10} KiB)`,
		);
		if (!back) {
			tally.loss(`Shmem stayed at ${shmemKiB()} KiB, ${shmemBefore} KiB before`);
		}
		return tally.result();
	} finally {
		await stage.close();
	}
}

// Starts the writer and waits until it watches; `done` says 'changed' or 'missed' at its end.
async function startWriter(
	pid: number,
	path: string,
	how: string,
	bytes: string,
): Promise<{ done: Promise<string> }> {
	const child = spawn(process.execPath, [RACER, 'resize', String(pid), path, how, bytes], {
		stdio: ['ignore', 'pipe', 'inherit'],
	});
	let output = '';
	child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
	const done = new Promise<string>((resolve) =>
		child.once('exit', () => resolve(output.includes('changed') ? 'changed' : 'missed')),
	);
	if (!(await settle(() => output.includes('ready') || child.exitCode !== null, 10_000))) {
		child.kill('SIGKILL');
		throw new Error('the writer did not start');
	}
	return { done };
}

async function expectNothingLeft(
	tally: Tally,
	stage: Stage,
	fdsBefore: number,
	when: string,
): Promise<void> {
	const mounts = memfdMounts(stage.sandbox.dir);
	if (mounts.length > 0) {
		tally.loss(`${when}: a memfd mount is at '${mounts[0].mountPoint}'`, 'mounts');
	}
	const held = memfdHolders(stage.sandbox.dir);
	if (held.length > 0 || holderPids(stage.sandbox.dir).length > 0) {
		tally.loss(
			`${when}: memfds are still held: ${held.map((entry) => `pid ${entry.pid} fd ${entry.fd}`).join(', ')}`,
		);
	}
	const pid = stage.service.process.pid!;
	if (!(await settle(() => fdCount(pid) <= fdsBefore, 2000))) {
		tally.loss(`${when}: the service has ${fdCount(pid)} fds open, ${fdsBefore} before`);
	}
}
