// A test authentication agent for the real polkitd (see polkitd.ts): registered over D-Bus for one
// process, it answers each request as the test tells it, without any terminal.
import { readFileSync } from 'node:fs';
import dbus from 'dbus-next';
import type { MessageBus, Variant as BusVariant } from 'dbus-next';
import { POLKIT_NAME } from './polkitd.js';

const { Message, Variant, DBusError } = dbus;

const AUTHORITY_PATH = '/org/freedesktop/PolicyKit1/Authority';
const AUTHORITY = 'org.freedesktop.PolicyKit1.Authority';
const AGENT = 'org.freedesktop.PolicyKit1.AuthenticationAgent';

// What a test agent answers when polkitd asks it to authenticate.
export type AgentAnswer =
	| 'grant' // authenticated: the check returns is_authorized (auth_*_keep: kept for that process)
	| 'dismiss' // like closing a dialog: not authorized, details polkit.dismissed = 'true'
	| 'fail' // like a wrong password: not authorized, no polkit.dismissed
	| 'wait'; // never answers until CancelCheckAuthorization or stop()

export type TestAgent = {
	// Action id and message of each request polkitd made, in order.
	requests: { actionId: string; message: string }[];
	// May be changed between checks.
	answer: AgentAnswer;
	stop(): Promise<void>;
};

// Registers an authentication agent for process `pid`, answering as told and without any
// terminal. It runs as root in this process: polkitd lets uid 0 register for anyone's process and
// accepts AuthenticationAgentResponse2 only from uid 0.
export async function startTestAgent(options: {
	busAddress: string;
	pid: number;
	answer: AgentAnswer;
}): Promise<TestAgent> {
	const bus = dbus.sessionBus({ busAddress: options.busAddress });
	// A bus that goes away before stop() must not crash the test process; the calls report it.
	bus.on('error', () => {});
	const pending = new Map<string, (error: Error) => void>();
	const agent: TestAgent = {
		requests: [],
		answer: options.answer,
		async stop() {
			for (const reject of pending.values()) {
				reject(new DBusError('org.freedesktop.PolicyKit1.Error.Cancelled', 'agent stopped'));
			}
			bus.disconnect();
		},
	};
	const iface = new AgentInterface(AGENT);
	iface.begin = async (actionId, message, cookie, identities) => {
		agent.requests.push({ actionId, message });
		if (agent.answer === 'grant') {
			// The uid argument must be that of the agent's own connection, which is root here.
			await callAuthority(bus, 'AuthenticationAgentResponse2', 'us(sa{sv})', [
				0,
				cookie,
				identities[0],
			]);
		} else if (agent.answer !== 'wait') {
			const [name, text] =
				agent.answer === 'dismiss'
					? ['Cancelled', 'dismissed by the test']
					: ['Failed', 'failed by the test'];
			throw new DBusError(`org.freedesktop.PolicyKit1.Error.${name}`, text);
		} else {
			await new Promise<never>((_resolve, reject) => pending.set(cookie, reject));
		}
	};
	iface.cancel = (cookie) => {
		pending.get(cookie)?.(new DBusError('org.freedesktop.PolicyKit1.Error.Cancelled', 'cancelled'));
		pending.delete(cookie);
	};
	const objectPath = '/org/opencontainers/memfdbind/TestAgent';
	bus.export(objectPath, iface);
	const subject = [
		'unix-process',
		{
			pid: new Variant('u', options.pid),
			'start-time': new Variant('t', startTimeOf(options.pid)),
		},
	];
	try {
		await callAuthority(bus, 'RegisterAuthenticationAgent', '(sa{sv})ss', [
			subject,
			'C',
			objectPath,
		]);
	} catch (error: unknown) {
		bus.disconnect();
		throw new Error(`Failed to register a test agent for pid ${options.pid}`, { cause: error });
	}
	return agent;
}

type Identity = [string, Record<string, BusVariant>];

// The org.freedesktop.PolicyKit1.AuthenticationAgent object polkitd calls into.
class AgentInterface extends dbus.interface.Interface {
	begin: (actionId: string, message: string, cookie: string, ids: Identity[]) => Promise<void> =
		async () => {};
	cancel: (cookie: string) => void = () => {};

	async BeginAuthentication(
		actionId: string,
		message: string,
		_iconName: string,
		_details: Record<string, string>,
		cookie: string,
		identities: Identity[],
	): Promise<void> {
		await this.begin(actionId, message, cookie, identities);
	}

	CancelAuthentication(cookie: string): void {
		this.cancel(cookie);
	}
}
AgentInterface.configureMembers({
	methods: {
		BeginAuthentication: { inSignature: 'sssa{ss}sa(sa{sv})', outSignature: '' },
		CancelAuthentication: { inSignature: 's', outSignature: '' },
	},
});

async function callAuthority(
	bus: MessageBus,
	member: string,
	signature: string,
	body: unknown[],
): Promise<void> {
	await bus.call(
		new Message({
			destination: POLKIT_NAME,
			path: AUTHORITY_PATH,
			interface: AUTHORITY,
			member,
			signature,
			body,
		}),
	);
}

// Field 22 of /proc/<pid>/stat, which polkit pairs with the pid to name a process.
function startTimeOf(pid: number): bigint {
	const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
	const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
	return BigInt(fields[19]);
}
