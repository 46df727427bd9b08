// vm.memfd_noexec=2 forbids executable memfds. The sysctl belongs to a pid namespace, so the
// attack runs the service in a child pid namespace of its own with the setting at 2, leaving
// every other namespace as it was. Bind must fail with an error that names the setting, mount
// nothing and fall back to nothing.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MEMFD_BINDD } from '../../test/helpers/sandbox.js';
import { holderPids, memfdHolders, memfdMounts, mountTable, settle } from '../probe.js';
import { Tally } from '../report.js';
import type { AttackResult } from '../report.js';
import { openStage } from '../stage.js';

export interface NoexecOptions {
	rounds: number;
}

const SYSCTL = '/proc/sys/vm/memfd_noexec';

/** Tells why the attack cannot run here, or undefined when it can. */
export function noexecSkipReason(): string | undefined {
	return existsSync(SYSCTL) ? undefined : `${SYSCTL} does not exist (Linux 6.3 or later has it)`;
}

/** Binds `rounds` files through a service whose pid namespace has vm.memfd_noexec=2. */
export async function memfdNoexec(options: NoexecOptions): Promise<AttackResult> {
	const tally = new Tally('memfd-noexec');
	const skip = noexecSkipReason();
	if (skip !== undefined) {
		tally.notes.push(`skipped: ${skip}`);
		return tally.result();
	}
	const ours = readFileSync(SYSCTL, 'utf8').trim();
	const stage = await openStage({ withService: false });
	const service = startConfinedService(stage.sandbox.env, stage.sandbox.dir);
	try {
		const pid = await service.ready;
		if (!/^2$/m.test(service.log())) {
			tally.loss(`the service's pid namespace did not get vm.memfd_noexec=2: ${service.log()}`);
		}
		const mountsBefore = mountTable(pid);
		for (let round = 0; round < options.rounds; round++) {
			const path = join(stage.files, `prog-${round}`);
			writeFileSync(path, '#!/bin/sh\necho not copied\n', { mode: 0o755 });
			const outcome = await stage.client.call('Bind', 's', [path]);
			tally.tried++;
			if (outcome.ok) {
				tally.loss(`Bind('${path}') succeeded under vm.memfd_noexec=2`, 'mounts');
			} else {
				tally.failed++;
				tally.count(outcome.error.replace(/^.*\.Error\./, ''));
				if (round === 0) {
					tally.notes.push(`Bind answered: ${outcome.text}`);
				}
				if (!/memfd_noexec/.test(outcome.text)) {
					tally.loss(
						`Bind failed without naming vm.memfd_noexec: ${outcome.error}: ${outcome.text}`,
					);
				}
			}
			if (
				mountTable(pid).join('\n') !== mountsBefore.join('\n') ||
				memfdMounts(stage.sandbox.dir, pid).length > 0
			) {
				tally.loss(`after Bind('${path}') the service's mount table changed`, 'mounts');
			}
			if (memfdHolders(stage.sandbox.dir).length > 0 || holderPids(stage.sandbox.dir).length > 0) {
				tally.loss(`after Bind('${path}') a memfd or a holder is left`);
			}
		}
		const listed = await stage.client.list();
		if (listed.length > 0) {
			tally.loss(`List shows ${listed.map((record) => record.Path).join(', ')}`, 'mounts');
		}
		tally.alive = await stage.client.ping();
		if (!tally.alive) {
			tally.loss('the service died', 'alive');
		}
		const after = readFileSync(SYSCTL, 'utf8').trim();
		tally.notes.push(`vm.memfd_noexec here ${ours} -> ${after}, in the service's namespace 2`);
		if (after !== ours) {
			tally.loss(`vm.memfd_noexec changed outside the child namespace: ${ours} -> ${after}`);
		}
		return tally.result();
	} finally {
		await service.stop();
		await stage.close();
	}
}

interface ConfinedService {
	/** Resolves with the service's pid (as seen from here) once it serves. */
	ready: Promise<number>;
	log(): string;
	stop(): Promise<void>;
}

// unshare makes the pid namespace, the shell sets the sysctl there and becomes the service.
// The service gets its own /proc (and so its own mount namespace), as on a host it would see
// its own pids.
function startConfinedService(env: NodeJS.ProcessEnv, dir: string): ConfinedService {
	const script = `echo 2 > ${SYSCTL} && cat ${SYSCTL} >&2 && exec "$@"`;
	const args = [
		'--state-dir',
		join(dir, 'state'),
		'--config-dir',
		join(dir, 'memfd-bind.d'),
		'--idle-timeout',
		'0',
		'--debug',
	];
	const child: ChildProcess = spawn(
		'unshare',
		[
			'--pid',
			'--fork',
			'--mount-proc',
			'--kill-child',
			'sh',
			'-c',
			script,
			'sh',
			process.execPath,
			MEMFD_BINDD,
			...args,
		],
		{ env, stdio: ['ignore', 'ignore', 'pipe'] },
	);
	let output = '';
	child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
	const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
	const ready = (async () => {
		const serving = await settle(
			() => output.includes('Serving ') || child.exitCode !== null,
			20_000,
		);
		if (!serving || child.exitCode !== null) {
			throw new Error(`the confined service did not start: ${output}`);
		}
		const inner = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim();
		return Number(inner.split(' ')[0]);
	})();
	return {
		ready,
		log: () => output,
		async stop() {
			const pid = await ready.catch(() => undefined);
			if (pid !== undefined) {
				process.kill(pid, 'SIGTERM');
			}
			if (
				!(await Promise.race([
					exited.then(() => true),
					new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 10_000)),
				]))
			) {
				child.kill('SIGKILL');
			}
		},
	};
}
