// `npm run bench`: measures memfd-bind against baselines taken in the same run and prints one
// table. Runs as root inside a private mount and pid namespace (it re-executes itself there), on
// a private bus with the real service, so no mount and no process outlives it.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildLauncher } from '../test/helpers/launcher.js';
import { REPO, startSandbox, unmountUnder } from '../test/helpers/sandbox.js';
import { BenchBus } from './bus-client.js';
import { renderChart } from './chart.js';
import type { BenchContext, Row } from './context.js';
import { now } from './measure.js';
import { startPolkitd } from './polkitd.js';
import type { Polkitd } from './polkitd.js';
import { describeMachine, formatMarkdown, formatTable } from './report.js';
import type { Line, Report } from './report.js';
import { measureBindCost } from './rows/bind-cost.js';
import type { BindCost } from './rows/bind-cost.js';
import { measureBusLatency } from './rows/bus-latency.js';
import { measureCliStart } from './rows/cli-start.js';
import { measureCrun } from './rows/crun.js';
import { measureFootprint } from './rows/footprint.js';
import { measureLaunchMemory } from './rows/launch-memory.js';
import { updateDocs } from './docs.js';

const OUT = join(REPO, 'bench/out');
const PAYLOAD_MB = 13;
// Footprint first: "idle" means a service that has served nothing yet.
const ROWS: Row[] = [
	measureFootprint,
	measureLaunchMemory,
	measureCrun,
	measureBindCost,
	measureBusLatency,
	measureCliStart,
];

// Pid 1 of a fresh pid namespace is what `unshare --fork` makes of us; anything else is the
// host, whose /dev/shm and mount table the bench must never touch.
if (process.env.MEMFD_BIND_TEST_NS !== '1' || process.pid !== 1) {
	process.exit(reexecInNamespace());
}
// As pid 1 we would ignore Ctrl-C. Exiting ends the namespace, and every process and mount in
// it goes too; only the sandbox's folder needs removing.
let sandboxDir: string | undefined;
process.once('SIGINT', () => interrupted(130));
process.once('SIGTERM', () => interrupted(143));
process.exitCode = await runAll(!process.argv.includes('--no-docs'));

// Starts this script again in a private mount namespace (propagation private) with its own pid
// namespace and /proc; every holder, launcher and daemon dies with it.
function reexecInNamespace(): number {
	if (process.getuid?.() !== 0) {
		process.stderr.write('bench: needs root (it binds files inside a private mount namespace)\n');
		return 1;
	}
	const self = fileURLToPath(import.meta.url);
	const argv = [
		'--mount',
		'--propagation',
		'private',
		'--pid',
		'--fork',
		'--mount-proc',
		process.execPath,
		self,
		...process.argv.slice(2),
	];
	const result = spawnSync('unshare', argv, {
		stdio: 'inherit',
		env: { ...process.env, MEMFD_BIND_TEST_NS: '1' },
	});
	return result.status ?? 1;
}

