// One event per line on stderr, prefixed with the sd-daemon priority that journald reads as the
// level. Callers pass values through `quote()` so every line stays one line.
export const enum Priority {
	Error = 3,
	Warning = 4,
	Notice = 5,
	Info = 6,
	Debug = 7,
}

let maxPriority: Priority = process.env.MEMFD_BIND_DEBUG ? Priority.Debug : Priority.Info;

/** Shows debug lines too when `enabled`. */
export function setDebug(enabled: boolean): void {
	maxPriority = enabled ? Priority.Debug : Priority.Info;
}

function write(priority: Priority, message: string): void {
	if (priority <= maxPriority) {
		process.stderr.write(`<${priority}>${message.replace(/\n/g, '\\n')}\n`);
	}
}

export const log = {
	error: (message: string) => write(Priority.Error, message),
	warning: (message: string) => write(Priority.Warning, message),
	notice: (message: string) => write(Priority.Notice, message),
	info: (message: string) => write(Priority.Info, message),
	debug: (message: string) => write(Priority.Debug, message),
};
