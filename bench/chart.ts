// A hand-written SVG of rows 1 and 3: Shmem growth for the held launches (linear scale), and
// Bind against cp per file size (log scale, since the sizes span two orders of magnitude).

/** What the chart shows; the figures come from the same run as the table. */
export interface ChartData {
	launches: number;
	binaryKiB: number;
	unboundKiB: number;
	boundKiB: number;
	bind: Array<{ sizeMiB: number; cpMs: number; serviceMs: number; memfdctlMs: number }>;
}

const WIDTH = 820;
const HEIGHT = 340;
const TOP = 56;
const BOTTOM = 280;
const COLORS = {
	unbound: '#c0504d',
	bound: '#4f81bd',
	cp: '#9b9b9b',
	service: '#4f81bd',
	memfdctl: '#8064a2',
};

/** Returns the SVG document. */
export function renderChart(data: ChartData): string {
	const parts = [
		`<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`,
		`<rect width="${WIDTH}" height="${HEIGHT}" fill="#ffffff"/>`,
		...shmemPanel(data, 60, 300),
		...bindPanel(data, 440, 360),
		'</svg>',
		'',
	];
	return parts.join('\n');
}

// Panel 1: two bars, unbound and bound, in MiB.
function shmemPanel(data: ChartData, left: number, width: number): string[] {
	const unbound = data.unboundKiB / 1024;
	const bound = data.boundKiB / 1024;
	const max = niceCeiling(Math.max(unbound, bound, 1));
	const y = (value: number) => BOTTOM - (Math.max(value, 0) / max) * (BOTTOM - TOP);
	const out = [
		title(left, `Row 1: Shmem growth, ${data.launches} held launches`),
		subtitle(left, `launcher of ${(data.binaryKiB / 1024).toFixed(1)} MiB; lower is better`),
		...axis(left, width),
	];
	for (const tick of [0, max / 2, max]) {
		out.push(gridLine(left, width, y(tick), `${Number(tick.toPrecision(3))} MiB`));
	}
	const bars: Array<[string, number, string]> = [
		['unbound', unbound, COLORS.unbound],
		['bound', bound, COLORS.bound],
	];
	bars.forEach(([label, value, color], i) => {
		const x = left + 40 + i * 130;
		out.push(
			`<rect x="${x}" y="${y(value).toFixed(1)}" width="90" height="${(BOTTOM - y(value)).toFixed(1)}" fill="${color}"/>`,
			text(x + 45, y(value) - 6, `${formatNumber(value)} MiB`, 'middle'),
			text(x + 45, BOTTOM + 18, label, 'middle'),
		);
	});
	return out;
}

// Panel 3: per size, cp, Bind (service side) and memfdctl bind, on a log scale in ms.
function bindPanel(data: ChartData, left: number, width: number): string[] {
	const values = data.bind
		.flatMap((cost) => [cost.cpMs, cost.serviceMs, cost.memfdctlMs])
		.filter((v) => v > 0);
	const low = 10 ** Math.floor(Math.log10(Math.min(...values, 1)));
	const high = 10 ** Math.ceil(Math.log10(Math.max(...values, 10)));
	const span = Math.log10(high) - Math.log10(low);
	const y = (value: number) =>
		BOTTOM - ((Math.log10(Math.max(value, low)) - Math.log10(low)) / span) * (BOTTOM - TOP);
	const out = [
		title(left, 'Row 3: Bind against cp into /dev/shm'),
		subtitle(left, 'median ms, log scale; sha256 included; lower is better'),
		...axis(left, width),
	];
	for (let tick = low; tick <= high; tick *= 10) {
		out.push(gridLine(left, width, y(tick), `${tick >= 1 ? tick.toFixed(0) : tick} ms`));
	}
	const series: Array<[string, string, (cost: ChartData['bind'][number]) => number]> = [
		['cp', COLORS.cp, (cost) => cost.cpMs],
		['Bind (service)', COLORS.service, (cost) => cost.serviceMs],
		['memfdctl bind', COLORS.memfdctl, (cost) => cost.memfdctlMs],
	];
	const groupWidth = width / data.bind.length;
	data.bind.forEach((cost, group) => {
		const groupLeft = left + group * groupWidth + 14;
		series.forEach(([, color, read], i) => {
			const value = read(cost);
			const x = groupLeft + i * 32;
			// The Bind bar's label goes above the goal line too, so the line never crosses it.
			const top = i === 1 ? Math.min(y(value), y(2 * cost.cpMs)) : y(value);
			out.push(
				`<rect x="${x}" y="${y(value).toFixed(1)}" width="28" height="${(BOTTOM - y(value)).toFixed(1)}" fill="${color}"/>`,
				text(x + 14, top - 4, formatNumber(value), 'middle', 10),
			);
		});
		// The goal: Bind within 2x of cp, drawn across the Bind bar.
		const goal = y(2 * cost.cpMs).toFixed(1);
		out.push(
			`<line x1="${groupLeft + 28}" y1="${goal}" x2="${groupLeft + 64}" y2="${goal}" stroke="#000" stroke-dasharray="4 2"/>`,
			text(groupLeft + 46, BOTTOM + 18, `${cost.sizeMiB} MiB`, 'middle'),
		);
	});
	// Legend: each entry as wide as its label (about 7 px a character at 12 px).
	let x = left - 40;
	for (const [label, color] of series) {
		out.push(
			`<rect x="${x}" y="${BOTTOM + 32}" width="10" height="10" fill="${color}"/>`,
			text(x + 14, BOTTOM + 41, label, 'start'),
		);
		x += 30 + label.length * 7;
	}
	out.push(
		`<line x1="${x}" y1="${BOTTOM + 37}" x2="${x + 16}" y2="${BOTTOM + 37}" stroke="#000" stroke-dasharray="4 2"/>`,
		text(x + 20, BOTTOM + 41, 'goal: 2x cp', 'start'),
	);
	return out;
}

function axis(left: number, width: number): string[] {
	return [`<line x1="${left}" y1="${BOTTOM}" x2="${left + width}" y2="${BOTTOM}" stroke="#333"/>`];
}

function gridLine(left: number, width: number, y: number, label: string): string {
	return [
		`<line x1="${left}" y1="${y.toFixed(1)}" x2="${left + width}" y2="${y.toFixed(1)}" stroke="#ddd"/>`,
		text(left - 6, y + 4, label, 'end', 10),
	].join('\n');
}

function title(left: number, content: string): string {
	return `<text x="${left - 50}" y="22" font-size="14" font-weight="bold">${escape(content)}</text>`;
}

function subtitle(left: number, content: string): string {
	return `<text x="${left - 50}" y="40" fill="#555">${escape(content)}</text>`;
}

function text(
	x: number,
	y: number,
	content: string,
	anchor: 'start' | 'middle' | 'end',
	size = 12,
): string {
	return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" text-anchor="${anchor}" font-size="${size}">${escape(content)}</text>`;
}

// 1, 2 or 5 times a power of ten, at least `value`.
function niceCeiling(value: number): number {
	const power = 10 ** Math.floor(Math.log10(value));
	return (
		[1, 1.5, 2, 3, 5, 10].map((step) => step * power).find((candidate) => candidate >= value) ??
		value
	);
}

function formatNumber(value: number): string {
	return value >= 100
		? value.toFixed(0)
		: value >= 10
			? value.toFixed(1)
			: value.toFixed(2).replace(/\.?0+$/, '') || '0';
}

function escape(content: string): string {
	return content.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
