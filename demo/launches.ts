// The Shmem section: 20 concurrent `launcher --hold` runs unbound, then bound, and the table.
// Shmem is host-wide, so every figure is a change from a reading taken just before, read once
// every launch has printed its report line (by then each has made, or skipped, its copy).
import { readFileSync } from 'node:fs';
import { startLauncher } from '../test/helpers/launcher.js';
import type { HeldLauncher, LauncherReport } from '../test/helpers/launcher.js';
import { viewPath } from './inspect.js';
import { DemoError, deltaMib, expect, mib, note, section, shown, table } from './transcript.js';

export const LAUNCHES = 20;
export const PAYLOAD_MB = 13;

/** Shmem changes in KiB, each from a reading taken just before, and the launcher's size. */
export interface Figures {
	targetBinding: number;
	launcherBinding: number;
	launcherSize: number;
	unbound: number;
	bound: number;
	/** The change between two readings with nothing run in between: the host's own noise. */
	idle: number;
}

/** Runs memfdctl with these arguments, showing the command, and returns its stdout. */
export type Memfdctl = (args: string[]) => string;

const SAMPLES = 5;
const SAMPLE_GAP_MS = 10;
// The widest spread among the samples of one reading so far: what else on the host moved Shmem.
let widestSpread = 0;

/**
 * Reads Shmem from /proc/meminfo, in KiB, once it is settled. The kernel keeps page counts per
 * CPU and folds them into the global figure every vm.stat_interval (1 s), so a reading taken
 * right after a change misses up to a few hundred KiB: wait that long first. Then take the
 * median of a few reads, so a blip from another process on the host does not become a figure.
 */
export async function shmemKib(): Promise<number> {
	await sleep(statIntervalMs() + 200);
	const samples: number[] = [];
	for (let i = 0; i < SAMPLES; i++) {
		if (i > 0) {
			await sleep(SAMPLE_GAP_MS);
		}
		samples.push(readShmem());
	}
	samples.sort((a, b) => a - b);
	widestSpread = Math.max(widestSpread, samples[SAMPLES - 1] - samples[0]);
	return samples[Math.floor(SAMPLES / 2)];
}

function statIntervalMs(): number {
	try {
		return Number(readFileSync('/proc/sys/vm/stat_interval', 'utf8').trim()) * 1000 || 1000;
	} catch {
		return 1000;
	}
}

function sleep(ms: number): Promise<void> {
	return new Promise((resolve) => setTimeout(resolve, ms));
}

