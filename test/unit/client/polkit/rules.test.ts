import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
	ACTIONS,
	GrantArgumentError,
	validateGroup,
	validatePath,
} from '../../../../src/client/polkit/grants.js';
import type { Grant } from '../../../../src/client/polkit/grants.js';
import { RULES_FILE, readGrants, writeGrants } from '../../../../src/client/polkit/rules-file.js';
import {
	RulesFileError,
	checkRules,
	parseRules,
	renderRules,
} from '../../../../src/client/polkit/rules-text.js';
import { mentions } from '../../../../src/client/polkit/show.js';

const HOSTILE = [
	'/usr/bin/with "double" and \'single\' quotes',
	'/usr/bin/new\nline',
	'/usr/bin/x"]}];polkit.addRule(function(){return polkit.Result.YES;});/*',
	'/usr/bin/line\u2028separator\u2029para',
	'/usr/bin/back\\slash',
	'/usr/bin/ünïcödé',
];

// Runs a rules text against a stub polkit the way polkitd calls a rule.
function decide(text: string, id: string, path: string, groups: string[]): unknown {
	const rules: Array<(action: unknown, subject: unknown) => unknown> = [];
	const polkit = {
		Result: { YES: 'yes', NO: 'no', NOT_HANDLED: null },
		addRule: (rule: (action: unknown, subject: unknown) => unknown) => rules.push(rule),
	};
	new Function('polkit', text)(polkit);
	let result: unknown = null;
	for (const rule of rules) {
		result = rule(
			{ id, lookup: (key: string) => (key === 'path' ? path : undefined) },
			{ user: 'someone', isInGroup: (group: string) => groups.includes(group) },
		);
		if (result !== null && result !== undefined) {
			break;
		}
	}
	return result;
}

describe('validateGroup and validatePath', () => {
	test('validateGroup accepts ordinary and machine-account group names', () => {
		for (const group of ['daemon', 'memfd-admins', '_runtime', 'Domain.Admins', 'host$']) {
			assert.equal(validateGroup(group), group);
		}
	});

	test('validateGroup refuses names that are empty, spaced, quoted or too long', () => {
		for (const group of [
			'',
			'two words',
			'a"b',
			"a'b",
			'-leading',
			'1digit',
			'x'.repeat(33),
			'a\nb',
			'a/b',
		]) {
			assert.throws(() => validateGroup(group), GrantArgumentError, JSON.stringify(group));
		}
	});

	test('validatePath accepts absolute normalised paths, hostile characters included', () => {
		for (const path of ['/usr/bin/runc', '/', ...HOSTILE]) {
			assert.equal(validatePath(path), path);
		}
	});

	test('validatePath refuses relative, unnormalised, NUL-carrying and non-UTF-8 paths', () => {
		const cases: Array<[string, RegExp]> = [
			['usr/bin/runc', /not absolute/],
			['', /not absolute/],
			['/usr/bin/../bin/runc', /not normalised/],
			['/usr//bin/runc', /not normalised/],
			['/usr/bin/./runc', /not normalised/],
			['/usr/bin/', /not normalised/],
			['/usr/bin/a\0b', /NUL/],
			['/usr/bin/\uFFFD', /UTF-8/],
			[`/${'a'.repeat(4095)}`, /longer than 4095 bytes/],
		];
		for (const [path, reason] of cases) {
			assert.throws(() => validatePath(path), reason, JSON.stringify(path));
		}
	});
});

