// The official DatoCMS CMA client (@datocms/cma-client-node, pinned in package-lock.json)
// against the bundled emulator: every call behind every DatoCMS operation the worker carries
// out, each checked by reading the state back with the same client, and the error paths the
// worker depends on, each raised as the client's own ApiError with the API's error code.
//
// Run by tests/conformance/test_datocms_client.py, which starts an emulator and passes
// EMULATOR_URL; by hand: `python -m worker emulator --port 8900 &` then
// `EMULATOR_URL=http://127.0.0.1:8900 node --test` in this folder.
//
// Speed: the client polls a job result 1 s, 2 s, 3 s... after the request. Every test but one
// sets the client's own hook for that (`client.jobResultsFetcher`) to the same loop over
// `client.jobResults.find` (404 = still running) every 20 ms; one test keeps the client's
// default poller and sees 404 then 200.
import assert from 'node:assert/strict';
import { before, beforeEach, test } from 'node:test';
import { ApiError, buildClient } from '@datocms/cma-client-node';

const BASE_URL = process.env.EMULATOR_URL;
const TOKEN = process.env.DATOCMS_TOKEN ?? 'dato-token';
if (!BASE_URL) {
  throw new Error('EMULATOR_URL is not set: start an emulator and pass its base URL');
}

const CONFIG = {
  datocms_job_seconds: 0.05,
  datocms_implicit_records: false, // only seeded records and uploads exist, as in a project
  datocms_rate: [1000, 3.0],
  datocms_async_upload_update: false,
};

