// Hostile paths for the malformed attack: strings no path should be, paths to things that
// exist but must never be bound, and names just past the kernel's limits.
import { spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomMember } from './random-bodies.js';
import type { Random } from './report.js';
import type { Stage } from './stage.js';

// Files that exist but must never be bound: a directory, a fifo, a socket, a device node,
// symlinks of several kinds; and one regular file that only Release/Refresh/Cleanup are sent.
export interface HostileFiles {
	existing: string[];
	regular: string;
}

/** Creates the files that exist but must never be bound. */
export function prepareHostileFiles(stage: Stage): HostileFiles {
	const dir = stage.files;
	const regular = join(dir, 'regular');
	writeFileSync(regular, '#!/bin/sh\necho regular\n', { mode: 0o755 });
	mkdirSync(join(dir, 'a dir'));
	symlinkSync(regular, join(dir, 'link-to-regular'));
	symlinkSync(join(dir, 'nowhere'), join(dir, 'dangling'));
	symlinkSync(join(dir, 'loop'), join(dir, 'loop'));
	symlinkSync(join(dir, 'a dir'), join(dir, 'dir-link'));
	spawnSync('mkfifo', [join(dir, 'fifo')]);
	spawnSync('mknod', [join(dir, 'null'), 'c', '1', '3']);
	return {
		regular,
		existing: [
			stage.sandbox.dir,
			dir,
			join(dir, 'a dir'),
			join(dir, 'link-to-regular'),
			join(dir, 'dangling'),
			join(dir, 'loop'),
			join(dir, 'dir-link'),
			join(dir, 'dir-link', 'x'),
			join(dir, 'fifo'),
			join(dir, 'null'),
			join(stage.sandbox.dir, 'system_bus_socket'),
			stage.stateDir,
		],
	};
}

/** Draws a path that Bind must refuse (or, for Release and Cleanup, find unbound). */
export function hostilePath(random: Random, stage: Stage, hostile: HostileFiles): string {
	const missing = join(stage.files, 'missing');
	switch (random.int(12)) {
		case 0:
			return random.pick([
				'',
				' ',
				'.',
				'..',
				'/',
				'//',
				'///',
				'/..',
				'/../',
				'/./',
				'relative/path',
				'~root/x',
				'\n',
				'-',
				'--help',
			]);
		case 1:
			return random.pick([
				`${stage.files}/../files/regular`,
				`${stage.files}//regular`,
				`${stage.files}/regular/`,
				`${stage.files}/./regular`,
				`${missing}/..`,
			]);
		case 2:
			return `${missing}/${random.pick(['a b', 'a\nb', '\t', ' ', '\'"\\$(reboot)`', '\u00e9\u4e2d\u{1F600}', '\u202eexe.txt', '\ud800', '\u0001\u007f', '*?[', '%s%n'])}`;
		case 3:
			return random.pick([
				'/proc/self/exe',
				'/proc/1/root',
				'/proc',
				'/sys/kernel/notes',
				'/dev/null',
				'/dev',
				'/dev/shm/x',
				'/sys',
			]);
		case 4:
			return `/${'a'.repeat(random.pick([255, 256, 1000]))}`;
		case 5:
			// 4095 bytes passes the length check and reaches the file system; 4096 does not.
			return longPath(missing, random.pick([4095, 4096, 4097]));
		case 6:
			return random.pick([
				'x'.repeat(65536),
				`/${'y'.repeat(65535)}`,
				`${missing}/${'z/'.repeat(30000)}z`,
			]);
		case 7:
			return random.pick(hostile.existing);
		case 8:
			// D-Bus strings cannot carry NUL; the raw frames send that.
			return `${missing}/${random
				.bytes(1 + random.int(40))
				.toString('latin1')
				.replaceAll('\0', '@')}`;
		case 9:
			return `/${Array.from({ length: 1 + random.int(6) }, () => random.pick(['..', '.', '', 'usr', 'bin', 'x y', '\n'])).join('/')}`;
		default:
			return `${missing}/${randomMember(random)}`;
	}
}

function longPath(prefix: string, bytes: number): string {
	const parts = [prefix];
	let length = prefix.length;
	while (length < bytes) {
		const part = 'd'.repeat(Math.min(200, bytes - length - 1));
		parts.push(part);
		length += part.length + 1;
	}
	return parts.join('/').slice(0, bytes);
}

/** A path with bytes that are not UTF-8, for `ay` arguments and raw frames. */
export function nonUtf8Path(random: Random): Buffer {
	return Buffer.concat([
		Buffer.from('/tmp/'),
		random.bytes(4),
		Buffer.from([0xff, 0xfe, 0xc3, 0x28]),
	]);
}

/** A path shortened and quoted for a loss message. */
export function show(path: string): string {
	const shown = JSON.stringify(
		path.length > 60 ? `${path.slice(0, 40)}…(${path.length} chars)` : path,
	);
	return shown;
}
