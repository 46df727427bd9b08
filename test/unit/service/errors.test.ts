import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorName } from '../../../src/common/names.js';
import { BindError, describeErrno, failure } from '../../../src/service/errors.js';

function systemError(code: string, errno: number): Error {
	return Object.assign(new Error(`open: ${code}`), { code, errno, syscall: 'open' });
}

test('failure maps ENOENT to NotFound and names the path and the errno', () => {
	const error = failure('bind', '/usr/bin/runc', systemError('ENOENT', -2));
	assert.equal(error.busName, ErrorName.NotFound);
	assert.equal(error.message, "Failed to bind '/usr/bin/runc': ENOENT (no such file or directory)");
});

test('failure maps an unlisted errno to Failed', () => {
	const error = failure('mount', '/x', systemError('EBUSY', -16));
	assert.equal(error.busName, ErrorName.Failed);
	assert.match(error.message, /^Failed to mount '\/x': EBUSY \(resource busy or locked\)$/);
});

test('failure keeps an error that already has a bus name', () => {
	const original = new BindError(ErrorName.TooLarge, 'too large');
	assert.equal(failure('bind', '/x', original), original);
});

test('failure keeps the original error as cause', () => {
	const cause = systemError('EPERM', -1);
	assert.equal(failure('bind', '/x', cause).cause, cause);
});

test('describeErrno falls back to the message of an error without a code', () => {
	assert.equal(describeErrno(new Error('boom')), 'boom');
});
