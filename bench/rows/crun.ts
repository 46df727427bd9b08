// Row 2: Debian's crun, per `crun --version`: mount-family system calls (strace -f -c) and
// median wall time, unbound (crun bind-mounts /proc/self/exe to protect itself) and bound.
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { BenchContext } from '../context.js';
import { median, timeCommand, timeRuns } from '../measure.js';
import type { Line } from '../report.js';

const CRUN = '/usr/bin/crun';
const MOUNT_CALLS = [
	'mount',
	'umount2',
	'open_tree',
	'move_mount',
	'fsopen',
	'fsmount',
	'mount_setattr',
];
const TRACED_RUNS = 5;
// Timed runs per block; blocks alternate unbound, bound, unbound, bound so drift hits both.
const BLOCK_RUNS = 100;
const WARMUP = 10;

/** Measures both states; leaves crun unbound. */
export async function measureCrun(context: BenchContext): Promise<Line[]> {
	const traces: Record<string, Record<string, number>[]> = { unbound: [], bound: [] };
	const times: Record<string, number[]> = { unbound: [], bound: [] };
	for (const state of ['unbound', 'bound', 'unbound', 'bound'] as const) {
		if (state === 'bound') {
			await context.bus.service('Bind', CRUN);
		}
		try {
			if (traces[state].length === 0) {
				for (let i = 0; i < TRACED_RUNS; i++) {
					traces[state].push(countMountCalls(context.work));
				}
			}
			times[state].push(...timeRuns([CRUN, '--version'], BLOCK_RUNS, WARMUP));
		} finally {
			if (state === 'bound') {
				await context.bus.service('Release', CRUN);
			}
		}
	}

	const calls = (state: string) => median(traces[state].map((trace) => total(trace)));
	const unboundCalls = calls('unbound');
	const boundCalls = calls('bound');
	const unboundMs = median(times.unbound);
	const boundMs = median(times.bound);
	context.details.crun = { traces, times };
	const spelled = (trace: Record<string, number>) =>
		Object.entries(trace)
			.map(([name, count]) => `${count} ${name}`)
			.join(' + ') || 'none';

	return [
		{
			row: 2,
			measure: 'crun --version: mount-family system calls per run',
			figure: boundCalls,
			baseline: unboundCalls,
			baselineLabel: 'unbound',
			unit: 'calls',
			goal: 'bound makes no mount call',
			met: boundCalls === 0,
			note: `unbound: ${spelled(traces.unbound[0])}; bound: ${spelled(traces.bound[0])} (strace -f -c, median of ${TRACED_RUNS} runs)`,
		},
		{
			row: 2,
			measure: 'crun --version: median wall time',
			figure: boundMs,
			baseline: unboundMs,
			baselineLabel: 'unbound',
			unit: 'ms',
			goal: 'bound is faster',
			met: boundMs < unboundMs,
			note: `median of ${times.bound.length} runs each, in alternating blocks of ${BLOCK_RUNS}; wall time includes Node's spawn`,
		},
	];
}

// Runs crun once under `strace -f -c` and returns the count of each mount-family call made.
function countMountCalls(work: string): Record<string, number> {
	const output = join(work, 'crun.strace');
	timeCommand([
		'strace',
		'-f',
		'-c',
		'-o',
		output,
		'-e',
		`trace=${MOUNT_CALLS.join(',')}`,
		CRUN,
		'--version',
	]);
	const counts: Record<string, number> = {};
	for (const line of readFileSync(output, 'utf8').split('\n')) {
		// "% time  seconds  usecs/call  calls  errors  syscall"; errors may be blank.
		const fields = line.trim().split(/\s+/);
		const name = fields[fields.length - 1];
		if (MOUNT_CALLS.includes(name) && /^\d/.test(fields[0])) {
			counts[name] = Number(fields[3]);
		}
	}
	rmSync(output, { force: true });
	return counts;
}

function total(trace: Record<string, number>): number {
	return Object.values(trace).reduce((sum, count) => sum + count, 0);
}
