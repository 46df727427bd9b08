// Row 6: `memfdctl list` wall time against `node -e 0`, the floor for any Node CLI.
import { MEMFDCTL } from '../../test/helpers/sandbox.js';
import type { BenchContext } from '../context.js';
import { median, timeCommand } from '../measure.js';
import type { Line } from '../report.js';

const RUNS = 20;
const WARMUP = 3;
const GOAL_RATIO = 1.5;

/** Measures both commands, interleaved so drift hits both alike. */
export async function measureCliStart(context: BenchContext): Promise<Line[]> {
	const list = [process.execPath, MEMFDCTL, 'list'];
	const bare = [process.execPath, '-e', '0'];
	const env = context.sandbox.env;
	const times = { memfdctl: [] as number[], node: [] as number[] };
	for (let i = 0; i < WARMUP + RUNS; i++) {
		const nodeMs = timeCommand(bare, env);
		const listMs = timeCommand(list, env);
		if (i >= WARMUP) {
			times.node.push(nodeMs);
			times.memfdctl.push(listMs);
		}
	}
	context.details.cliStart = times;

	const figure = median(times.memfdctl);
	const baseline = median(times.node);
	return [
		{
			row: 6,
			measure: 'memfdctl list: median wall time',
			figure,
			baseline,
			baselineLabel: 'node -e 0',
			unit: 'ms',
			goal: `within ${GOAL_RATIO}x`,
			met: figure <= GOAL_RATIO * baseline,
			note: `median of ${RUNS} runs each, no bindings; bin/memfdctl run by the same node`,
		},
	];
}
