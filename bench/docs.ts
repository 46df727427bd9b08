// Puts the latest table and the machine it ran on into docs/benchmarks.md, between two marker
// comments, leaving the prose around them as written.
import { readFileSync, writeFileSync } from 'node:fs';
import { formatMarkdown } from './report.js';
import type { Report } from './report.js';

const START = '<!-- bench:start -->';
const END = '<!-- bench:end -->';

/** Replaces the generated section of `path`; throws when its markers are missing. */
export function updateDocs(path: string, report: Report): void {
	const text = readFileSync(path, 'utf8');
	const start = text.indexOf(START);
	const end = text.indexOf(END);
	if (start < 0 || end < start) {
		throw new Error(`Failed to update ${path}: the markers ${START} and ${END} are missing`);
	}
	const { machine } = report;
	const section = [
		START,
		`Measured ${report.date.slice(0, 10)} on ${machine.nproc} cores (${machine.cpu}), ${machine.memoryGiB} GiB, ` +
			`Linux ${machine.kernel}, Node ${machine.node}, ${machine.crun}; load average ${machine.loadAverage} at the start.`,
		'',
		formatMarkdown(report.lines).trimEnd(),
		'',
	].join('\n');
	writeFileSync(path, `${text.slice(0, start)}${section}${text.slice(end)}`);
}
