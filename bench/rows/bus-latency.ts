// Row 4: List latency under load against a C service on the same bus: polkitd answering
// Peer.Ping, or, when polkitd cannot run, dbus-daemon answering its own Peer.Ping.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SERVICE, SERVICE_PING } from '../bus-client.js';
import type { Target } from '../bus-client.js';
import type { LoadRequest, LoadResult } from '../bus-load.js';
import type { BenchContext } from '../context.js';
import { writeRandomFile } from '../context.js';
import { percentile } from '../measure.js';
import type { Line } from '../report.js';
import { POLKIT_NAME } from '../polkitd.js';

// Clients and calls per client: bounded counts, a few thousand calls per level.
const LEVELS: Array<[number, number]> = [
	[1, 2000],
	[8, 400],
	[32, 150],
];
const WARMUP = 20;
const GOAL_RATIO = 1.5;
const LOAD_SCRIPT = join(fileURLToPath(new URL('..', import.meta.url)), 'bus-load.js');

const LIST: Target = { ...SERVICE, member: 'List' };
const POLKIT_PING: Target = {
	destination: POLKIT_NAME,
	path: '/org/freedesktop/PolicyKit1/Authority',
	interface: 'org.freedesktop.DBus.Peer',
	member: 'Ping',
};
const DAEMON_PING: Target = {
	destination: 'org.freedesktop.DBus',
	path: '/org/freedesktop/DBus',
	interface: 'org.freedesktop.DBus.Peer',
	member: 'Ping',
};

/** Measures each concurrency level, with one small file bound so List returns a record. */
export async function measureBusLatency(context: BenchContext): Promise<Line[]> {
	const usePolkit = 'pid' in context.polkitd;
	const baseline = usePolkit ? POLKIT_PING : DAEMON_PING;
	const baselineLabel = usePolkit ? 'polkitd Peer.Ping' : 'dbus-daemon Peer.Ping';
	const substitute = usePolkit
		? undefined
		: `polkitd could not be started (${(context.polkitd as { error: string }).error}); dbus-daemon's own Peer.Ping is the C baseline`;

	const bound = join(context.work, 'listed');
	writeRandomFile(bound, 64 << 10);
	await context.bus.service('Bind', bound);
	const levels = [];
	try {
		for (const [clients, calls] of LEVELS) {
			const baselineRun = load(context, baseline, clients, calls);
			const list = load(context, LIST, clients, calls);
			const ping = load(context, SERVICE_PING, clients, calls);
			levels.push({
				clients,
				calls,
				list: summary(list),
				baseline: summary(baselineRun),
				servicePing: summary(ping),
			});
		}
	} finally {
		await context.bus.service('Release', bound);
	}
	context.details.busLatency = { baseline: baselineLabel, levels };

	const lines: Line[] = [];
	for (const level of levels) {
		const common = { row: 4, baselineLabel, unit: 'ms' as const };
		const pingNote = `the service's own Peer.Ping: p50 ${level.servicePing.p50.toFixed(2)} ms, p99 ${level.servicePing.p99.toFixed(2)} ms`;
		lines.push(
			{
				...common,
				measure: `List p50, ${level.clients} client(s)`,
				figure: level.list.p50,
				baseline: level.baseline.p50,
			},
			{
				...common,
				measure: `List p99, ${level.clients} client(s)`,
				figure: level.list.p99,
				baseline: level.baseline.p99,
				goal: `p99 within ${GOAL_RATIO}x`,
				met: level.list.p99 <= GOAL_RATIO * level.baseline.p99,
				note: [`${level.clients * level.calls} calls; ${pingNote}`, substitute]
					.filter(Boolean)
					.join('; '),
			},
		);
	}
	return lines;
}

// Runs the load generator in its own process and returns every latency.
function load(context: BenchContext, target: Target, clients: number, calls: number): LoadResult {
	const request: LoadRequest = {
		address: context.sandbox.address,
		target,
		clients,
		calls,
		warmup: WARMUP,
	};
	const result = spawnSync(process.execPath, [LOAD_SCRIPT, JSON.stringify(request)], {
		encoding: 'utf8',
		maxBuffer: 64 << 20,
		timeout: 120_000,
	});
	if (result.status !== 0) {
		throw new Error(
			`Failed to run the load generator against ${target.destination}: ${result.stderr || result.signal}`,
		);
	}
	const parsed = JSON.parse(result.stdout) as LoadResult;
	if (parsed.errors.length > 0) {
		throw new Error(
			`Failed to call ${target.destination} ${target.member}: ${parsed.errors.length} errors, first ${parsed.errors[0]}`,
		);
	}
	return parsed;
}

function summary(result: LoadResult) {
	return {
		p50: percentile(result.latencies, 50),
		p99: percentile(result.latencies, 99),
		max: percentile(result.latencies, 100),
		callsPerSecond: (result.latencies.length / result.elapsedMs) * 1000,
	};
}
