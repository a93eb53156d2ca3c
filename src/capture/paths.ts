import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';

// Resolved from this file so the agent runs the same from src/ (vitest) and dist/src/ (built).
const here = fileURLToPath(new URL('.', import.meta.url));
export const REPO_ROOT = resolve(here, here.includes('/dist/') ? '../../..' : '../..');
export const BPF_OBJECT_PATH = resolve(REPO_ROOT, 'build/hepbpf.bpf.o');
