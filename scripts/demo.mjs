// npm run demo: checks for root and the tools, builds with tsc, then runs dist/demo/entry.js in a
// private mount and pid namespace, as scripts/run-tests.mjs does for the tests: the demo's mounts
// never reach the host, and every process it starts ends with it. Then it checks the host.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const started = Date.now();

// Debian package for each command the demo runs, for the message when one is missing.
const TOOLS = {
	unshare: 'util-linux',
	'dbus-daemon': 'dbus-daemon',
	cc: 'gcc',
	sha256sum: 'coreutils',
};

if (process.getuid() !== 0) {
	console.error(
		'npm run demo needs root: it bind-mounts a sealed copy over a system binary (in a private\n' +
			'mount namespace it creates, which needs CAP_SYS_ADMIN) and runs the service, which only\n' +
			'root may start under its bus name. Run it again as root.',
	);
	process.exit(1);
}
const missing = Object.keys(TOOLS).filter((tool) => !hasCommand(tool));
if (missing.length > 0) {
	const packages = [...new Set(missing.map((tool) => TOOLS[tool]))].join(' ');
	console.error(`npm run demo needs ${missing.join(', ')}: apt-get install ${packages}`);
	process.exit(1);
}

console.log('memfd-bind demo\n===============');
section('Build');
run('tsc -p .', [join(root, 'node_modules/.bin/tsc'), '-p', root]);
run('node scripts/bundle.mjs', [process.execPath, join(root, 'scripts/bundle.mjs')]);
const { magicLinkOf, readMountInfo } = await import('../dist/src/common/mountinfo.js');
const hostMemfdMounts = memfdMounts();

const work = mkdtempSync(join(tmpdir(), 'memfd-bind-demo-'));
const namespacesFile = join(work, 'namespaces.json');
const namespace = [
	'--mount',
	'--propagation',
	'private',
	'--pid',
	'--fork',
	'--kill-child',
	'--mount-proc',
];
const demo = ['node', 'dist/demo/entry.js', ...process.argv.slice(2)];
// Ctrl-C reaches the demo too; wait for it to end, then check the host all the same.
process.on('SIGINT', () => undefined);
section('Enter a private mount and pid namespace');
console.log(`$ unshare ${namespace.join(' ')} ${demo.join(' ')}`);
const result = spawnSync('unshare', [...namespace, process.execPath, ...demo.slice(1)], {
	cwd: root,
	stdio: 'inherit',
	env: { ...process.env, MEMFD_BIND_DEMO_NS: '1', MEMFD_BIND_DEMO_NS_FILE: namespacesFile },
});
let status = result.status ?? 1;

section('Back on the host');
status = checkHost() && status === 0 ? 0 : 1;
rmSync(work, { recursive: true, force: true });
console.log(
	`\nDemo ${status === 0 ? 'done' : 'FAILED'} in ${((Date.now() - started) / 1000).toFixed(1)} s.`,
);
process.exit(status);

// The namespaces are gone with their last process, and the host has no memfd mount it lacked.
function checkHost() {
	let ok = true;
	let ids;
	try {
		ids = JSON.parse(readFileSync(namespacesFile, 'utf8'));
	} catch {
		console.log('# the demo ended before it recorded its namespaces; nothing to look for');
	}
	if (ids !== undefined) {
		const left = processesIn(ids);
		if (left.length > 0) {
			console.log(`demo failed: processes are left in the demo's namespaces: ${left.join(', ')}`);
			ok = false;
		} else {
			console.log(`# no process is left in the demo's namespaces (${ids.pid}, ${ids.mnt})`);
		}
	}
	const added = memfdMounts().filter((line) => !hostMemfdMounts.includes(line));
	if (added.length > 0) {
		console.log(`demo failed: memfd mounts appeared on the host: ${added.join('; ')}`);
		ok = false;
	} else {
		console.log(
			`# host mount table: no memfd mount added (${hostMemfdMounts.length} before and after)`,
		);
	}
	return ok;
}

// Pids on the host whose pid or mount namespace is one of the demo's.
function processesIn(ids) {
	const pids = [];
	for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
		for (const kind of ['pid', 'mnt']) {
			try {
				if (readlinkSync(`/proc/${pid}/ns/${kind}`) === ids[kind]) {
					pids.push(pid);
					break;
				}
			} catch {
				// Gone, or a kernel thread: not in the demo's namespaces.
			}
		}
	}
	return pids;
}

function memfdMounts() {
	return readMountInfo()
		.filter((entry) => magicLinkOf(entry) !== undefined)
		.map((entry) => `${entry.mountPoint} <- ${entry.root}`);
}

function section(title) {
	console.log(`\n== ${title} ==`);
}

function run(display, argv) {
	console.log(`$ ${display}`);
	const result = spawnSync(argv[0], argv.slice(1), { cwd: root, stdio: 'inherit' });
	if (result.status !== 0) {
		console.log(`\ndemo failed: '${display}' exited with ${result.status ?? result.signal}`);
		process.exit(1);
	}
}

function hasCommand(name) {
	return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', name], { stdio: 'ignore' }).status === 0;
}
