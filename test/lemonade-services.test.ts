/** Which extensions the gateway emulates, from the upstream's capabilities and the config. */
import t from 'tap';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { configSchema } from '../src/config/schema.js';
import { configureLogger } from '../src/log/logger.js';
import { startLemonade } from '../src/lemonade/services.js';

const log = configureLogger('silent');
const dataDir = () => mkdtempSync(path.join(os.tmpdir(), 'lemonade-svc-'));

t.test('emulated over a legacy upstream; native ones passed through; MULTIAPPEND excludes the one-message emulations', async (t) => {
  const lemonade = await startLemonade(configSchema.parse({ dataDir: dataDir(), imap: { master: { user: 'm', password: 'p' } } }), log);
  const modseq = ['CONDSTORE', 'QRESYNC', 'ENABLE'];
  t.same(lemonade.emulated(['IMAP4rev1', 'IDLE']), ['URLAUTH', 'CATENATE', 'UIDPLUS', ...modseq]);
  t.same(lemonade.emulated(['IMAP4rev1', 'URLAUTH', 'CATENATE']), ['UIDPLUS', ...modseq], 'native ones are not emulated');
  t.same(lemonade.emulated(['IMAP4rev1', 'MULTIAPPEND']), ['URLAUTH', ...modseq], 'MULTIAPPEND upstream: no CATENATE or UIDPLUS emulation');
  t.same(lemonade.emulated(['IMAP4rev1', 'ENABLE']), ['URLAUTH', 'CATENATE', 'UIDPLUS', 'CONDSTORE', 'QRESYNC'], 'ENABLE upstream: not advertised twice');
  t.same(lemonade.emulated(['IMAP4rev1', 'CONDSTORE', 'ENABLE']), ['URLAUTH', 'CATENATE', 'UIDPLUS'], 'CONDSTORE upstream: passed through, QRESYNC not emulated over it');
  t.ok(lemonade.intercepts('ENABLE', ['IMAP4rev1', 'ENABLE']), 'ENABLE intercepted while CONDSTORE is emulated');
  t.notOk(lemonade.intercepts('SELECT', ['IMAP4rev1', 'CONDSTORE', 'QRESYNC']), 'SELECT relayed to an upstream with QRESYNC');
  t.ok(lemonade.intercepts('uid expunge', ['IMAP4rev1']));
  t.notOk(lemonade.intercepts('UID EXPUNGE', ['IMAP4rev1', 'UIDPLUS']));
  t.notOk(lemonade.synthesizesAppendUid(['IMAP4rev1', 'UIDPLUS']));
  await lemonade.close();
});

t.test('without a master identity only CONDSTORE/QRESYNC are emulated (the rest needs side connections)', async (t) => {
  const lemonade = await startLemonade(configSchema.parse({ dataDir: dataDir() }), log);
  t.same(lemonade.emulated(['IMAP4rev1']), ['CONDSTORE', 'QRESYNC', 'ENABLE']);
  t.notOk(lemonade.synthesizesAppendUid(['IMAP4rev1']));
  await lemonade.close();
});

t.test('imap.qresync.enabled: false turns the CONDSTORE/QRESYNC emulation off', async (t) => {
  const lemonade = await startLemonade(configSchema.parse({ dataDir: dataDir(), imap: { qresync: { enabled: false } } }), log);
  t.same(lemonade.emulated(['IMAP4rev1']), []);
  t.notOk(lemonade.intercepts('SELECT', ['IMAP4rev1']));
  await lemonade.close();
});

t.test('access identifiers (RFC 4467 §3): who each admits', async (t) => {
  const { admits, parseAccess } = await import('../src/lemonade/urlauth.js');
  const bob = { user: 'bob', submitServer: false };
  const submit = { user: 'msa', submitServer: true };
  const burlForAlice = { user: 'gateway', submitServer: true, onBehalfOf: 'alice' };
  t.equal(admits(parseAccess('anonymous')!, bob, false), 'anonymous-disabled', 'anonymous refused by default');
  t.equal(admits(parseAccess('anonymous')!, bob, true), undefined, 'anonymous admitted when the config enables it');
  t.equal(admits(parseAccess('authuser')!, bob, false), undefined);
  t.equal(admits(parseAccess('user+bob')!, bob, false), undefined);
  t.equal(admits(parseAccess('user+bob')!, submit, false), 'access');
  t.equal(admits(parseAccess('submit+alice')!, bob, false), 'access');
  t.equal(admits(parseAccess('submit+alice')!, submit, false), undefined);
  t.equal(admits(parseAccess('submit+alice')!, burlForAlice, false), undefined);
  t.equal(admits(parseAccess('submit+carol')!, burlForAlice, false), 'access', "the gateway's BURL for alice cannot use carol's URL");
  // RFC 4468 §3.3: the gateway's own BURL resolves as a submit server, never logged in as the user.
  const ownBurl = { submitServer: true, onBehalfOf: 'alice' };
  t.equal(admits(parseAccess('submit+alice')!, ownBurl, false), undefined, 'BURL: submit+self');
  t.equal(admits(parseAccess('user+alice')!, ownBurl, false), 'access', 'BURL: not user+self');
  t.equal(admits(parseAccess('authuser')!, ownBurl, false), undefined, 'BURL: authuser (a submit server is an authenticated user)');
  t.equal(parseAccess('nobody'), undefined);
});
