// Hand-made D-Bus frames on a raw socket: for messages no client library would build (bad
// signatures, invalid UTF-8, big-endian bodies, fd indexes without fds). Used only on the
// torture's own private bus socket.
import { connect } from 'node:net';
import type { Socket } from 'node:net';

/** A method call, described field by field. */
export interface RawCall {
	path: string;
	interface?: string;
	member: string;
	destination: string;
	/** The SIGNATURE header field as raw bytes; may be invalid on purpose. */
	signature?: Buffer;
	body?: Buffer;
	unixFds?: number;
	bigEndian?: boolean;
}

/** What became of a raw frame: the bus answered it, or closed our connection. */
export interface RawOutcome {
	/** The error name of the reply, '' for a method return, undefined when no reply came. */
	reply?: string;
	/** True when the bus daemon dropped the connection after the frame. */
	disconnected: boolean;
}

// Header field codes from the D-Bus specification.
const FIELD_PATH = 1;
const FIELD_INTERFACE = 2;
const FIELD_MEMBER = 3;
const FIELD_ERROR_NAME = 4;
const FIELD_DESTINATION = 6;
const FIELD_SIGNATURE = 8;
const FIELD_UNIX_FDS = 9;
const METHOD_CALL = 1;
const METHOD_RETURN = 2;
const ERROR = 3;

/** Connects, authenticates, says Hello, sends `call` and reports what the bus did with it. */
export async function sendRaw(address: string, call: RawCall, timeout = 5000): Promise<RawOutcome> {
	const socket = await open(address);
	const reader = new FrameReader(socket);
	try {
		await handshake(socket, reader);
		socket.write(
			frame(
				{
					path: '/org/freedesktop/DBus',
					interface: 'org.freedesktop.DBus',
					member: 'Hello',
					destination: 'org.freedesktop.DBus',
				},
				1,
			),
		);
		const hello = await reader.next(timeout);
		if (hello === undefined) {
			throw new Error('the bus did not answer Hello');
		}
		socket.write(frame(call, 2));
		for (;;) {
			const message = await reader.next(timeout);
			if (message === undefined) {
				return { disconnected: reader.closed };
			}
			if ((message.type === METHOD_RETURN || message.type === ERROR) && message.replySerial === 2) {
				return {
					reply: message.type === ERROR ? (message.errorName ?? '?') : '',
					disconnected: false,
				};
			}
		}
	} finally {
		socket.destroy();
	}
}

/** Encodes a D-Bus string body: length, bytes, NUL (the bytes need not be UTF-8). */
export function stringBody(bytes: Buffer, bigEndian = false): Buffer {
	const length = Buffer.alloc(4);
	if (bigEndian) {
		length.writeUInt32BE(bytes.length);
	} else {
		length.writeUInt32LE(bytes.length);
	}
	return Buffer.concat([length, bytes, Buffer.from([0])]);
}

/** Encodes one uint32 body (also the wire form of an `h` fd index). */
export function uint32Body(value: number, bigEndian = false): Buffer {
	const body = Buffer.alloc(4);
	if (bigEndian) {
		body.writeUInt32BE(value);
	} else {
		body.writeUInt32LE(value);
	}
	return body;
}

function open(address: string): Promise<Socket> {
	const match = /^unix:path=(.+)$/.exec(address);
	if (match === null) {
		throw new Error(`only unix:path= addresses are supported, not ${address}`);
	}
	return new Promise((resolve, reject) => {
		const socket = connect(match[1]);
		socket.once('connect', () => resolve(socket));
		socket.once('error', reject);
	});
}

async function handshake(socket: Socket, reader: FrameReader): Promise<void> {
	const uid = Buffer.from(String(process.getuid?.() ?? 0)).toString('hex');
	socket.write(`\0AUTH EXTERNAL ${uid}\r\n`);
	const line = await reader.line(5000);
	if (!line.startsWith('OK ')) {
		throw new Error(`the bus refused authentication: ${line}`);
	}
	socket.write('BEGIN\r\n');
}

