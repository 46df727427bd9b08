// Malformed and random calls: hostile path strings, wrong signatures, unknown methods,
// interfaces and objects, random bodies, hand-made frames the bus must refuse, and calls from an
// unprivileged user. Afterwards the service answers, the mount table is what it was, nothing is
// held, and the service's memory is back near where it started.
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import dbus from 'dbus-next';
import { ErrorName, INTERFACE } from '../../src/common/names.js';
import { BusClient, DISCONNECTED, NOT_SENT, TIMED_OUT } from '../client.js';
import type { Outcome } from '../client.js';
import { fdCount, memfdHolders, memfdMounts, mountTable, rssKiB, settle, sleep } from '../probe.js';
import { sendRaw, stringBody, uint32Body } from '../raw-bus.js';
import type { RawCall } from '../raw-bus.js';
import { Random, Tally } from '../report.js';
import type { AttackResult } from '../report.js';
import { openStage } from '../stage.js';
import type { Stage } from '../stage.js';
import type { Service } from '../../test/helpers/sandbox.js';

const { Variant } = dbus;

export interface MalformedOptions {
	calls: number;
	seed: number;
	/** Parallel connections sending calls. */
	lanes?: number;
	/** Include frames whose `h` argument names an fd the message does not carry. */
	fdIndexFrames?: boolean;
	/** Allowed growth of the service's RSS, in KiB, from start to end. */
	rssSlackKiB?: number;
}

/** One call to make, described for the loss report. */
interface Case {
	describe: string;
	send: (lane: Lane) => Promise<Outcome | RawVerdict>;
	/** Members whose success would be a loss (they would have changed something). */
	mustFail: boolean;
}

interface RawVerdict {
	raw: true;
	/** The bus dropped the frame, or the service answered with an error. */
	refused: boolean;
	reply?: string;
	/** What was wrong with the answer, when something was. */
	problem?: string;
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
const PATH_METHODS = ['Bind', 'Release', 'Refresh', 'Cleanup'];
const WRONG_SIGNATURES: Array<[string, (random: Random, path: string) => unknown[]]> = [
	['', () => []],
	['i', () => [42]],
	['u', () => [4294967295]],
	['b', () => [true]],
	['d', () => [-0.5]],
	['x', () => [-(2n ** 63n) + 1n]],
	['ss', (_, path) => [path, path]],
	['as', (_, path) => [[path, path]]],
	['ay', (random) => [nonUtf8Path(random)]],
	['aay', (random) => [[nonUtf8Path(random)]]],
	['a{sv}', (_, path) => [{ path: new Variant('s', path) }]],
	['v', (_, path) => [new Variant('s', path)]],
	['(s)', (_, path) => [[path]]],
	['o', () => ['/org/opencontainers/MemfdBind']],
	['g', () => ['a{sv}']],
	['sa{sv}', (_, path) => [path, {}]],
];

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
		await warmUp(lanes[0]);
		const rssBefore = rssKiB(stage.service.process.pid!);
		const fdsBefore = fdCount(stage.service.process.pid!);

