// The only module that talks to libc. Every wrapper checks the return value, reads errno at once
// and throws an error shaped like Node's own system errors, so `isErrno(e, 'EBUSY')` works for
// fs and FFI alike. Nothing here logs: callers decide what a failure means.
import { getSystemErrorName } from 'node:util';
import koffi from 'koffi';

// <linux/memfd.h>
export const MFD_CLOEXEC = 0x0001;
export const MFD_ALLOW_SEALING = 0x0002;
export const MFD_EXEC = 0x0010;

// <linux/fcntl.h>: F_LINUX_SPECIFIC_BASE (1024) + 9 and + 10
export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;
export const F_SEAL_SEAL = 0x0001;
export const F_SEAL_SHRINK = 0x0002;
export const F_SEAL_GROW = 0x0004;
export const F_SEAL_WRITE = 0x0008;

// The seals runc 1.1.x and crun compare against with `==`, and runc 1.2+ with a mask. Adding
// F_SEAL_EXEC or F_SEAL_FUTURE_WRITE would make the exact comparison fail.
export const RUNC_SEALS = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;

// <asm-generic/fcntl.h> (x86_64 and arm64 share these values)
export const O_RDONLY = 0o0;
export const O_NOFOLLOW = 0o400000;
export const O_CLOEXEC = 0o2000000;
export const O_PATH = 0o10000000;

// <linux/mount.h>
export const MS_BIND = 0x1000;
export const MNT_DETACH = 0x2;
export const UMOUNT_NOFOLLOW = 0x8;
export const OPEN_TREE_CLONE = 0x1;
export const OPEN_TREE_CLOEXEC = O_CLOEXEC;
const AT_FDCWD = -100;
const SYS_OPEN_TREE = 428; // the same number on every architecture since Linux 5.2

const libc = koffi.load('libc.so.6');
const cOpen = libc.func('int open(const char *path, int flags, ...)');
const cMemfdCreate = libc.func('int memfd_create(const char *name, unsigned int flags)');
const cFcntl = libc.func('int fcntl(int fd, int cmd, ...)');
const cMount = libc.func(
	'int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const void *data)',
);
const cUmount2 = libc.func('int umount2(const char *target, int flags)');
const cSendfile = libc.func('intptr_t sendfile(int out_fd, int in_fd, void *offset, size_t count)');
const cSyscall = libc.func('long syscall(long number, ...)');

/** An error from a failed system call, shaped like the ones `node:fs` throws. */
export interface SystemError extends Error {
	code: string;
	errno: number;
	syscall: string;
	path?: string;
	dest?: string;
}

// A path given to libc: a string, or raw bytes (mountinfo may hold names that are not UTF-8).
export type CPath = string | Buffer;

/** Opens a path with raw open(2) flags (O_PATH and O_NOFOLLOW included) and returns the fd. */
export function openRaw(path: CPath, flags: number): number {
	const fd = cOpen(toC(path), flags) as number;
	if (fd < 0) {
		throw systemError('open', path);
	}
	return fd;
}

/** Creates a memfd; `flags` should hold MFD_CLOEXEC. */
export function memfdCreate(name: string, flags: number): number {
	const fd = cMemfdCreate(name, flags) as number;
	if (fd < 0) {
		throw systemError('memfd_create', name);
	}
	return fd;
}

/** Returns the seals of `fd`; EINVAL means the file cannot carry seals at all. */
export function getSeals(fd: number): number {
	const seals = cFcntl(fd, F_GET_SEALS) as number;
	if (seals < 0) {
		throw systemError('fcntl');
	}
	return seals;
}

/** Adds seals to a memfd created with MFD_ALLOW_SEALING. */
export function addSeals(fd: number, seals: number): void {
	if ((cFcntl(fd, F_ADD_SEALS, 'int', seals) as number) < 0) {
		throw systemError('fcntl');
	}
}

/** mount(2) with no file system type and no data, as a bind mount needs. */
export function mount(source: CPath, target: CPath, flags: number): void {
	if ((cMount(toC(source), toC(target), null, flags, null) as number) < 0) {
		throw systemError('mount', source, target);
	}
}

/** umount2(2). */
export function umount2(target: CPath, flags: number): void {
	if ((cUmount2(toC(target), flags) as number) < 0) {
		throw systemError('umount2', target);
	}
}

/** Copies up to `count` bytes from the file position of `inFd` to `outFd`; returns bytes copied. */
export function sendfile(outFd: number, inFd: number, count: number): number {
	const copied = Number(cSendfile(outFd, inFd, null, count));
	if (copied < 0) {
		throw systemError('sendfile');
	}
	return copied;
}

/** Returns a detached, non-recursive copy of the mount at `path` (open_tree OPEN_TREE_CLONE). */
export function openTreeClone(path: CPath): number {
	const fd = Number(
		cSyscall(
			SYS_OPEN_TREE,
			'int',
			AT_FDCWD,
			'const char *',
			toC(path),
			'unsigned int',
			OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
		),
	);
	if (fd < 0) {
		throw systemError('open_tree', path);
	}
	return fd;
}

/** Tells whether `error` is a system error with the given code, from fs or from this module. */
export function isErrno(error: unknown, ...codes: string[]): error is SystemError {
	return error instanceof Error && codes.includes((error as Partial<SystemError>).code ?? '');
}

// libc wants NUL-terminated bytes; a JS string is converted by koffi, a Buffer is not.
function toC(path: CPath): string | Buffer {
	return typeof path === 'string' ? path : Buffer.concat([path, Buffer.from([0])]);
}

function systemError(syscall: string, path?: CPath, dest?: CPath): SystemError {
	const errno = koffi.errno();
	const code = errno > 0 ? getSystemErrorName(-errno) : 'EUNKNOWN';
	const where = path === undefined ? '' : ` '${path.toString()}'`;
	const error = new Error(`${syscall}${where}: ${code}`) as SystemError;
	error.code = code;
	error.errno = -errno;
	error.syscall = syscall;
	if (path !== undefined) {
		error.path = path.toString();
	}
	if (dest !== undefined) {
		error.dest = dest.toString();
	}
	return error;
}
