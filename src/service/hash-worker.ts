// Runs in a worker thread: hashes the bytes of a memfd while the main thread is still copying
// into it, so a Bind costs one pass over the data instead of two. Jobs are served in order.
import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';

/** A message to the worker: start a job, hash up to a byte offset, finish, or drop it. */
export type HashRequest =
	| { kind: 'start'; id: number; fd: number }
	| { kind: 'update'; id: number; upTo: number }
	| { kind: 'digest'; id: number }
	| { kind: 'abort'; id: number };

/** The worker's answer to `digest` and `abort`. */
export type HashReply = { id: number; digest?: string; error?: string };

interface Job {
	fd: number;
	offset: number;
	hash: Hash;
	error?: string;
}

const jobs = new Map<number, Job>();
const buffer = Buffer.allocUnsafe(1 << 20);

parentPort?.on('message', (request: HashRequest) => {
	const job = jobs.get(request.id);
	if (request.kind === 'start') {
		jobs.set(request.id, { fd: request.fd, offset: 0, hash: createHash('sha256') });
	} else if (request.kind === 'update' && job !== undefined && job.error === undefined) {
		readUpTo(job, request.upTo);
	} else if (request.kind === 'digest' || request.kind === 'abort') {
		jobs.delete(request.id);
		const reply: HashReply = { id: request.id };
		if (request.kind === 'digest') {
			reply.error = job === undefined ? 'unknown job' : job.error;
			reply.digest = reply.error === undefined ? job?.hash.digest('hex') : undefined;
		}
		parentPort?.postMessage(reply);
	}
});

function readUpTo(job: Job, upTo: number): void {
	try {
		while (job.offset < upTo) {
			const length = Math.min(buffer.length, upTo - job.offset);
			const read = readSync(job.fd, buffer, 0, length, job.offset);
			if (read === 0) {
				throw new Error(`short read at byte ${job.offset} of ${upTo}`);
			}
			job.hash.update(buffer.subarray(0, read));
			job.offset += read;
		}
	} catch (error: unknown) {
		job.error = error instanceof Error ? error.message : String(error);
	}
}
