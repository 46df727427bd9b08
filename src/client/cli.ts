// memfdctl: one subcommand per service method, plus `status`, a local check that needs no
// service. Results go to stdout; errors to stderr as "memfdctl: cannot <verb> <object>: <reason>".
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import { escapeControls } from '../common/quote.js';
import { ExitCode, exitCodeFor, reasonFor } from './exit-codes.js';
import { startPolkitAgent } from './agent.js';
import type { PolkitAgent } from './agent.js';
import { formatList, formatStatus } from './format.js';
import { MemfdBindProxy, ServiceCallError } from './proxy.js';
import { addPolkitCommands } from './polkit/commands.js';

interface GlobalOptions {
	askPassword: boolean;
}

const EXAMPLES = `
Examples:
  memfdctl bind /usr/bin/runc        keep one sealed copy of runc mounted over it
  memfdctl list                      show bindings (and memfd mounts left by other tools)
  memfdctl status /usr/bin/runc      is it a sealed memfd now; would runc and crun skip their copy
  memfdctl release /usr/bin/runc     give the original file back
  memfdctl cleanup                   remove stale memfd mounts whose holder is gone

The service is reached on the system bus (DBUS_SYSTEM_BUS_ADDRESS is honoured).
Exit codes: 0 success, 1 failure, 2 usage error, 4 not authorized, 69 service unavailable.`;

/** Runs memfdctl with `argv` (process.argv form) and returns the exit code. */
export async function run(argv: string[]): Promise<number> {
	const program = buildProgram();
	try {
		await program.parseAsync(argv);
		return process.exitCode === undefined ? ExitCode.Success : Number(process.exitCode);
	} catch (error: unknown) {
		if (error instanceof CommanderError) {
			return error.exitCode === 0 ? ExitCode.Success : ExitCode.Usage;
		}
		throw error;
	}
}

function buildProgram(): Command {
	const program = new Command('memfdctl')
		.description(
			'Bind sealed memfd copies of binaries over their paths, through the memfd-bind service',
		)
		.version(readVersion(), '--version', 'print the version of memfdctl')
		.option('--no-ask-password', 'never ask for a password; fail when authentication is needed')
		.addHelpText('after', EXAMPLES)
		.exitOverride()
		.showHelpAfterError()
		.configureOutput({ outputError: (text, write) => write(text) });

	program
		.command('bind')
		.description('bind a sealed memfd copy of each PATH over it')
		.argument('<path...>', 'absolute paths of regular files')
		.option('--refresh', 'replace an existing binding with a copy of the file now on disk')
		.action(async (paths: string[], options: { refresh?: boolean }) => {
			await forEachPath(
				program,
				options.refresh ? 'refresh' : 'bind',
				paths,
				async (proxy, path) => {
					const record = options.refresh ? await proxy.refresh(path) : await proxy.bind(path);
					process.stdout.write(`${escapeControls(record.Path)}: bound, sha256 ${record.Sha256}\n`);
				},
			);
		});

	program
		.command('release')
		.description('unmount the binding of each PATH; the file on disk is visible again')
		.argument('<path...>', 'bound paths')
		.action(async (paths: string[]) => {
			await forEachPath(program, 'release', paths, async (proxy, path) => {
				await proxy.release(path);
			});
		});

	program
		.command('cleanup')
		.description('remove stale memfd mounts (holder gone) at PATH, or everywhere')
		.argument('[path]', 'a path; all stale memfd mounts on the host when left out')
		.action(async (path: string | undefined) => {
			await forEachPath(program, 'clean up', [path ?? ''], async (proxy, target) => {
				for (const removed of await proxy.cleanup(target)) {
					process.stdout.write(`${escapeControls(removed)}\n`);
				}
			});
		});

	program
		.command('list')
		.description('list bindings and other memfd mounts')
		.option('--json', 'print JSON')
		.action(async (options: { json?: boolean }) => {
			await withProxy(program, 'list', 'bindings', async (proxy) => {
				process.stdout.write(formatList(await proxy.list(), Boolean(options.json)));
			});
		});

	program
		.command('status')
		.description(
			'check PATH locally: is it a sealed memfd, and would runc and crun skip their copy',
		)
		.argument('<path>', 'a path')
		.option('--json', 'print JSON')
		.action(async (path: string, options: { json?: boolean }) => {
			// status alone needs libc (koffi); other verbs do not load it.
			const { localStatus } = await import('./status.js');
			const status = await localStatus(resolve(path));
			if (status.error !== undefined && !options.json) {
				process.stderr.write(
					`memfdctl: cannot check ${escapeControls(status.path)}: ${status.error}\n`,
				);
			}
			if (status.error === undefined || options.json || status.holder !== undefined) {
				process.stdout.write(formatStatus(status, Boolean(options.json)));
			}
			if (status.error !== undefined) {
				process.exitCode = ExitCode.Failure;
			}
		});

	program
		.command('suspend')
		.description('lift every binding until resume (called by the apt hook before dpkg runs)')
		.option('--quiet', 'print nothing when the service is not running')
		.action(async (options: { quiet?: boolean }) => {
			await withProxy(
				program,
				'suspend',
				'bindings',
				async (proxy) => {
					for (const path of await proxy.suspend()) {
						process.stdout.write(`${escapeControls(path)}: suspended\n`);
					}
				},
				options.quiet,
			);
		});

	program
		.command('resume')
		.description('bind again, from the files now on disk, every path lifted by suspend')
		.option('--quiet', 'print nothing when the service is not running')
		.action(async (options: { quiet?: boolean }) => {
			await withProxy(
				program,
				'resume',
				'bindings',
				async (proxy) => {
					for (const record of await proxy.resume()) {
						if (record.State === 'failed') {
							report('resume', escapeControls(record.Path), new Error(record.Error ?? 'failed'));
							continue;
						}
						process.stdout.write(
							`${escapeControls(record.Path)}: bound, sha256 ${record.Sha256}\n`,
						);
					}
				},
				options.quiet,
			);
		});

	addPolkitCommands(program);

	program.addOption(new Option('--debug').hideHelp());
	return program;
}

