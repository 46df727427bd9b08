// Entry point of the demo inside its namespace; scripts/demo.mjs starts it.
import { main } from './run.js';

await main();
