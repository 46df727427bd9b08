import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeRecord } from '../../../src/service/record.js';

test('encodeRecord gives each documented key its D-Bus type', () => {
	const record = encodeRecord({
		path: '/usr/bin/runc',
		state: 'active',
		size: 9_000_000,
		sha256: 'ab'.repeat(32),
		seals: 15,
		mode: 0o755,
		uid: 0,
		gid: 0,
		boundAt: 1_700_000_000_000_000,
		boundBy: 1000,
		memfdName: 'memfd-bind:/usr/bin/runc',
		holderPid: 42,
	});
	const types = Object.fromEntries(
		Object.entries(record).map(([key, variant]) => [key, variant.signature]),
	);
	assert.deepEqual(types, {
		Path: 's',
		State: 's',
		Size: 't',
		Sha256: 's',
		Seals: 'u',
		Mode: 'u',
		Uid: 'u',
		Gid: 'u',
		BoundAt: 't',
		BoundBy: 'u',
		MemfdName: 's',
		HolderPid: 'u',
	});
	assert.equal(record.Size.value, 9_000_000n);
	assert.equal(record.BoundAt.value, 1_700_000_000_000_000n);
	assert.equal(record.Seals.value, 15);
});

test('encodeRecord leaves out what a foreign mount cannot tell', () => {
	const record = encodeRecord({ path: '/x', state: 'stale', holderPid: 7 });
	assert.deepEqual(Object.keys(record).sort(), ['HolderPid', 'Path', 'State']);
});