		const cases = Array.from({ length: options.calls }, () =>
			makeCase(random, stage, hostile, options),
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
				const outcome = await item.send(lane);
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
		const rssSlack = options.rssSlackKiB ?? 64 * 1024;
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

// Files that exist but must never be bound: a directory, a fifo, a socket, a device node,
// symlinks of several kinds; and one regular file that only Release/Refresh/Cleanup are sent.
interface HostileFiles {
	existing: string[];
	regular: string;
}

function prepareHostileFiles(stage: Stage): HostileFiles {
	const dir = stage.files;
	const regular = join(dir, 'regular');
	writeFileSync(regular, '#!/bin/sh\necho regular\n', { mode: 0o755 });
	mkdirSync(join(dir, 'a dir'));
	symlinkSync(regular, join(dir, 'link-to-regular'));
	symlinkSync(join(dir, 'nowhere'), join(dir, 'dangling'));
	symlinkSync(join(dir, 'loop'), join(dir, 'loop'));
	symlinkSync(join(dir, 'a dir'), join(dir, 'dir-link'));
	spawnSync('mkfifo', [join(dir, 'fifo')]);
	spawnSync('mknod', [join(dir, 'null'), 'c', '1', '3']);
	return {
		regular,
		existing: [
			stage.sandbox.dir,
			dir,
			join(dir, 'a dir'),
			join(dir, 'link-to-regular'),
			join(dir, 'dangling'),
			join(dir, 'loop'),
			join(dir, 'dir-link'),
			join(dir, 'dir-link', 'x'),
			join(dir, 'fifo'),
			join(dir, 'null'),
			join(stage.sandbox.dir, 'system_bus_socket'),
			stage.stateDir,
		],
	};
}

function makeCase(
	random: Random,
	stage: Stage,
	hostile: HostileFiles,
	options: MalformedOptions,
): Case {
	const kind = random.weighted({
		path: 40,
		signature: 20,
		unknown: 12,
		properties: 6,
		fuzz: 16,
		raw: 5,
		user: 1,
	});
	const path = hostilePath(random, stage, hostile);
	switch (kind) {
		case 'path': {
			const member = random.pick(PATH_METHODS);
			// Release, Refresh and Cleanup of the never-bound regular file must fail too.
			const target = member !== 'Bind' && random.int(8) === 0 ? hostile.regular : path;
			return call(`${member}(${show(target)})`, member, 's', [target], {
				mustFail: !(member === 'Cleanup'),
			});
		}
		case 'signature': {
			const member = random.pick([...PATH_METHODS, 'List', 'Suspend', 'Resume']);
			const right = PATH_METHODS.includes(member) ? 's' : '';
			const [signature, body] = random.pick(
				WRONG_SIGNATURES.filter(([candidate]) => candidate !== right),
			);
			const args = body(random, path);
			return call(`${member} with signature '${signature}'`, member, signature, args, {
				mustFail: true,
			});
		}
		case 'unknown':
			return unknownCase(random, path);
		case 'properties':
			return propertiesCase(random);
		case 'fuzz': {
			const member = random.pick([...PATH_METHODS, 'List', randomMember(random)]);
			const signature = randomSignature(random, 1 + random.int(3));
			const args = randomValues(random, signature, path);
			return call(`${member} with random '${signature}'`, member, signature, args, {
				mustFail: member !== 'List',
			});
		}
		case 'raw':
			return rawCase(random, stage, path, options);
		case 'user':
			return userCase(random, stage, hostile, path);
	}
}

function call(
	describe: string,
	member: string,
	signature: string,
	body: unknown[],
	options: { mustFail: boolean; interface?: string | null; path?: string },
): Case {
	return {
		describe,
		mustFail: options.mustFail,
		send: (lane) =>
			lane.client.call(member, signature, body, {
				interface: options.interface,
				path: options.path,
				timeout: 20_000,
			}),
	};
}

function unknownCase(random: Random, path: string): Case {
	switch (random.int(5)) {
		case 0: {
			const member = randomMember(random);
			return call(`unknown method ${member}`, member, 's', [path], { mustFail: true });
		}
		case 1: {
			const iface = random.pick([
				'com.example.Nope',
				'org.opencontainers.MemfdBind2',
				'org.freedesktop.DBus',
				'org.freedesktop.systemd1.Manager',
			]);
			return call(`Bind on interface ${iface}`, 'Bind', 's', [path], {
				mustFail: true,
				interface: iface,
			});
		}
		case 2:
			// Without an interface header the service matches the member alone.
			return call(`Bind without interface (${show(path)})`, 'Bind', 's', [path], {
				mustFail: true,
				interface: null,
			});
		case 3: {
			const object = random.pick([
				'/',
				'/org',
				'/org/opencontainers/MemfdBind/child',
				'/org/opencontainers/MemfdBind1',
			]);
			return call(`Bind on object ${object}`, 'Bind', 's', [path], {
				mustFail: true,
				path: object,
			});
		}
		default:
			return call('Peer.GetMachineId with an argument', 'GetMachineId', 's', [path], {
				mustFail: true,
				interface: 'org.freedesktop.DBus.Peer',
			});
	}
}

function propertiesCase(random: Random): Case {
	const options = { mustFail: false, interface: 'org.freedesktop.DBus.Properties' };
	switch (random.int(5)) {
		case 0:
			return call('Properties.Get Version', 'Get', 'ss', [INTERFACE, 'Version'], options);
		case 1:
			return call(
				'Properties.Get of an unknown property',
				'Get',
				'ss',
				[INTERFACE, randomMember(random)],
				{ ...options, mustFail: true },
			);
		case 2:
			return call("Properties.Get with signature 'ii'", 'Get', 'ii', [1, 2], {
				...options,
				mustFail: true,
			});
		case 3:
			return call(
				'Properties.Set Version',
				'Set',
				'ssv',
				[INTERFACE, 'Version', new Variant('s', '9.9')],
				{ ...options, mustFail: true },
			);
		default:
			return call("Properties.GetAll with signature 'as'", 'GetAll', 'as', [[INTERFACE]], {
				...options,
				mustFail: true,
			});
	}
}

// Frames a client library would not build. The bus daemon must refuse the invalid ones (it
// drops the connection); the valid odd ones (big-endian) must get an ordinary answer.
function rawCase(random: Random, stage: Stage, path: string, options: MalformedOptions): Case {
	const base = {
		path: '/org/opencontainers/MemfdBind',
		interface: INTERFACE,
		destination: 'org.opencontainers.MemfdBind',
	};
	// What must happen: the bus drops the connection, the service answers with an error, or it
	// answers with success (a valid call in an unusual byte order).
	const frames: Array<[string, RawCall, 'dropped' | 'error' | 'success']> = [
		[
			'Bind with a non-UTF-8 string',
			{
				...base,
				member: 'Bind',
				signature: Buffer.from('s'),
				body: stringBody(nonUtf8Path(random)),
			},
			'dropped',
		],
		[
			'Bind with a NUL inside the string',
			{
				...base,
				member: 'Bind',
				signature: Buffer.from('s'),
				body: stringBody(Buffer.from('/tmp/a\0b')),
			},
			'dropped',
		],
		[
			'Bind with the invalid signature "("',
			{ ...base, member: 'Bind', signature: Buffer.from('('), body: Buffer.alloc(0) },
			'dropped',
		],
		[
			'Bind with the invalid signature "{ss}"',
			{ ...base, member: 'Bind', signature: Buffer.from('{ss}'), body: Buffer.alloc(8) },
			'dropped',
		],
		[
			'Bind with a body shorter than its signature',
			{
				...base,
				member: 'Bind',
				signature: Buffer.from('s'),
				body: Buffer.from([200, 0, 0, 0, 47]),
			},
			'dropped',
		],
		[
			'a call to the invalid member "1Bind"',
			{
				...base,
				member: '1Bind',
				signature: Buffer.from('s'),
				body: stringBody(Buffer.from(path)),
			},
			'dropped',
		],
		[
			'Bind on the invalid object path "//x"',
			{
				...base,
				path: '//x',
				member: 'Bind',
				signature: Buffer.from('s'),
				body: stringBody(Buffer.from(path)),
			},
			'dropped',
		],
		[
			'a big-endian Bind',
			{
				...base,
				member: 'Bind',
				signature: Buffer.from('s'),
				body: stringBody(Buffer.from(path), true),
				bigEndian: true,
			},
			'error',
		],
		['a big-endian List', { ...base, member: 'List', bigEndian: true }, 'success'],
	];
	if (options.fdIndexFrames !== false) {
		frames.push([
			'Bind with an fd index and no fd',
			{ ...base, member: 'Bind', signature: Buffer.from('h'), body: uint32Body(random.int(3)) },
			'error',
		]);
		frames.push([
			'Bind with a variant holding an fd index and no fd',
			{
				...base,
				member: 'Bind',
				signature: Buffer.from('v'),
				body: Buffer.from([1, 0x68, 0, 0, 0, 0, 0, 0]),
			},
			'error',
		]);
	}
	const [describe, frame, expected] = random.pick(frames);
	return {
		describe: `raw frame: ${describe}`,
		mustFail: expected !== 'success',
		send: async (): Promise<RawVerdict> => {
			const outcome = await sendRaw(stage.sandbox.address, frame).catch(() => ({
				disconnected: true,
				reply: undefined,
			}));
			const reply = outcome.reply ?? (outcome.disconnected ? undefined : 'no answer');
			const verdict: RawVerdict = {
				raw: true,
				refused: reply === undefined || reply !== '',
				reply,
			};
			if (expected === 'dropped' && reply !== undefined) {
				verdict.problem = `the bus delivered it (${reply || 'success'})`;
			} else if (expected === 'error' && reply === '') {
				verdict.problem = 'the service accepted it';
			} else if (expected === 'success' && reply !== '') {
				verdict.problem = `it failed: ${reply ?? 'the bus dropped it'}`;
			}
			return verdict;
		},
	};
}

// As an unprivileged user, with no polkit on this bus: every privileged call must be refused,
// and Bind of a perfectly good file must be refused as not authorized.
function userCase(random: Random, stage: Stage, hostile: HostileFiles, path: string): Case {
	const member = random.pick(PATH_METHODS);
	const target = random.int(2) === 0 ? hostile.regular : path;
	return {
		describe: `${member}(${show(target)}) as nobody`,
		mustFail: true,
		send: async (): Promise<Outcome> => {
			// gdbus prints the error's name; it reads an argument it cannot parse as a plain string.
			const result = stage.sandbox.run(
				'gdbus',
				[
					'call',
					'--address',
					stage.sandbox.address,
					'--dest',
					'org.opencontainers.MemfdBind',
					'--object-path',
					'/org/opencontainers/MemfdBind',
					'--method',
					`${INTERFACE}.${member}`,
					'--',
					target,
				],
				{ user: 'nobody', timeout: 20_000 },
			);
			if (result.status === 0) {
				return { ok: true, error: '', text: result.stdout, body: [] };
			}
			const error = /GDBus\.Error:([\w.]+):/.exec(result.stderr)?.[1] ?? 'gdbus.Refused';
			if (target === hostile.regular && member === 'Bind' && error !== ErrorName.AccessDenied) {
				return { ok: false, error: 'torture.NotDenied', text: result.stderr, body: [] };
			}
			return { ok: false, error, text: result.stderr, body: [] };
		},
	};
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

function hostilePath(random: Random, stage: Stage, hostile: HostileFiles): string {
	const missing = join(stage.files, 'missing');
	switch (random.int(12)) {
		case 0:
			return random.pick([
				'',
				' ',
				'.',
				'..',
				'/',
				'//',
				'///',
				'/..',
				'/../',
				'/./',
				'relative/path',
				'~root/x',
				'\n',
				'-',
				'--help',
			]);
		case 1:
			return random.pick([
				`${stage.files}/../files/regular`,
				`${stage.files}//regular`,
				`${stage.files}/regular/`,
				`${stage.files}/./regular`,
				`${missing}/..`,
			]);
		case 2:
			return `${missing}/${random.pick(['a b', 'a\nb', '\t', ' ', '\'"\\$(reboot)`', '\u00e9\u4e2d\u{1F600}', '\u202eexe.txt', '\ud800', '\u0001\u007f', '*?[', '%s%n'])}`;
		case 3:
			return random.pick([
				'/proc/self/exe',
				'/proc/1/root',
				'/proc',
				'/sys/kernel/notes',
				'/dev/null',
				'/dev',
				'/dev/shm/x',
				'/sys',
			]);
		case 4:
			return `/${'a'.repeat(random.pick([255, 256, 1000]))}`;
		case 5:
			// 4095 bytes passes the length check and reaches the file system; 4096 does not.
			return longPath(missing, random.pick([4095, 4096, 4097]));
		case 6:
			return random.pick([
				'x'.repeat(65536),
				`/${'y'.repeat(65535)}`,
				`${missing}/${'z/'.repeat(30000)}z`,
			]);
		case 7:
			return random.pick(hostile.existing);
		case 8:
			// D-Bus strings cannot carry NUL; the raw frames send that.
			return `${missing}/${random
				.bytes(1 + random.int(40))
				.toString('latin1')
				.replaceAll('\0', '@')}`;
		case 9:
			return `/${Array.from({ length: 1 + random.int(6) }, () => random.pick(['..', '.', '', 'usr', 'bin', 'x y', '\n'])).join('/')}`;
		default:
			return `${missing}/${randomMember(random)}`;
	}
}

function longPath(prefix: string, bytes: number): string {
	const parts = [prefix];
	let length = prefix.length;
	while (length < bytes) {
		const part = 'd'.repeat(Math.min(200, bytes - length - 1));
		parts.push(part);
		length += part.length + 1;
	}
	return parts.join('/').slice(0, bytes);
}

function nonUtf8Path(random: Random): Buffer {
	return Buffer.concat([
		Buffer.from('/tmp/'),
		random.bytes(4),
		Buffer.from([0xff, 0xfe, 0xc3, 0x28]),
	]);
}

function randomMember(random: Random): string {
	const first = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_';
	const rest = `${first}0123456789`;
	let name = random.pick([...first]);
	for (let i = random.int(20); i > 0; i--) {
		name += random.pick([...rest]);
	}
	return name;
}

const BASIC = ['y', 'b', 'n', 'q', 'i', 'u', 'x', 't', 'd', 's', 'o', 'g'];

// A random complete signature of `count` types, nested at most three deep.
function randomSignature(random: Random, count: number, depth = 0): string {
	let signature = '';
	for (let i = 0; i < count; i++) {
		const kind = depth >= 3 ? 0 : random.int(6);
		if (kind <= 2) {
			signature += random.pick(BASIC);
		} else if (kind === 3) {
			signature += `a${randomSignature(random, 1, depth + 1)}`;
		} else if (kind === 4) {
			signature += `a{${random.pick(['s', 'o'])}${randomSignature(random, 1, depth + 1)}}`;
		} else {
			signature +=
				random.int(2) === 0 ? 'v' : `(${randomSignature(random, 1 + random.int(3), depth + 1)})`;
		}
	}
	return signature;
}

function randomValues(random: Random, signature: string, path: string): unknown[] {
	const values: unknown[] = [];
	let at = 0;
	while (at < signature.length) {
		const end = completeTypeEnd(signature, at);
		values.push(randomValue(random, signature.slice(at, end), path));
		at = end;
	}
	return values;
}

function randomValue(random: Random, type: string, path: string): unknown {
	switch (type[0]) {
		case 'y':
			return random.int(256);
		case 'b':
			return random.int(2) === 0;
		case 'n':
			return random.int(65536) - 32768;
		case 'q':
			return random.int(65536);
		case 'i':
			return random.int(2 ** 31) * (random.int(2) === 0 ? -1 : 1);
		case 'u':
			return random.int(2 ** 32);
		case 'x':
			return BigInt(random.int(2 ** 31)) * (random.int(2) === 0 ? -1n : 1n) * 2n ** 31n;
		case 't':
			return BigInt(random.int(2 ** 32)) * 2n ** 32n;
		case 'd':
			return random.pick([0, -1.5, 1e300, 5e-324]);
		case 's':
			return random.int(2) === 0 ? path : randomMember(random);
		case 'o':
			return random.pick(['/', '/org/opencontainers/MemfdBind', '/a/b_c/d1']);
		case 'g':
			return random.pick(['', 's', 'a{sv}', '(iii)']);
		case 'v': {
			const inner = randomSignature(random, 1, 2);
			return new Variant(inner, randomValue(random, inner, path));
		}
		case 'a': {
			const element = type.slice(1);
			const length = random.int(4);
			if (element === 'y') {
				return random.bytes(length * 8);
			}
			if (element[0] === '{') {
				const keyType = element[1];
				const valueType = element.slice(2, -1);
				const dict: Record<string, unknown> = {};
				for (let i = 0; i < length; i++) {
					const key = keyType === 'o' ? `/k${i}` : randomMember(random);
					dict[key] = randomValue(random, valueType, path);
				}
				return dict;
			}
			return Array.from({ length }, () => randomValue(random, element, path));
		}
		case '(':
			return randomValues(random, type.slice(1, -1), path);
		default:
			throw new Error(`no generator for '${type}'`);
	}
}

// The index just past the complete type starting at `at`.
function completeTypeEnd(signature: string, at: number): number {
	const c = signature[at];
	if (c === 'a') {
		return completeTypeEnd(signature, at + 1);
	}
	if (c === '(' || c === '{') {
		const close = c === '(' ? ')' : '}';
		let depth = 0;
		for (let i = at; i < signature.length; i++) {
			if (signature[i] === c) {
				depth++;
			} else if (signature[i] === close && --depth === 0) {
				return i + 1;
			}
		}
	}
	return at + 1;
}

function show(path: string): string {
	const shown = JSON.stringify(
		path.length > 60 ? `${path.slice(0, 40)}…(${path.length} chars)` : path,
	);
	return shown;
}
