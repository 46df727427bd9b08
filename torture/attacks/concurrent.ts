// Many clients at once: each does random Bind, Release, List and Cleanup calls on a small set
// of paths. Every answer must make sense on its own (a Bind returns the file's digest, a List
// shows only active bindings), and afterwards List, the mount table, the state folder and the
// holder processes agree, and nothing is leaked: no memfd, no fd, no shared memory.
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorName } from '../../src/common/names.js';
import { BusClient, unwrap } from '../client.js';
import type { Outcome } from '../client.js';
import { checkAgreement, fdCount, memfdHolders, memfdMounts, settle, shmemKiB } from '../probe.js';
import { Random, Tally } from '../report.js';
import type { AttackResult } from '../report.js';
import { openStage } from '../stage.js';
import type { Stage } from '../stage.js';

export interface ConcurrentOptions {
	clients: number;
	callsPerClient: number;
	paths: number;
	seed: number;
	/** Size of each file bound, in bytes. */
	fileSize?: number;
}

// Errors a call may get when another client got there first.
const EXPECTED: Record<string, string[]> = {
	Bind: [ErrorName.AlreadyBound],
	Release: [ErrorName.NotBound],
	Cleanup: [ErrorName.AlreadyBound],
	List: [],
};

/** Runs `clients` connections of `callsPerClient` random calls each on `paths` files. */
export async function concurrentClients(options: ConcurrentOptions): Promise<AttackResult> {
	const tally = new Tally('concurrent');
	const stage = await openStage();
	const clients: BusClient[] = [];
	try {
		const random = new Random(options.seed);
		const files = writeFiles(stage, options.paths, options.fileSize ?? 2 << 20, random);
		for (let i = 0; i < options.clients; i++) {
			clients.push(await BusClient.connect(stage.sandbox.address));
		}
		const pid = stage.service.process.pid!;
		await stage.warmUp();
		const fdsBefore = fdCount(pid);
		const shmemBefore = shmemKiB();

		await Promise.all(
			clients.map((client, index) =>
				runClient(
					client,
					new Random(options.seed * 1000 + index),
					files,
					options.callsPerClient,
					tally,
				),
			),
		);

		if (!(await stage.isAlive())) {
			tally.loss(
				`the service died: ${stage.service.log().trim().split('\n').slice(-2).join(' / ')}`,
				'alive',
			);
			return tally.result();
		}
		const bound = memfdMounts(stage.sandbox.dir).length;
		tally.notes.push(`${bound} of ${options.paths} paths bound at the end`);
		await expectAgreement(tally, stage, 'after the run');
		// Bindings hold their memfds in holder processes, never in the service.
		if (!(await settle(() => fdCount(pid) <= fdsBefore, 3000))) {
			tally.loss(
				`with ${bound} bindings the service has ${fdCount(pid)} fds open, ${fdsBefore} before`,
			);
		}

		for (const file of files) {
			const outcome = await stage.client.call('Release', 's', [file.path]);
			if (!outcome.ok && outcome.error !== ErrorName.NotBound) {
				tally.loss(`Release('${file.path}') after the run: ${outcome.error}: ${outcome.text}`);
			}
		}
		await expectAgreement(tally, stage, 'after releasing everything');
		const held = memfdHolders(stage.sandbox.dir);
		if (held.length > 0) {
			tally.loss(
				`after releasing everything, memfds are still held: ${held.map((entry) => `pid ${entry.pid} '${entry.name}'`).join(', ')}`,
			);
		}
		if (!(await settle(() => fdCount(pid) <= fdsBefore, 3000))) {
			tally.loss(
				`after releasing everything the service has ${fdCount(pid)} fds open, ${fdsBefore} before`,
			);
		}
		await checkShmem(tally, shmemBefore, options.paths * (options.fileSize ?? 2 << 20));
		return tally.result();
	} finally {
		for (const client of clients) {
			client.close();
		}
		await stage.close();
	}
}

interface File {
	path: string;
	sha256: string;
	size: number;
}

function writeFiles(stage: Stage, count: number, size: number, random: Random): File[] {
	const files: File[] = [];
	for (let i = 0; i < count; i++) {
		const path = join(stage.files, `bin-${i}`);
		const content = Buffer.concat([
			Buffer.from(`#!/bin/sh\necho ${i}\n#`),
			random.bytes(size - 20),
		]);
		writeFileSync(path, content, { mode: 0o755 });
		files.push({
			path,
			sha256: createHash('sha256').update(content).digest('hex'),
			size: content.length,
		});
	}
	return files;
}

async function runClient(
	client: BusClient,
	random: Random,
	files: File[],
	calls: number,
	tally: Tally,
): Promise<void> {
	for (let i = 0; i < calls; i++) {
		const member = random.weighted({ Bind: 35, Release: 30, List: 20, Cleanup: 15 });
		const file = random.pick(files);
		const argument = member === 'Cleanup' && random.int(2) === 0 ? '' : file.path;
		const outcome =
			member === 'List'
				? await client.call('List', '', [])
				: await client.call(member, 's', [argument]);
		tally.tried++;
		if (!outcome.ok) {
			tally.failed++;
			tally.count(`${member}:${outcome.error.replace(/^.*\.Error\./, '')}`);
			if (!EXPECTED[member].includes(outcome.error)) {
				tally.loss(`${member}('${argument}'): unexpected ${outcome.error}: ${outcome.text}`);
			}
			continue;
		}
		tally.count(`${member}:ok`);
		checkAnswer(tally, member, argument, file, outcome);
	}
}

// A successful answer must describe what was asked for.
function checkAnswer(
	tally: Tally,
	member: string,
	argument: string,
	file: File,
	outcome: Outcome,
): void {
	if (member === 'Bind') {
		const record = unwrap(outcome.body[0] as Record<string, { value: unknown }>);
		if (record.Path !== file.path || record.Sha256 !== file.sha256 || record.Seals !== 0xf) {
			tally.loss(
				`Bind('${argument}') answered ${JSON.stringify({ ...record, Size: String(record.Size) })}`,
			);
		}
	} else if (member === 'List') {
		const records = (outcome.body[0] as Array<Record<string, { value: unknown }>>).map(unwrap);
		for (const record of records.filter((entry) => entry.State !== 'active')) {
			tally.loss(
				`List showed '${record.Path}' as ${record.State} while clients were busy`,
				'mounts',
			);
		}
	} else if (member === 'Cleanup') {
		const removed = outcome.body[0] as string[];
		if (removed.length > 0) {
			tally.loss(
				`Cleanup('${argument}') removed ${removed.join(', ')}: no mount here is ever stale`,
				'mounts',
			);
		}
	}
}

async function expectAgreement(tally: Tally, stage: Stage, when: string): Promise<void> {
	for (const problem of await checkAgreement(stage.client, stage.sandbox.dir, stage.stateDir)) {
		tally.loss(`${when}: ${problem}`, 'mounts');
	}
}

// /proc/meminfo is machine-wide, so other work on the host moves it too: the check waits for it
// to come back within a quarter of what the attack bound at its peak.
async function checkShmem(tally: Tally, before: number, boundBytes: number): Promise<void> {
	const slack = Math.max(4096, boundBytes / 1024 / 4);
	const back = await settle(() => shmemKiB() <= before + slack, 5000);
	tally.notes.push(`Shmem ${before} -> ${shmemKiB()} KiB (machine-wide)`);
	if (!back) {
		tally.loss(
			`Shmem stayed at ${shmemKiB()} KiB, ${before} KiB before the attack (allowed ${slack} KiB more)`,
		);
	}
}
