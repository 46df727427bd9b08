// Encodes bindings as the a{sv} records documented in dbus/org.opencontainers.MemfdBind1.xml.
import dbus from 'dbus-next';
import type { BindingView } from './binder.js';

const { Variant } = dbus;

// Record key, its D-Bus type, and how to read it from a binding; absent values are left out.
const FIELDS: Array<[string, string, (view: BindingView) => unknown]> = [
	['Path', 's', (view) => view.path],
	['State', 's', (view) => view.state],
	['Size', 't', (view) => (view.size === undefined ? undefined : BigInt(view.size))],
	['Sha256', 's', (view) => view.sha256],
	['Seals', 'u', (view) => view.seals],
	['Mode', 'u', (view) => view.mode],
	['Uid', 'u', (view) => view.uid],
	['Gid', 'u', (view) => view.gid],
	['BoundAt', 't', (view) => (view.boundAt === undefined ? undefined : BigInt(view.boundAt))],
	['BoundBy', 'u', (view) => view.boundBy],
	['MemfdName', 's', (view) => view.memfdName],
	['HolderPid', 'u', (view) => view.holderPid],
	['Error', 's', (view) => view.error],
];

/** Returns the a{sv} record for a binding. */
export function encodeRecord(view: BindingView): Record<string, InstanceType<typeof Variant>> {
	const record: Record<string, InstanceType<typeof Variant>> = {};
	for (const [key, signature, read] of FIELDS) {
		const value = read(view);
		if (value !== undefined) {
			record[key] = new Variant(signature, value);
		}
	}
	return record;
}
