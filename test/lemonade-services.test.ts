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
  t.same(lemonade.emulated(['IMAP4rev1', 'IDLE']), ['URLAUTH', 'CATENATE', 'UIDPLUS']);
  t.same(lemonade.emulated(['IMAP4rev1', 'URLAUTH', 'CATENATE']), ['UIDPLUS'], 'native ones are not emulated');
  t.same(lemonade.emulated(['IMAP4rev1', 'MULTIAPPEND']), ['URLAUTH'], 'MULTIAPPEND upstream: no CATENATE or UIDPLUS emulation');
  t.ok(lemonade.intercepts('uid expunge', ['IMAP4rev1']));
  t.notOk(lemonade.intercepts('UID EXPUNGE', ['IMAP4rev1', 'UIDPLUS']));
  t.notOk(lemonade.synthesizesAppendUid(['IMAP4rev1', 'UIDPLUS']));
  await lemonade.close();
});

t.test('without a master identity nothing is emulated (side connections need it)', async (t) => {
  const lemonade = await startLemonade(configSchema.parse({ dataDir: dataDir() }), log);
  t.same(lemonade.emulated(['IMAP4rev1']), []);
  t.notOk(lemonade.synthesizesAppendUid(['IMAP4rev1']));
  await lemonade.close();
});
