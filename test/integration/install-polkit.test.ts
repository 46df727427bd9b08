// The polkit actions, once installed, are what pkaction shows: install into a DESTDIR, show its
// actions folder to a real polkitd (mounted over polkit's, inside the test's namespace only).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startPolkitd } from '../helpers/polkitd.js';
import type { Polkitd } from '../helpers/polkitd.js';
import { REPO, integrationSkipReason, startSandbox } from '../helpers/sandbox.js';
import type { Sandbox } from '../helpers/sandbox.js';

const skip = integrationSkipReason();

describe('the installed polkit actions', { skip }, () => {
	let sandbox: Sandbox;
	let polkitd: Polkitd;
	let destdir: string;

	before(async () => {
		destdir = mkdtempSync(join(tmpdir(), 'memfd-bind-install-polkit-'));
		chmodSync(destdir, 0o755);
		const installed = spawnSync('sh', [join(REPO, 'scripts/install.sh')], {
			encoding: 'utf8',
			env: { ...process.env, DESTDIR: destdir, PREFIX: '/usr' },
		});
		assert.equal(installed.status, 0, installed.stderr);
		const rules = join(destdir, 'rules');
		mkdirSync(rules, { mode: 0o755 });
		sandbox = await startSandbox();
		polkitd = await startPolkitd({
			busAddress: sandbox.address,
			actionsDir: join(destdir, 'usr/share/polkit-1/actions'),
			rulesDir: rules,
		});
	});

	after(async () => {
		await polkitd?.stop();
		await sandbox?.stop();
		rmSync(destdir, { recursive: true, force: true });
	});

	const defaults: Array<[string, string]> = [
		['org.opencontainers.memfdbind.bind', 'auth_admin_keep'],
		['org.opencontainers.memfdbind.release', 'auth_admin_keep'],
		['org.opencontainers.memfdbind.cleanup', 'auth_admin'],
	];
	for (const [action, implicit] of defaults) {
		test(`pkaction shows ${action} with ${implicit} for any, inactive and active callers`, () => {
			const result = sandbox.run('pkaction', ['--action-id', action, '--verbose']);
			assert.equal(result.status, 0, result.stderr);
			assert.match(result.stdout, new RegExp(`^${action.replace(/\./g, '\\.')}:$`, 'm'));
			for (const kind of ['any', 'inactive', 'active']) {
				assert.match(result.stdout, new RegExp(`implicit ${kind}:\\s+${implicit}$`, 'm'));
			}
		});
	}
});
