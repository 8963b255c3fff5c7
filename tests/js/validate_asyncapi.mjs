// Validate an AsyncAPI document with the AsyncAPI Initiative's own parser.
//
//   node validate_asyncapi.mjs DOCUMENT
//
// The parser checks the document against the AsyncAPI JSON Schema (3.0 and its AMQP bindings),
// resolves every $ref, validates message examples against their payload and header schemas, and
// runs its recommended rules. Prints one JSON object:
//   {"version": "<asyncapi>", "diagnostics": [{"severity", "code", "message", "path"}]}
// (severity: error, warning, information or hint), and exits 1 when any is an error.

import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const SEVERITY = ["error", "warning", "information", "hint"];

const path = process.argv[2];
if (!path) {
  console.error("usage: node validate_asyncapi.mjs DOCUMENT");
  process.exit(2);
}

const { document, diagnostics } = await new Parser().parse(readFileSync(path, "utf8"), {
  source: path,
});
const report = diagnostics.map((d) => ({
  severity: SEVERITY[d.severity] ?? String(d.severity),
  code: String(d.code),
  message: d.message,
  path: d.path.join("."),
}));
process.stdout.write(JSON.stringify({ version: document?.version() ?? null, diagnostics: report }) + "\n");
process.exit(document && !report.some((d) => d.severity === "error") ? 0 : 1);
