import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeField, magicLinkOf, parseMountInfo } from '../../../src/common/mountinfo.js';

const SAMPLE = [
	'22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw',
	'92 71 0:41 /26/fd/3 /usr/bin/runc rw,nosuid,nodev,noexec,relatime - proc proc rw',
	'93 71 0:41 /26/fd/4 /opt/my\\040tools/a\\012b rw,relatime master:1 - proc proc rw',
	'94 71 0:50 / /srv/data\\134x rw - tmpfs tmpfs rw,size=1024k',
	'95 71 8:1 /usr/bin/true /opt/bin/tool rw - ext4 /dev/vda rw',
	'96 71 0:41 /self/fd/3 /x rw - proc proc rw',
	'98 71 0:41 /36/fd/3//deleted /usr/bin/crun rw - proc proc rw',
	'garbage line',
	'',
].join('\n');

test('parseMountInfo reads every well-formed line and skips garbage', () => {
	const entries = parseMountInfo(SAMPLE);
	assert.deepEqual(
		entries.map((entry) => entry.mountId),
		[22, 92, 93, 94, 95, 96, 98],
	);
	assert.equal(entries[1].fsType, 'proc');
	assert.equal(entries[3].fsType, 'tmpfs');
	assert.equal(entries[4].source, '/dev/vda');
});

test('parseMountInfo decodes spaces, newlines and backslashes in mount points', () => {
	const entries = parseMountInfo(SAMPLE);
	assert.equal(entries[2].mountPoint, '/opt/my tools/a\nb');
	assert.equal(entries[3].mountPoint, '/srv/data\\x');
});

test('parseMountInfo keeps bytes that are not UTF-8', () => {
	const line = Buffer.concat([
		Buffer.from('97 71 0:41 /26/fd/3 /opt/'),
		Buffer.from([0xff, 0xfe]),
		Buffer.from(' rw - proc proc rw\n'),
	]);
	const [entry] = parseMountInfo(line);
	assert.deepEqual([...entry.mountPointBytes.subarray(5)], [0xff, 0xfe]);
});

test('decodeField turns octal escapes into bytes', () => {
	assert.deepEqual(decodeField('a\\011b\\134'), Buffer.from('a\tb\\'));
});

test('magicLinkOf recognises only proc mounts rooted at /<pid>/fd/<n>', () => {
	const entries = parseMountInfo(SAMPLE);
	assert.deepEqual(magicLinkOf(entries[1]), { pid: 26, fd: 3 });
	assert.equal(magicLinkOf(entries[0]), undefined);
	assert.equal(magicLinkOf(entries[3]), undefined);
	assert.equal(magicLinkOf(entries[4]), undefined, 'a plain bind of a file is not a memfd mount');
	assert.equal(magicLinkOf(entries[5]), undefined, '/self/fd/3 is not a pid');
	assert.deepEqual(magicLinkOf(entries[6]), { pid: 36, fd: 3 }, 'a stale mount keeps its holder');
});
