// One worker thread shared by every Bind, fed with byte ranges as the copy advances. The
// caller must await `digest` or `abort` before closing the fd it handed over.
import { Worker } from 'node:worker_threads';
import type { HashReply, HashRequest } from './hash-worker.js';

/** A sha256 computed beside the copy. */
export interface HashJob {
	/** Hashes bytes up to `upTo` (they must already be in the file). */
	update(upTo: number): void;
	digest(): Promise<string>;
	abort(): Promise<void>;
}

let worker: Worker | undefined;
let nextId = 1;
const waiting = new Map<number, (reply: HashReply) => void>();

/** Starts hashing `fd` from byte 0. */
export function startHash(fd: number): HashJob {
	const id = nextId++;
	const thread = ensureWorker();
	send(thread, { kind: 'start', id, fd });
	const finish = (kind: 'digest' | 'abort') =>
		new Promise<HashReply>((resolve) => {
			// A worker that died answers nothing: settle at once instead of waiting forever.
			if (worker !== thread) {
				resolve({ id, error: 'the hash worker stopped' });
				return;
			}
			waiting.set(id, resolve);
			send(thread, { kind, id });
		});
	return {
		update: (upTo) => send(thread, { kind: 'update', id, upTo }),
		async digest() {
			const reply = await finish('digest');
			if (reply.digest === undefined) {
				throw new Error(`Failed to hash the copy: ${reply.error ?? 'no digest'}`);
			}
			return reply.digest;
		},
		async abort() {
			await finish('abort');
		},
	};
}

function send(thread: Worker, request: HashRequest): void {
	thread.postMessage(request);
}

// The worker is started on first use and does not keep the service alive on its own.
function ensureWorker(): Worker {
	if (worker === undefined) {
		worker = new Worker(new URL('./hash-worker.js', import.meta.url));
		worker.unref();
		worker.on('message', (reply: HashReply) => {
			waiting.get(reply.id)?.(reply);
			waiting.delete(reply.id);
		});
		const thread = worker;
		const lose = (reason: string) => {
			if (worker !== thread) {
				return;
			}
			worker = undefined;
			for (const resolve of waiting.values()) {
				resolve({ id: 0, error: reason });
			}
			waiting.clear();
		};
		worker.on('error', (error: Error) => lose(`the hash worker failed: ${error.message}`));
		worker.on('exit', (code: number) => lose(`the hash worker exited with ${code}`));
	}
	return worker;
}