describe('renderRules and parseRules', () => {
	const grants: Grant[] = [
		{ group: 'daemon', paths: ['/usr/bin/runc', ...HOSTILE] },
		{ group: 'adm', paths: [] },
	];

	test('renderRules grants every action to a member on a listed path and nothing else', () => {
		const text = renderRules(grants);
		for (const id of ACTIONS) {
			for (const path of ['/usr/bin/runc', ...HOSTILE]) {
				assert.equal(decide(text, id, path, ['daemon']), 'yes', `${id} ${path}`);
				assert.equal(decide(text, id, path, ['nogroup']), null, `${id} ${path} for a non-member`);
			}
			assert.equal(
				decide(text, id, '/usr/bin/crun', ['daemon']),
				null,
				`${id} on an unlisted path`,
			);
			assert.equal(decide(text, id, '', ['daemon']), null, `${id} everywhere`);
			assert.equal(
				decide(text, id, '/anything', ['adm']),
				'yes',
				`${id} for a group granted any path`,
			);
		}
		assert.equal(
			decide(text, 'org.freedesktop.login1.reboot', '/usr/bin/runc', ['daemon', 'adm']),
			null,
		);
	});

	test('renderRules keeps quotes, newlines and line separators inside strings, so a path cannot add a rule', () => {
		const text = renderRules([{ group: 'daemon', paths: HOSTILE }]);
		let added = 0;
		new Function('polkit', text)({ Result: {}, addRule: () => (added += 1) });
		assert.equal(added, 1);
		assert.doesNotMatch(text, /[\u2028\u2029]/);
		assert.equal(decide(text, ACTIONS[0], '/usr/bin/other', ['nogroup']), null);
	});

	test("renderRules writes ES5 that polkitd's duktape runs: no let, const, arrows or includes", () => {
		const text = renderRules(grants);
		assert.doesNotMatch(text, /\b(let|const|class)\b|=>|\.includes\(/);
	});

	test('renderRules lists grants by group, so the same grants give the same file', () => {
		assert.equal(renderRules(grants), renderRules([...grants].reverse()));
	});

	test('parseRules reads back exactly the grants it was given', () => {
		const text = renderRules(grants);
		assert.deepEqual(
			parseRules('/r', text),
			[...grants].sort((a, b) => a.group.localeCompare(b.group)),
		);
	});

	test('parseRules refuses a file memfdctl did not write', () => {
		const foreign =
			'polkit.addRule(function (action, subject) { return polkit.Result.NOT_HANDLED; });\n';
		assert.throws(() => parseRules('/r', foreign), /was not written by memfdctl/);
	});

	test('parseRules refuses a file that no longer parses, naming the syntax error', () => {
		const broken = renderRules(grants).replace('var path = ', 'var path = = ');
		assert.throws(
			() => parseRules('/r', broken),
			(error: unknown) => {
				assert.ok(error instanceof RulesFileError);
				assert.match(
					error.message,
					/^rules file '\/r' does not parse as JavaScript \(SyntaxError: /,
				);
				return true;
			},
		);
	});

	test('parseRules refuses a grant line that is not JSON, has the wrong shape or an invalid path', () => {
		const text = renderRules([{ group: 'daemon', paths: ['/usr/bin/runc'] }]);
		const line = '// memfd-bind-grant: {"group":"daemon","paths":["/usr/bin/runc"]}';
		for (const corrupt of [
			'// memfd-bind-grant: {"group":"daemon","paths":["/usr/bin/runc"]',
			'// memfd-bind-grant: {"group":"daemon","paths":"/usr/bin/runc"}',
			'// memfd-bind-grant: {"group":"daemon","paths":[],"extra":1}',
			'// memfd-bind-grant: {"group":"two words","paths":[]}',
			'// memfd-bind-grant: {"group":"daemon","paths":["relative"]}',
			`${line}\n${line}`,
		]) {
			assert.throws(
				() => parseRules('/r', text.replace(line, corrupt)),
				/has a corrupt memfd-bind-grant line [45]: /,
				corrupt,
			);
		}
	});

	test('parseRules refuses a file whose rule was edited by hand even though it still parses', () => {
		const edited = renderRules(grants).replace(
			'return polkit.Result.NOT_HANDLED;\n});',
			'return polkit.Result.AUTH_SELF;\n});',
		);
		assert.notEqual(edited, renderRules(grants));
		assert.throws(() => parseRules('/r', edited), /was changed by hand/);
	});

	test('checkRules refuses rules that grant a non-member or an unlisted path', () => {
		const grant: Grant = { group: 'daemon', paths: ['/usr/bin/runc'] };
		const tooWide = renderRules([{ group: 'daemon', paths: [] }]);
		assert.throws(
			() => checkRules(tooWide, [grant]),
			/answer yes for .* for group daemon, expected null/,
		);
		const everyone = renderRules([grant]).replace('subject.isInGroup(grant.group) &&', 'true &&');
		assert.throws(() => checkRules(everyone, [grant]), /for a non-member, expected null/);
		assert.doesNotThrow(() => checkRules(renderRules([grant]), [grant]));
	});
});

describe('readGrants and writeGrants', () => {
	const dir = mkdtempSync(join(tmpdir(), 'memfd-bind-rules-'));
	const file = join(dir, RULES_FILE);

	after(() => rmSync(dir, { recursive: true, force: true }));

	test('writeGrants puts a 0644 file in place, leaves no temporary file and readGrants reads it back', async () => {
		const previous = process.umask(0o077);
		try {
			await writeGrants(file, [{ group: 'daemon', paths: ['/usr/bin/runc'] }]);
		} finally {
			process.umask(previous);
		}
		assert.equal(statSync(file).mode & 0o7777, 0o644);
		assert.deepEqual(readdirSync(dir), [RULES_FILE]);
		assert.deepEqual(await readGrants(file), [{ group: 'daemon', paths: ['/usr/bin/runc'] }]);
	});

	test('writeGrants removes the file once no grant is left, and readGrants then finds none', async () => {
		await writeGrants(file, [{ group: 'daemon', paths: [] }]);
		await writeGrants(file, []);
		assert.deepEqual(readdirSync(dir), []);
		assert.deepEqual(await readGrants(file), []);
	});

	test('readGrants refuses a file broken by hand and leaves it as it was', async () => {
		const broken = `${renderRules([{ group: 'daemon', paths: [] }])}polkit.addRule(function (\n`;
		writeFileSync(file, broken);
		await assert.rejects(readGrants(file), /does not parse as JavaScript/);
		assert.equal(readFileSync(file, 'utf8'), broken);
	});
});

describe('mentions', () => {
	test('mentions finds a rule naming the action or the prefix of all our actions', () => {
		assert.ok(mentions('if (action.id == "org.opencontainers.memfdbind.bind")', ACTIONS[0]));
		assert.ok(mentions("action.id.indexOf('org.opencontainers.memfdbind.') === 0", ACTIONS[2]));
		assert.ok(!mentions('action.id == "org.opencontainers.memfdbind.bind"', ACTIONS[1]));
		assert.ok(!mentions('action.id == "org.freedesktop.login1.reboot"', ACTIONS[0]));
	});
});
