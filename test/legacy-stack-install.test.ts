/**
 * The install decision of scripts/legacy-stack.sh ("legacy-stack.sh missing"): which of its
 * Debian packages it would install, with dpkg-query replaced by a fake that answers as
 * dpkg-query does (status lines for known packages, "no packages found" and exit 1 as soon
 * as one named package is unknown). A fresh machine once reported nothing missing because
 * that exit 1 ended the function silently under "set -e -o pipefail".
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const script = path.resolve(import.meta.dirname, '..', 'scripts', 'legacy-stack.sh');
const PACKAGES = [
  'dovecot-imapd',
  'dovecot-lmtpd',
  'dovecot-submissiond',
  'postfix',
  'swaks',
  'libnet-ssleay-perl',
  'libio-socket-ssl-perl',
  'socat',
  'python3',
  'curl',
];

/** A dpkg-query that knows `installed` as "ii" and `removed` as "rc" (config files left), and nothing else. */
function fakeDpkgQuery(installed: string[], removed: string[] = []): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'lemonade-dpkg-'));
  const file = path.join(dir, 'dpkg-query');
  writeFileSync(
    file,
    `#!/usr/bin/env bash
# args: -W -f=FORMAT PACKAGE...
shift 2
rc=0
for p in "$@"; do
  case " ${installed.join(' ')} " in *" $p "*) echo "ii  $p"; continue ;; esac
  case " ${removed.join(' ')} " in *" $p "*) echo "rc  $p"; continue ;; esac
  echo "dpkg-query: no packages found matching $p" >&2
  rc=1
done
exit $rc
`,
  );
  chmodSync(file, 0o755);
  return file;
}

async function missing(fake: string): Promise<string[]> {
  const { stdout } = await run('bash', [script, 'missing'], { env: { ...process.env, LEGACY_STACK_DPKG_QUERY: fake } });
  return stdout.split('\n').filter((l) => l !== '');
}

t.test('all missing: every package is listed', async (t) => {
  t.same(await missing(fakeDpkgQuery([])), PACKAGES);
});

t.test('some missing: exactly those, including a package removed with its config files left', async (t) => {
  const installed = ['dovecot-imapd', 'postfix', 'python3', 'curl', 'socat'];
  t.same(await missing(fakeDpkgQuery(installed, ['swaks'])), ['dovecot-lmtpd', 'dovecot-submissiond', 'swaks', 'libnet-ssleay-perl', 'libio-socket-ssl-perl']);
});

t.test('none missing: nothing is listed', async (t) => {
  t.same(await missing(fakeDpkgQuery(PACKAGES)), []);
});

t.test("swaks' STARTTLS modules are part of the stack", async (t) => {
  const list = await missing(fakeDpkgQuery([]));
  t.ok(list.includes('libnet-ssleay-perl') && list.includes('libio-socket-ssl-perl'), 'Net::SSLeay and IO::Socket::SSL');
});
