// Validates Prometheus Operator objects (JSON files, one object each) against the
// operator's CRD schemas, as compiled into the npm package
// @kubernetes-models/prometheus-operator (types, enums, required fields, formats).
//
//   node check_crds.mjs NODE_MODULES_DIR FILE.json...
//
// The models are ES modules found under NODE_MODULES_DIR (a cache outside the clone),
// hence the import by path. Exits 1 naming the object and the field at fault.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, ...files] = process.argv.slice(2);
if (!modules || files.length === 0) {
  console.error("usage: node check_crds.mjs NODE_MODULES_DIR FILE.json...");
  process.exit(2);
}
let failed = false;
for (const file of files) {
  const object = JSON.parse(readFileSync(file, "utf8"));
  const [group, version] = object.apiVersion.split("/");
  const model = join(modules, "@kubernetes-models/prometheus-operator", group, version, `${object.kind}.js`);
  let Model;
  try {
    Model = (await import(pathToFileURL(model)))[object.kind];
  } catch (error) {
    console.error(`${object.kind} ${object.metadata?.name}: no model for ${object.apiVersion} (${error.message})`);
    failed = true;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`${object.kind} ${object.metadata.name}: valid against the ${object.apiVersion} CRD schema`);
  } catch (error) {
    console.error(`${object.kind} ${object.metadata?.name}: ${error.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
