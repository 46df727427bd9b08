// Names that scripts and users rely on; shared by the service and memfdctl.
export const BUS_NAME = 'org.opencontainers.MemfdBind';
export const OBJECT_PATH = '/org/opencontainers/MemfdBind';
export const INTERFACE = 'org.opencontainers.MemfdBind1';
export const ERROR_PREFIX = `${INTERFACE}.Error.`;

/** Error names the service replies with, without their prefix. */
export const ErrorName = {
	InvalidPath: `${ERROR_PREFIX}InvalidPath`,
	NotFound: `${ERROR_PREFIX}NotFound`,
	NotRegularFile: `${ERROR_PREFIX}NotRegularFile`,
	AlreadyBound: `${ERROR_PREFIX}AlreadyBound`,
	NotBound: `${ERROR_PREFIX}NotBound`,
	TooLarge: `${ERROR_PREFIX}TooLarge`,
	Failed: `${ERROR_PREFIX}Failed`,
	AccessDenied: 'org.freedesktop.DBus.Error.AccessDenied',
	InteractiveAuthorizationRequired: 'org.freedesktop.DBus.Error.InteractiveAuthorizationRequired',
	InvalidArgs: 'org.freedesktop.DBus.Error.InvalidArgs',
	UnknownMethod: 'org.freedesktop.DBus.Error.UnknownMethod',
	UnknownProperty: 'org.freedesktop.DBus.Error.UnknownProperty',
	UnknownInterface: 'org.freedesktop.DBus.Error.UnknownInterface',
	UnknownObject: 'org.freedesktop.DBus.Error.UnknownObject',
	PropertyReadOnly: 'org.freedesktop.DBus.Error.PropertyReadOnly',
} as const;

/** Polkit action ids, one per privileged method. */
export const Action = {
	bind: 'org.opencontainers.memfdbind.bind',
	release: 'org.opencontainers.memfdbind.release',
	cleanup: 'org.opencontainers.memfdbind.cleanup',
} as const;

export type ActionId = (typeof Action)[keyof typeof Action];
