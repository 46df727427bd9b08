// Low-level D-Bus calls on the sandbox's private bus, timed from send to reply. Used by the rows
// that call the service directly and by the load generator.
import dbus from 'dbus-next';
import type { MessageBus } from 'dbus-next';
import { now } from './measure.js';

const { Message } = dbus;

/** The object and method a call goes to. */
export interface Target {
	destination: string;
	path: string;
	interface: string;
	member: string;
	signature?: string;
	body?: unknown[];
}

export const SERVICE = {
	destination: 'org.opencontainers.MemfdBind',
	path: '/org/opencontainers/MemfdBind',
	interface: 'org.opencontainers.MemfdBind1',
} as const;

/** Peer.Ping answered by the service's own dispatcher: the bus round trip to it. */
export const SERVICE_PING: Target = {
	...SERVICE,
	interface: 'org.freedesktop.DBus.Peer',
	member: 'Ping',
};

/** One connection to a bus, by address. */
export class BenchBus {
	private constructor(readonly bus: MessageBus) {}

	/** Connects and waits until the bus has answered Hello. */
	static async connect(address: string): Promise<BenchBus> {
		const client = new BenchBus(dbus.sessionBus({ busAddress: address }));
		await client.call({
			destination: 'org.freedesktop.DBus',
			path: '/org/freedesktop/DBus',
			interface: 'org.freedesktop.DBus',
			member: 'GetId',
		});
		return client;
	}

	/** Sends one call and resolves with the reply body; an error reply rejects. */
	async call(target: Target): Promise<unknown[]> {
		const reply = await this.bus.call(
			new Message({
				destination: target.destination,
				path: target.path,
				interface: target.interface,
				member: target.member,
				signature: target.signature ?? '',
				body: target.body ?? [],
			}),
		);
		return reply?.body ?? [];
	}

	/** Sends one call and resolves with its round-trip time in ms. */
	async time(target: Target): Promise<number> {
		const start = now();
		await this.call(target);
		return now() - start;
	}

	/** Calls a method of the service with one string argument, e.g. Bind or Release. */
	async service(member: string, path: string): Promise<unknown[]> {
		return this.call({ ...SERVICE, member, signature: 's', body: [path] });
	}

	disconnect(): void {
		this.bus.disconnect();
	}
}
