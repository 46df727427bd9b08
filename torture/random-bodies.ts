// Random but well-formed D-Bus bodies: a complete signature of nested types and values that
// fit it, for calls whose arguments the service does not expect.
import dbus from 'dbus-next';
import type { Random } from './report.js';

const { Variant } = dbus;

/** A random member name, valid for D-Bus and unknown to the service. */
export function randomMember(random: Random): string {
	const first = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_';
	const rest = `${first}0123456789`;
	let name = random.pick([...first]);
	for (let i = random.int(20); i > 0; i--) {
		name += random.pick([...rest]);
	}
	return name;
}

const BASIC = ['y', 'b', 'n', 'q', 'i', 'u', 'x', 't', 'd', 's', 'o', 'g'];

/** A random complete signature of `count` types, nested at most three deep. */
export function randomSignature(random: Random, count: number, depth = 0): string {
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

export function randomValues(random: Random, signature: string, path: string): unknown[] {
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
