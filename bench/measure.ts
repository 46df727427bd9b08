// Clocks, statistics and /proc readings shared by every benchmark row.
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

/** Milliseconds on the monotonic clock. */
export function now(): number {
	return Number(process.hrtime.bigint()) / 1e6;
}

/** Runs a command to completion and returns its wall time in ms; a failure throws. */
export function timeCommand(argv: string[], env: NodeJS.ProcessEnv = process.env): number {
	const start = now();
	const result = spawnSync(argv[0], argv.slice(1), {
		env,
		stdio: ['ignore', 'ignore', 'pipe'],
		encoding: 'utf8',
	});
	const elapsed = now() - start;
	if (result.status !== 0) {
		throw new Error(
			`Failed to run ${argv.join(' ')}: exit ${result.status ?? result.signal}: ${result.stderr}`,
		);
	}
	return elapsed;
}

/** Runs a command `runs` times after `warmup` untimed runs; returns every timed wall time. */
export function timeRuns(
	argv: string[],
	runs: number,
	warmup: number,
	env?: NodeJS.ProcessEnv,
): number[] {
	for (let i = 0; i < warmup; i++) {
		timeCommand(argv, env);
	}
	return Array.from({ length: runs }, () => timeCommand(argv, env));
}

/** The median of `values`; NaN for none. */
export function median(values: number[]): number {
	return percentile(values, 50);
}

/** The nearest-rank percentile `p` (0-100) of `values`. */
export function percentile(values: number[], p: number): number {
	if (values.length === 0) {
		return Number.NaN;
	}
	const sorted = [...values].sort((a, b) => a - b);
	const rank = Math.ceil((p / 100) * sorted.length);
	return sorted[Math.min(sorted.length, Math.max(rank, 1)) - 1];
}

/** A field of /proc/meminfo in KiB (e.g. `Shmem`). */
export function meminfo(field: string): number {
	const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(
		readFileSync('/proc/meminfo', 'utf8'),
	);
	if (match === null) {
		throw new Error(`Failed to find ${field} in /proc/meminfo`);
	}
	return Number(match[1]);
}

/** Resident memory, proportional share and open descriptors of one process. */
export interface ProcessStats {
	rssKiB: number;
	pssKiB: number;
	fds: number;
}

/** Reads RSS and PSS (smaps_rollup) and counts /proc/<pid>/fd. */
export function processStats(pid: number): ProcessStats {
	const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
	const field = (name: string) =>
		Number(new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(rollup)?.[1] ?? NaN);
	return { rssKiB: field('Rss'), pssKiB: field('Pss'), fds: readdirSync(`/proc/${pid}/fd`).length };
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
	return new Promise((resolve) => setTimeout(resolve, ms));
}
