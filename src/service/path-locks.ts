// Serialises operations per path: calls on one path run one after another, calls on different
// paths run side by side (a large copy on one path does not hold up the others).
export class PathLocks {
	private readonly tails = new Map<string, Promise<void>>();

	/** Runs `task` once every earlier task on `key` has settled. */
	async run<T>(key: string, task: () => Promise<T>): Promise<T> {
		const previous = this.tails.get(key) ?? Promise.resolve();
		let done!: () => void;
		const current = new Promise<void>((resolve) => (done = resolve));
		const tail = previous.then(() => current);
		this.tails.set(key, tail);
		await previous;
		try {
			return await task();
		} finally {
			done();
			if (this.tails.get(key) === tail) {
				this.tails.delete(key);
			}
		}
	}

	/** The number of paths with a task queued or running. */
	get size(): number {
		return this.tails.size;
	}
}
