// Makes the sealed memfd copy of a file: created executable, filled inside the kernel, sealed
// exactly as runc and crun expect, then hashed from the memfd itself.
import { createHash } from 'node:crypto';
import { closeSync, fchmodSync, fchownSync, fstatSync, read, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { ErrorName } from '../common/names.js';
import { quote } from '../common/quote.js';
import { BindError, failure } from './errors.js';
import { startHash } from './hasher.js';
import {
	MFD_ALLOW_SEALING,
	MFD_CLOEXEC,
	MFD_EXEC,
	RUNC_SEALS,
	addSeals,
	getSeals,
	isErrno,
	memfdCreate,
	sendfile,
} from '../common/libc.js';

const readAsync = promisify(read);

// Large copies go in steps so other callers are served between them.
const COPY_STEP = 8 << 20;
// memfd names are limited to 249 bytes (NAME_MAX minus "memfd:").
const MEMFD_NAME_MAX = 249;

export interface SealedCopy {
	fd: number;
	name: string;
	size: number;
	seals: number;
	sha256: string;
}

export interface CopySource {
	fd: number;
	path: string;
	size: number;
	mode: number;
	uid: number;
	gid: number;
}

/** Returns the memfd name for a path: `memfd-bind:<path>`, cut to the kernel's limit. */
export function memfdNameFor(path: string): string {
	const name = Buffer.from(`memfd-bind:${path}`);
	return name
		.subarray(0, MEMFD_NAME_MAX)
		.toString('utf8')
		.replace(/\uFFFD$/, '');
}

/** Copies `source` into a new memfd sealed with exactly RUNC_SEALS; the caller owns the fd. */
export async function createSealedCopy(source: CopySource): Promise<SealedCopy> {
	const name = memfdNameFor(source.path);
	const fd = createExecutableMemfd(name, source.path);
	// The digest is read back from the memfd itself, range by range as the copy lands in it;
	// nobody else holds the memfd, and the seals below freeze exactly the bytes hashed.
	const hash = startHash(fd);
	try {
		await copyAll(fd, source, (copied) => hash.update(copied));
		// The worker must be done reading before F_SEAL_WRITE: a read in flight holds page
		// references, and the kernel refuses the seal with EBUSY while pages look pinned.
		const sha256 = await hash.digest();
		// The copy keeps the original's permissions, minus setuid and setgid, and its owner.
		// fchmod comes first, while the service still owns the memfd: no CAP_FOWNER needed.
		fchmodSync(fd, source.mode & 0o777);
		fchownSync(fd, source.uid, source.gid);
		addSeals(fd, RUNC_SEALS);
		const seals = getSeals(fd);
		if (seals !== RUNC_SEALS) {
			throw new BindError(
				ErrorName.Failed,
				`Failed to seal the copy of ${quote(source.path)}: seals are 0x${seals.toString(16)}, expected 0x${RUNC_SEALS.toString(16)}`,
			);
		}
		return { fd, name, size: source.size, seals, sha256 };
	} catch (error: unknown) {
		await hash.abort();
		closeSync(fd);
		throw failure('copy', source.path, error);
	}
}

/** Hashes the first `size` bytes of `fd` without moving its file position. */
export async function hashFd(fd: number, size: number): Promise<string> {
	const hash = createHash('sha256');
	const buffer = Buffer.allocUnsafe(Math.min(Math.max(size, 1), 1 << 20));
	let offset = 0;
	while (offset < size) {
		const { bytesRead } = await readAsync(fd, buffer, 0, buffer.length, offset);
		if (bytesRead === 0) {
			break;
		}
		hash.update(buffer.subarray(0, bytesRead));
		offset += bytesRead;
	}
	return hash.digest('hex');
}

// MFD_EXEC (Linux 6.3) asks for an executable memfd whatever vm.memfd_noexec says; older
// kernels reject the flag with EINVAL and make executable memfds anyway.
function createExecutableMemfd(name: string, path: string): number {
	const flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
	try {
		try {
			return memfdCreate(name, flags | MFD_EXEC);
		} catch (error: unknown) {
			if (!isErrno(error, 'EINVAL')) {
				throw error;
			}
			return memfdCreate(name, flags);
		}
	} catch (error: unknown) {
		const noexec = readNoexecSetting();
		if (isErrno(error, 'EACCES') && noexec === '2') {
			throw new BindError(
				ErrorName.Failed,
				`Failed to create an executable memfd for ${quote(path)}: EACCES; the sysctl vm.memfd_noexec=2 forbids executable memfds`,
				{ cause: error },
			);
		}
		throw failure('create a memfd for', path, error);
	}
}

function readNoexecSetting(): string | undefined {
	try {
		return readFileSync('/proc/sys/vm/memfd_noexec', 'utf8').trim();
	} catch {
		return undefined;
	}
}

// sendfile moves the bytes inside the kernel; the counts prove the file did not change size,
// and an unchanged mtime that nobody wrote to it in place (a torn copy of two versions).
async function copyAll(
	memfd: number,
	source: CopySource,
	progress: (copied: number) => void,
): Promise<void> {
	const before = fstatSync(source.fd, { bigint: true });
	let copied = 0;
	while (copied < source.size) {
		const step = sendfile(memfd, source.fd, Math.min(COPY_STEP, source.size - copied));
		if (step === 0) {
			throw changedSize(source.path, `it shrank to ${copied} bytes during the copy`);
		}
		copied += step;
		progress(copied);
		await new Promise((resolve) => setImmediate(resolve));
	}
	if (sendfile(memfd, source.fd, 1) !== 0 || fstatSync(source.fd).size !== source.size) {
		throw changedSize(source.path, 'it grew during the copy');
	}
	if (fstatSync(source.fd, { bigint: true }).mtimeNs !== before.mtimeNs) {
		throw changedSize(source.path, 'it was written to during the copy');
	}
}

function changedSize(path: string, how: string): BindError {
	return new BindError(ErrorName.Failed, `Failed to copy ${quote(path)}: ${how}`);
}
