// Compile every JSON Schema in a directory as a strict client would, then judge example bodies.
//
//   node compile_schemas.mjs SCHEMA_DIR < cases.json
//
// Each `<name>.schema.json` is compiled with ajv's 2020-12 class in strict mode, with
// ajv-formats (date-time), on an instance of its own; a warning counts as a failure. The cases
// on standard input are `[{"schema": "<name>", "body": <any JSON>}, ...]`. Prints one JSON
// object: {"schemas": {"<name>": null or "<why it does not compile>"},
//          "cases": [{"schema", "valid", "errors"}]}.
// Exits 0 when it could do all that, whatever the verdicts: the caller judges them.

import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const SUFFIX = ".schema.json";

function strictAjv() {
  const complain = (...args) => {
    throw new Error(args.join(" "));
  };
  // strict: true turns on every strict check (unknown keywords and formats, types,
  // tuples, required); a logged warning is as bad as an error for a client that logs.
  const ajv = new Ajv2020({
    strict: true,
    allErrors: true,
    logger: { log: console.error, warn: complain, error: complain },
  });
  addFormats(ajv);
  return ajv;
}

const directory = process.argv[2];
if (!directory) {
  console.error("usage: node compile_schemas.mjs SCHEMA_DIR < cases.json");
  process.exit(2);
}

const validators = new Map();
const schemas = {};
for (const file of readdirSync(directory).sort()) {
  if (!file.endsWith(SUFFIX)) continue;
  const name = file.slice(0, -SUFFIX.length);
  try {
    const schema = JSON.parse(readFileSync(join(directory, file), "utf8"));
    validators.set(name, strictAjv().compile(schema));
    schemas[name] = null;
  } catch (error) {
    schemas[name] = error.message;
  }
}

const cases = JSON.parse(readFileSync(0, "utf8") || "[]");
const verdicts = cases.map(({ schema, body }) => {
  const validate = validators.get(schema);
  if (!validate) return { schema, valid: null, errors: [`no compiled schema ${schema}`] };
  const valid = validate(body);
  const errors = (validate.errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message}`);
  return { schema, valid, errors };
});

process.stdout.write(JSON.stringify({ schemas, cases: verdicts }) + "\n");
