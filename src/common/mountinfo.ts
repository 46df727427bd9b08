// Reads /proc/self/mountinfo (proc(5)) and recognises the mounts memfd-bind makes: a proc
// magic link `/<pid>/fd/<n>` bind-mounted over a file.
import { readFileSync } from 'node:fs';

export interface MountEntry {
	mountId: number;
	parentId: number;
	/** The path inside the mounted file system, decoded. */
	root: string;
	/** Where it is mounted, decoded; `mountPointBytes` keeps bytes that are not UTF-8. */
	mountPoint: string;
	mountPointBytes: Buffer;
	fsType: string;
	source: string;
}

/** The process and descriptor behind a memfd magic-link mount. */
export interface MagicLink {
	pid: number;
	fd: number;
}

/** Parses mountinfo text; lines that do not follow the format are skipped. */
export function parseMountInfo(text: string | Buffer): MountEntry[] {
	const raw = typeof text === 'string' ? Buffer.from(text) : text;
	const entries: MountEntry[] = [];
	for (const line of raw.toString('latin1').split('\n')) {
		const entry = parseLine(line);
		if (entry !== undefined) {
			entries.push(entry);
		}
	}
	return entries;
}

/** Reads the calling process's mount table. */
export function readMountInfo(): MountEntry[] {
	return parseMountInfo(readFileSync('/proc/self/mountinfo'));
}

/** Returns the pid and fd when `entry` is a proc magic link `/<pid>/fd/<n>` mounted somewhere. */
export function magicLinkOf(entry: MountEntry): MagicLink | undefined {
	if (entry.fsType !== 'proc') {
		return undefined;
	}
	// Once the holder is gone the kernel shows the root as `/<pid>/fd/<n>//deleted`.
	const match = /^\/(\d+)\/fd\/(\d+)(\/\/deleted)?$/.exec(entry.root);
	return match === null ? undefined : { pid: Number(match[1]), fd: Number(match[2]) };
}

/** Decodes the octal escapes (`\040`, `\012`, `\134`...) the kernel writes in mountinfo fields. */
export function decodeField(field: string): Buffer {
	const bytes: number[] = [];
	for (let i = 0; i < field.length; i++) {
		const octal = field[i] === '\\' ? /^[0-7]{3}/.exec(field.slice(i + 1, i + 4)) : null;
		if (octal !== null) {
			bytes.push(parseInt(octal[0], 8));
			i += 3;
		} else {
			bytes.push(field.charCodeAt(i) & 0xff);
		}
	}
	return Buffer.from(bytes);
}

// The fields are read as latin1 so every byte survives until decodeField puts them back.
function parseLine(line: string): MountEntry | undefined {
	const fields = line.split(' ');
	const separator = fields.indexOf('-', 6);
	if (fields.length < 10 || separator < 0 || fields.length < separator + 3) {
		return undefined;
	}
	const mountPointBytes = decodeField(fields[4]);
	return {
		mountId: Number(fields[0]),
		parentId: Number(fields[1]),
		root: decodeField(fields[3]).toString('utf8'),
		mountPoint: mountPointBytes.toString('utf8'),
		mountPointBytes,
		fsType: decodeField(fields[separator + 1]).toString('utf8'),
		source: decodeField(fields[separator + 2]).toString('utf8'),
	};
}