function readShmem(): number {
	const match = /^Shmem:\s+(\d+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'));
	if (match === null) {
		throw new DemoError('Failed to read Shmem from /proc/meminfo: no Shmem line');
	}
	return Number(match[1]);
}

/** Measures 20 launches of `launcher` unbound, binds it, measures again and releases it. */
export async function measureLaunches(
	memfdctl: Memfdctl,
	launcher: string,
	readyMs: number,
): Promise<Omit<Figures, 'targetBinding'>> {
	section(`Shmem cost of ${LAUNCHES} concurrent runc-style launches`);
	const size = viewPath(launcher).size;
	note(
		[
			`launcher: test/fixtures/launcher.c with a ${PAYLOAD_MB} MiB payload, ${mib(size / 1024)}, built`,
			`with cc while the bus started (ready after ${(readyMs / 1000).toFixed(1)} s; cached for later runs).`,
			'Like runc 1.1.15, unless /proc/self/exe is a memfd sealed exactly 0xf, it copies itself',
			'into a new sealed memfd and re-executes from that copy.',
		].join('\n'),
	);

	const quiet = await shmemKib();
	const idle = (await shmemKib()) - quiet;
	const unbound = await launchMany(
		launcher,
		(report) => report.copied,
		'copied itself into its own memfd',
	);

	const before = await shmemKib();
	memfdctl(['bind', launcher]);
	const launcherBinding = (await shmemKib()) - before;

	const bound = await launchMany(
		launcher,
		(report) => !report.copied && report.exact && report.exe.startsWith('/memfd:memfd-bind:'),
		'ran from the bound copy, no copy of its own',
	);
	memfdctl(['release', launcher]);
	return { launcherBinding, launcherSize: size, unbound, bound, idle };
}

/** Prints the figures side by side, unbound and bound. */
export function printFigures(target: string, figures: Figures): void {
	process.stdout.write(
		'\nShmem cost, from /proc/meminfo, each a change from a reading just before:\n\n',
	);
	const launcherTotal = (bound: boolean) =>
		deltaMib(bound ? figures.launcherBinding + figures.bound : figures.unbound);
	table(
		['', 'unbound', 'bound'],
		[
			[`binding of ${target}`, 'none', deltaMib(figures.targetBinding)],
			[
				`binding of the launcher (${mib(figures.launcherSize / 1024)})`,
				'none',
				deltaMib(figures.launcherBinding),
			],
			[
				`${LAUNCHES} concurrent launcher --hold`,
				deltaMib(figures.unbound),
				deltaMib(figures.bound),
			],
			['launcher total: binding + launches', launcherTotal(false), launcherTotal(true)],
		],
	);
	// Say how steady Shmem was, so a busy host's noise is not taken for a cost.
	note(
		[
			`Shmem is host-wide. Each reading waits ${statIntervalMs() / 1000} s (vm.stat_interval) for the kernel's per-CPU`,
			`counts to settle, then takes the median of ${SAMPLES} reads ${SAMPLE_GAP_MS} ms apart. Noise from other`,
			`activity on this host: ${deltaMib(figures.idle)} between two readings with nothing run in between,`,
			`and at most ${mib(widestSpread)} within one reading.`,
		].join('\n'),
	);
}

// Starts the launches, prints one report line, checks every report, stops them; returns Shmem.
async function launchMany(
	path: string,
	expected: (report: LauncherReport) => boolean,
	meaning: string,
): Promise<number> {
	shown(`for i in $(seq ${LAUNCHES}); do ${path} --hold & done`);
	const before = await shmemKib();
	const launches = await launchHeld(path, LAUNCHES);
	const cost = (await shmemKib()) - before;
	try {
		process.stdout.write(`${JSON.stringify(launches.reports[0])}\n`);
		const good = launches.reports.filter(expected).length;
		note(`... ${LAUNCHES - 1} more lines like it: ${good} of ${LAUNCHES} ${meaning}`);
		expect(good === LAUNCHES, `only ${good} of ${LAUNCHES} launches ${meaning}`);
		note(`Shmem ${deltaMib(cost)} with all ${LAUNCHES} running`);
	} finally {
		shown(`kill -TERM ${launches.reports.map((report) => report.pid).join(' ')}`);
		await launches.stop();
	}
	return cost;
}

// Starts `count` launches of `path --hold` at once; resolves when every one has reported.
async function launchHeld(
	path: string,
	count: number,
): Promise<{ reports: LauncherReport[]; stop(): Promise<void> }> {
	const results = await Promise.allSettled(
		Array.from({ length: count }, () => startLauncher(path)),
	);
	const held = results
		.filter(
			(result): result is PromiseFulfilledResult<HeldLauncher> => result.status === 'fulfilled',
		)
		.map((result) => result.value);
	const stop = async () => {
		const stopped = await Promise.allSettled(held.map((launch) => launch.stop()));
		throwFirstRejection(stopped);
	};

	try {
		throwFirstRejection(results);
	} catch (error: unknown) {
		await stop().catch(() => undefined);
		throw error;
	}
	return { reports: held.map((launch) => launch.report), stop };
}

function throwFirstRejection(results: PromiseSettledResult<unknown>[]): void {
	const failure = results.find((result) => result.status === 'rejected');
	if (failure !== undefined) {
		throw new DemoError(((failure as PromiseRejectedResult).reason as Error).message);
	}
}
