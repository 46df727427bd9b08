// Entry point of memfdctl.
import { run } from './cli.js';

// `memfdctl list | head` closes the pipe early; that is not an error worth a stack trace.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
	process.exit(error.code === 'EPIPE' ? 0 : 1);
});

process.exitCode = await run(process.argv);
