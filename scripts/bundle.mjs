// Bundles memfdctl into a few files under dist/src/client/bundle/: resolving and reading ~70
// modules (dbus-next, xml2js, commander...) one by one doubles its start-up time. Verbs that
// need execa or libc load their chunk only when they run. koffi stays outside (native code).
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

await build({
	absWorkingDir: fileURLToPath(new URL('..', import.meta.url)),
	entryPoints: { memfdctl: 'dist/src/client/main.js' },
	outdir: 'dist/src/client/bundle',
	bundle: true,
	splitting: true,
	minify: true,
	format: 'esm',
	platform: 'node',
	target: 'node20',
	external: ['koffi', 'x11'],
	// Some dependencies are CommonJS and call require(); give them one.
	banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
	logLevel: 'warning',
});
