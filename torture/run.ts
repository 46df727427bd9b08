// npm run torture: runs every attack against a private bus and the real service, inside a
// private mount and pid namespace, prints one summary line per attack and exits non-zero when
// any attack found a loss. Usage: run.js [--seed N] [--only name,name] [--quick]
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { busRestart } from './attacks/bus-restart.js';
import { concurrentClients } from './attacks/concurrent.js';
import { killService } from './attacks/kill-service.js';
import { malformedCalls } from './attacks/malformed.js';
import { memfdNoexec } from './attacks/noexec.js';
import { resizeDuringCopy } from './attacks/resize.js';
import { symlinkSwap } from './attacks/symlink-swap.js';
import { summaryLine } from './report.js';
import type { AttackResult } from './report.js';

interface Attack {
	name: string;
	run: (seed: number, quick: boolean) => Promise<AttackResult>;
}

const ATTACKS: Attack[] = [
	{
		name: 'malformed',
		run: (seed, quick) => malformedCalls({ calls: quick ? 500 : 10_000, seed }),
	},
	{
		name: 'concurrent',
		run: (seed, quick) =>
			concurrentClients({ clients: 32, callsPerClient: quick ? 20 : 200, paths: 10, seed }),
	},
	{ name: 'symlink-swap', run: (_, quick) => symlinkSwap({ rounds: quick ? 100 : 1000 }) },
	{ name: 'grow-shrink', run: (_, quick) => resizeDuringCopy({ rounds: quick ? 2 : 10 }) },
	{ name: 'kill-9', run: (seed, quick) => killService({ kills: quick ? 10 : 50, seed }) },
	{ name: 'memfd-noexec', run: (_, quick) => memfdNoexec({ rounds: quick ? 1 : 5 }) },
	{ name: 'bus-restart', run: (_, quick) => busRestart({ rounds: quick ? 1 : 6 }) },
];

const { values } = parseArgs({
	options: {
		seed: { type: 'string' },
		only: { type: 'string' },
		quick: { type: 'boolean', default: false },
	},
});

await main();

async function main(): Promise<void> {
	if (process.getuid?.() !== 0) {
		console.error('npm run torture needs root: it mounts, in a private mount namespace of its own');
		process.exit(2);
	}
	if (process.env.MEMFD_BIND_TEST_NS !== '1') {
		process.exit(reexecInNamespace());
	}
	const seed =
		values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
	const only = values.only?.split(',');
	const chosen = ATTACKS.filter((attack) => only === undefined || only.includes(attack.name));
	console.log(
		`# torture seed ${seed}${values.quick ? ' (quick)' : ''}: ${chosen.map((attack) => attack.name).join(', ')}`,
	);

	const started = Date.now();
	let losses = 0;
	for (const attack of chosen) {
		let result: AttackResult;
		try {
			result = await attack.run(seed, values.quick === true);
		} catch (error: unknown) {
			result = crashed(attack.name, error);
		}
		losses += result.losses.length;
		console.log(summaryLine(result));
		for (const note of result.notes) {
			console.log(`    ${note}`);
		}
		printLosses(result.losses);
	}
	console.log(
		`# ${losses === 0 ? 'no losses' : `${losses} loss(es)`} in ${((Date.now() - started) / 1000).toFixed(1)} s (seed ${seed})`,
	);
	process.exit(losses === 0 ? 0 : 1);
}

// The attacks mount and kill processes: they run as pid 1's children in namespaces of their
// own, so nothing reaches the host's mount table and every leftover process dies with them.
function reexecInNamespace(): number {
	const argv = ['--mount', '--propagation', 'private', '--pid', '--fork', '--mount-proc'];
	const self = fileURLToPath(import.meta.url);
	const result = spawnSync('unshare', [...argv, process.execPath, self, ...process.argv.slice(2)], {
		stdio: 'inherit',
		env: { ...process.env, MEMFD_BIND_TEST_NS: '1' },
	});
	if (result.error !== undefined) {
		console.error(`Failed to enter a private namespace with unshare: ${result.error.message}`);
		return 2;
	}
	return result.status ?? 1;
}

// Identical losses are printed once with their count; at most 20 distinct ones are shown.
function printLosses(losses: string[]): void {
	const counts = new Map<string, number>();
	for (const loss of losses) {
		counts.set(loss, (counts.get(loss) ?? 0) + 1);
	}
	const distinct = [...counts];
	for (const [loss, count] of distinct.slice(0, 20)) {
		console.log(`    LOSS${count > 1 ? ` (x${count})` : ''}: ${loss}`);
	}
	if (distinct.length > 20) {
		console.log(`    ... and ${distinct.length - 20} more distinct losses`);
	}
}

function crashed(name: string, error: unknown): AttackResult {
	return {
		name,
		tried: 0,
		failed: 0,
		alive: false,
		mountsAsExpected: false,
		losses: [`the attack itself failed: ${(error as Error)?.stack ?? String(error)}`],
		notes: [],
		seconds: 0,
	};
}
