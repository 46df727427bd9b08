// Fast subsets of `npm run torture` (torture/run.ts): every attack, small enough to run in
// seconds, with a fixed seed so a failure repeats. Each test passes when the attack found no
// loss; the loss lines are the assertion message.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { busRestart } from '../../torture/attacks/bus-restart.js';
import { concurrentClients } from '../../torture/attacks/concurrent.js';
import { killService } from '../../torture/attacks/kill-service.js';
import { malformedCalls } from '../../torture/attacks/malformed.js';
import { memfdNoexec, noexecSkipReason } from '../../torture/attacks/noexec.js';
import { resizeDuringCopy } from '../../torture/attacks/resize.js';
import { symlinkSwap } from '../../torture/attacks/symlink-swap.js';
import { summaryLine } from '../../torture/report.js';
import type { AttackResult } from '../../torture/report.js';
import { integrationSkipReason } from '../helpers/sandbox.js';

const skip = integrationSkipReason();
const SEED = 5;

describe('torture subsets', { skip }, () => {
	test('the service refuses 300 malformed calls and keeps its mount table, fds and memory', async () => {
		expectNoLoss(await malformedCalls({ calls: 300, seed: SEED, fdIndexFrames: 'exclude' }));
	});

	test('the service refuses calls whose fd argument names an fd the message does not carry', async () => {
		expectNoLoss(await malformedCalls({ calls: 10, seed: SEED, lanes: 1, fdIndexFrames: 'only' }));
	});

	test('16 concurrent clients leave List, mounts, state and holders in agreement, leaking nothing', async () => {
		const result = await concurrentClients({
			clients: 16,
			callsPerClient: 25,
			paths: 10,
			seed: SEED,
			fileSize: 256 << 10,
		});
		expectNoLoss(result);
	});

	test('Bind racing a swap between a file and a symlink only ever mounts over the file', async () => {
		expectNoLoss(await symlinkSwap({ rounds: 60 }));
	});

	test('Bind of a file that grows or shrinks during the copy fails and leaves nothing', async () => {
		expectNoLoss(await resizeDuringCopy({ rounds: 1, kinds: ['grow', 'shrink'] }));
	});

	test('Bind of a file rewritten in place during the copy fails or holds an exact copy', async () => {
		expectNoLoss(await resizeDuringCopy({ rounds: 1, kinds: ['rewrite'] }));
	});

	test('kill -9 of the service during Bind or Release leaves mounts, state and List in agreement', async () => {
		expectNoLoss(await killService({ kills: 6, seed: SEED }));
	});

	test(
		'Bind under vm.memfd_noexec=2 fails naming the setting and mounts nothing',
		{ skip: noexecSkipReason() },
		async () => {
			expectNoLoss(await memfdNoexec({ rounds: 2 }));
		},
	);

	test('the service exits non-zero when the bus daemon dies and comes back with its bindings', async () => {
		expectNoLoss(await busRestart({ rounds: 2 }));
	});
});

function expectNoLoss(result: AttackResult): void {
	assert.deepEqual(result.losses, [], `${summaryLine(result)}\n${result.losses.join('\n')}`);
}
