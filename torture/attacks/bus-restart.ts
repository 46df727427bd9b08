// The bus daemon killed and started again, several times, while bound binaries keep running.
// The service must exit non-zero when it loses the bus (a small supervisor loop here starts it
// again, as systemd would), adopt its holders on the way back, and every exec of a bound path
// must work throughout, bus or no bus.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkAgreement, livePids, settle, sleep } from '../probe.js';
import { Tally } from '../report.js';
import type { AttackResult } from '../report.js';
import { openStage } from '../stage.js';
import type { Stage } from '../stage.js';

export interface BusRestartOptions {
	rounds: number;
}

/** Kills the bus daemon `rounds` times and checks the service and the bindings each time. */
export async function busRestart(options: BusRestartOptions): Promise<AttackResult> {
	const tally = new Tally('bus-restart');
	const stage = await openStage();
	const daemons: ChildProcess[] = [];
	const supervisor = new Supervisor(stage);
	const execs = new ExecLoop();
	try {
		const programs = [join(stage.files, 'true'), join(stage.files, 'script')];
		copyFileSync('/bin/true', programs[0]);
		writeFileSync(programs[1], '#!/bin/sh\nexit 0\n', { mode: 0o755 });
		for (const path of programs) {
			const outcome = await stage.client.call('Bind', 's', [path]);
			if (!outcome.ok) {
				throw new Error(
					`Bind('${path}') before the attack failed: ${outcome.error}: ${outcome.text}`,
				);
			}
		}
		const holders = (await stage.client.list()).map((record) => record.HolderPid).sort();
		execs.start(programs);

		for (let round = 0; round < options.rounds; round++) {
			tally.tried++;
			const signal = round % 2 === 0 ? 'SIGKILL' : 'SIGTERM';
			const exitsBefore = supervisor.exits.length;
			process.kill(busDaemonPid(stage), signal);
			if (!(await settle(() => supervisor.exits.length > exitsBefore, 10_000))) {
				tally.loss(
					`round ${round + 1}: the service did not exit after the bus daemon got ${signal}`,
					'alive',
				);
				tally.failed++;
				continue;
			}
			const exit = supervisor.exits[supervisor.exits.length - 1];
			tally.count(`service-exit-${exit}`);
			if (exit === '0' || exit.startsWith('SIG')) {
				tally.loss(
					`round ${round + 1}: the service ended with ${exit} when it lost the bus, not a non-zero exit`,
					'alive',
				);
			}
			// A while without any bus: the bindings must not care.
			await sleep(300);
			daemons.push(await startBusDaemon(stage));
			if (!(await settle(() => supervisor.serving, 20_000))) {
				tally.loss(`round ${round + 1}: the service did not come back after the bus did`, 'alive');
				tally.failed++;
				continue;
			}
			await stage.reconnect();
			const listed = await stage.client.list();
			const now = listed.map((record) => record.HolderPid).sort();
			if (JSON.stringify(now) !== JSON.stringify(holders)) {
				tally.loss(
					`round ${round + 1}: holders were ${holders.join(', ')}, after the restart List says ${now.join(', ')}`,
					'mounts',
				);
			}
			for (const problem of await checkAgreement(stage.client, stage.sandbox.dir, stage.stateDir)) {
				tally.loss(`round ${round + 1}: ${problem}`, 'mounts');
			}
		}

		await execs.stop();
		tally.notes.push(
			`${execs.runs} execs of the bound paths, ${execs.failures.length} failed; service exits: ${supervisor.exits.join(', ')}`,
		);
		for (const failure of execs.failures.slice(0, 5)) {
			tally.loss(`an exec of a bound path failed: ${failure}`);
		}
		tally.alive = await stage.isAlive();
		if (!tally.alive) {
			tally.loss('the service is not serving at the end', 'alive');
		}
		return tally.result();
	} finally {
		await execs.stop();
		supervisor.stop();
		await stage.close();
		for (const daemon of daemons) {
			daemon.kill('SIGTERM');
		}
	}
}

// Restarts the service whenever it exits, as systemd's Restart=on-failure would, and records
// how each run ended ('1', '0', or a signal name).
class Supervisor {
	readonly exits: string[] = [];
	serving = true;
	private running = true;

	constructor(private readonly stage: Stage) {
		void this.loop();
	}

	stop(): void {
		this.running = false;
	}

	private async loop(): Promise<void> {
		while (this.running) {
			const child = this.stage.service.process;
			if (child.exitCode === null && child.signalCode === null) {
				await new Promise((resolve) => child.once('exit', resolve));
			}
			if (!this.running) {
				return;
			}
			this.serving = false;
			this.exits.push(child.signalCode ?? String(child.exitCode));
			while (this.running && !this.serving) {
				try {
					await this.stage.restart();
					this.serving = true;
				} catch {
					// The bus is not back yet: the service exits at once; try again shortly.
					await sleep(200);
				}
			}
		}
	}
}

// Runs the bound programs one after another until stopped, counting runs and failures.
class ExecLoop {
	runs = 0;
	readonly failures: string[] = [];
	private running = false;
	private done: Promise<void> = Promise.resolve();

	start(programs: string[]): void {
		this.running = true;
		this.done = (async () => {
			while (this.running) {
				for (const program of programs) {
					const result = await run(program);
					this.runs++;
					if (result !== 'exit 0') {
						this.failures.push(`${program}: ${result}`);
					}
				}
			}
		})();
	}

	async stop(): Promise<void> {
		this.running = false;
		await this.done;
	}
}

function run(program: string): Promise<string> {
	return new Promise((resolve) => {
		const child = spawn(program, [], { stdio: 'ignore' });
		child.once('error', (error) => resolve(error.message));
		child.once('exit', (code, signal) =>
			resolve(signal === null ? `exit ${code}` : `killed by ${signal}`),
		);
	});
}

function busDaemonPid(stage: Stage): number {
	const config = join(stage.sandbox.dir, 'bus.conf');
	const pid = livePids().find((candidate) => {
		try {
			const argv = readFileSync(`/proc/${candidate}/cmdline`, 'utf8').split('\0');
			return argv[0].endsWith('dbus-daemon') && argv.includes(config);
		} catch {
			return false;
		}
	});
	if (pid === undefined) {
		throw new Error(`no dbus-daemon runs with ${config}`);
	}
	return pid;
}

// The sandbox's own configuration, started again: same socket path, same policy.
async function startBusDaemon(stage: Stage): Promise<ChildProcess> {
	// Its only complaint here is that it cannot raise its fd limit, which does not matter.
	const daemon = spawn(
		'dbus-daemon',
		['--config-file', join(stage.sandbox.dir, 'bus.conf'), '--nofork', '--nopidfile'],
		{
			stdio: 'ignore',
		},
	);
	const up = await settle(
		() =>
			stage.sandbox.run('busctl', ['--address', stage.sandbox.address, 'status'], { timeout: 2000 })
				.status === 0,
		10_000,
	);
	if (!up) {
		daemon.kill('SIGKILL');
		throw new Error('the bus daemon did not start again');
	}
	return daemon;
}
