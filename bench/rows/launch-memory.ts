// Row 1: Shmem growth for 20 concurrent long-lived launches of the runc-style launcher with its
// ~13 MiB payload, unbound (each launch copies itself into a memfd) and bound (none does).
import { copyFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startLauncher } from '../../test/helpers/launcher.js';
import type { BenchContext } from '../context.js';
import { median, meminfo, sleep } from '../measure.js';
import type { Line } from '../report.js';

const LAUNCHES = 20;
const ROUNDS = 3;
// Shmem is machine-wide; other work on the host moves it by a few pages. Below this, per launch,
// a growth counts as zero.
const NOISE_KIB = 64;

interface Round {
	shmemKiB: number;
	copied: number;
}

/** Measures both states; leaves the launcher unbound. */
export async function measureLaunchMemory(context: BenchContext): Promise<Line[]> {
	const launcher = join(context.work, 'launcher-13m');
	copyFileSync(context.launcher, launcher);
	const sizeKiB = statSync(launcher).size / 1024;

	const unbound = await rounds(launcher);
	const beforeBind = meminfo('Shmem');
	await context.bus.service('Bind', launcher);
	const bindKiB = meminfo('Shmem') - beforeBind;
	let bound: Round[];
	try {
		bound = await rounds(launcher);
	} finally {
		await context.bus.service('Release', launcher);
	}

	const unboundKiB = median(unbound.map((round) => round.shmemKiB));
	const boundKiB = median(bound.map((round) => round.shmemKiB));
	const perUnbound = unboundKiB / LAUNCHES;
	const perBound = boundKiB / LAUNCHES;
	const boundCopies = Math.max(...bound.map((round) => round.copied));
	const unboundCopies = Math.min(...unbound.map((round) => round.copied));
	context.details.launchMemory = {
		launches: LAUNCHES,
		binaryKiB: sizeKiB,
		bindKiB,
		unbound,
		bound,
	};

	const unboundNearSize = Math.abs(perUnbound - sizeKiB) <= sizeKiB * 0.1;
	return [
		{
			row: 1,
			measure: `Shmem growth, ${LAUNCHES} held launches of a ${(sizeKiB / 1024).toFixed(1)} MiB launcher`,
			figure: boundKiB,
			baseline: unboundKiB,
			baselineLabel: 'unbound',
			unit: 'KiB',
			goal: "bound adds 0 kB per launch; unbound adds the binary's size",
			met:
				perBound <= NOISE_KIB && boundCopies === 0 && unboundNearSize && unboundCopies === LAUNCHES,
			note:
				`per launch: bound ${perBound.toFixed(0)} KiB (${boundCopies} of ${LAUNCHES} launches copied), ` +
				`unbound ${perUnbound.toFixed(0)} KiB (${unboundCopies} of ${LAUNCHES} copied; binary ${sizeKiB.toFixed(0)} KiB); ` +
				`median of ${ROUNDS} rounds; the bound copy itself (${bindKiB} KiB once, made by Bind) is outside the growth`,
		},
	];
}

async function rounds(launcher: string): Promise<Round[]> {
	const results: Round[] = [];
	for (let i = 0; i < ROUNDS; i++) {
		results.push(await heldRound(launcher));
		await sleep(200);
	}
	return results;
}

// Starts LAUNCHES launchers with --hold, reads Shmem once every one has reported, stops them.
async function heldRound(launcher: string): Promise<Round> {
	const before = meminfo('Shmem');
	const started = await Promise.allSettled(
		Array.from({ length: LAUNCHES }, () => startLauncher(launcher)),
	);
	const after = meminfo('Shmem');
	const held = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
	await Promise.all(held.map((launch) => launch.stop()));
	const failed = started.find((result) => result.status === 'rejected');
	if (failed !== undefined) {
		throw (failed as PromiseRejectedResult).reason;
	}
	return { shmemKiB: after - before, copied: held.filter((launch) => launch.report.copied).length };
}
