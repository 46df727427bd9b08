// What every benchmark row gets: the private bus with the service on it, a root connection to
// that bus, a scratch folder, and a place to leave raw figures for the JSON report.
import { chmodSync, closeSync, openSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { Service, Sandbox } from '../test/helpers/sandbox.js';
import type { BenchBus } from './bus-client.js';
import type { Line } from './report.js';

export interface BenchContext {
	sandbox: Sandbox;
	service: Service;
	/** A root connection to the private bus. */
	bus: BenchBus;
	/** Scratch folder inside the sandbox; removed with it. */
	work: string;
	/** The launcher built with a ~13 MiB payload. */
	launcher: string;
	/** The polkitd pid, or undefined when polkitd could not be started (and why). */
	polkitd: { pid: number } | { error: string };
	/** Raw figures per row, written to the JSON report. */
	details: Record<string, unknown>;
}

/** A benchmark row: measures, and returns its table lines. */
export type Row = (context: BenchContext) => Promise<Line[]>;

/** Writes `size` random bytes to a new executable file at `path`. */
export function writeRandomFile(path: string, size: number): void {
	const fd = openSync(path, 'wx', 0o755);
	try {
		for (let written = 0; written < size;) {
			const chunk = randomBytes(Math.min(1 << 20, size - written));
			written += writeSync(fd, chunk);
		}
	} finally {
		closeSync(fd);
	}
	chmodSync(path, 0o755);
}
