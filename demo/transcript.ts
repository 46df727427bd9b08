// What the demo prints: headed sections, each command as `$ command` before its output, short
// `#` notes, and a table of figures, so the run reads like a terminal session.
import { spawnSync } from 'node:child_process';
import type { SpawnSyncOptions } from 'node:child_process';

/** A step of the demo that did not turn out as it should; the message says what and why. */
export class DemoError extends Error {
	constructor(message: string) {
		super(message);
		Object.defineProperty(this, 'name', { value: 'DemoError', enumerable: false });
	}
}

/** Prints a section heading. */
export function section(title: string): void {
	process.stdout.write(`\n== ${title} ==\n`);
}

/** Prints a remark, written as a shell comment so the transcript stays readable as a session. */
export function note(text: string): void {
	for (const line of text.split('\n')) {
		process.stdout.write(`# ${line}\n`);
	}
}

/** Prints a command the way a person would type it. */
export function shown(display: string): void {
	process.stdout.write(`$ ${display}\n`);
}

export interface RunResult {
	stdout: string;
	stderr: string;
	status: number;
}

/**
 * Prints `$ display`, runs `argv`, prints its output, and throws DemoError when it fails.
 * `display` is what a sysadmin would type (`memfdctl list`), `argv` what really runs.
 */
export function runShown(
	display: string,
	argv: string[],
	options: SpawnSyncOptions = {},
): RunResult {
	shown(display);
	const result = spawnSync(argv[0], argv.slice(1), {
		encoding: 'utf8',
		stdio: ['ignore', 'pipe', 'pipe'],
		timeout: 60_000,
		...options,
	});
	const stdout = String(result.stdout ?? '');
	const stderr = String(result.stderr ?? '');
	process.stdout.write(stdout);
	process.stdout.write(stderr);
	if (result.error !== undefined) {
		throw new DemoError(`Failed to run '${display}': ${result.error.message}`);
	}
	if (result.status !== 0) {
		const how =
			result.status === null ? `was killed by ${result.signal}` : `exited with ${result.status}`;
		throw new DemoError(`'${display}' ${how}`);
	}
	return { stdout, stderr, status: 0 };
}

/** Prints rows as a table with a header line; the first column is left-aligned, others right. */
export function table(header: string[], rows: string[][]): void {
	const all = [header, ...rows];
	const widths = header.map((_, column) => Math.max(...all.map((row) => row[column].length)));
	const line = (row: string[]) =>
		row
			.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i])))
			.join('   ')
			.trimEnd();
	process.stdout.write(`${line(header)}\n`);
	process.stdout.write(`${widths.map((width) => '-'.repeat(width)).join('   ')}\n`);
	for (const row of rows) {
		process.stdout.write(`${line(row)}\n`);
	}
}

/** Formats a size in KiB as MiB with one decimal, e.g. `13.0 MiB`. */
export function mib(kib: number): string {
	return `${(kib / 1024).toFixed(1)} MiB`;
}

/** Formats a change in KiB as signed MiB, e.g. `+260.3 MiB`. */
export function deltaMib(kib: number): string {
	const sign = kib < 0 ? '-' : '+';
	return `${sign}${mib(Math.abs(kib))}`;
}

/** Throws DemoError with `message` unless `condition` holds. */
export function expect(condition: boolean, message: string): asserts condition {
	if (!condition) {
		throw new DemoError(message);
	}
}
