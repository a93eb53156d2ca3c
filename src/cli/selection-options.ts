import { InvalidArgumentError, Option, type Command } from 'commander';
import { checkAddress, DEFAULT_SELECTION_MAX_ENTRIES, DEFAULT_SELECTION_TIMEOUT_S, SELECTION_MODES, type SelectionOptions } from '../enrich/selection.js';
import { collect, integer } from './config.js';

/** Parser of a repeatable option whose values may also be given comma separated (`--exclude-method OPTIONS,NOTIFY`). */
function list<T>(flag: string, item: (flag: string, v: string) => T): (v: string, prev?: T[]) => T[] {
  return (v, prev = []) => {
    try {
      return [...prev, ...v.split(',').map((x) => item(flag, x.trim()))];
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

const method = (flag: string, v: string) => {
  if (!/^[A-Za-z]+$/.test(v)) throw new Error(`${flag} takes SIP method names (INVITE, OPTIONS), got "${v}"`);
  return v.toUpperCase();
};
const port = (flag: string, v: string) => integer(flag, 1, 65535)(v);

/** Which messages to forward (src/enrich/selection.ts): the same options for `run` and `tail`. */
export function addSelectionOptions(cmd: Command): Command {
  return cmd
    .option('--method <list>', 'only requests of these methods and their responses (comma separated, repeatable)', list('--method', method))
    .option('--exclude-method <list>', 'leave out requests of these methods and their responses, e.g. OPTIONS,NOTIFY', list('--exclude-method', method))
    .option('--user <glob>', 'only messages whose From, To, Request-URI or P-Asserted-Identity matches, as user or user@host (repeatable)', collect)
    .option('--exclude-user <glob>', 'leave out messages whose From, To, Request-URI or P-Asserted-Identity matches (repeatable)', collect)
    .option('--call-id <glob>', 'only messages with a matching Call-ID (repeatable)', collect)
    .option('--exclude-call-id <glob>', 'leave out messages with a matching Call-ID (repeatable)', collect)
    .option('--address <ip|cidr>', 'only messages from or to this address or prefix (comma separated, repeatable)', list('--address', checkAddress))
    .option('--exclude-address <ip|cidr>', 'leave out messages from or to this address or prefix', list('--exclude-address', checkAddress))
    .option('--port <list>', 'only messages with one of these source or destination ports (comma separated, repeatable)', list('--port', port))
    .option('--exclude-port <list>', 'leave out messages with one of these source or destination ports', list('--exclude-port', port))
    .addOption(new Option('--selection-mode <mode>', 'how far a match reaches: the message, its transaction, or its whole dialog with the Diameter correlated to it').choices(SELECTION_MODES).default('message'))
    .option('--selection-timeout <s>', 'transaction and dialog mode: forget a transaction or dialog idle this long', integer('--selection-timeout', 1, 86_400), DEFAULT_SELECTION_TIMEOUT_S)
    .option('--selection-max-entries <n>', 'transaction and dialog mode: transactions or dialogs remembered at once (least recently seen forgotten first, counted)', integer('--selection-max-entries', 1, 10_000_000), DEFAULT_SELECTION_MAX_ENTRIES);
}

export type { SelectionOptions };
