// The stage one attack plays on: a private bus with our policy, the real service, a client,
// and a folder for the files it binds. Each attack gets a fresh one and tears it down.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startSandbox } from '../test/helpers/sandbox.js';
import type { Sandbox, Service } from '../test/helpers/sandbox.js';
import { BusClient } from './client.js';

export interface Stage {
	sandbox: Sandbox;
	/** The service now running (replaced by restart()). */
	service: Service;
	client: BusClient;
	/** Where the attack keeps the files it binds. */
	files: string;
	stateDir: string;
	/** Starts the service again after it died or was killed; waits until it serves. */
	restart(): Promise<Service>;
	/** Tells whether the service process runs and answers Ping. */
	isAlive(): Promise<boolean>;
	/** Replaces the client with a new connection, after the bus daemon itself restarted. */
	reconnect(): Promise<void>;
	/**
	 * Binds and releases a small file once. Node opens some fds on first use (the child-process
	 * signal pipe, an epoll and an eventfd), so fd baselines are taken after this.
	 */
	warmUp(): Promise<void>;
	close(): Promise<void>;
}

/** Starts a bus and the service; `withService: false` leaves starting it to the attack. */
export async function openStage(options: { withService?: boolean } = {}): Promise<Stage> {
	const sandbox = await startSandbox();
	const files = join(sandbox.dir, 'files');
	mkdirSync(files, { mode: 0o755 });
	const clients: BusClient[] = [];
	try {
		const service =
			options.withService === false
				? (undefined as unknown as Service)
				: await sandbox.startService();
		const client = await BusClient.connect(sandbox.address);
		clients.push(client);
		const stage: Stage = {
			sandbox,
			service,
			client,
			files,
			stateDir: join(sandbox.dir, 'state'),
			async restart() {
				stage.service = await sandbox.startService();
				return stage.service;
			},
			async isAlive() {
				const child = stage.service?.process;
				if (child === undefined || child.exitCode !== null || child.signalCode !== null) {
					return false;
				}
				return stage.client.ping();
			},
			async warmUp() {
				const path = join(files, '.warm-up');
				writeFileSync(path, '#!/bin/sh\n', { mode: 0o755 });
				for (const member of ['Bind', 'Release']) {
					const outcome = await stage.client.call(member, 's', [path]);
					if (!outcome.ok) {
						throw new Error(
							`${member} of the warm-up file failed: ${outcome.error}: ${outcome.text}`,
						);
					}
				}
				rmSync(path);
			},
			async reconnect() {
				stage.client.close();
				stage.client = await BusClient.connect(sandbox.address);
			},
			async close() {
				stage.client.close();
				await sandbox.stop();
			},
		};
		return stage;
	} catch (error: unknown) {
		for (const client of clients) {
			client.close();
		}
		await sandbox.stop();
		throw error;
	}
}
