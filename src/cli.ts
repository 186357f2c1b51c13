#!/usr/bin/env node
/**
 * The `kvmkit` command.
 * @module
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { runDemo } from './demo.js';
import { KvmkitError } from './errors.js';
import { kvmInfo } from './kvm.js';

const HELP = `Usage: kvmkit <command> [options]

Commands:
  demo        Boot the bundled demo guest and show what it did
  info        Check /dev/kvm and print the host's KVM limits
  help        Show this help

Options:
  -h, --help     Show this help
  -v, --version  Print the version
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'v' } },
  });
  if (values.version) {
    console.log(version());
    return 0;
  }
  const [command] = positionals;
  if (values.help || command === undefined || command === 'help') {
    process.stdout.write(HELP);
    return command === undefined && !values.help ? 2 : 0;
  }
  switch (command) {
    case 'demo': {
      const report = await runDemo((line) => console.log(line));
      return report.outcome.reason === 'halted' ? 0 : 1;
    }
    case 'info':
      console.log(JSON.stringify(kvmInfo(), null, 2));
      return 0;
    default:
      process.stderr.write(`kvmkit: unknown command "${command}"\n\n${HELP}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    const code = error instanceof KvmkitError ? ` [${error.code}]` : '';
    process.stderr.write(`kvmkit: ${error instanceof Error ? error.message : String(error)}${code}\n`);
    process.exitCode = 1;
  },
);