async function admin(path, body) {
  const response = await fetch(`${BASE_URL}/_emulator${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.equal(response.status, 200, `admin ${path}: ${await response.clone().text()}`);
  return response.json();
}

const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The client's own job-result loop (pollJobResult), with 20 ms steps instead of 1 s, 2 s...
function fastPoller(client) {
  return async (jobId) => {
    for (let attempt = 0; attempt < 500; attempt += 1) {
      try {
        return await client.jobResults.find(jobId);
      } catch (error) {
        if (!(error instanceof ApiError) || error.response.status !== 404) throw error;
      }
      await wait(20);
    }
    throw new Error(`job ${jobId} never finished`);
  };
}

function makeClient(options = {}) {
  const client = buildClient({ apiToken: TOKEN, baseUrl: BASE_URL, ...options });
  client.jobResultsFetcher = fastPoller(client);
  return client;
}

const items = (...ids) => ids.map((id) => ({ type: 'item', id }));
const uploads = (...ids) => ids.map((id) => ({ type: 'upload', id }));

async function statuses(client, ids) {
  const found = await client.items.list({ filter: { ids: ids.join(',') }, version: 'current' });
  return Object.fromEntries(found.map((item) => [item.id, item.meta.status]));
}

async function uploadsById(client, ids) {
  const found = await client.uploads.list({ filter: { ids: ids.join(',') } });
  return Object.fromEntries(found.map((upload) => [upload.id, upload]));
}

// Asserts `promise` rejects with the client's ApiError of this HTTP status and API code.
async function rejectsWith(promise, status, code) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof ApiError, `expected ApiError, got ${error}`);
    assert.equal(error.response.status, status);
    if (code !== undefined) assert.ok(error.findError(code), `no ${code} in ${error.message}`);
    return true;
  });
}

before(async () => {
  await admin('/config', CONFIG);
});

beforeEach(async () => {
  await admin('/reset', {});
  await admin('/config', CONFIG);
});

// -- records: bulk ------------------------------------------------------------------------

test('items.bulkPublish publishes the records (read back: meta.status published)', async () => {
  const client = makeClient();
  await admin('/datocms/seed', { records: ['a', 'b'], status: 'draft' });
  const output = await client.items.bulkPublish({ items: items('a', 'b') });
  assert.deepEqual(output, []); // the reference page's "Returned output"
  assert.deepEqual(await statuses(client, ['a', 'b']), { a: 'published', b: 'published' });
});

test('items.bulkUnpublish takes records back to draft', async () => {
  const client = makeClient();
  await admin('/datocms/seed', { records: ['a', 'b'], status: 'published' });
  await client.items.bulkUnpublish({ items: items('a', 'b') });
  assert.deepEqual(await statuses(client, ['a', 'b']), { a: 'draft', b: 'draft' });
});

test('items.bulkDestroy removes the records (list leaves them out, find is 404)', async () => {
  const client = makeClient();
  await admin('/datocms/seed', { records: ['a', 'b', 'c'] });
  const raw = await client.items.rawBulkDestroy({
    data: { type: 'item_bulk_destroy_operation', relationships: { items: { data: items('a', 'b') } } },
  });
  assert.deepEqual(raw, { data: [], meta: { successful: 2, failed: 0 } });
  assert.deepEqual(await statuses(client, ['a', 'b', 'c']), { c: 'draft' });
  await rejectsWith(client.items.find('a'), 404, 'NOT_FOUND');
});

test('items.bulkMoveToStage moves records to the stage (read back: meta.stage)', async () => {
  const client = makeClient();
  await admin('/datocms/seed', { records: ['a', 'b'], stage: 'draft_stage', workflow: 'w' });
  await admin('/datocms/stages', { workflow: 'w', stages: ['draft_stage', 'review'] });
  await client.items.bulkMoveToStage({ stage: 'review', items: items('a', 'b') });
  const found = await client.items.list({ filter: { ids: 'a,b' }, version: 'current' });
  assert.deepEqual(found.map((item) => [item.id, item.meta.stage]), [['a', 'review'], ['b', 'review']]);
});

test('items.list by ids pages with page[limit]/page[offset] and says total_count', async () => {
  const client = makeClient();
  await admin('/datocms/seed', { records: ['a', 'b', 'c', 'd'], status: 'published' });
  const raw = await client.items.rawList({
    filter: { ids: 'a,b,c,d' },
    version: 'published',
    page: { limit: 2, offset: 1 },
  });
  assert.deepEqual(raw.data.map((item) => item.id), ['b', 'c']);
  assert.equal(raw.meta.total_count, 4);
  assert.equal(raw.data[0].type, 'item');
  const all = [];
  for await (const item of client.items.listPagedIterator({ filter: { ids: 'a,b,c,d' } }, { perPage: 3 })) {
    all.push(item.id);
  }
  assert.deepEqual(all, ['a', 'b', 'c', 'd']);
});

// -- records: single ----------------------------------------------------------------------

test('items.publish / items.unpublish answer the record and change its status', async () => {
  const client = makeClient();
  await admin('/datocms/seed', { records: ['a'], status: 'draft' });
  const published = await client.items.publish('a');
  assert.equal(published.id, 'a');
  assert.equal(published.meta.status, 'published');
  assert.equal((await client.items.find('a')).meta.status, 'published');
  const unpublished = await client.items.unpublish('a');
  assert.equal(unpublished.meta.status, 'draft');
  assert.equal((await client.items.find('a')).meta.status, 'draft');
});

test('items.update with meta.stage moves one record (read back with find)', async () => {
  const client = makeClient();
  await admin('/datocms/seed', { records: ['a'], stage: 'one' });
  const updated = await client.items.update('a', { meta: { stage: 'two' } });
  assert.equal(updated.meta.stage, 'two');
  assert.equal((await client.items.find('a')).meta.stage, 'two');
});

test('items.destroy follows the 202 job and returns the record; it is gone', async () => {
  const client = makeClient();
  await admin('/datocms/seed', { records: ['a'] });
  const destroyed = await client.items.destroy('a');
  assert.equal(destroyed.id, 'a');
  await rejectsWith(client.items.find('a'), 404, 'NOT_FOUND');
  const log = await admin('/log?api=datocms&path_contains=/items/a');
  assert.ok(log.entries.some((e) => e.method === 'DELETE' && e.status === 202 && e.job_id));
});

test('the X-Environment of the client (environment option) scopes every call', async () => {
  const sandbox = makeClient({ environment: 'sandbox-1' });
  const primary = makeClient();
  await admin('/datocms/seed', { environment: 'sandbox-1', records: ['a'], status: 'draft' });
  await admin('/datocms/seed', { records: ['a'], status: 'draft' });
  await sandbox.items.bulkPublish({ items: items('a') });
  assert.deepEqual(await statuses(sandbox, ['a']), { a: 'published' });
  assert.deepEqual(await statuses(primary, ['a']), { a: 'draft' });
});

// -- uploads ------------------------------------------------------------------------------

test('uploads.bulkTag adds the tags (read back: tags, no duplicates)', async () => {
  const client = makeClient();
  await admin('/datocms/seed', { uploads: ['u1', 'u2'], tags: ['old'] });
  await client.uploads.bulkTag({ tags: ['new', 'old'], uploads: uploads('u1', 'u2') });
  const found = await uploadsById(client, ['u1', 'u2']);
  assert.deepEqual(found.u1.tags, ['old', 'new']);
  assert.deepEqual(found.u2.tags, ['old', 'new']);
});

test('uploads.bulkSetUploadCollection files uploads in a collection and out of it', async () => {
  const client = makeClient();
  await admin('/datocms/seed', { uploads: ['u1', 'u2'] });
  const collection = { type: 'upload_collection', id: 'c1' };
  await client.uploads.bulkSetUploadCollection({ upload_collection: collection, uploads: uploads('u1', 'u2') });
  let found = await uploadsById(client, ['u1', 'u2']);
  assert.deepEqual(found.u1.upload_collection, collection);
  assert.deepEqual(found.u2.upload_collection, collection);
  await client.uploads.bulkSetUploadCollection({ upload_collection: null, uploads: uploads('u1') });
  found = await uploadsById(client, ['u1', 'u2']);
  assert.equal(found.u1.upload_collection, null);
  assert.deepEqual(found.u2.upload_collection, collection);
});

test('uploads.bulkDestroy removes free uploads and counts the one in use as failed', async () => {
  const client = makeClient();
  await admin('/datocms/seed', { uploads: ['free'] });
  await admin('/datocms/seed', { uploads: ['used'], in_use: true });
  const raw = await client.uploads.rawBulkDestroy({
    data: {
      type: 'upload_bulk_destroy_operation',
      relationships: { uploads: { data: uploads('free', 'used') } },
    },
  });
  assert.deepEqual(raw.meta, { successful: 1, failed: 1 });
  assert.deepEqual(Object.keys(await uploadsById(client, ['free', 'used'])), ['used']);
  await rejectsWith(client.uploads.find('free'), 404, 'NOT_FOUND');
});

test('uploads.update replaces tags and sets the collection, answered at once or as a job', async () => {
  const client = makeClient();
  await admin('/datocms/seed', { uploads: ['u1'], tags: ['a'] });
  const collection = { type: 'upload_collection', id: 'c2' };
  const updated = await client.uploads.update('u1', { tags: ['b'], upload_collection: collection });
  assert.deepEqual([updated.id, updated.tags, updated.upload_collection], ['u1', ['b'], collection]);
  await admin('/config', { datocms_async_upload_update: true }); // "might" answer 202 + a job
  const again = await client.uploads.update('u1', { tags: ['c'] });
  assert.deepEqual(again.tags, ['c']);
  const found = await client.uploads.find('u1');
  assert.deepEqual([found.tags, found.upload_collection], [['c'], collection]);
});

test('uploads.destroy removes one upload; find is then 404', async () => {
  const client = makeClient();
  await admin('/datocms/seed', { uploads: ['u1'] });
  const destroyed = await client.uploads.destroy('u1');
  assert.equal(destroyed.id, 'u1');
  await rejectsWith(client.uploads.find('u1'), 404, 'NOT_FOUND');
});

// -- job results --------------------------------------------------------------------------

test('jobResults.find: 404 NOT_FOUND while the job runs, then 200 with status and payload', async () => {
  const client = makeClient();
  await admin('/config', { datocms_job_seconds: 0.4 });
  await admin('/datocms/seed', { records: ['a'] });
  let seen;
  client.jobResultsFetcher = async (jobId) => {
    await rejectsWith(client.jobResults.find(jobId), 404, 'NOT_FOUND');
    seen = await fastPoller(client)(jobId);
    return seen;
  };
  await client.items.bulkPublish({ items: items('a') });
  assert.equal(seen.type, 'job_result');
  assert.equal(seen.status, 200);
  assert.deepEqual(seen.payload, { data: [], meta: { successful: 1, failed: 0 } });
  assert.deepEqual(await statuses(client, ['a']), { a: 'published' });
});

test("the client's own job poller (1 s, 2 s...) gets 404 and then the result", async () => {
  const client = buildClient({ apiToken: TOKEN, baseUrl: BASE_URL }); // default poller
  await admin('/config', { datocms_job_seconds: 1.5 });
  await admin('/datocms/seed', { records: ['a'] });
  await client.items.bulkPublish({ items: items('a') });
  const polls = (await admin('/log?api=datocms&path_contains=/job-results/')).entries;
  assert.deepEqual(polls.map((e) => e.status), [404, 200]);
  assert.deepEqual(await statuses(client, ['a']), { a: 'published' });
});

// -- error paths the worker depends on ----------------------------------------------------

test('a locked record: items.publish raises ApiError ITEM_LOCKED; the bulk job counts it', async () => {
  const client = makeClient();
  await admin('/datocms/seed', { records: ['locked', 'free'], status: 'draft' });
  await admin('/datocms/failures', { ids: ['locked'], action: 'publish', code: 'ITEM_LOCKED' });
  await rejectsWith(client.items.publish('locked'), 422, 'ITEM_LOCKED');
  const raw = await client.items.rawBulkPublish({
    data: { type: 'item_bulk_publish_operation', relationships: { items: { data: items('locked', 'free') } } },
  });
  assert.deepEqual(raw.meta, { successful: 1, failed: 1 });
  assert.deepEqual(await statuses(client, ['locked', 'free']), { locked: 'draft', free: 'published' });
});

test("a restricted destroy: items.destroy raises ApiError DELETE_RESTRICTION from the job's result", async () => {
  const client = makeClient();
  await admin('/datocms/seed', { records: ['kept'] });
  await admin('/datocms/failures', { ids: ['kept'], action: 'destroy', code: 'DELETE_RESTRICTION' });
  await rejectsWith(client.items.destroy('kept'), 422, 'DELETE_RESTRICTION');
  assert.equal((await client.items.find('kept')).id, 'kept');
});

test('an upload in use: uploads.destroy raises ApiError UPLOAD_IS_CURRENTLY_IN_USE', async () => {
  const client = makeClient();
  await admin('/datocms/seed', { uploads: ['used'], in_use: true });
  await rejectsWith(client.uploads.destroy('used'), 422, 'UPLOAD_IS_CURRENTLY_IN_USE');
  assert.equal((await client.uploads.find('used')).id, 'used');
});

test('a 429 carries X-RateLimit-Limit/-Remaining/-Reset; raised without autoRetry, waited out with it', async () => {
  await admin('/config', { datocms_rate: [2, 1.0] });
  await admin('/datocms/seed', { records: ['a'], status: 'draft' });
  const strict = makeClient({ autoRetry: false });
  await strict.items.find('a');
  await strict.items.find('a');
  await assert.rejects(strict.items.find('a'), (error) => {
    assert.ok(error instanceof ApiError);
    assert.equal(error.response.status, 429);
    const headers = error.response.headers;
    assert.equal(headers['x-ratelimit-limit'], '2');
    assert.equal(headers['x-ratelimit-remaining'], '0');
    assert.ok(Number.parseInt(headers['x-ratelimit-reset'], 10) >= 1);
    assert.match(headers['x-request-id'], /^[0-9a-f]{16,}$/); // what support asks for
    assert.equal(headers['content-type'], 'application/json');
    return true;
  });
  const patient = makeClient(); // autoRetry (default): waits X-RateLimit-Reset seconds
  assert.equal((await patient.items.publish('a')).meta.status, 'published');
  const answers = (await admin('/log?api=datocms&path_contains=/publish')).entries;
  assert.equal(answers[0].status, 429); // refused, waited out, then accepted
  assert.equal(answers.at(-1).status, 200);
  assert.ok(answers[0].headers['x-api-version'] === '3');
});

test('a transient error: ApiError with transient: true without autoRetry; retried with it', async () => {
  await admin('/datocms/seed', { records: ['a'], status: 'draft' });
  const fault = { kind: 'status', status: 503, api: 'datocms', path_contains: '/items/a/publish' };
  await admin('/faults', fault);
  const strict = makeClient({ autoRetry: false });
  await assert.rejects(strict.items.publish('a'), (error) => {
    assert.ok(error instanceof ApiError);
    assert.equal(error.response.status, 503);
    assert.equal(error.errors[0].attributes.transient, true);
    assert.ok(error.findError('SERVICE_UNAVAILABLE'));
    return true;
  });
  await admin('/faults', fault);
  const patient = makeClient(); // retries a transient error after 1 s
  assert.equal((await patient.items.publish('a')).meta.status, 'published');
  assert.equal((await patient.items.find('a')).meta.status, 'published');
});