function frame(call: RawCall, serial: number): Buffer {
	const big = call.bigEndian === true;
	const fields: Buffer[] = [];
	const add = (code: number, type: string, value: Buffer) => fields.push(field(code, type, value));
	add(FIELD_PATH, 'o', stringBody(Buffer.from(call.path), big));
	if (call.interface !== undefined) {
		add(FIELD_INTERFACE, 's', stringBody(Buffer.from(call.interface), big));
	}
	add(FIELD_MEMBER, 's', stringBody(Buffer.from(call.member), big));
	add(FIELD_DESTINATION, 's', stringBody(Buffer.from(call.destination), big));
	if (call.signature !== undefined) {
		add(
			FIELD_SIGNATURE,
			'g',
			Buffer.concat([Buffer.from([call.signature.length]), call.signature, Buffer.from([0])]),
		);
	}
	if (call.unixFds !== undefined) {
		add(FIELD_UNIX_FDS, 'u', uint32Body(call.unixFds, big));
	}
	// Each field is a struct (8-aligned); the array length counts no padding after the last one.
	let array = Buffer.alloc(0);
	for (const item of fields) {
		array = Buffer.concat([array, Buffer.alloc(pad(array.length, 8)), item]);
	}
	const body = call.body ?? Buffer.alloc(0);
	const fixed = Buffer.alloc(16);
	fixed.write(big ? 'B' : 'l', 0, 'latin1');
	fixed[1] = METHOD_CALL;
	fixed[2] = 0;
	fixed[3] = 1;
	const u32 = (value: number, at: number) =>
		big ? fixed.writeUInt32BE(value, at) : fixed.writeUInt32LE(value, at);
	u32(body.length, 4);
	u32(serial, 8);
	u32(array.length, 12);
	return Buffer.concat([fixed, array, Buffer.alloc(pad(16 + array.length, 8)), body]);
}

// A header field is a struct (byte code, variant): code, signature length 1, type, NUL, value.
// The value starts at offset 4 of an 8-aligned struct, so it needs no padding of its own.
function field(code: number, type: string, value: Buffer): Buffer {
	return Buffer.concat([Buffer.from([code, 1, type.charCodeAt(0), 0]), value]);
}

function pad(length: number, alignment: number): number {
	return (alignment - (length % alignment)) % alignment;
}

interface Parsed {
	type: number;
	replySerial?: number;
	errorName?: string;
}

// Reads auth lines, then whole frames, from the socket; just enough to see replies.
class FrameReader {
	closed = false;
	private buffer = Buffer.alloc(0);
	private wake: (() => void) | undefined;

	constructor(socket: Socket) {
		socket.on('data', (chunk: Buffer) => {
			this.buffer = Buffer.concat([this.buffer, chunk]);
			this.wake?.();
		});
		const close = () => {
			this.closed = true;
			this.wake?.();
		};
		socket.on('close', close);
		socket.on('error', close);
	}

	async line(timeout: number): Promise<string> {
		const deadline = Date.now() + timeout;
		for (;;) {
			const end = this.buffer.indexOf('\r\n');
			if (end >= 0) {
				const text = this.buffer.subarray(0, end).toString('latin1');
				this.buffer = this.buffer.subarray(end + 2);
				return text;
			}
			if (this.closed || !(await this.wait(deadline))) {
				throw new Error('the bus closed the connection during authentication');
			}
		}
	}

	async next(timeout: number): Promise<Parsed | undefined> {
		const deadline = Date.now() + timeout;
		for (;;) {
			const parsed = this.take();
			if (parsed !== undefined) {
				return parsed;
			}
			if (this.closed || !(await this.wait(deadline))) {
				return undefined;
			}
		}
	}

	private wait(deadline: number): Promise<boolean> {
		return new Promise((resolve) => {
			const timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()));
			this.wake = () => {
				clearTimeout(timer);
				resolve(true);
			};
		});
	}

	private take(): Parsed | undefined {
		if (this.buffer.length < 16) {
			return undefined;
		}
		const big = this.buffer[0] === 0x42;
		const u32 = (at: number) => (big ? this.buffer.readUInt32BE(at) : this.buffer.readUInt32LE(at));
		const fieldsLength = u32(12);
		const total = 16 + fieldsLength + pad(16 + fieldsLength, 8) + u32(4);
		if (this.buffer.length < total) {
			return undefined;
		}
		const parsed: Parsed = { type: this.buffer[1] };
		let at = 16;
		while (at < 16 + fieldsLength) {
			at += pad(at, 8);
			const code = this.buffer[at];
			const sigLength = this.buffer[at + 1];
			const type = String.fromCharCode(this.buffer[at + 2]);
			at += 3 + sigLength;
			if (type === 's' || type === 'o') {
				at += pad(at, 4);
				const length = u32(at);
				const text = this.buffer.subarray(at + 4, at + 4 + length).toString('utf8');
				at += 4 + length + 1;
				if (code === FIELD_ERROR_NAME) {
					parsed.errorName = text;
				}
			} else if (type === 'g') {
				at += 1 + this.buffer[at] + 1;
			} else if (type === 'u') {
				at += pad(at, 4);
				if (code === 5) {
					parsed.replySerial = u32(at);
				}
				at += 4;
			} else {
				break;
			}
		}
		this.buffer = this.buffer.subarray(total);
		return parsed;
	}
}
