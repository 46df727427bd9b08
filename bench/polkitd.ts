// Starts Debian's polkitd on the sandbox's private bus: a C service on the same bus to compare
// latencies against. It is started as root and switches itself to the polkitd account, the one
// the bus policy lets own org.freedesktop.PolicyKit1 (started as polkitd, it fails to drop groups).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Sandbox } from '../test/helpers/sandbox.js';
import { sleep } from './measure.js';

const POLKITD = '/usr/lib/polkit-1/polkitd';
export const POLKIT_NAME = 'org.freedesktop.PolicyKit1';

export interface Polkitd {
	pid: number;
	stop(): Promise<void>;
}

/** Starts polkitd and waits until it owns its name; throws with polkitd's output otherwise. */
export async function startPolkitd(sandbox: Sandbox): Promise<Polkitd> {
	if (!existsSync(POLKITD)) {
		throw new Error(`${POLKITD} is not installed (apt-get install polkitd)`);
	}
	const child = spawn(POLKITD, ['--no-debug'], {
		env: sandbox.env,
		stdio: ['ignore', 'ignore', 'pipe'],
	});
	let output = '';
	child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
	const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

	const deadline = Date.now() + 10_000;
	while (!ownsName(sandbox)) {
		if (child.exitCode !== null || Date.now() > deadline) {
			child.kill('SIGTERM');
			throw new Error(`polkitd did not take ${POLKIT_NAME}: ${output.trim() || 'no output'}`);
		}
		await sleep(50);
	}
	return {
		pid: child.pid ?? 0,
		async stop() {
			if (child.exitCode === null && child.signalCode === null) {
				child.kill('SIGTERM');
			}
			await exited;
		},
	};
}

function ownsName(sandbox: Sandbox): boolean {
	const result = sandbox.run('busctl', [
		'--address',
		sandbox.address,
		'call',
		'org.freedesktop.DBus',
		'/org/freedesktop/DBus',
		'org.freedesktop.DBus',
		'NameHasOwner',
		's',
		POLKIT_NAME,
	]);
	return result.status === 0 && result.stdout.trim() === 'b true';
}
