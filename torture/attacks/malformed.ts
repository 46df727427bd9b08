// Malformed and random calls (see malformed-cases.ts for what is sent). Afterwards the service
// answers, the mount table is what it was, nothing is held, and the service's memory is back
// near where it started. A death of the service is reported with the calls it left unanswered.
import { ErrorName } from '../../src/common/names.js';
import type { Service } from '../../test/helpers/sandbox.js';
import { BusClient, DISCONNECTED, NOT_SENT, TIMED_OUT } from '../client.js';
import type { Outcome } from '../client.js';
import { prepareHostileFiles } from '../hostile-paths.js';
import { makeCase } from '../malformed-cases.js';
import type { Case, FdIndexFrames, RawVerdict } from '../malformed-cases.js';
import { fdCount, memfdHolders, memfdMounts, mountTable, rssKiB, settle, sleep } from '../probe.js';
import { Random, Tally } from '../report.js';
import type { AttackResult } from '../report.js';
import { openStage } from '../stage.js';
import type { Stage } from '../stage.js';

export interface MalformedOptions {
	calls: number;
	seed: number;
	/** Parallel connections sending calls. */
	lanes?: number;
	/** Frames whose `h` argument names an fd the message does not carry; default 'include'. */
	fdIndexFrames?: FdIndexFrames;
	/** Allowed growth of the service's RSS, in KiB, from start to end. */
	rssSlackKiB?: number;
}

interface Lane {
	client: BusClient;
}

const SERVICE_ERRORS = new Set<string>(Object.values(ErrorName));
// What the bus daemon itself answers for calls it does not deliver or objects that do not exist.
const BUS_REFUSALS = new Set([
	'org.freedesktop.DBus.Error.AccessDenied',
	'org.freedesktop.DBus.Error.UnknownObject',
	'org.freedesktop.DBus.Error.UnknownInterface',
	'org.freedesktop.DBus.Error.UnknownMethod',
	'org.freedesktop.DBus.Error.InvalidArgs',
]);

/** Sends `calls` malformed or random calls and checks that nothing changed or leaked. */
export async function malformedCalls(options: MalformedOptions): Promise<AttackResult> {
	const tally = new Tally('malformed');
	const stage = await openStage();
	const lanes: Lane[] = [];
	try {
		const hostile = prepareHostileFiles(stage);
		for (let i = 0; i < (options.lanes ?? 8); i++) {
			lanes.push({ client: await BusClient.connect(stage.sandbox.address) });
		}
		const random = new Random(options.seed);
		const mountsBefore = mountTable();
		await stage.warmUp();
		await warmUp(lanes[0]);
		const rssBefore = rssKiB(stage.service.process.pid!);
		const fdsBefore = fdCount(stage.service.process.pid!);

		const cases = Array.from({ length: options.calls }, () =>
			makeCase(random, stage, hostile, options.fdIndexFrames ?? 'include'),
		);
		let next = 0;
		let sinceCheck = 0;
		// One liveness check at a time: a death is reported once and the service restarted once.
		let checking = Promise.resolve();
		const unanswered: Unanswered[] = [];
		const reported = new Map<Service, string>();
		const work = async (lane: Lane) => {
			while (next < cases.length) {
				const item = cases[next++];
				const service = stage.service;
				const outcome = await item.send(lane.client);
				if (judge(tally, item, outcome)) {
					unanswered.push({ describe: item.describe, service });
				}
				if (++sinceCheck >= 250 || unanswered.length > 0) {
					sinceCheck = 0;
					checking = checking.then(() => checkAlive(tally, stage, unanswered, reported));
				}
				await checking;
			}
		};
		await Promise.all(lanes.map(work));
		await checkAlive(tally, stage, unanswered, reported);

		// The service must drop every reference to what it was sent; give the collector time.
		await sleep(1500);
		const pid = stage.service.process.pid!;
		const rssSlack = options.rssSlackKiB ?? 32 * 1024;
		const rssAfter = rssKiB(pid);
		tally.notes.push(`rss ${Math.round(rssBefore / 1024)}->${Math.round(rssAfter / 1024)} MiB`);
		if (rssAfter > rssBefore + rssSlack) {
			tally.loss(
				`the service's RSS grew from ${rssBefore} KiB to ${rssAfter} KiB (allowed ${rssSlack} KiB)`,
			);
		}
		if (!(await settle(() => fdCount(pid) <= fdsBefore, 3000))) {
			tally.loss(`the service has ${fdCount(pid)} fds open, ${fdsBefore} before the attack`);
		}
		const mountsAfter = mountTable();
		if (mountsAfter.join('\n') !== mountsBefore.join('\n')) {
			const added = mountsAfter.filter((line) => !mountsBefore.includes(line));
			const removed = mountsBefore.filter((line) => !mountsAfter.includes(line));
			tally.loss(
				`the mount table changed: added [${added.join('; ')}] removed [${removed.join('; ')}]`,
				'mounts',
			);
		}
		const held = memfdHolders(stage.sandbox.dir);
		if (held.length > 0 || memfdMounts(stage.sandbox.dir).length > 0) {
			tally.loss(
				`memfds are held after the attack: ${held.map((entry) => `${entry.pid}:${entry.name}`).join(', ')}`,
				'mounts',
			);
		}
		return tally.result();
	} finally {
		for (const lane of lanes) {
			lane.client.close();
		}
		await stage.close();
	}
}

