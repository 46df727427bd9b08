// Real consumers of a binding: our runc-1.1.15-style launcher and Debian's crun must find
// themselves already cloned and skip their own copy. Also checks the live introspection
// against dbus/org.opencontainers.MemfdBind1.xml.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { buildLauncher, runLauncher } from '../helpers/launcher.js';
import {
	BUS_NAME,
	INTERFACE,
	MEMFDCTL,
	OBJECT_PATH,
	REPO,
	integrationSkipReason,
	startSandbox,
} from '../helpers/sandbox.js';
import type { Sandbox } from '../helpers/sandbox.js';

const skip = integrationSkipReason();
const CRUN = '/usr/bin/crun';

describe('consumers of a binding', { skip }, () => {
	let sandbox: Sandbox;

	before(async () => {
		sandbox = await startSandbox();
		await sandbox.startService();
	});

	after(async () => {
		await sandbox?.stop();
	});

	function memfdctl(...args: string[]) {
		return sandbox.run(process.execPath, [MEMFDCTL, '--no-ask-password', ...args]);
	}

	test('the launcher started through a bound path is cloned under both checks and copies nothing', async () => {
		const built = await buildLauncher();
		const path = join(sandbox.dir, 'launcher');
		copyFileSync(built, path);

		const unbound = await runLauncher(path);
		assert.equal(unbound.copied, true, 'an unbound launcher makes its own copy');

		assert.equal(memfdctl('bind', path).status, 0);
		const exact = await runLauncher(path, ['--check', 'exact']);
		assert.equal(exact.copied, false, 'runc 1.1.x check: no copy of its own');
		assert.equal(exact.seals, 0xf);
		assert.equal(exact.exact, true);
		assert.equal(exact.exe, `/memfd:memfd-bind:${path} (deleted)`);
		const superset = await runLauncher(path, ['--check', 'superset']);
		assert.equal(superset.copied, false, 'runc 1.2+ check: no copy of its own');
		assert.equal(superset.superset, true);
		assert.equal(memfdctl('release', path).status, 0);
	});

	test(
		'crun started through a bound path skips its re-exec: no mount and no execveat',
		{ skip: existsSync(CRUN) ? false : `${CRUN} is not installed` },
		() => {
			const trace = (label: string) => {
				const result = sandbox.run('strace', [
					'-f',
					'-qq',
					'-e',
					'trace=mount,execveat,memfd_create',
					CRUN,
					'--version',
				]);
				assert.equal(result.status, 0, `${label}: ${result.stderr}`);
				assert.match(result.stdout, /crun version/);
				return result.stderr
					.split('\n')
					.filter((line) => /\b(mount|execveat|memfd_create)\(/.test(line));
			};
			const unbound = trace('unbound');
			assert.ok(
				unbound.length > 0,
				'unbound crun re-executes itself (the baseline this test relies on)',
			);

			assert.equal(memfdctl('bind', CRUN).status, 0);
			assert.deepEqual(trace('bound'), [], 'bound crun makes no mount, execveat or memfd_create');
			assert.equal(memfdctl('release', CRUN).status, 0);
			assert.notEqual(trace('released').length, 0);
		},
	);

	test('the live introspection declares exactly what dbus/org.opencontainers.MemfdBind1.xml documents', () => {
		const result = sandbox.run('busctl', ['introspect', '--xml-interface', BUS_NAME, OBJECT_PATH]);
		assert.equal(result.status, 0, result.stderr);
		const live = members(interfaceXml(result.stdout));
		const documented = members(
			interfaceXml(readFileSync(join(REPO, 'dbus', `${INTERFACE}.xml`), 'utf8')),
		);
		assert.deepEqual(live, documented);
		assert.ok(
			documented.includes('method Bind(in s path, out a{sv} binding)'),
			documented.join('\n'),
		);

		const listed = sandbox.run('busctl', ['introspect', BUS_NAME, OBJECT_PATH, INTERFACE]);
		for (const member of [
			'.Bind',
			'.Release',
			'.Cleanup',
			'.List',
			'.Version',
			'.Bound',
			'.Released',
		]) {
			assert.ok(listed.stdout.includes(member), `${member} missing from busctl introspect`);
		}
	});

	test('every documented method is dispatched, none answers UnknownMethod', () => {
		const documented = members(
			interfaceXml(readFileSync(join(REPO, 'dbus', `${INTERFACE}.xml`), 'utf8')),
		);
		for (const entry of documented.filter((line) => line.startsWith('method '))) {
			const name = /^method (\w+)/.exec(entry)![1];
			// A deliberately wrong signature: the dispatcher must know the method to say so.
			const result = sandbox.run('busctl', [
				'call',
				BUS_NAME,
				OBJECT_PATH,
				INTERFACE,
				name,
				'u',
				'7',
			]);
			assert.match(result.stderr, /signature is 'u', expected/, `${name}: ${result.stderr}`);
		}
	});
});

function interfaceXml(xml: string): string {
	const start = xml.indexOf(`<interface name="${INTERFACE}">`);
	assert.ok(start >= 0, `interface ${INTERFACE} not found`);
	return xml.slice(start, xml.indexOf('</interface>', start));
}

// One line per member with its arguments, comments dropped, order kept.
function members(xml: string): string[] {
	const text = xml.replace(/<!--[\s\S]*?-->/g, '');
	const out: string[] = [];
	const memberPattern = /<(method|signal|property)\s+name="(\w+)"([^>]*?)(\/>|>([\s\S]*?)<\/\1>)/g;
	for (const match of text.matchAll(memberPattern)) {
		const [, kind, name, attributes, , body = ''] = match;
		if (kind === 'property') {
			const type = /type="([^"]+)"/.exec(attributes)?.[1];
			const access = /access="([^"]+)"/.exec(attributes)?.[1];
			out.push(`property ${name} ${type} ${access}`);
			continue;
		}
		const args = [...body.matchAll(/<arg\s+([^>]*?)\/>/g)].map(([, arg]) => {
			const type = /type="([^"]+)"/.exec(arg)?.[1];
			const argName = /name="([^"]+)"/.exec(arg)?.[1];
			const direction = /direction="([^"]+)"/.exec(arg)?.[1] ?? (kind === 'method' ? 'in' : '');
			return `${direction ? `${direction} ` : ''}${type} ${argName}`;
		});
		out.push(`${kind} ${name}(${args.join(', ')})`);
	}
	return out;
}
