// Row 5: the service's resident memory and open fds idle, with 1 and with 100 bindings of small
// files, and what each binding holds beyond the file itself (service, holder process, shmem).
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import type { BenchContext } from '../context.js';
import { writeRandomFile } from '../context.js';
import { median, meminfo, processStats, sleep } from '../measure.js';
import type { ProcessStats } from '../measure.js';
import type { Line } from '../report.js';

const BINDINGS = 100;
const FILE_SIZE = 4096;
// Bind-100-then-release cycles on the warm service; their median gives the per-binding figure.
const WARM_CYCLES = 5;
// A binding's share of the service's RSS counts as flat up to this: its record, the Map entry and
// the holder's ChildProcess object (kept until the holder exits) take a few KiB. A leaked buffer,
// fd or copy of the file would show far above it.
const FLAT_RSS_KIB = 8;

interface Cycle {
	before: ProcessStats;
	bound: ProcessStats;
	shmemKiB: number;
	holders: HolderMemory[];
}

interface HolderMemory {
	pid: number;
	pssKiB: number;
	rssKiB: number;
	pageTablesKiB: number;
}

/** Measures the footprint; leaves no binding behind. */
export async function measureFootprint(context: BenchContext): Promise<Line[]> {
	const pid = context.service.process.pid ?? 0;
	const files = Array.from({ length: BINDINGS }, (_, i) => join(context.work, `small-${i}`));
	files.forEach((file) => writeRandomFile(file, FILE_SIZE));

	await sleep(1000);
	const idle = await settledStats(pid);
	await bindOne(context, files[0]);
	const one = await settledStats(pid);
	for (const file of files.slice(1)) {
		await bindOne(context, file);
	}
	const first = await settledStats(pid);
	await releaseAll(context, files);

	// The first round grows V8's heap to its working size, and RSS seldom gives it back; later
	// rounds, from a warm service, show what a binding itself keeps.
	const cycles: Cycle[] = [];
	for (let i = 0; i < WARM_CYCLES; i++) {
		cycles.push(await warmCycle(context, pid, files));
	}
	const released = await settledStats(pid);

	const perBinding = cycles.map((cycle) => (cycle.bound.rssKiB - cycle.before.rssKiB) / BINDINGS);
	const serviceKiB = median(perBinding);
	const holders = cycles.flatMap((cycle) => cycle.holders);
	const holderKiB = median(holders.map((stat) => stat.pssKiB + stat.pageTablesKiB));
	const shmemKiB = median(cycles.map((cycle) => cycle.shmemKiB)) / BINDINGS - FILE_SIZE / 1024;
	const beyond = Math.max(serviceKiB, 0) + holderKiB + Math.max(shmemKiB, 0);
	const fds = [first.fds, ...cycles.map((cycle) => cycle.bound.fds)];
	const spread = `${Math.min(...perBinding).toFixed(1)} to ${Math.max(...perBinding).toFixed(1)}`;
	const cycleFigures = cycles.map(({ holders: _, ...figures }) => figures);
	context.details.footprint = {
		idle,
		one,
		first,
		cycles: cycleFigures,
		released,
		serviceKiB,
		holderKiB,
		shmemKiB,
		holderSample: holders[0],
	};

	return [
		{
			row: 5,
			measure: `Service open fds with ${BINDINGS} bindings`,
			figure: Math.max(...fds),
			baseline: one.fds,
			baselineLabel: '1 binding',
			unit: 'fds',
			goal: 'flat per binding',
			// The first Bind starts the hash worker thread, whose fds stay; what matters is that
			// the hundredth binding costs no more fds than the first.
			met: fds.every((count) => count === one.fds),
			note: `idle ${idle.fds}, 1 binding ${one.fds} (the first Bind starts the hash worker thread), ${BINDINGS} bindings ${fds.join(', ')} (first round, then warm rounds), all released ${released.fds}`,
		},
		{
			row: 5,
			measure: `Service RSS with ${BINDINGS} bindings (warm)`,
			figure: median(cycles.map((cycle) => cycle.bound.rssKiB)),
			baseline: median(cycles.map((cycle) => cycle.before.rssKiB)),
			baselineLabel: 'none bound (warm)',
			unit: 'KiB',
			goal: `flat per binding (<= ${FLAT_RSS_KIB} KiB each)`,
			met: serviceKiB <= FLAT_RSS_KIB,
			note:
				`idle ${idle.rssKiB} KiB, 1 binding ${one.rssKiB} KiB, ${BINDINGS} bindings ${first.rssKiB} KiB on the first round; ` +
				`on ${WARM_CYCLES} warm rounds ${serviceKiB.toFixed(1)} KiB per binding (median; ${spread}); all released ${released.rssKiB} KiB`,
		},
		{
			row: 5,
			measure: `Memory per binding beyond the ${FILE_SIZE / 1024} KiB file`,
			figure: beyond,
			baseline: FILE_SIZE / 1024,
			baselineLabel: 'file size',
			unit: 'KiB',
			goal: 'nothing beyond the memfd',
			met: beyond <= FLAT_RSS_KIB,
			note: `service ${serviceKiB.toFixed(1)} KiB + holder process (sleep) ${holderKiB.toFixed(0)} KiB PSS and page tables + shmem beyond the file ${shmemKiB.toFixed(1)} KiB; the holder's kernel stack and task structures are not counted`,
		},
	];
}

// Binds every file, samples, releases them all.
async function warmCycle(context: BenchContext, pid: number, files: string[]): Promise<Cycle> {
	const before = await settledStats(pid);
	const shmemBefore = meminfo('Shmem');
	const holderPids: number[] = [];
	for (const file of files) {
		holderPids.push(await bindOne(context, file));
	}
	const bound = await settledStats(pid);
	const shmemKiB = meminfo('Shmem') - shmemBefore;
	const holders = holderPids.map((holder) => holderMemory(holder));
	await releaseAll(context, files);
	return { before, bound, shmemKiB, holders };
}

// Binds one file and returns its holder's pid from the reply record.
async function bindOne(context: BenchContext, path: string): Promise<number> {
	const [record] = (await context.bus.service('Bind', path)) as [
		Record<string, { value: unknown }>,
	];
	return Number(record.HolderPid?.value ?? 0);
}

async function releaseAll(context: BenchContext, files: string[]): Promise<void> {
	for (const file of files) {
		await context.bus.service('Release', file);
	}
}

// The median of five samples 200 ms apart, so one garbage collection does not decide the figure.
async function settledStats(pid: number): Promise<ProcessStats> {
	const samples: ProcessStats[] = [];
	for (let i = 0; i < 5; i++) {
		await sleep(200);
		samples.push(processStats(pid));
	}
	return {
		rssKiB: median(samples.map((sample) => sample.rssKiB)),
		pssKiB: median(samples.map((sample) => sample.pssKiB)),
		fds: median(samples.map((sample) => sample.fds)),
	};
}

function holderMemory(pid: number): HolderMemory {
	const stats = processStats(pid);
	const status = readFileSync(`/proc/${pid}/status`, 'utf8');
	const pageTablesKiB = Number(/^VmPTE:\s+(\d+) kB$/m.exec(status)?.[1] ?? 0);
	return { pid, pssKiB: stats.pssKiB, rssKiB: stats.rssKiB, pageTablesKiB };
}
