/* io/base/modelfile.h — the one rule for the files slicepipe reads from a model
 * folder: config.json, the index, the shards, the tokenizer files and the side
 * files copied into an output. Every command (inspect, verify, eval, run,
 * export, generate, tokenize) finds them through sp_modelfile_check.
 *
 * The rule (README "Hostile or careless input"): with every link followed,
 * DIR/NAME must be a regular file
 *   - inside DIR (both compared as realpaths), or
 *   - when DIR is a Hugging Face cache snapshot, REPO/snapshots/REV
 *     (`huggingface-cli download`, `from_pretrained`), directly inside that
 *     repository's own REPO/blobs/ (a real folder, not a link).
 * Anything else is refused (65) without being opened: a link out of the
 * folder (to /etc/passwd, a key, another repository's blob), a blob that is
 * itself a link elsewhere, a FIFO or a device. So a side file can never leak
 * another file into an output.
 */
#ifndef SP_MODELFILE_H
#define SP_MODELFILE_H

#include <stddef.h>

/* Checks `path` (a file of the model folder `dir`, spelled through it:
 * "DIR/config.json", "DIR/sub/shard.safetensors") by the rule above.
 * Returns 0 with *present = 1 when it passes, 0 with *present = 0 when there
 * is no such file (no name, no folder, or a link to nothing: an unfinished
 * download), 66 when `dir` cannot be resolved otherwise (EACCES), 65 naming path, what it resolves to and
 * the rule when it breaks it. */
int sp_modelfile_check(const char *dir, const char *path, int *present);

/* The model's name, for metadata (GGUF general.name): the folder's last
 * name, or for a Hugging Face cache snapshot (models--ORG--NAME/snapshots/
 * REV) the repository's NAME rather than the revision. Cut to cap - 1 bytes. */
void sp_modelfile_name(const char *dir, char *out, size_t cap);

#endif
