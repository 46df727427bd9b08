// memfdctl polkit: shows our polkit actions and the rules that mention them, and keeps one rules
// file of group grants (see rules-file.ts).
import { join } from 'node:path';
import type { Command } from 'commander';
import { execa } from 'execa';
import { ExitCode } from '../exit-codes.js';
import { GrantArgumentError, describePaths, validateGroup, validatePath } from './grants.js';
import {
	DEFAULT_RULES_DIR,
	RULES_DIRS,
	RULES_FILE,
	readGrants,
	writeGrants,
} from './rules-file.js';
import { showActions } from './show.js';

/** Adds `memfdctl polkit show|allow|revoke` to the program, inheriting its settings. */
export function addPolkitCommands(program: Command): void {
	const polkit = program
		.command('polkit')
		.description('show the polkit actions, and grant them to a group or revoke a grant');

	polkit
		.command('show')
		.description(
			'print each action with its implicit authorizations and the rules files that mention it',
		)
		.option('--rules-dir <dir>', 'also look in this rules folder')
		.action(async (options: { rulesDir?: string }) => {
			const dirs = [...RULES_DIRS, ...(options.rulesDir === undefined ? [] : [options.rulesDir])];
			const report = await showActions([...new Set(dirs)]);
			process.stdout.write(report.text);
			for (const problem of report.problems) {
				fail('show', 'polkit actions', problem);
			}
		});

	polkit
		.command('allow')
		.description(
			`grant the actions to members of GROUP (replacing an earlier grant for it), in ${RULES_FILE}`,
		)
		.requiredOption('--group <group>', 'a group name')
		.option('--path <path...>', 'only for these absolute paths (default: any path)')
		.option('--rules-dir <dir>', 'the rules folder', DEFAULT_RULES_DIR)
		.action(async (options: { group: string; path?: string[]; rulesDir: string }) => {
			const file = join(options.rulesDir, RULES_FILE);
			try {
				const grant = {
					group: validateGroup(options.group),
					paths: [...new Set((options.path ?? []).map(validatePath))],
				};
				await requireGroup(grant.group);
				const grants = (await readGrants(file)).filter((old) => old.group !== grant.group);
				await writeGrants(file, [...grants, grant]);
				process.stdout.write(
					`${file}: group ${grant.group} may bind, release and clean up ${describePaths(grant.paths)}\n`,
				);
			} catch (error: unknown) {
				fail('allow group', options.group, error);
			}
		});

	polkit
		.command('revoke')
		.description(`remove the grant for GROUP from ${RULES_FILE}, and the file once it holds none`)
		.requiredOption('--group <group>', 'a group name')
		.option('--rules-dir <dir>', 'the rules folder', DEFAULT_RULES_DIR)
		.action(async (options: { group: string; rulesDir: string }) => {
			const file = join(options.rulesDir, RULES_FILE);
			try {
				const group = validateGroup(options.group);
				const grants = await readGrants(file);
				const kept = grants.filter((grant) => grant.group !== group);
				if (kept.length === grants.length) {
					process.stdout.write(`${file}: group ${group} had no grant\n`);
					return;
				}
				await writeGrants(file, kept);
				process.stdout.write(
					`${file}: group ${group} no longer granted${kept.length === 0 ? ', file removed' : ''}\n`,
				);
			} catch (error: unknown) {
				fail('revoke group', options.group, error);
			}
		});
}

// A group that does not exist would make a grant that silently grants nothing.
async function requireGroup(group: string): Promise<void> {
	const result = await execa('getent', ['group', group], { reject: false });
	if (result.exitCode !== 0) {
		throw new GrantArgumentError(`no group named ${group} (getent group ${group} found none)`);
	}
}

// Prints "memfdctl: cannot <verb> <object>: <reason>" and keeps the first failure's exit code.
function fail(verb: string, object: string, error: unknown): void {
	const reason = error instanceof Error ? error.message : String(error);
	const target = object === '' ? '' : ` ${object}`;
	process.stderr.write(`memfdctl: cannot ${verb}${target}: ${reason}\n`);
	const code = error instanceof GrantArgumentError ? ExitCode.Usage : ExitCode.Failure;
	if (process.exitCode === undefined || process.exitCode === ExitCode.Success) {
		process.exitCode = code;
	}
}
