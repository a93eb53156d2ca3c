/** What a stopped agent must leave as it found it: BPF program and link ids (bpftool), tracefs uprobe events. */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

const ids = (what: 'prog' | 'link') => (JSON.parse(execFileSync('bpftool', ['--json', what, 'show'], { encoding: 'utf8' })) as Array<{ id: number }>).map((p) => p.id).sort((a, b) => a - b);
const UPROBE_EVENTS = '/sys/kernel/tracing/uprobe_events';

export const bpfState = () => ({
  progs: ids('prog'),
  links: ids('link'),
  uprobeEvents: existsSync(UPROBE_EVENTS) ? readFileSync(UPROBE_EVENTS, 'utf8') : '',
});
