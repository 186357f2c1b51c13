/**
 * A typedoc plugin that groups the reference by concept, from where each export is declared:
 * one table here instead of a `@category` tag on every declaration.
 */
import { Comment, CommentTag, Converter } from 'typedoc';

/** The reference sections (typedoc.json's categoryOrder orders them) and the files whose exports go in each. */
const SECTIONS = [
  ['Machine', /\/src\/(machine|loaders|irq|config|outcome|size|kvm|hardware)\.ts$/],
  ['vCPU', /\/src\/vcpu\.ts$|\/native\/index\.d\.cts$/],
  ['Memory', /\/src\/memory\.ts$/],
  ['Devices', /\/src\/(devices|serial|byte-stream|virtio\/[a-z-]+)\.ts$/],
  ['Linux', /\/src\/(linux|kernel-cache)\.ts$/],
  ['Errors', /\/src\/errors\.ts$/],
  ['Statistics', /\/src\/stats\.ts$/],
  ['Benchmark', /\/src\/bench\//],
];

/** @param {import('typedoc').Application} app */
export function load(app) {
  app.converter.on(
    Converter.EVENT_RESOLVE_END,
    (context) => {
      for (const reflection of context.project.children ?? []) {
        const symbol = context.getSymbolFromReflection(reflection);
        const file = symbol?.declarations?.[0]?.getSourceFile().fileName ?? '';
        const section = SECTIONS.find(([, files]) => files.test(file))?.[0];
        if (section !== undefined) {
          reflection.comment ??= new Comment();
          reflection.comment.blockTags.push(new CommentTag('@category', [{ kind: 'text', text: section }]));
        }
      }
    },
    // Before typedoc's own CategoryPlugin (-200) reads the tags.
    100,
  );
}
