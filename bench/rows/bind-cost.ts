// Row 3: what Bind costs against the copy floor. The service-side time is the Bind round trip
// minus the round trip of a Peer.Ping the service answers at once; the floor is `cp` of the same
// file into /dev/shm (a private tmpfs here). End-to-end busctl and memfdctl times sit beside it.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { MEMFDCTL } from '../../test/helpers/sandbox.js';
import { SERVICE, SERVICE_PING } from '../bus-client.js';
import type { BenchContext } from '../context.js';
import { writeRandomFile } from '../context.js';
import { median, timeCommand, timeRuns } from '../measure.js';
import type { Line } from '../report.js';

const SIZES_MIB = [1, 16, 128];
const SHM_COPY = '/dev/shm/memfd-bind-bench-copy';
const GOAL_RATIO = 2;
// More rounds for small files, whose times are short and noisy.
const REPS: Record<number, number> = { 1: 11, 16: 7, 128: 5 };

/** Figures for one file size, medians in ms. */
export interface BindCost {
	sizeMiB: number;
	cpMs: number;
	serviceMs: number;
	busctlMs: number;
	memfdctlMs: number;
	pingMs: number;
}

/** Measures every size; leaves nothing bound. */
export async function measureBindCost(context: BenchContext): Promise<Line[]> {
	const spawnMs = median(timeRuns(['/bin/true'], 20, 3));
	const costs: BindCost[] = [];
	const samples: Record<string, unknown> = {};
	for (const sizeMiB of SIZES_MIB) {
		const file = join(context.work, `blob-${sizeMiB}m`);
		writeRandomFile(file, sizeMiB << 20);
		const reps = REPS[sizeMiB] ?? 5;
		const raw = await measureSize(context, file, reps);
		samples[`${sizeMiB}MiB`] = raw;
		costs.push({
			sizeMiB,
			cpMs: median(raw.cp),
			serviceMs: median(raw.bind) - median(raw.ping),
			busctlMs: median(raw.busctl),
			memfdctlMs: median(raw.memfdctl),
			pingMs: median(raw.ping),
		});
		rmSync(file);
	}
	context.details.bindCost = { spawnMs, costs, samples };

	const lines: Line[] = [];
	for (const cost of costs) {
		const cp = { baseline: cost.cpMs, baselineLabel: 'cp to /dev/shm', unit: 'ms' as const };
		lines.push(
			{
				row: 3,
				measure: `Bind ${cost.sizeMiB} MiB, service side (sha256 included)`,
				figure: cost.serviceMs,
				...cp,
				goal: `within ${GOAL_RATIO}x of cp`,
				met: cost.serviceMs <= GOAL_RATIO * cost.cpMs,
				note: `Bind round trip ${(cost.serviceMs + cost.pingMs).toFixed(2)} ms minus Peer.Ping round trip ${cost.pingMs.toFixed(2)} ms; cp's time includes starting a process (${spawnMs.toFixed(2)} ms for /bin/true)`,
			},
			{
				row: 3,
				measure: `Bind ${cost.sizeMiB} MiB end to end: busctl call`,
				figure: cost.busctlMs,
				...cp,
			},
			{
				row: 3,
				measure: `Bind ${cost.sizeMiB} MiB end to end: memfdctl bind`,
				figure: cost.memfdctlMs,
				...cp,
			},
		);
	}
	return lines;
}

// Alternates the copy and the three ways of binding, so the page cache and drift treat all alike.
async function measureSize(context: BenchContext, file: string, reps: number) {
	const raw = {
		cp: [] as number[],
		bind: [] as number[],
		ping: [] as number[],
		busctl: [] as number[],
		memfdctl: [] as number[],
	};
	const { sandbox, bus } = context;
	const busctl = [
		'busctl',
		'--address',
		sandbox.address,
		'call',
		SERVICE.destination,
		SERVICE.path,
		SERVICE.interface,
		'Bind',
		's',
		file,
	];
	timeCommand(['cp', file, SHM_COPY]); // warms the page cache
	rmSync(SHM_COPY);
	for (let rep = 0; rep < reps; rep++) {
		raw.cp.push(timeCommand(['cp', file, SHM_COPY]));
		rmSync(SHM_COPY);

		for (let i = 0; i < 5; i++) {
			raw.ping.push(await bus.time(SERVICE_PING));
		}
		raw.bind.push(await bus.time({ ...SERVICE, member: 'Bind', signature: 's', body: [file] }));
		await bus.service('Release', file);

		raw.busctl.push(timeCommand(busctl, sandbox.env));
		await bus.service('Release', file);

		raw.memfdctl.push(timeCommand([process.execPath, MEMFDCTL, 'bind', file], sandbox.env));
		await bus.service('Release', file);
	}
	return raw;
}
