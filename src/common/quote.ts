// Quotes a path for a message or a log line: single quotes, with control characters, quotes and
// backslashes escaped, so a hostile name can neither forge a log line nor hide its bytes.
export function quote(path: string): string {
	let out = '';
	for (const char of path) {
		const code = char.codePointAt(0) ?? 0;
		if (char === "'" || char === '\\') {
			out += `\\${char}`;
		} else if (code < 0x20 || code === 0x7f || (code >= 0x80 && code < 0xa0)) {
			out += `\\x${code.toString(16).padStart(2, '0')}`;
		} else {
			out += char;
		}
	}
	return `'${out}'`;
}
