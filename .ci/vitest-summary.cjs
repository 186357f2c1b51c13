// Prints a vitest JSON report (--reporter=json) as CI's last words on a stage: the counts,
// then every failed test with the start of its failure, and the unhandled errors that
// .ci/unhandled-errors.mjs kept beside the report (vitest fails a run on them even when every
// test passed), so that the end of a long log (all that some CI views keep) names what failed.
// Removes both files.
//
//   node .ci/vitest-summary.cjs LABEL REPORT.json
const { existsSync, readFileSync, rmSync } = require('node:fs');
const { relative } = require('node:path');

const [label, file] = process.argv.slice(2);
if (!existsSync(file)) {
  console.log(`${label}: no report (${file}): the run ended before vitest wrote one`);
  process.exit(0);
}
const report = JSON.parse(readFileSync(file, 'utf8'));
const unhandledFile = `${file}.unhandled.json`;
const unhandled = existsSync(unhandledFile) ? JSON.parse(readFileSync(unhandledFile, 'utf8')) : [];
rmSync(file);
rmSync(unhandledFile, { force: true });
const skipped = report.numPendingTests + report.numTodoTests;
console.log(
  `${label}: ${report.numPassedTests} passed, ${report.numFailedTests} failed, ${skipped} skipped, ` +
    `${unhandled.length} unhandled error${unhandled.length === 1 ? '' : 's'}`,
);
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
for (const error of unhandled) {
  const during = error.test ? ` during ${error.test}` : '';
  const where = error.file ? ` (${relative(process.cwd(), error.file)})` : '';
  console.log(`UNHANDLED ${error.name}${error.code ? ` ${error.code}` : ''}${during}${where}`);
  console.log(`    ${start(error.stack ?? error.message)}`);
}
