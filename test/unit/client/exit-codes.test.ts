import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ExitCode, exitCodeFor, reasonFor } from '../../../src/client/exit-codes.js';
import { ErrorName } from '../../../src/common/names.js';

test('exitCodeFor gives 4 to both kinds of authorization failure', () => {
	assert.equal(exitCodeFor(ErrorName.AccessDenied), ExitCode.NotAuthorized);
	assert.equal(exitCodeFor(ErrorName.InteractiveAuthorizationRequired), ExitCode.NotAuthorized);
});

test('exitCodeFor gives 69 when the service cannot be reached', () => {
	assert.equal(exitCodeFor('org.freedesktop.DBus.Error.ServiceUnknown'), ExitCode.Unavailable);
	assert.equal(exitCodeFor('org.freedesktop.DBus.Error.NameHasNoOwner'), ExitCode.Unavailable);
});

test('exitCodeFor gives 1 to service errors', () => {
	assert.equal(exitCodeFor(ErrorName.NotFound), ExitCode.Failure);
	assert.equal(exitCodeFor(ErrorName.Failed), ExitCode.Failure);
});

test('reasonFor drops the service prefix that repeats the path', () => {
	assert.equal(reasonFor(ErrorName.NotFound, "Failed to bind '/x': no such file"), 'no such file');
	assert.equal(
		reasonFor(ErrorName.InvalidPath, "Invalid path 'a\\'b': the path is not absolute"),
		'the path is not absolute',
	);
});

test('reasonFor keeps a message that has no such prefix', () => {
	assert.equal(
		reasonFor(ErrorName.AccessDenied, 'Not authorized to perform x'),
		'Not authorized to perform x',
	);
});
