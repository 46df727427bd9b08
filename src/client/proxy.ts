// A typed wrapper over the service's bus interface. Calls carry the
// ALLOW_INTERACTIVE_AUTHORIZATION header flag unless the user asked for no password prompt.
import dbus from 'dbus-next';
import type { Message as BusMessage, MessageBus } from 'dbus-next';
import { BUS_NAME, INTERFACE, OBJECT_PATH } from '../common/names.js';

const { Message } = dbus;

const ALLOW_INTERACTIVE_AUTHORIZATION = 0x4;
const NO_AUTO_START = 0x2;

/** A binding record as the service sends it, with D-Bus variants unwrapped. */
export interface BindingRecord {
	Path: string;
	State: string;
	Size?: bigint;
	Sha256?: string;
	Seals?: number;
	Mode?: number;
	Uid?: number;
	Gid?: number;
	BoundAt?: bigint;
	BoundBy?: number;
	MemfdName?: string;
	HolderPid?: number;
	Error?: string;
}

/** An error reply from the service or the bus, with its D-Bus name. */
export class ServiceCallError extends Error {
	constructor(
		readonly busName: string,
		message: string,
	) {
		super(message);
		Object.defineProperty(this, 'name', { value: 'ServiceCallError', enumerable: false });
	}
}

export interface ProxyOptions {
	interactive: boolean;
}

/** The client side of org.opencontainers.MemfdBind1. */
export class MemfdBindProxy {
	// Rejects with the bus's first 'error' event (failed connect, lost socket).
	private readonly broken: Promise<never>;

	private constructor(
		private readonly bus: MessageBus,
		private readonly options: ProxyOptions,
	) {
		// dbus-next reports a failed connect only as an 'error' event: unhandled, it kills the
		// process with a stack trace, and a call made meanwhile never settles.
		this.broken = new Promise<never>((_, reject) => bus.on('error', reject));
		this.broken.catch(() => undefined);
	}

	/** Connects to the system bus (DBUS_SYSTEM_BUS_ADDRESS is honoured). */
	static connect(options: ProxyOptions): MemfdBindProxy {
		return new MemfdBindProxy(dbus.systemBus(), options);
	}

	async bind(path: string): Promise<BindingRecord> {
		return unwrapRecord((await this.call('Bind', 's', [path]))[0]);
	}

	async refresh(path: string): Promise<BindingRecord> {
		return unwrapRecord((await this.call('Refresh', 's', [path]))[0]);
	}

	async release(path: string): Promise<void> {
		await this.call('Release', 's', [path]);
	}

	async cleanup(path: string): Promise<string[]> {
		return (await this.call('Cleanup', 's', [path]))[0] as string[];
	}

	/** Lists bindings; with `autoStart` false an inactive service is not started for it. */
	async list(autoStart = true): Promise<BindingRecord[]> {
		const [records] = await this.call('List', '', [], autoStart ? 0 : NO_AUTO_START);
		return (records as Record<string, unknown>[]).map(unwrapRecord);
	}

	async suspend(): Promise<string[]> {
		return (await this.call('Suspend', '', []))[0] as string[];
	}

	async resume(): Promise<BindingRecord[]> {
		const [records] = await this.call('Resume', '', []);
		return (records as Record<string, unknown>[]).map(unwrapRecord);
	}

	disconnect(): void {
		this.bus.disconnect();
	}

	private async call(
		member: string,
		signature: string,
		body: unknown[],
		flags = 0,
	): Promise<unknown[]> {
		const message = new Message({
			destination: BUS_NAME,
			path: OBJECT_PATH,
			interface: INTERFACE,
			member,
			signature,
			body,
			flags: flags | (this.options.interactive ? ALLOW_INTERACTIVE_AUTHORIZATION : 0),
		});
		let reply: BusMessage | null;
		try {
			reply = await Promise.race([this.bus.call(message), this.broken]);
		} catch (error: unknown) {
			const dbusError = error as { type?: string; text?: string };
			if (typeof dbusError.type === 'string') {
				throw new ServiceCallError(dbusError.type, dbusError.text ?? dbusError.type);
			}
			throw error;
		}
		return reply?.body ?? [];
	}
}

function unwrapRecord(raw: unknown): BindingRecord {
	const record: Record<string, unknown> = {};
	for (const [key, variant] of Object.entries(raw as Record<string, { value: unknown }>)) {
		record[key] = variant.value;
	}
	return record as unknown as BindingRecord;
}
