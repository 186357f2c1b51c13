// A vitest reporter for CI: writes the run's unhandled errors (an 'error' event nobody
// listened to, a rejection nobody caught) to `<--outputFile>.unhandled.json`. vitest fails a
// run on them even when every test passed, and its JSON report does not carry them, so
// .ci/vitest-summary.cjs reads them from here to name why such a stage failed.
//
//   vitest run --reporter=json --reporter=./.ci/unhandled-errors.mjs --outputFile=REPORT.json
import { writeFileSync } from 'node:fs';

export default class UnhandledErrors {
  #file;

  onInit(vitest) {
    const output = vitest.config.outputFile;
    const report = typeof output === 'string' ? output : output?.json;
    this.#file = report && `${report}.unhandled.json`;
  }

  onTestRunEnd(_modules, errors) {
    if (this.#file) {
      const kept = errors.map((error) => ({
        name: error.name,
        message: error.message,
        code: error.code,
        stack: error.stack,
        test: error.VITEST_TEST_NAME,
        file: error.VITEST_TEST_PATH,
      }));
      writeFileSync(this.#file, JSON.stringify(kept, null, 1));
    }
  }
}
