// Prints a vitest JSON report (--reporter=json) as CI's last words on a stage: the counts,
// then every failed test with the start of its failure, so that the end of a long log (all
// that some CI views keep) names what failed.
//
//   node .ci/vitest-summary.cjs LABEL REPORT.json
const { existsSync, readFileSync } = require('node:fs');
const { relative } = require('node:path');

const [label, file] = process.argv.slice(2);
if (!existsSync(file)) {
  console.log(`${label}: no report (${file}): the run ended before vitest wrote one`);
  process.exit(0);
}
const report = JSON.parse(readFileSync(file, 'utf8'));
const skipped = report.numPendingTests + report.numTodoTests;
console.log(`${label}: ${report.numPassedTests} passed, ${report.numFailedTests} failed, ${skipped} skipped`);
// The message and the test's own frames; vitest's frames say nothing.
const start = (text) =>
  text
    .split('\n')
    .filter((line) => !line.includes('node_modules'))
    .slice(0, 12)
    .join('\n    ');
for (const suite of report.testResults) {
  const where = relative(process.cwd(), suite.name);
  // A file that failed outside its tests (a hook, an import) has no failed assertion.
  if (suite.status === 'failed' && suite.message) {
    console.log(`FAILED ${where}\n    ${start(suite.message)}`);
  }
  for (const test of suite.assertionResults) {
    if (test.status !== 'failed') continue;
    console.log(`FAILED ${where} > ${test.fullName}`);
    for (const message of test.failureMessages) console.log(`    ${start(message)}`);
  }
}
