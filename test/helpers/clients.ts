// The clients integration tests drive the service with: busctl, gdbus and memfdctl against a
// sandbox's bus, plus fresh copies of real executables to bind.
import assert from 'node:assert/strict';
import type { SpawnSyncReturns } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { BUS_NAME, INTERFACE, MEMFDCTL, OBJECT_PATH } from './sandbox.js';
import type { Sandbox } from './sandbox.js';

export interface Clients {
	/** A fresh copy of a real executable under the sandbox, so each test binds its own file. */
	executable(name: string, from?: string): string;
	/** `busctl --json=short call` on our object. */
	busctl(...args: string[]): SpawnSyncReturns<string>;
	/** `gdbus call` of one of our methods. */
	gdbus(method: string, args: string[], user?: string): SpawnSyncReturns<string>;
	/** `gdbus call` of any method on any object of our bus name. */
	gdbusCall(
		objectPath: string,
		method: string,
		args: string[],
		user?: string,
	): SpawnSyncReturns<string>;
	/** memfdctl with --no-ask-password, optionally as another account. */
	memfdctl(args: string[], user?: string): SpawnSyncReturns<string>;
	/** `memfdctl list --json`, parsed. */
	list(): Array<Record<string, unknown>>;
}

/** Returns the clients for `sandbox`; executables go to `<sandbox>/files`. */
export function clientsFor(sandbox: Sandbox): Clients {
	const files = join(sandbox.dir, 'files');
	mkdirSync(files, { recursive: true });
	const gdbusCall = (objectPath: string, method: string, args: string[], user?: string) =>
		sandbox.run(
			'gdbus',
			[
				'call',
				'--system',
				'--dest',
				BUS_NAME,
				'--object-path',
				objectPath,
				'--method',
				method,
				...args,
			],
			{ user },
		);
	const memfdctl = (args: string[], user?: string) =>
		sandbox.run(process.execPath, [MEMFDCTL, '--no-ask-password', ...args], { user });
	return {
		executable(name, from = '/usr/bin/true') {
			const path = join(files, name);
			copyFileSync(from, path);
			return path;
		},
		busctl: (...args) =>
			sandbox.run('busctl', ['--json=short', 'call', BUS_NAME, OBJECT_PATH, INTERFACE, ...args]),
		gdbus: (method, args, user) => gdbusCall(OBJECT_PATH, `${INTERFACE}.${method}`, args, user),
		gdbusCall,
		memfdctl,
		list() {
			const result = memfdctl(['list', '--json']);
			assert.equal(result.status, 0, result.stderr);
			return JSON.parse(result.stdout) as Array<Record<string, unknown>>;
		},
	};
}
