// Runs the unit tests, then the integration tests inside a private mount namespace with its own
// pid namespace and /proc: mounts never reach the host, and every process a test leaves behind
// (holders included) dies with the namespace.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const only = process.argv.slice(2);

function testFiles(dir) {
	const full = join(root, 'dist/test', dir);
	if (!existsSync(full)) {
		return [];
	}
	return readdirSync(full, { recursive: true })
		.filter((name) => name.endsWith('.test.js'))
		.map((name) => join(full, name))
		.filter((file) => only.length === 0 || only.some((part) => file.includes(part)))
		.sort();
}

function run(argv, env = process.env) {
	const result = spawnSync(argv[0], argv.slice(1), { stdio: 'inherit', env });
	return result.status ?? 1;
}

const unit = testFiles('unit');
const integration = testFiles('integration');
let status = 0;
const nodeTest = [process.execPath, '--test', '--test-reporter=spec', '--test-concurrency=1'];

if (process.getuid() !== 0) {
	console.log(`# integration tests skipped: they need root (mounts in a private namespace)`);
	status = run([...nodeTest, ...unit, ...integration]);
} else {
	const namespaced = ['unshare', '--mount', '--propagation', 'private', '--pid', '--fork', '--mount-proc'];
	status = run([...namespaced, ...nodeTest, ...unit, ...integration], {
		...process.env,
		MEMFD_BIND_TEST_NS: '1',
	});
}
process.exit(status);
