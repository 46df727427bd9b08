// Load generator, run as its own process so the bench's event loop never delays a reply:
// `node bus-load.js '<json>'` opens `clients` connections, each makes `calls` calls back to back
// after a short warm-up, all starting together, and prints every latency (ms) as one JSON line.
import { BenchBus } from './bus-client.js';
import type { Target } from './bus-client.js';

export interface LoadRequest {
	address: string;
	target: Target;
	clients: number;
	calls: number;
	warmup: number;
}

export interface LoadResult {
	latencies: number[];
	errors: string[];
	elapsedMs: number;
}

const request = JSON.parse(process.argv[2] ?? '{}') as LoadRequest;
const clients = await Promise.all(
	Array.from({ length: request.clients }, () => BenchBus.connect(request.address)),
);
for (const client of clients) {
	for (let i = 0; i < request.warmup; i++) {
		await client.call(request.target);
	}
}

const latencies: number[] = [];
const errors: string[] = [];
const start = process.hrtime.bigint();
await Promise.all(clients.map((client) => loop(client)));
const elapsedMs = Number(process.hrtime.bigint() - start) / 1e6;
for (const client of clients) {
	client.disconnect();
}
process.stdout.write(`${JSON.stringify({ latencies, errors, elapsedMs } satisfies LoadResult)}\n`);

// One client: the next call goes out as soon as the previous reply is in.
async function loop(client: BenchBus): Promise<void> {
	for (let i = 0; i < request.calls; i++) {
		try {
			latencies.push(await client.time(request.target));
		} catch (error: unknown) {
			errors.push(String((error as { type?: string }).type ?? error));
		}
	}
}
