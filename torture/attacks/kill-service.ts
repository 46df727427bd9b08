// kill -9 of the service at random moments during Bind and Release, then a restart: the mount
// table, the state folder and List must agree afterwards, with no stale mount and no holder
// that nothing uses. Most moments are drawn uniformly over the call's usual duration; some are
// taken the instant the service starts a holder, the narrowest window of a Bind.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MNT_DETACH, UMOUNT_NOFOLLOW, umount2 } from '../../src/common/libc.js';
import type { Outcome } from '../client.js';
import { checkAgreement, holderPids, memfdHolders, memfdMounts, settle } from '../probe.js';
import { Random, Tally } from '../report.js';
import type { AttackResult } from '../report.js';
import { openStage } from '../stage.js';
import type { Stage } from '../stage.js';

export interface KillServiceOptions {
	kills: number;
	seed: number;
}

interface Target {
	path: string;
	/** Typical duration of a Bind and a Release of this file, in ms. */
	bindMs: number;
	releaseMs: number;
}

/** Kills the service `kills` times in the middle of a Bind or a Release and checks each restart. */
export async function killService(options: KillServiceOptions): Promise<AttackResult> {
	const tally = new Tally('kill-9');
	const stage = await openStage();
	try {
		const random = new Random(options.seed);
		const targets = await calibrate(stage, [
			writeTarget(stage, 'big-1', 32 << 20),
			writeTarget(stage, 'big-2', 32 << 20),
			writeTarget(stage, 'small-1', 64 << 10),
			writeTarget(stage, 'small-2', 64 << 10),
		]);
		tally.notes.push(
			`durations: ${targets.map((target) => `${target.path.replace(/.*\//, '')} bind ${target.bindMs.toFixed(1)} ms release ${target.releaseMs.toFixed(1)} ms`).join(', ')}`,
		);

		for (let kill = 0; kill < options.kills; kill++) {
			const target = random.pick(targets);
			// Half the kills hit a Bind, half a Release; the path is put in the state each needs.
			const member = kill % 2 === 0 ? 'Bind' : 'Release';
			const bound = memfdMounts(stage.sandbox.dir).some(
				(mount) => mount.mountPoint === target.path,
			);
			if (bound === (member === 'Bind')) {
				const undo = member === 'Bind' ? 'Release' : 'Bind';
				await expectOk(
					stage.client.call(undo, 's', [target.path]),
					`${undo}('${target.path}') between kills`,
				);
			}
			const onSpawn = member === 'Bind' && random.int(3) === 0;
			const delay = random.next() * (member === 'Bind' ? target.bindMs : target.releaseMs);
			const moment = onSpawn ? 'when a holder starts' : `${delay.toFixed(2)} ms in`;

			const answer = stage.client.call(member, 's', [target.path], { timeout: 30_000 });
			const killed = await killAt(stage, onSpawn ? 'spawn' : delay, target.bindMs * 3);
			const outcome = await answer;
			tally.tried++;
			if (!outcome.ok) {
				tally.failed++;
			}
			await stage.restart();
			const after = (await stage.client.list()).some((record) => record.Path === target.path);
			tally.count(
				`${member}:${phase(outcome, killed)}:${after ? 'bound' : 'unbound'}-after-restart`,
			);

			const problems = await checkAgreement(stage.client, stage.sandbox.dir, stage.stateDir);
			for (const problem of problems) {
				tally.loss(
					`kill ${kill + 1} (${member} of '${target.path}', ${moment}): ${problem}`,
					'mounts',
				);
			}
			if (problems.length > 0) {
				await reset(stage);
			}
		}

		tally.alive = await stage.isAlive();
		if (!tally.alive) {
			tally.loss('the service did not come back', 'alive');
		}
		for (const target of targets) {
			await stage.client.call('Release', 's', [target.path]);
		}
		const held = memfdHolders(stage.sandbox.dir);
		if (held.length > 0 || memfdMounts(stage.sandbox.dir).length > 0) {
			tally.loss(
				`after releasing everything, memfds are still held by ${held.map((entry) => entry.pid).join(', ')}`,
			);
		}
		return tally.result();
	} finally {
		await stage.close();
	}
}

function writeTarget(stage: Stage, name: string, size: number): string {
	const path = join(stage.files, name);
	const content = Buffer.alloc(size, name);
	content.write('#!/bin/sh\necho bound\nexit 0\n');
	writeFileSync(path, content, { mode: 0o755 });
	return path;
}

// Times one Bind and one Release of each file, so kill moments fall inside the calls.
async function calibrate(stage: Stage, paths: string[]): Promise<Target[]> {
	const targets: Target[] = [];
	for (const path of paths) {
		let started = performance.now();
		await expectOk(stage.client.call('Bind', 's', [path]), `Bind('${path}') before the attack`);
		const bindMs = performance.now() - started;
		started = performance.now();
		await expectOk(
			stage.client.call('Release', 's', [path]),
			`Release('${path}') before the attack`,
		);
		targets.push({ path, bindMs, releaseMs: performance.now() - started });
	}
	return targets;
}

async function expectOk(call: Promise<Outcome>, what: string): Promise<void> {
	const outcome = await call;
	if (!outcome.ok) {
		throw new Error(`${what} failed: ${outcome.error}: ${outcome.text}`);
	}
}

// Kills the service `delay` ms from now, or as soon as it has a new child (a holder); returns
// whether the service was still running to be killed.
async function killAt(stage: Stage, when: number | 'spawn', limitMs: number): Promise<boolean> {
	const child = stage.service.process;
	const pid = child.pid!;
	const started = performance.now();
	const before = childrenOf(pid);
	for (;;) {
		const elapsed = performance.now() - started;
		if (
			when === 'spawn'
				? childrenOf(pid).some((entry) => !before.includes(entry)) || elapsed > limitMs
				: elapsed >= when
		) {
			break;
		}
		await new Promise((resolve) => setImmediate(resolve));
	}
	const running = child.exitCode === null && child.signalCode === null;
	await stage.service.stop('SIGKILL');
	return running;
}

function childrenOf(pid: number): string[] {
	try {
		return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(' ');
	} catch {
		return [];
	}
}

// Where the kill landed, as far as the caller can tell.
function phase(outcome: Outcome, killed: boolean): string {
	if (outcome.ok) {
		return 'answered-before-kill';
	}
	if (!killed) {
		return 'service-gone-already';
	}
	return outcome.error === 'org.freedesktop.DBus.Error.NoReply'
		? 'killed-mid-call'
		: outcome.error.replace(/^.*\.Error\./, '');
}

// After a loss, start the next round from a clean slate: no service, holders, mounts or state.
async function reset(stage: Stage): Promise<void> {
	await stage.service.stop('SIGKILL');
	for (const pid of holderPids(stage.sandbox.dir)) {
		process.kill(pid, 'SIGKILL');
	}
	for (const mount of memfdMounts(stage.sandbox.dir)) {
		// Without NOFOLLOW the path would lead through the magic link to the memfd itself.
		umount2(mount.mountPoint, MNT_DETACH | UMOUNT_NOFOLLOW);
	}
	rmSync(join(stage.stateDir, 'bindings.json'), { force: true });
	await settle(() => holderPids(stage.sandbox.dir).length === 0, 2000);
	await stage.restart();
}
