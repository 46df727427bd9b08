// Quotes a path for a message or a log line: single quotes, with control characters, quotes and
// backslashes escaped, so a hostile name can neither forge a log line nor hide its bytes.
export function quote(path: string): string {
	// Very long names are cut, with their length said, so one message stays readable.
	const bytes = Buffer.byteLength(path);
	const shown = path.length > QUOTE_MAX ? path.slice(0, QUOTE_MAX) : path;
	const out = escapeControls(shown, "'");
	return shown === path ? `'${out}'` : `'${out}…' (${bytes} bytes)`;
}

/** Escapes control characters (as \xNN) and backslashes, plus `also`, so text stays one line. */
export function escapeControls(text: string, also = ''): string {
	let out = '';
	for (const char of text) {
		const code = char.codePointAt(0) ?? 0;
		if (char === '\\' || (also !== '' && also.includes(char))) {
			out += `\\${char}`;
		} else if (code < 0x20 || code === 0x7f || (code >= 0x80 && code < 0xa0)) {
			out += `\\x${code.toString(16).padStart(2, '0')}`;
		} else {
			out += char;
		}
	}
	return out;
}

const QUOTE_MAX = 256;
