// A bus client that sends whatever it is told to, with any signature, and turns every answer
// (reply, error, silence) into an Outcome instead of throwing.
import dbus from 'dbus-next';
import type { MessageBus } from 'dbus-next';
import { BUS_NAME, INTERFACE, OBJECT_PATH } from '../src/common/names.js';

const { Message } = dbus;

/** What a call came back with. `error` is '' on success, the D-Bus error name otherwise. */
export interface Outcome {
	ok: boolean;
	error: string;
	text: string;
	body: unknown[];
}

export interface CallOptions {
	/** The interface header; null leaves it out. Defaults to the service's interface. */
	interface?: string | null;
	path?: string;
	destination?: string;
	timeout?: number;
}

/** A binding record from List, with the variants unwrapped. */
export interface ListedBinding {
	Path: string;
	State: string;
	HolderPid?: number;
	Sha256?: string;
	Size?: bigint;
	Seals?: number;
}

// Outcome.error for a call that got no answer in time.
export const TIMED_OUT = 'torture.TimedOut';
// Outcome.error for a call on a connection the bus closed.
export const DISCONNECTED = 'torture.Disconnected';
// Outcome.error for a call the client library could not encode; nothing reached the bus.
export const NOT_SENT = 'torture.NotSent';

/** One connection to the torture's private bus. */
export class BusClient {
	closed = false;

	private constructor(private readonly bus: MessageBus) {
		bus.on('error', () => (this.closed = true));
	}

	/** Connects to `address` and waits for the bus to give the connection its name. */
	static async connect(address: string): Promise<BusClient> {
		const bus = dbus.sessionBus({ busAddress: address });
		const client = new BusClient(bus);
		await new Promise<void>((resolve, reject) => {
			bus.once('connect', () => resolve());
			bus.once('error', (error: unknown) => reject(error));
		});
		return client;
	}

	/** Calls `member` on the service with the given signature and body; never throws. */
	async call(
		member: string,
		signature: string,
		body: unknown[],
		options: CallOptions = {},
	): Promise<Outcome> {
		if (this.closed) {
			return { ok: false, error: DISCONNECTED, text: 'the connection is closed', body: [] };
		}
		const iface = options.interface === undefined ? INTERFACE : (options.interface ?? undefined);
		let message: InstanceType<typeof Message>;
		try {
			message = new Message({
				destination: options.destination ?? BUS_NAME,
				path: options.path ?? OBJECT_PATH,
				interface: iface,
				member,
				signature,
				body,
			});
		} catch (error: unknown) {
			return { ok: false, error: NOT_SENT, text: String(error), body: [] };
		}
		let timer: NodeJS.Timeout | undefined;
		const timeout = new Promise<Outcome>((resolve) => {
			timer = setTimeout(
				() =>
					resolve({
						ok: false,
						error: TIMED_OUT,
						text: `no answer to ${member} in ${options.timeout ?? 30_000} ms`,
						body: [],
					}),
				options.timeout ?? 30_000,
			);
		});
		const answer = this.bus.call(message).then(
			(reply): Outcome => ({ ok: true, error: '', text: '', body: reply?.body ?? [] }),
			(error: unknown): Outcome => {
				const dbusError = error as { type?: string; text?: string };
				if (typeof dbusError?.type === 'string') {
					return { ok: false, error: dbusError.type, text: dbusError.text ?? '', body: [] };
				}
				// The marshaller throws before anything is written when a body does not fit its signature.
				return {
					ok: false,
					error: this.closed ? DISCONNECTED : NOT_SENT,
					text: String(error),
					body: [],
				};
			},
		);
		try {
			return await Promise.race([answer, timeout]);
		} finally {
			clearTimeout(timer);
		}
	}

	/** Tells whether the service answers Peer.Ping within `timeout` ms. */
	async ping(timeout = 5000): Promise<boolean> {
		const outcome = await this.call('Ping', '', [], {
			interface: 'org.freedesktop.DBus.Peer',
			timeout,
		});
		return outcome.ok;
	}

	/** The service's List, unwrapped; throws when List fails, since every check needs it. */
	async list(): Promise<ListedBinding[]> {
		const outcome = await this.call('List', '', []);
		if (!outcome.ok) {
			throw new Error(`List failed: ${outcome.error}: ${outcome.text}`);
		}
		return (outcome.body[0] as Array<Record<string, { value: unknown }>>).map(unwrap);
	}

	close(): void {
		if (!this.closed) {
			this.closed = true;
			this.bus.disconnect();
		}
	}
}

/** Unwraps an a{sv} record into plain values. */
export function unwrap(record: Record<string, { value: unknown }>): ListedBinding {
	const plain: Record<string, unknown> = {};
	for (const [key, variant] of Object.entries(record)) {
		plain[key] = variant.value;
	}
	return plain as unknown as ListedBinding;
}
