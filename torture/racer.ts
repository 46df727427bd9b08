// A child process that races the service from outside, so the race is real (another process,
// another CPU). Modes:
//   swap <path> <file> <target> <dwell-ms>
//                                 replace <path>, over and over, with a hard link to <file>
//                                 and with a symlink to <target>, each by an atomic rename,
//                                 leaving each in place for a random time up to <dwell-ms>
//   resize <pid> <path> grow|shrink|rewrite <bytes>
//                                 wait until process <pid> holds a memfd-bind memfd of <path>,
//                                 then append <bytes> to <path>, cut it to <bytes>, or
//                                 overwrite <bytes> at its start and its end (same size);
//                                 print "changed" and exit
import {
	appendFileSync,
	closeSync,
	fstatSync,
	linkSync,
	openSync,
	readdirSync,
	readlinkSync,
	renameSync,
	rmSync,
	symlinkSync,
	truncateSync,
	writeSync,
} from 'node:fs';

const [mode, ...args] = process.argv.slice(2);
if (mode === 'swap') {
	swap(args[0], args[1], args[2], Number(args[3]));
} else if (mode === 'resize') {
	resize(Number(args[0]), args[1], args[2], Number(args[3]));
} else {
	console.error(`racer: unknown mode '${mode}'`);
	process.exit(2);
}

// Runs until killed. A rename onto a mount point fails with EBUSY: the path stays as it is
// while it is bound, which is what the attack checks then.
function swap(path: string, file: string, target: string, dwell: number): void {
	const fileTmp = `${path}.racer-file`;
	const linkTmp = `${path}.racer-link`;
	const pause = new Int32Array(new SharedArrayBuffer(4));
	for (let round = 0; ; round++) {
		const tmp = round % 2 === 0 ? fileTmp : linkTmp;
		try {
			rmSync(tmp, { force: true });
			if (tmp === fileTmp) {
				linkSync(file, tmp);
			} else {
				symlinkSync(target, tmp);
			}
			renameSync(tmp, path);
			// Short stays make most Binds lose the race, long ones let some win it: both matter.
			Atomics.wait(pause, 0, 0, Math.random() * dwell);
		} catch (error: unknown) {
			if ((error as NodeJS.ErrnoException).code !== 'EBUSY') {
				throw error;
			}
			Atomics.wait(pause, 0, 0, 1);
		}
	}
}

function resize(pid: number, path: string, how: string, bytes: number): void {
	const name = `/memfd:memfd-bind:${path}`;
	process.stdout.write('ready\n');
	const deadline = Date.now() + 30_000;
	while (Date.now() < deadline) {
		if (holdsMemfd(pid, name)) {
			if (how === 'grow') {
				appendFileSync(path, Buffer.alloc(bytes, 0x41));
			} else if (how === 'shrink') {
				truncateSync(path, bytes);
			} else {
				rewrite(path, bytes);
			}
			process.stdout.write('changed\n');
			return;
		}
	}
	process.stdout.write('missed\n');
}

// The start is copied first and the end last: a copy that misses this is a mix of two files.
function rewrite(path: string, bytes: number): void {
	const fd = openSync(path, 'r+');
	try {
		const size = fstatSync(fd).size;
		writeSync(fd, Buffer.alloc(bytes, 0x42), 0, bytes, 0);
		writeSync(fd, Buffer.alloc(bytes, 0x42), 0, bytes, size - bytes);
	} finally {
		closeSync(fd);
	}
}

function holdsMemfd(pid: number, name: string): boolean {
	let fds: string[];
	try {
		fds = readdirSync(`/proc/${pid}/fd`);
	} catch {
		return false;
	}
	for (const fd of fds) {
		try {
			if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith(name)) {
				return true;
			}
		} catch {
			// The fd closed while we looked.
		}
	}
	return false;
}