// A few well-formed calls first, so the starting RSS includes code that is loaded on first use.
async function warmUp(lane: Lane): Promise<void> {
	for (let i = 0; i < 50; i++) {
		await lane.client.call('List', '', []);
		await lane.client.call('Bind', 's', ['/nonexistent/warm-up']);
	}
}

// Calls that got no answer: the service died under them, or it hangs. checkAlive() decides.
const UNANSWERED = new Set([
	'org.freedesktop.DBus.Error.NoReply',
	'org.freedesktop.DBus.Error.ServiceUnknown',
	TIMED_OUT,
	'no answer',
]);

// Counts an outcome and records what is wrong with it; returns true when it got no answer.
function judge(tally: Tally, item: Case, outcome: Outcome | RawVerdict): boolean {
	if (!('raw' in outcome) && outcome.error === NOT_SENT) {
		tally.count('not-encodable');
		return false;
	}
	tally.tried++;
	const error = 'raw' in outcome ? outcome.reply : outcome.error;
	if (error !== undefined && UNANSWERED.has(error)) {
		tally.failed++;
		tally.count('unanswered');
		return true;
	}
	if ('raw' in outcome) {
		if (outcome.refused) {
			tally.failed++;
			tally.count(
				outcome.reply === undefined
					? 'bus-dropped-frame'
					: outcome.reply.replace(/^.*\.Error\./, ''),
			);
		}
		if (outcome.problem !== undefined) {
			tally.loss(`${item.describe}: ${outcome.problem}`);
		}
		return false;
	}
	if (outcome.ok) {
		if (item.mustFail) {
			tally.loss(`${item.describe}: succeeded, it should have been refused`);
		}
		return false;
	}
	tally.failed++;
	tally.count(outcome.error.replace(/^.*\.Error\./, ''));
	if (isInternal(outcome)) {
		tally.loss(`${item.describe}: ${outcome.error}: ${outcome.text.slice(0, 200)}`);
	}
	return false;
}

// Errors that mean the service lost control, not that it refused the input.
function isInternal(outcome: Outcome): boolean {
	if (outcome.error === ErrorName.Failed && /internal error/.test(outcome.text)) {
		return true;
	}
	if (
		SERVICE_ERRORS.has(outcome.error) ||
		BUS_REFUSALS.has(outcome.error) ||
		outcome.error === 'gdbus.Refused'
	) {
		return false;
	}
	return outcome.error !== DISCONNECTED;
}

/** A call that got no answer, and the service instance it was sent to. */
interface Unanswered {
	describe: string;
	service: Service;
}

// A dead service is one loss, naming the calls it left unanswered (the culprit is among them)
// and the error its log ends with; it is restarted so the attack goes on. A live service that
// left a call unanswered hangs somewhere: one loss per call.
async function checkAlive(
	tally: Tally,
	stage: Stage,
	unanswered: Unanswered[],
	reported: Map<Service, string>,
): Promise<void> {
	const current = stage.service;
	const currentAlive = await stage.isAlive();
	if (!currentAlive) {
		// Let the other calls the dead service left behind come back, so all are named.
		await sleep(500);
	}
	const suspects = unanswered.splice(0);
	const dead = new Map<Service, string[]>();
	for (const suspect of suspects) {
		if (suspect.service === current && currentAlive) {
			tally.loss(`${suspect.describe}: no answer, though the service is alive`);
		} else {
			dead.set(suspect.service, [...(dead.get(suspect.service) ?? []), suspect.describe]);
		}
	}
	if (!currentAlive && !dead.has(current)) {
		dead.set(current, []);
	}
	for (const [service, describes] of dead) {
		if (reported.has(service)) {
			continue;
		}
		await service.stop('SIGKILL');
		const child = service.process;
		const log = service.log();
		const thrown = /^\w*Error: .*$/m.exec(log)?.[0] ?? lastLines(log, 2);
		// The first death of a kind names its suspects; the same death again is a short line.
		const again = [...reported.values()].includes(thrown);
		reported.set(service, thrown);
		const suspects = again ? '' : ` on one of [${[...new Set(describes)].join(' | ')}]`;
		tally.loss(
			`the service died${again ? ' again' : ''} (exit ${child.exitCode ?? child.signalCode})${suspects}: ${thrown}`,
			'alive',
		);
		tally.count('service-deaths');
	}
	if (!currentAlive) {
		await stage.restart();
	}
}

function lastLines(text: string, count: number): string {
	return text.trim().split('\n').slice(-count).join(' / ');
}