async function runAll(writeDocs: boolean): Promise<number> {
	const started = now();
	const machine = describeMachine();
	// A tmpfs of our own at /dev/shm: cp's copies never land in the host's.
	mount(['-t', 'tmpfs', '-o', 'mode=1777,size=1g', 'memfd-bind-bench', '/dev/shm']);
	const launcher = await buildLauncher({ payloadMb: PAYLOAD_MB });
	const sandbox = await startSandbox();
	sandboxDir = sandbox.dir;
	let polkitd: Polkitd | undefined;
	let bus: BenchBus | undefined;
	let lines: Line[] = [];
	const details: Record<string, unknown> = {};
	try {
		const service = await sandbox.startService();
		bus = await BenchBus.connect(sandbox.address);
		let polkitState: BenchContext['polkitd'];
		try {
			polkitd = await startPolkitd(sandbox);
			polkitState = { pid: polkitd.pid };
		} catch (error: unknown) {
			polkitState = { error: (error as Error).message };
		}
		const work = join(sandbox.dir, 'bench');
		mkdirSync(work);
		const context: BenchContext = {
			sandbox,
			service,
			bus,
			work,
			launcher,
			polkitd: polkitState,
			details,
		};
		for (const row of ROWS) {
			const rowStart = now();
			process.stderr.write(`bench: ${row.name}...`);
			lines.push(...(await row(context)));
			process.stderr.write(` ${((now() - rowStart) / 1000).toFixed(1)} s\n`);
		}
	} finally {
		bus?.disconnect();
		await polkitd?.stop();
		await sandbox.stop();
	}
	lines = lines.sort((a, b) => a.row - b.row);

	const report: Report = { date: new Date().toISOString(), machine, lines, details };
	const leftovers = leftoverMounts();
	process.stdout.write(`\n${formatTable(lines)}`);
	process.stdout.write(
		`\nTotal ${((now() - started) / 1000).toFixed(0)} s on ${report.machine.nproc} cores, ${report.machine.memoryGiB} GiB, Linux ${report.machine.kernel}, Node ${report.machine.node}, load average ${report.machine.loadAverage} at the start\n`,
	);
	writeOutputs(report, writeDocs);
	if (leftovers.length > 0) {
		process.stderr.write(
			`bench: memfd mounts left behind in the namespace: ${leftovers.join(', ')}\n`,
		);
		return 1;
	}
	// A missed goal is a result, not a failure of the run: the table says so beside the figure.
	return 0;
}

function interrupted(code: number): void {
	if (sandboxDir !== undefined) {
		unmountUnder(sandboxDir);
		rmSync(sandboxDir, { recursive: true, force: true });
	}
	process.exit(code);
}

function writeOutputs(report: Report, writeDocs: boolean): void {
	mkdirSync(OUT, { recursive: true });
	const launches = report.details.launchMemory as {
		launches: number;
		binaryKiB: number;
		unbound: Array<{ shmemKiB: number }>;
		bound: Array<{ shmemKiB: number }>;
	};
	const costs = (report.details.bindCost as { costs: BindCost[] }).costs;
	const medianOf = (rounds: Array<{ shmemKiB: number }>) =>
		rounds.map((round) => round.shmemKiB).sort((a, b) => a - b)[Math.floor(rounds.length / 2)];
	const svg = renderChart({
		launches: launches.launches,
		binaryKiB: launches.binaryKiB,
		unboundKiB: medianOf(launches.unbound),
		boundKiB: medianOf(launches.bound),
		bind: costs,
	});
	writeFileSync(join(OUT, 'results.json'), `${JSON.stringify(report, null, '\t')}\n`);
	writeFileSync(join(OUT, 'table.md'), formatMarkdown(report.lines));
	writeFileSync(join(OUT, 'benchmarks.svg'), svg);
	process.stdout.write(`Wrote ${join(OUT, 'results.json')}, table.md and benchmarks.svg\n`);
	if (writeDocs) {
		copyFileSync(join(OUT, 'benchmarks.svg'), join(REPO, 'docs/benchmarks.svg'));
		updateDocs(join(REPO, 'docs/benchmarks.md'), report);
		process.stdout.write('Updated docs/benchmarks.md and docs/benchmarks.svg\n');
	}
}

function mount(args: string[]): void {
	const result = spawnSync('mount', args, { encoding: 'utf8' });
	if (result.status !== 0) {
		throw new Error(`Failed to mount ${args.join(' ')}: ${result.stderr.trim()}`);
	}
}

// Magic-link mounts still in our namespace's table after the service released everything.
function leftoverMounts(): string[] {
	if (!existsSync('/proc/self/mountinfo')) {
		return [];
	}
	return readFileSync('/proc/self/mountinfo', 'utf8')
		.split('\n')
		.filter((line) => / \/\d+\/fd\/\d+ /.test(line))
		.map((line) => line.split(' ')[4]);
}
