import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { access, constants, lstat, mkdir, readFile, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';

// What the launcher fixture prints once it has decided whether to copy itself.
export type LauncherReport = {
	pid: number;
	// F_GET_SEALS of /proc/self/exe; 0 when it is not a memfd.
	seals: number;
	// seals === 0xF, the only set runc 1.1.x accepts.
	exact: boolean;
	// seals include 0xF, which runc 1.2+ accepts.
	superset: boolean;
	// This process made its own sealed copy and re-executed from it.
	copied: boolean;
	// readlink(/proc/self/exe).
	exe: string;
};

export type BuildLauncherOptions = {
	// MiB of non-zero data compiled into the binary, to give it runc's size.
	payloadMb?: number;
};

// A launcher started with --hold; it keeps its sealed copy alive until stop() is called.
export type HeldLauncher = {
	report: LauncherReport;
	stop: () => Promise<void>;
};

const sourceRelativePath = join('test', 'fixtures', 'launcher.c');
const reexecEnv = 'MEMFD_LAUNCHER_REEXEC';

// Compiles test/fixtures/launcher.c once per source and flags, and returns the binary's path.
export async function buildLauncher({ payloadMb = 0 }: BuildLauncherOptions = {}): Promise<string> {
	if (!Number.isSafeInteger(payloadMb) || payloadMb < 0) {
		throw new RangeError(`Invalid payloadMb '${String(payloadMb)}': expected an integer >= 0`);
	}

	const sourcePath = await findSource();
	const source = await readFile(sourcePath);
	const compiler = await findCompiler();
	const flags = ['-std=c11', '-Wall', '-Wextra', '-O2', `-DPAYLOAD_MB=${payloadMb}`];
	const hash = createHash('sha256')
		.update(source)
		.update('\0')
		.update([compiler, ...flags].join('\0'))
		.digest('hex')
		.slice(0, 16);
	const cacheDir = join(tmpdir(), `memfd-bind-launcher-${hash}`);
	const binaryPath = join(cacheDir, 'launcher');

	await prepareCacheDir(cacheDir);
	if (await isExecutable(binaryPath)) {
		return binaryPath;
	}

	// Build under a unique name and rename, so parallel test files never run a half-written binary.
	const partialPath = `${binaryPath}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
	const result = await execa(compiler, [...flags, '-o', partialPath, sourcePath], {
		reject: false,
	});
	if (result.failed) {
		await rm(partialPath, { force: true });
		throw new Error(
			`Failed to compile launcher '${sourcePath}' with ${compiler}: ${result.shortMessage}\n${result.stderr}`,
			{ cause: result },
		);
	}
	await rename(partialPath, binaryPath);
	return binaryPath;
}

// Runs the launcher to completion (no --hold) and returns its report.
export async function runLauncher(
	path: string,
	args: readonly string[] = [],
): Promise<LauncherReport> {
	const result = await execa(path, args, { reject: false, extendEnv: false, env: launcherEnv() });
	if (result.failed) {
		throw new Error(`Failed to run launcher '${path}': ${result.shortMessage}\n${result.stderr}`, {
			cause: result,
		});
	}
	return parseReport(result.stdout);
}

// Starts the launcher with --hold and resolves once it has printed its report.
export async function startLauncher(
	path: string,
	args: readonly string[] = [],
): Promise<HeldLauncher> {
	const child = spawn(path, [...args, '--hold'], {
		env: launcherEnv(),
		stdio: ['ignore', 'pipe', 'pipe'],
	});
	let stderr = '';
	child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
		stderr += chunk;
	});
	const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(
		(resolve, reject) => {
			child.once('error', reject);
			child.once('close', (code, signal) => resolve({ code, signal }));
		},
	);
	// Awaited below or by stop(); this only keeps an early spawn error from counting as unhandled.
	exited.catch(() => undefined);

	const lines = createInterface({ input: child.stdout });
	const firstLine = once(lines, 'line').then(([line]) => String(line));
	const line = await Promise.race([
		firstLine,
		exited.then(({ code, signal }) => {
			throw new Error(
				`Failed to start launcher '${path}': exited with ${describeExit(code, signal)} before reporting\n${stderr}`,
			);
		}),
	]);
	lines.close();

	let report: LauncherReport;
	try {
		report = parseReport(line);
	} catch (error: unknown) {
		// Nobody could stop a launcher whose report we cannot return.
		child.kill('SIGKILL');
		throw error;
	}
	const stop = async (): Promise<void> => {
		if (child.exitCode === null && child.signalCode === null) {
			child.kill('SIGTERM');
		}
		const { code, signal } = await exited;
		if (code !== 0) {
			throw new Error(
				`Failed to stop launcher pid=${report.pid}: exited with ${describeExit(code, signal)}\n${stderr}`,
			);
		}
	};
	return { report, stop };
}

// The fixture sits in test/fixtures above this module, whether it runs from the sources or from an
// outDir inside the repository; for an outDir elsewhere, tests are run from inside the repository.
async function findSource(): Promise<string> {
	const starts = [dirname(fileURLToPath(import.meta.url)), process.cwd()];
	for (const start of starts) {
		for (let dir = start; ; dir = dirname(dir)) {
			const candidate = join(dir, sourceRelativePath);
			if (await isReadable(candidate)) {
				return candidate;
			}
			if (dirname(dir) === dir) {
				break;
			}
		}
	}
	throw new Error(
		`Failed to find launcher source '${sourceRelativePath}' above '${starts.join("' or '")}'`,
	);
}

// $CC if set, else cc, else gcc.
async function findCompiler(): Promise<string> {
	const fromEnv = process.env['CC'];
	if (fromEnv !== undefined && fromEnv !== '') {
		return fromEnv;
	}
	for (const name of ['cc', 'gcc']) {
		const result = await execa(name, ['--version'], { reject: false });
		if (!result.failed) {
			return name;
		}
	}
	throw new Error('Failed to find a C compiler: neither cc nor gcc runs, and CC is not set');
}

// The cache lives in a shared temp folder, so refuse one another user could have planted.
async function prepareCacheDir(cacheDir: string): Promise<void> {
	await mkdir(cacheDir, { mode: 0o700, recursive: true });
	const stats = await lstat(cacheDir);
	const uid = process.getuid?.();
	if (
		!stats.isDirectory() ||
		(uid !== undefined && stats.uid !== uid) ||
		(stats.mode & 0o022) !== 0
	) {
		throw new Error(
			`Failed to use launcher cache '${cacheDir}': not a directory owned by uid=${uid} and closed to others`,
		);
	}
}

async function isExecutable(path: string): Promise<boolean> {
	return access(path, constants.X_OK).then(
		() => true,
		() => false,
	);
}

async function isReadable(path: string): Promise<boolean> {
	return access(path, constants.R_OK).then(
		() => true,
		() => false,
	);
}

// The launcher trusts MEMFD_LAUNCHER_REEXEC to mean "I am the copy"; never pass a stray one in.
function launcherEnv(): NodeJS.ProcessEnv {
	const env = { ...process.env };
	delete env[reexecEnv];
	return env;
}

function parseReport(stdout: string): LauncherReport {
	let value: unknown;
	try {
		value = JSON.parse(stdout);
	} catch (error: unknown) {
		throw new Error(`Failed to parse launcher report ${JSON.stringify(stdout)}`, { cause: error });
	}
	if (!isReport(value)) {
		throw new Error(
			`Failed to parse launcher report ${JSON.stringify(stdout)}: fields missing or mistyped`,
		);
	}
	return value;
}

function isReport(value: unknown): value is LauncherReport {
	if (typeof value !== 'object' || value === null) {
		return false;
	}
	const record = value as Record<string, unknown>;
	return (
		Number.isSafeInteger(record['pid']) &&
		Number.isSafeInteger(record['seals']) &&
		typeof record['exact'] === 'boolean' &&
		typeof record['superset'] === 'boolean' &&
		typeof record['copied'] === 'boolean' &&
		typeof record['exe'] === 'string'
	);
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
	return signal === null ? `code ${code}` : `signal ${signal}`;
}
