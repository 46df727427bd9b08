// The calls the malformed attack sends: hostile path strings, wrong signatures, unknown methods,
// interfaces and objects, random bodies, hand-made frames, and calls from an unprivileged user.
// Each case says what must happen to it; the attack judges the outcome.
import dbus from 'dbus-next';
import { ErrorName, INTERFACE } from '../src/common/names.js';
import type { BusClient, Outcome } from './client.js';
import { hostilePath, nonUtf8Path, show } from './hostile-paths.js';
import type { HostileFiles } from './hostile-paths.js';
import { randomMember, randomSignature, randomValues } from './random-bodies.js';
import { sendRaw, stringBody, uint32Body } from './raw-bus.js';
import type { RawCall } from './raw-bus.js';
import type { Random } from './report.js';
import type { Stage } from './stage.js';

const { Variant } = dbus;

/** Which frames naming an fd the message does not carry to send: among the rest, none, or only those. */
export type FdIndexFrames = 'include' | 'exclude' | 'only';

export const PATH_METHODS = ['Bind', 'Release', 'Refresh', 'Cleanup'];
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

/** One call to make, described for the loss report. */
export interface Case {
	describe: string;
	send: (client: BusClient) => Promise<Outcome | RawVerdict>;
	/** Members whose success would be a loss (they would have changed something). */
	mustFail: boolean;
}

export interface RawVerdict {
	raw: true;
	/** The bus dropped the frame, or the service answered with an error. */
	refused: boolean;
	reply?: string;
	/** What was wrong with the answer, when something was. */
	problem?: string;
}

/** Draws one case. */
export function makeCase(
	random: Random,
	stage: Stage,
	hostile: HostileFiles,
	fdIndexFrames: FdIndexFrames,
): Case {
	const kind =
		fdIndexFrames === 'only'
			? 'raw'
			: random.weighted({
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
				// Cleanup with one string is a valid call; its path is harmless here.
				mustFail: member !== 'List' && !(member === 'Cleanup' && signature === 's'),
			});
		}
		case 'raw':
			return rawCase(random, stage, path, fdIndexFrames);
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
		send: (client) =>
			client.call(member, signature, body, {
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
function rawCase(random: Random, stage: Stage, path: string, fdIndexFrames: FdIndexFrames): Case {
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
	if (fdIndexFrames === 'only') {
		frames.length = 0;
	}
	if (fdIndexFrames !== 'exclude') {
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
