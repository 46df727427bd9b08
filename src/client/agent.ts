// Starts pkttyagent for the duration of a call, as systemctl does, so polkit can ask for a
// password on this terminal. Never in scripts: only for a non-root user on a terminal, outside CI.

export interface PolkitAgent {
	stop(): Promise<void>;
}

const PKTTYAGENT = 'pkttyagent';

/** Returns a running agent, or undefined when no prompt belongs here. */
export async function startPolkitAgent(): Promise<PolkitAgent | undefined> {
	if (process.getuid?.() === 0 || !process.stdin.isTTY || process.env.CI !== undefined) {
		return undefined;
	}
	// execa takes about 100 ms to import; only a call that may prompt pays for it.
	const { execa } = await import('execa');
	// pkttyagent closes fd 3 once it is registered for this process. No --fallback: polkitd only
	// consults a fallback agent when the caller is in a logind session, so under su, setpriv or a
	// container the agent would register and never be asked, and no prompt would ever appear.
	const child = execa(PKTTYAGENT, ['--notify-fd', '3', '--process', String(process.pid)], {
		stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
		reject: false,
	});
	const registered = await new Promise<boolean>((resolve) => {
		const notify = child.stdio[3] as NodeJS.ReadableStream | null;
		if (notify === null) {
			resolve(false);
			return;
		}
		notify.on('data', () => {});
		notify.on('end', () => resolve(true));
		notify.on('error', () => resolve(false));
		void child.then(() => resolve(false));
	});
	if (!registered) {
		child.kill();
		return undefined;
	}
	return {
		async stop() {
			child.kill('SIGTERM');
			await child;
		},
	};
}