// The version in the package.json above this module (bundled or not, installed or not).
function readVersion(): string {
	let dir = dirname(fileURLToPath(import.meta.url));
	while (dir !== dirname(dir)) {
		try {
			const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
				name?: string;
				version?: string;
			};
			if (manifest.name === 'memfd-bind' && manifest.version !== undefined) {
				return manifest.version;
			}
		} catch {
			// No manifest here; look further up.
		}
		dir = dirname(dir);
	}
	return 'unknown';
}

// Runs `task` per path and keeps going after a failure; the exit code is the first failure's.
async function forEachPath(
	program: Command,
	verb: string,
	paths: string[],
	task: (proxy: MemfdBindProxy, path: string) => Promise<void>,
): Promise<void> {
	await withProxy(program, verb, '', async (proxy) => {
		for (const path of paths) {
			try {
				await task(proxy, path);
			} catch (error: unknown) {
				report(
					verb,
					path === '' ? (verb === 'clean up' ? 'stale mounts' : "''") : escapeControls(path),
					error,
				);
			}
		}
	});
}

async function withProxy(
	program: Command,
	verb: string,
	object: string,
	task: (proxy: MemfdBindProxy) => Promise<void>,
	quietWhenAbsent = false,
): Promise<void> {
	const { askPassword } = program.opts<GlobalOptions>();
	// The call allows a password prompt only when an agent is there to show it: in scripts, under
	// cron or with CI set, a call that needs a password fails at once instead.
	const agent: PolkitAgent | undefined = askPassword ? await startPolkitAgent() : undefined;
	const proxy = MemfdBindProxy.connect({ interactive: agent !== undefined });
	try {
		await task(proxy);
	} catch (error: unknown) {
		const absent =
			error instanceof ServiceCallError
				? exitCodeFor(error.busName) === ExitCode.Unavailable
				: busUnreachable(error);
		if (quietWhenAbsent && absent) {
			return;
		}
		report(verb, object, error);
	} finally {
		await agent?.stop();
		proxy.disconnect();
	}
}

// The socket of the system bus is missing, refuses connections, or may not be opened.
function busUnreachable(error: unknown): boolean {
	return ['ENOENT', 'ECONNREFUSED', 'EACCES'].includes(
		(error as NodeJS.ErrnoException)?.code ?? '',
	);
}

function report(verb: string, object: string, error: unknown): void {
	let reason: string;
	let code: number;
	if (error instanceof ServiceCallError) {
		reason = reasonFor(error.busName, error.message);
		code = exitCodeFor(error.busName);
	} else {
		const system = error as NodeJS.ErrnoException;
		const unreachable = busUnreachable(error);
		reason = unreachable
			? `cannot reach the system bus (${system.code}: ${system.message})`
			: String(system?.message ?? error);
		code = unreachable ? ExitCode.Unavailable : ExitCode.Failure;
	}
	const target = object === '' ? '' : ` ${object}`;
	process.stderr.write(`memfdctl: cannot ${verb}${target}: ${reason}\n`);
	if (process.exitCode === undefined || process.exitCode === ExitCode.Success) {
		process.exitCode = code;
	}
}
