import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorName } from '../../../src/common/names.js';
import { isBindError } from '../../../src/service/errors.js';
import { canonicalPath, validatePath } from '../../../src/service/paths.js';

function rejection(path: string): string {
	try {
		validatePath(path);
	} catch (error: unknown) {
		assert.ok(
			isBindError(error, ErrorName.InvalidPath),
			`expected InvalidPath for ${JSON.stringify(path)}`,
		);
		return error.message;
	}
	assert.fail(`validatePath accepted ${JSON.stringify(path)}`);
}

test('validatePath accepts an absolute normalised path', () => {
	assert.doesNotThrow(() => validatePath('/usr/bin/runc'));
	assert.doesNotThrow(() => validatePath('/opt/my tools/bin/a\nb'));
});

const invalid: Array<[string, string, RegExp]> = [
	['an empty path', '', /empty/],
	['a relative path', 'usr/bin/runc', /not absolute/],
	['a path with ..', '/usr/bin/../bin/runc', /not normalised/],
	['a path with .', '/usr/./bin/runc', /not normalised/],
	['a path with //', '/usr//bin/runc', /not normalised/],
	['a trailing slash', '/usr/bin/runc/', /not normalised/],
	['the root directory', '/', /root directory/],
	['a NUL byte', '/usr/bin/ru\0nc', /NUL/],
	['a path under /proc', '/proc/self/exe', /under \/proc/],
	['/sys itself', '/sys', /under \/sys/],
	['a path under /dev', '/dev/shm/x', /under \/dev/],
	['a 4096-byte path', `/${'a'.repeat(4095)}`, /longer than 4095 bytes/],
];

for (const [what, path, reason] of invalid) {
	test(`validatePath refuses ${what} with InvalidPath naming the reason`, () => {
		const message = rejection(path);
		assert.match(message, reason);
		assert.ok(message.startsWith('Invalid path '), message);
	});
}

test('validatePath quotes control characters in the path it names', () => {
	assert.match(rejection('rel\npath'), /'rel\\x0apath'/);
});

test('validatePath accepts a path whose name merely starts like /proc', () => {
	assert.doesNotThrow(() => validatePath('/procedures/x'));
	assert.doesNotThrow(() => validatePath('/device'));
});

test('canonicalPath resolves the directory but keeps the last component', () => {
	// /bin is a symlink on merged-/usr systems; either way the directory is resolved.
	assert.equal(canonicalPath('/etc/hostname'), '/etc/hostname');
	assert.equal(canonicalPath('/usr/bin/env'), '/usr/bin/env');
});

test('canonicalPath reports a missing directory as NotFound', () => {
	assert.throws(
		() => canonicalPath('/nonexistent-memfd-bind-dir/x'),
		(error: unknown) => isBindError(error, ErrorName.NotFound) && /ENOENT/.test(error.message),
	);
});
