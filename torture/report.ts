// What an attack reports, and the one summary line printed for it.

/** The outcome of one attack. A loss is any promise the service broke; there should be none. */
export interface AttackResult {
	name: string;
	/** Calls or rounds attempted. */
	tried: number;
	/** Calls or rounds that ended in an error reply (mostly expected: the input was hostile). */
	failed: number;
	/** The service answered at the end, and never died when it should not have. */
	alive: boolean;
	/** The mount table was what the attack expected at every check. */
	mountsAsExpected: boolean;
	losses: string[];
	/** Counts and timings worth printing beside the line, e.g. which errors came back. */
	notes: string[];
	seconds: number;
}

/** Collects an attack's counts as it runs. */
export class Tally {
	tried = 0;
	failed = 0;
	alive = true;
	mountsAsExpected = true;
	readonly losses: string[] = [];
	readonly notes: string[] = [];
	private readonly counts = new Map<string, number>();
	private readonly started = Date.now();

	constructor(readonly name: string) {}

	/** Records a broken promise; `kind` says which summary column it spoils. */
	loss(message: string, kind: 'mounts' | 'alive' | 'other' = 'other'): void {
		if (kind === 'mounts') {
			this.mountsAsExpected = false;
		}
		if (kind === 'alive') {
			this.alive = false;
		}
		this.losses.push(message);
	}

	/** Counts one occurrence of `key`, e.g. an error name; printed as a note. */
	count(key: string, by = 1): void {
		this.counts.set(key, (this.counts.get(key) ?? 0) + by);
	}

	result(): AttackResult {
		const counted = [...this.counts]
			.sort((a, b) => b[1] - a[1])
			.map(([key, value]) => `${key}=${value}`);
		return {
			name: this.name,
			tried: this.tried,
			failed: this.failed,
			alive: this.alive,
			mountsAsExpected: this.mountsAsExpected,
			losses: this.losses,
			notes: [...this.notes, ...(counted.length > 0 ? [counted.join(' ')] : [])],
			seconds: (Date.now() - this.started) / 1000,
		};
	}
}

/** One line per attack: tried / failed / service alive / mount table as expected / losses. */
export function summaryLine(result: AttackResult): string {
	const yes = (value: boolean) => (value ? 'yes' : 'NO');
	return [
		result.name.padEnd(14),
		`tried ${String(result.tried).padStart(5)}`,
		`failed ${String(result.failed).padStart(5)}`,
		`service alive ${yes(result.alive)}`,
		`mount table as expected ${yes(result.mountsAsExpected)}`,
		`losses ${result.losses.length}`,
		`${result.seconds.toFixed(1)} s`,
	].join('  ');
}

/** A small seeded generator, so a run that finds a fault can be repeated with --seed. */
export class Random {
	private state: number;

	constructor(seed: number) {
		this.state = seed >>> 0;
	}

	/** A float in [0, 1) (mulberry32). */
	next(): number {
		this.state = (this.state + 0x6d2b79f5) >>> 0;
		let t = this.state;
		t = Math.imul(t ^ (t >>> 15), t | 1);
		t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
		return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
	}

	int(below: number): number {
		return Math.floor(this.next() * below);
	}

	pick<T>(items: readonly T[]): T {
		return items[this.int(items.length)];
	}

	/** Picks a key with probability proportional to its weight. */
	weighted<K extends string>(weights: Record<K, number>): K {
		const entries = Object.entries(weights) as Array<[K, number]>;
		let left = this.next() * entries.reduce((sum, [, weight]) => sum + weight, 0);
		for (const [key, weight] of entries) {
			left -= weight;
			if (left < 0) {
				return key;
			}
		}
		return entries[entries.length - 1][0];
	}

	bytes(length: number): Buffer {
		const bytes = Buffer.alloc(length);
		for (let i = 0; i < length; i++) {
			bytes[i] = this.int(256);
		}
		return bytes;
	}
}
