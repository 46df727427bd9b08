// Turns records and statuses into the text memfdctl prints (a table, or JSON with --json).
import { escapeControls } from '../common/quote.js';
import type { PathStatus } from './status.js';
import type { BindingRecord } from './proxy.js';

/** Formats `memfdctl list`. */
export function formatList(records: BindingRecord[], json: boolean): string {
	if (json) {
		return `${JSON.stringify(records.map(toJson), null, 2)}\n`;
	}
	if (records.length === 0) {
		return 'No bindings.\n';
	}
	const rows = [['PATH', 'STATE', 'SIZE', 'SEALS', 'SINCE', 'BOUND BY', 'HOLDER']];
	for (const record of records) {
		rows.push([
			escapeControls(record.Path),
			record.State,
			record.Size === undefined ? '-' : formatSize(Number(record.Size)),
			record.Seals === undefined ? '-' : `0x${record.Seals.toString(16)}`,
			record.BoundAt === undefined ? '-' : new Date(Number(record.BoundAt / 1000n)).toISOString(),
			record.BoundBy === undefined ? '-' : `uid ${record.BoundBy}`,
			record.HolderPid === undefined ? '-' : String(record.HolderPid),
		]);
	}
	const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
	return (
		rows
			.map((row) =>
				row
					.map((cell, i) => cell.padEnd(widths[i]))
					.join('  ')
					.trimEnd(),
			)
			.join('\n') + '\n'
	);
}

/** Formats `memfdctl status`. */
export function formatStatus(status: PathStatus, json: boolean): string {
	if (json) {
		return `${JSON.stringify(status, null, 2)}\n`;
	}
	const path = escapeControls(status.path);
	const holder =
		status.holder === undefined ? '' : `  held by: ${describeHolder(status.holder, path)}\n`;
	if (status.error !== undefined) {
		return `${path}: cannot be opened\n${holder}`;
	}
	const seals = status.seals === undefined ? 'none' : `0x${status.seals.toString(16)}`;
	const yes = (value: boolean) => (value ? 'yes, skips its own copy' : 'no, copies itself');
	const lines = [
		`${path}: ${status.memfd ? 'sealed memfd' : 'not a memfd'} (${status.target ?? '?'}), seals ${seals}`,
		`  runc 1.1.x and crun (seals exactly 0xf): ${yes(status.clonedExact)}`,
		`  runc 1.2 and later (seals include 0xf):  ${yes(status.clonedSuperset)}`,
	];
	return `${lines.join('\n')}\n${holder}`;
}

function describeHolder(holder: NonNullable<PathStatus['holder']>, path: string): string {
	if (holder.kind === 'memfd-bind') {
		return `memfd-bind (holder pid ${holder.pid})`;
	}
	if (holder.kind === 'stale') {
		return `nobody: stale mount, holder pid ${holder.pid} is gone (memfdctl cleanup ${path} removes it)`;
	}
	return `pid ${holder.pid} (${holder.name ?? '?'}), not memfd-bind`;
}

function toJson(record: BindingRecord): Record<string, unknown> {
	const out: Record<string, unknown> = {};
	for (const [key, value] of Object.entries(record)) {
		out[key] = typeof value === 'bigint' ? Number(value) : value;
	}
	return out;
}

function formatSize(bytes: number): string {
	const units = ['B', 'KiB', 'MiB', 'GiB'];
	let value = bytes;
	let unit = 0;
	while (value >= 1024 && unit < units.length - 1) {
		value /= 1024;
		unit++;
	}
	return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}
