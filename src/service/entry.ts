// Entry point of memfd-bindd.
import { main } from './main.js';

await main(process.argv);
