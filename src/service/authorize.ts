// Authorization: the caller is the message's sender, never an argument. Root is allowed without
// asking polkit, so root keeps working without polkit; anyone else is asked about through
// CheckAuthorization, and every doubt (polkit gone, caller gone) ends in a denial.
import { randomUUID } from 'node:crypto';
import dbus from 'dbus-next';
import type { Message as BusMessage, MessageBus } from 'dbus-next';
import { ErrorName } from '../common/names.js';
import type { ActionId } from '../common/names.js';
import { quote } from '../common/quote.js';
import { ALLOW_INTERACTIVE_AUTHORIZATION } from './bus.js';
import { BindError } from './errors.js';
import { log } from './log.js';

const { Message, Variant } = dbus;

const POLKIT = 'org.freedesktop.PolicyKit1';
const POLKIT_PATH = '/org/freedesktop/PolicyKit1/Authority';
const POLKIT_AUTHORITY = 'org.freedesktop.PolicyKit1.Authority';
// CheckAuthorizationFlags from polkit's D-Bus API.
const CHECK_ALLOW_USER_INTERACTION = 0x1;

/** The outcome polkit (or the root shortcut) gave. */
export interface Decision {
	uid: number;
	via: 'root' | 'polkit';
}

/** Asks whether the sender of a call may perform an action. */
export class Authorizer {
	constructor(private readonly bus: MessageBus) {}

	/**
	 * Resolves with the caller's uid when it may perform `action` on `path`; otherwise throws
	 * AccessDenied or InteractiveAuthorizationRequired.
	 */
	async authorize(
		msg: BusMessage,
		action: ActionId,
		path: string,
		shownPath: string = path,
		knownUid?: number,
	): Promise<Decision> {
		const uid = knownUid ?? (await this.callerUid(msg.sender, action, shownPath));
		if (uid === 0) {
			log.info(`Authorized ${action} on ${quote(path)} for uid=0 (root, polkit not asked)`);
			return { uid, via: 'root' };
		}

		const interactive = (msg.flags & ALLOW_INTERACTIVE_AUTHORIZATION) !== 0;
		let result: PolkitResult;
		try {
			result = await this.checkWithPolkit(msg.sender, action, path, interactive);
		} catch (error: unknown) {
			log.notice(
				`Denied ${action} on ${quote(path)} for uid=${uid}: polkit is unavailable (${describe(error)})`,
			);
			throw denied(action, shownPath, 'polkit is unavailable, and only root is allowed without it');
		}

		if (result.authorized) {
			log.info(`Authorized ${action} on ${quote(path)} for uid=${uid} by polkit`);
			return { uid, via: 'polkit' };
		}
		if (result.challenge && !interactive) {
			log.notice(
				`Denied ${action} on ${quote(path)} for uid=${uid}: authentication required, call is not interactive`,
			);
			throw new BindError(
				ErrorName.InteractiveAuthorizationRequired,
				`Authentication is required for ${action} on ${quote(shownPath)}; call again allowing interactive authorization`,
			);
		}
		// pkttyagent reports a wrong password, Ctrl-C and EOF alike, as a plain "no"; only
		// graphical agents tell polkit that a prompt was dismissed.
		const reason = result.dismissed
			? 'the authentication was dismissed'
			: interactive
				? 'not allowed by polkit (a rule said no, or the authentication failed or was dismissed)'
				: 'not allowed by polkit';
		log.notice(`Denied ${action} on ${quote(path)} for uid=${uid}: ${reason}`);
		throw denied(action, shownPath, reason);
	}

	/** The uid of a bus connection, from the bus daemon itself. */
	async callerUid(sender: string, action: ActionId, path: string): Promise<number> {
		try {
			const reply = await this.bus.call(
				new Message({
					destination: 'org.freedesktop.DBus',
					path: '/org/freedesktop/DBus',
					interface: 'org.freedesktop.DBus',
					member: 'GetConnectionUnixUser',
					signature: 's',
					body: [sender],
				}),
			);
			return Number(reply?.body[0]);
		} catch (error: unknown) {
			log.notice(
				`Denied ${action} on ${quote(path)} for ${sender}: the caller's uid is unknown (${describe(error)})`,
			);
			throw denied(action, path, 'the caller could not be identified');
		}
	}

	// A caller that leaves while polkit waits for a password gets its check cancelled, so nothing
	// is done on behalf of a connection that is gone.
	private async checkWithPolkit(
		sender: string,
		action: ActionId,
		path: string,
		interactive: boolean,
	): Promise<PolkitResult> {
		const cancellationId = randomUUID();
		const rule = `type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='${sender}'`;
		let gone = false;
		const onMessage = (signal: BusMessage) => {
			// Only the bus itself may say that a caller left; anyone can send a lookalike signal.
			if (
				signal.sender === 'org.freedesktop.DBus' &&
				signal.member === 'NameOwnerChanged' &&
				signal.body?.[0] === sender &&
				signal.body?.[2] === ''
			) {
				gone = true;
				void this.cancel(cancellationId);
			}
		};
		await this.busCall('AddMatch', 's', [rule]);
		this.bus.on('message', onMessage);
		try {
			const reply = await this.bus.call(
				new Message({
					destination: POLKIT,
					path: POLKIT_PATH,
					interface: POLKIT_AUTHORITY,
					member: 'CheckAuthorization',
					signature: '(sa{sv})sa{ss}us',
					body: [
						['system-bus-name', { name: new Variant('s', sender) }],
						action,
						{ path },
						interactive ? CHECK_ALLOW_USER_INTERACTION : 0,
						cancellationId,
					],
				}),
			);
			const [authorized, challenge, details] = (reply?.body[0] ?? [false, false, {}]) as [
				boolean,
				boolean,
				Record<string, string>,
			];
			if (gone) {
				return { authorized: false, challenge: false, dismissed: false };
			}
			return { authorized, challenge, dismissed: details['polkit.dismissed'] === 'true' };
		} finally {
			this.bus.removeListener('message', onMessage);
			void this.busCall('RemoveMatch', 's', [rule]).catch(() => undefined);
		}
	}

	private async cancel(cancellationId: string): Promise<void> {
		try {
			await this.bus.call(
				new Message({
					destination: POLKIT,
					path: POLKIT_PATH,
					interface: POLKIT_AUTHORITY,
					member: 'CancelCheckAuthorization',
					signature: 's',
					body: [cancellationId],
				}),
			);
		} catch (error: unknown) {
			log.debug(
				`Failed to cancel authorization check ${cancellationId}: ${describe(error)}, ignoring`,
			);
		}
	}

	private async busCall(member: string, signature: string, body: unknown[]): Promise<void> {
		await this.bus.call(
			new Message({
				destination: 'org.freedesktop.DBus',
				path: '/org/freedesktop/DBus',
				interface: 'org.freedesktop.DBus',
				member,
				signature,
				body,
			}),
		);
	}
}

interface PolkitResult {
	authorized: boolean;
	challenge: boolean;
	dismissed: boolean;
}

function denied(action: ActionId, path: string, reason: string): BindError {
	return new BindError(
		ErrorName.AccessDenied,
		`Not authorized to perform ${action} on ${quote(path)}: ${reason}`,
	);
}

function describe(error: unknown): string {
	const dbusError = error as { type?: string; text?: string };
	if (typeof dbusError?.type === 'string') {
		return `${dbusError.type}: ${dbusError.text ?? ''}`;
	}
	return error instanceof Error ? error.message : String(error);
}
