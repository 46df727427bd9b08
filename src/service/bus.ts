// The bus surface: one connection, one object, and a dispatch table. Method calls go through
// `addMethodHandler`, which hands over the whole message, so handlers see the sender and the
// header flags. Whatever a handler throws leaves as a named D-Bus error without a stack.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import dbus from 'dbus-next';
import type { Message as BusMessage, MessageBus } from 'dbus-next';
import { ErrorName, OBJECT_PATH } from '../common/names.js';
import { BindError, isBindError } from './errors.js';
import { log } from './log.js';

const { Message, Variant } = dbus;
export type { BusMessage, MessageBus };

// Header flag from the D-Bus specification: the caller is prepared to wait for an
// interactive authorization prompt.
export const ALLOW_INTERACTIVE_AUTHORIZATION = 0x4;

/** A handler's result: the reply's signature and body. */
export interface Reply {
	signature: string;
	body: unknown[];
}

export interface Method {
	/** Signature the call must carry, e.g. 's' or ''. */
	in: string;
	out: string;
	handler: (msg: BusMessage) => Promise<unknown[]>;
}

export interface ObjectSpec {
	interface: string;
	/** Introspection XML of `interface`, as documented in dbus/. */
	introspection: string;
	methods: Record<string, Method>;
	properties: Record<string, { signature: string; get: () => unknown }>;
	/** Called for every call that reaches the object, before it is handled. */
	onCall?: () => void;
}

const PEER = 'org.freedesktop.DBus.Peer';
const DOCTYPE = [
	'<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"',
	' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">',
].join('\n');
const INTROSPECTABLE = 'org.freedesktop.DBus.Introspectable';
const PROPERTIES = 'org.freedesktop.DBus.Properties';

/** Installs the dispatcher for our object on `bus`. */
export function serveObject(bus: MessageBus, spec: ObjectSpec): void {
	guardUnixFdArguments();
	bus.addMethodHandler((msg: BusMessage): boolean => {
		if (msg.path !== OBJECT_PATH) {
			answerOtherPath(bus, msg);
			return true;
		}
		spec.onCall?.();
		void dispatch(bus, spec, msg);
		return true;
	});
}

/** Emits a signal from our object. */
export function emitSignal(
	bus: MessageBus,
	iface: string,
	name: string,
	signature: string,
	body: unknown[],
): void {
	bus.send(Message.newSignal(OBJECT_PATH, iface, name, signature, body));
}

/** Reads the interface's introspection XML, without the document header, from dbus/. */
export function loadInterfaceXml(fileName: string): string {
	const url = new URL(`../../../dbus/${fileName}`, import.meta.url);
	const xml = readFileSync(url, 'utf8');
	const start = xml.indexOf('<interface');
	const end = xml.lastIndexOf('</interface>');
	return xml.slice(start, end + '</interface>'.length);
}

async function dispatch(bus: MessageBus, spec: ObjectSpec, msg: BusMessage): Promise<void> {
	let reply: Reply;
	try {
		reply = await route(spec, msg);
	} catch (error: unknown) {
		if (isBindError(error)) {
			bus.send(Message.newError(msg as never, error.busName, error.message));
			return;
		}
		log.error(
			`Failed to handle ${msg.interface}.${msg.member} from ${msg.sender}: ${String((error as Error)?.stack ?? error)}`,
		);
		bus.send(
			Message.newError(
				msg as never,
				ErrorName.Failed,
				`Failed to ${msg.member}: internal error, see the service's log`,
			),
		);
		return;
	}
	try {
		bus.send(Message.newMethodReturn(msg, reply.signature, reply.body));
	} catch (error: unknown) {
		// Marshalling happens here, synchronously; a throw must not become an unhandled rejection.
		log.error(
			`Failed to send the reply to ${msg.member} from ${msg.sender}: ${(error as Error).message}`,
		);
		try {
			bus.send(
				Message.newError(
					msg as never,
					ErrorName.Failed,
					`Failed to ${msg.member}: the reply could not be sent`,
				),
			);
		} catch {
			// The bus is gone; watchBus ends the service.
		}
	}
}

async function route(spec: ObjectSpec, msg: BusMessage): Promise<Reply> {
	const iface = msg.interface ?? '';
	if (iface === spec.interface || (iface === '' && spec.methods[msg.member] !== undefined)) {
		const method = spec.methods[msg.member];
		if (method === undefined) {
			throw unknownMethod(msg);
		}
		requireSignature(msg, method.in);
		return { signature: method.out, body: await method.handler(msg) };
	}
	if (iface === INTROSPECTABLE && msg.member === 'Introspect') {
		requireSignature(msg, '');
		return { signature: 's', body: [introspect(spec)] };
	}
	if (iface === PEER && msg.member === 'Ping') {
		requireSignature(msg, '');
		return { signature: '', body: [] };
	}
	if (iface === PEER && msg.member === 'GetMachineId') {
		requireSignature(msg, '');
		return { signature: 's', body: [readFileSync('/etc/machine-id', 'utf8').trim()] };
	}
	if (iface === PROPERTIES) {
		return properties(spec, msg);
	}
	throw unknownMethod(msg);
}

