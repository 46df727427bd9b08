// One table line per figure: the figure, the baseline measured in the same run, their ratio and
// the issue's goal with whether it was met. Printed as text, written as JSON and as Markdown.
import { cpus, loadavg, totalmem } from 'node:os';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';

export interface Line {
	/** The issue's row, 1 to 6. */
	row: number;
	measure: string;
	figure: number;
	baseline: number;
	baselineLabel: string;
	unit: Unit;
	/** The goal in words, when the issue sets one for this line. */
	goal?: string;
	met?: boolean;
	/** Why the figure is what it is, or what was substituted. */
	note?: string;
}

export type Unit = 'ms' | 'KiB' | 'calls' | 'fds';

export interface Machine {
	nproc: number;
	cpu: string;
	memoryGiB: number;
	kernel: string;
	node: string;
	crun: string;
	/** 1-minute load average when the run started: other work on the machine skews timings. */
	loadAverage: number;
}

export interface Report {
	date: string;
	machine: Machine;
	lines: Line[];
	/** Raw figures behind the lines, per row, for anyone who wants to look closer. */
	details: Record<string, unknown>;
}

/** Describes the machine the run happened on. */
export function describeMachine(): Machine {
	const crun =
		spawnSync('crun', ['--version'], { encoding: 'utf8' }).stdout?.split('\n')[0] ?? 'absent';
	return {
		nproc: cpus().length,
		cpu: cpus()[0]?.model ?? 'unknown',
		memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
		kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
		node: process.version,
		crun,
		loadAverage: Math.round(loadavg()[0] * 100) / 100,
	};
}

/** The ratio figure/baseline, or NaN when the baseline is zero. */
export function ratioOf(line: Line): number {
	return line.baseline === 0 ? Number.NaN : line.figure / line.baseline;
}

/** Renders the lines as a fixed-width text table for the terminal. */
export function formatTable(lines: Line[]): string {
	const rows = [['#', 'Measure', 'Figure', 'Baseline (same run)', 'Ratio', 'Goal']];
	for (const line of lines) {
		rows.push(cells(line));
	}
	const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
	const text = rows.map((row) =>
		row
			.map((cell, i) => cell.padEnd(widths[i]))
			.join('  ')
			.trimEnd(),
	);
	text.splice(1, 0, widths.map((width) => '-'.repeat(width)).join('  '));
	const notes = lines
		.filter((line) => line.note !== undefined)
		.map((line) => `  [${line.row}] ${line.measure}: ${line.note}`);
	return `${text.join('\n')}\n${notes.length > 0 ? `\nNotes:\n${notes.join('\n')}\n` : ''}`;
}

/** Renders the lines as a Markdown table with the notes below it. */
export function formatMarkdown(lines: Line[]): string {
	const out = [
		'| # | Measure | Figure | Baseline (same run) | Ratio | Goal |',
		'|---|---|---|---|---|---|',
	];
	for (const line of lines) {
		out.push(
			`| ${cells(line)
				.map((cell) => cell.replace(/\|/g, '\\|'))
				.join(' | ')} |`,
		);
	}
	const notes = lines.filter((line) => line.note !== undefined);
	if (notes.length > 0) {
		out.push('', 'Notes:', '');
		for (const line of notes) {
			out.push(`- **[${line.row}] ${line.measure}**: ${line.note}`);
		}
	}
	return `${out.join('\n')}\n`;
}

function cells(line: Line): string[] {
	const ratio = ratioOf(line);
	const goal = line.goal === undefined ? '-' : `${line.met ? 'met' : 'MISSED'}: ${line.goal}`;
	return [
		String(line.row),
		line.measure,
		formatValue(line.figure, line.unit),
		`${formatValue(line.baseline, line.unit)} ${line.baselineLabel}`,
		Number.isNaN(ratio) ? '-' : `${ratio.toFixed(2)}x`,
		goal,
	];
}

/** Formats a value with its unit: ms with three significant digits, KiB as KiB or MiB. */
export function formatValue(value: number, unit: Unit): string {
	if (Number.isNaN(value)) {
		return 'n/a';
	}
	switch (unit) {
		case 'ms':
			return `${value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2)} ms`;
		case 'KiB':
			return Math.abs(value) >= 10240
				? `${(value / 1024).toFixed(1)} MiB`
				: `${value.toFixed(0)} KiB`;
		default:
			return `${Number.isInteger(value) ? value : value.toFixed(2)} ${unit}`;
	}
}
