// Bind racing a rename: another process keeps replacing the path with a regular file and with a
// symlink to a file elsewhere. A Bind may fail, but when it succeeds the mount must sit on the
// path itself, over the regular file, showing that file's content; never on the symlink's
// target, and never anywhere else.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readMountInfo } from '../../src/common/mountinfo.js';
import { ErrorName } from '../../src/common/names.js';
import { diskFileOrigin } from '../../src/service/mount-table.js';
import { unwrap } from '../client.js';
import type { Outcome } from '../client.js';
import { checkAgreement, memfdMounts, settle } from '../probe.js';
import { Tally } from '../report.js';
import type { AttackResult } from '../report.js';
import { openStage } from '../stage.js';
import type { Stage } from '../stage.js';

export interface SymlinkSwapOptions {
	rounds: number;
	/** The racer leaves each state in place for a random time up to this many ms. */
	dwellMs?: number;
}

const RACER = fileURLToPath(new URL('../racer.js', import.meta.url));

interface Scene {
	/** The path that is raced and bound. */
	path: string;
	/** The regular file hard-linked at `path` half of the time. */
	file: string;
	fileIno: number;
	fileContent: Buffer;
	/** What the symlink at `path` points to, in another folder. */
	target: string;
	targetContent: Buffer;
}

/** Runs `rounds` Binds of a path that a racer keeps swapping between a file and a symlink. */
export async function symlinkSwap(options: SymlinkSwapOptions): Promise<AttackResult> {
	const tally = new Tally('symlink-swap');
	const stage = await openStage();
	const scene = setScene(stage);
	const racer = spawn(
		process.execPath,
		[RACER, 'swap', scene.path, scene.file, scene.target, String(options.dwellMs ?? 3)],
		{
			stdio: ['ignore', 'ignore', 'pipe'],
		},
	);
	let racerError = '';
	racer.stderr.on('data', (chunk: Buffer) => (racerError += chunk.toString()));
	try {
		if (!(await settle(() => existsSync(scene.path), 10_000))) {
			throw new Error(`the racer did not start: ${racerError}`);
		}
		for (let round = 0; round < options.rounds && racer.exitCode === null; round++) {
			const outcome = await stage.client.call('Bind', 's', [scene.path], { timeout: 20_000 });
			tally.tried++;
			if (outcome.ok) {
				tally.count('bound-the-file');
				checkBound(tally, scene, outcome);
				await release(tally, stage, scene);
			} else {
				tally.failed++;
				tally.count(classify(outcome));

				checkRefused(tally, stage, scene, outcome);
			}
			if (tally.losses.length > 20) {
				tally.notes.push(`stopped after round ${round}: too many losses`);
				break;
			}
		}
		if (racer.exitCode !== null) {
			tally.loss(`the racer stopped: ${racerError.trim()}`);
		}
		racer.kill('SIGKILL');
		tally.alive = await stage.isAlive();
		if (!tally.alive) {
			tally.loss('the service died', 'alive');
		} else {
			for (const problem of await checkAgreement(stage.client, stage.sandbox.dir, stage.stateDir)) {
				tally.loss(`after the rounds: ${problem}`, 'mounts');
			}
		}
		return tally.result();
	} finally {
		// The racer must be gone before the sandbox folder is removed, or it refills it.
		const gone = new Promise((resolve) => racer.once('exit', resolve));
		racer.kill('SIGKILL');
		if (racer.exitCode === null && racer.signalCode === null) {
			await gone;
		}
		await stage.close();
	}
}

function setScene(stage: Stage): Scene {
	const here = join(stage.files, 'raced');
	const elsewhere = join(stage.files, 'elsewhere');
	mkdirSync(here);
	mkdirSync(elsewhere);
	const file = join(here, 'regular-file');
	const target = join(elsewhere, 'symlink-target');
	const fileContent = Buffer.from('#!/bin/sh\necho the regular file\n');
	const targetContent = Buffer.from('#!/bin/sh\necho the symlink target\n');
	writeFileSync(file, fileContent, { mode: 0o755 });
	writeFileSync(target, targetContent, { mode: 0o755 });
	return {
		path: join(here, 'prog'),
		file,
		fileIno: statSync(file).ino,
		fileContent,
		target,
		targetContent,
	};
}

// While bound, the path cannot be renamed over (EBUSY), so it is what the mount covers.
function checkBound(tally: Tally, scene: Scene, outcome: Outcome): void {
	const mounts = memfdMounts(join(scene.path, '..', '..'));
	if (mounts.length !== 1 || mounts[0].mountPoint !== scene.path) {
		tally.loss(
			`after a successful Bind the memfd mounts are [${mounts.map((mount) => mount.mountPoint).join(', ')}], expected only '${scene.path}'`,
			'mounts',
		);
	}
	const onTarget = readMountInfo().filter(
		(entry) => entry.mountPoint === scene.target || entry.mountPoint === scene.file,
	);
	if (onTarget.length > 0) {
		tally.loss(
			`a mount landed on '${onTarget[0].mountPoint}' (root ${onTarget[0].root})`,
			'mounts',
		);
	}
	const record = unwrap(outcome.body[0] as Record<string, { value: unknown }>);
	const expected = createHash('sha256').update(scene.fileContent).digest('hex');
	if (record.Sha256 !== expected) {
		const what =
			record.Sha256 === createHash('sha256').update(scene.targetContent).digest('hex')
				? "the symlink target's"
				: 'unknown';
		tally.loss(`Bind copied ${what} content (sha256 ${record.Sha256})`);
	}
	if (!readFileSync(scene.path).equals(scene.fileContent)) {
		tally.loss(`the bound path does not show the regular file's content`, 'mounts');
	}
	const under = diskFileOrigin(scene.path);
	if (under?.ino !== scene.fileIno) {
		tally.loss(
			`the mount covers inode ${under?.ino}, not the regular file (inode ${scene.fileIno})`,
			'mounts',
		);
	}
	if (!readFileSync(scene.target).equals(scene.targetContent)) {
		tally.loss(`the symlink target's content changed`);
	}
}

async function release(tally: Tally, stage: Stage, scene: Scene): Promise<void> {
	const outcome = await stage.client.call('Release', 's', [scene.path]);
	if (!outcome.ok) {
		tally.loss(`Release after a successful Bind: ${outcome.error}: ${outcome.text}`);
	}
	const left = memfdMounts(stage.sandbox.dir);
	if (left.length > 0) {
		tally.loss(`after Release a memfd mount is still at '${left[0].mountPoint}'`, 'mounts');
	}
}

// A refused Bind must leave nothing mounted, and refuse for a reason that fits the race.
function checkRefused(tally: Tally, stage: Stage, scene: Scene, outcome: Outcome): void {
	const left = memfdMounts(stage.sandbox.dir);
	if (left.length > 0) {
		tally.loss(
			`a refused Bind (${outcome.error}) left a memfd mount at '${left[0].mountPoint}'`,
			'mounts',
		);
	}
	if (
		/internal error/.test(outcome.text) ||
		!outcome.error.startsWith('org.opencontainers.MemfdBind1.Error.')
	) {
		tally.loss(`Bind('${scene.path}'): ${outcome.error}: ${outcome.text}`);
	}
}

function classify(outcome: Outcome): string {
	if (outcome.error === ErrorName.NotRegularFile && /symbolic link/.test(outcome.text)) {
		return 'refused-symlink';
	}
	if (/changed while/.test(outcome.text)) {
		return 'refused-path-changed';
	}
	return `refused:${outcome.error.replace(/^.*\.Error\./, '')}:${outcome.text.replace(/^.*: /, '')}`;
}