// Our object is the only one; its ancestors are introspectable so `busctl tree` finds it.
function answerOtherPath(bus: MessageBus, msg: BusMessage): void {
	const path = msg.path ?? '';
	const ancestor = path === '/' || OBJECT_PATH.startsWith(`${path}/`);
	if (ancestor && msg.interface === INTROSPECTABLE && msg.member === 'Introspect') {
		const child = OBJECT_PATH.slice(path === '/' ? 1 : path.length + 1).split('/')[0];
		const xml = `${DOCTYPE}\n<node>\n  <node name="${child}"/>\n</node>\n`;
		bus.send(Message.newMethodReturn(msg, 's', [xml]));
		return;
	}
	bus.send(Message.newError(msg as never, ErrorName.UnknownObject, `No object at path '${path}'`));
}

function properties(spec: ObjectSpec, msg: BusMessage): Reply {
	const [iface, name] = msg.body as [string, string];
	const known = iface === spec.interface || iface === '';
	if (!known && ['Get', 'GetAll', 'Set'].includes(msg.member)) {
		throw busError(ErrorName.UnknownInterface, `Unknown interface '${iface}'`);
	}
	if (msg.member === 'Get') {
		requireSignature(msg, 'ss');
		const property = known ? spec.properties[name] : undefined;
		if (property === undefined) {
			throw busError(ErrorName.UnknownProperty, `Unknown property '${iface}.${name}'`);
		}
		return { signature: 'v', body: [new Variant(property.signature, property.get())] };
	}
	if (msg.member === 'GetAll') {
		requireSignature(msg, 's');
		const all: Record<string, unknown> = {};
		if (known) {
			for (const [key, property] of Object.entries(spec.properties)) {
				all[key] = new Variant(property.signature, property.get());
			}
		}
		return { signature: 'a{sv}', body: [all] };
	}
	if (msg.member === 'Set') {
		requireSignature(msg, 'ssv');
		throw busError(ErrorName.PropertyReadOnly, `Property '${iface}.${name}' is read-only`);
	}
	throw unknownMethod(msg);
}

function introspect(spec: ObjectSpec): string {
	return [
		DOCTYPE,
		'<node>',
		`  <interface name="${PEER}">`,
		'    <method name="Ping"/>',
		'    <method name="GetMachineId"><arg name="machine_uuid" type="s" direction="out"/></method>',
		'  </interface>',
		`  <interface name="${INTROSPECTABLE}">`,
		'    <method name="Introspect"><arg name="xml_data" type="s" direction="out"/></method>',
		'  </interface>',
		`  <interface name="${PROPERTIES}">`,
		'    <method name="Get"><arg name="interface_name" type="s" direction="in"/><arg name="property_name" type="s" direction="in"/><arg name="value" type="v" direction="out"/></method>',
		'    <method name="GetAll"><arg name="interface_name" type="s" direction="in"/><arg name="props" type="a{sv}" direction="out"/></method>',
		'    <method name="Set"><arg name="interface_name" type="s" direction="in"/><arg name="property_name" type="s" direction="in"/><arg name="value" type="v" direction="in"/></method>',
		'    <signal name="PropertiesChanged"><arg type="s" name="interface_name"/><arg type="a{sv}" name="changed_properties"/><arg type="as" name="invalidated_properties"/></signal>',
		'  </interface>',
		`  ${spec.introspection}`,
		'</node>',
		'',
	].join('\n');
}

/**
 * dbus-next reads an 'h' (unix fd) argument whose index is past the fds the message carries by
 * throwing from its socket reader, where nothing can catch it: any user could stop the service
 * with one message. Such an argument now reads as -1, and the call fails its signature check
 * like any other. Messages with real fds never reach us: the connection does not negotiate them.
 */
function guardUnixFdArguments(): void {
	const require = createRequire(import.meta.url);
	const prototype = (require('dbus-next/lib/dbus-buffer.js') as { prototype: FdReader }).prototype;
	if (prototype.readSimpleTypeUnguarded !== undefined) {
		return;
	}
	const readSimpleType = prototype.readSimpleType;
	prototype.readSimpleTypeUnguarded = readSimpleType;
	prototype.readSimpleType = function (this: FdReader, type: string): unknown {
		if (type !== 'h') {
			return readSimpleType.call(this, type);
		}
		const index = this.readInt32();
		return this.fds !== undefined && index < this.fds.length ? this.fds[index] : -1;
	};
}

interface FdReader {
	fds?: number[];
	readInt32(): number;
	readSimpleType(type: string): unknown;
	readSimpleTypeUnguarded?: (type: string) => unknown;
}

function requireSignature(msg: BusMessage, expected: string): void {
	const actual = msg.signature ?? '';
	if (actual !== expected) {
		throw busError(
			ErrorName.InvalidArgs,
			`Invalid arguments for ${msg.member}: signature is '${actual}', expected '${expected}'`,
		);
	}
}

function unknownMethod(msg: BusMessage): Error {
	return busError(
		ErrorName.UnknownMethod,
		`Unknown method '${msg.member}' on interface '${msg.interface ?? '(none)'}'`,
	);
}

function busError(name: string, message: string): BindError {
	return new BindError(name, message);
}
