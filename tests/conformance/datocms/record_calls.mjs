// The official client makes, against an emulator that logs request headers and bodies, the
// same calls the worker makes for each of its DatoCMS operations (the bulk request, its job
// result, the read-back by ids, then the single-record call for the id the job failed), with
// the same ids, environment and parameters as tests/conformance/test_worker_wire.py gives the
// worker. That test compares the two logs. Not a `node --test` file: run by that test only.
import { ApiError, buildClient } from '@datocms/cma-client-node';

const BASE_URL = process.env.EMULATOR_URL;
const ENVIRONMENT = process.env.DATOCMS_ENVIRONMENT;
if (!BASE_URL || !ENVIRONMENT) throw new Error('EMULATOR_URL and DATOCMS_ENVIRONMENT are needed');

const client = buildClient({ apiToken: 'dato-token', baseUrl: BASE_URL, environment: ENVIRONMENT });
client.jobResultsFetcher = async (jobId) => {
  for (;;) {
    try {
      return await client.jobResults.find(jobId);
    } catch (error) {
      if (!(error instanceof ApiError) || error.response.status !== 404) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
};

const link = (type, ids) => ids.map((id) => ({ type, id }));
const expectApiError = async (promise) => {
  try {
    await promise;
  } catch (error) {
    if (error instanceof ApiError) return;
    throw error;
  }
  throw new Error('expected an ApiError (the scripted failure)');
};
const readItems = (ids) =>
  client.items.list({ filter: { ids: ids.join(',') }, page: { limit: ids.length }, version: 'current' });
const readUploads = (ids) =>
  client.uploads.list({ filter: { ids: ids.join(',') }, page: { limit: ids.length } });

// In the order of tests/conformance/test_worker_wire.py's OPERATIONS.
await client.items.bulkPublish({ items: link('item', ['p1', 'p2']) });
await readItems(['p1', 'p2']);
await expectApiError(client.items.publish('p2'));

await client.items.bulkUnpublish({ items: link('item', ['n1', 'n2']) });
await readItems(['n1', 'n2']);
await expectApiError(client.items.unpublish('n2'));

await client.items.bulkDestroy({ items: link('item', ['d1', 'd2']) });
await readItems(['d1', 'd2']);
await expectApiError(client.items.destroy('d2'));

await client.items.bulkMoveToStage({ stage: 'review', items: link('item', ['s1', 's2']) });
await readItems(['s1', 's2']);
await expectApiError(client.items.update('s2', { meta: { stage: 'review' } }));

await client.uploads.bulkDestroy({ uploads: link('upload', ['u1', 'u2']) });
await readUploads(['u1', 'u2']);
await expectApiError(client.uploads.destroy('u2'));

await client.uploads.bulkTag({ tags: ['new'], uploads: link('upload', ['t1', 't2']) });
await readUploads(['t1', 't2']);
await expectApiError(client.uploads.update('t2', { tags: ['new'] }));

const collection = { type: 'upload_collection', id: 'col1' };
await client.uploads.bulkSetUploadCollection({ upload_collection: collection, uploads: link('upload', ['c1', 'c2']) });
await readUploads(['c1', 'c2']);
await expectApiError(client.uploads.update('c2', { upload_collection: collection }));
