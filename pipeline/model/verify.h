/* pipeline/model/verify.h — `slicepipe verify`: re-hash every tensor of an output
 * model directory against the XXH3-128 its shard recorded.
 *
 * The directory is opened with the strict reader (sp_ckpt_open: every header
 * and the index rules of docs/pipeline.md §11). Then, for every tensor of every
 * shard, the shard's __metadata__ must hold "xxh3_128:<tensor name>" — 32
 * lowercase hex digits, the canonical (big-endian) XXH3-128 of the tensor's
 * bytes, as io/formats/st_writer.h writes it — and the tensor's bytes, read in
 * bounded chunks (sp_io_xxh128_range), must hash to it. Needs no journal: a copied
 * or moved output verifies the same.
 *
 * Errors (first one wins): a missing, torn or malformed shard or index: the
 * reader's 65/66/74; no hash recorded for a tensor, or a malformed one: 65;
 * a mismatch: 65 naming the file, the tensor and both hashes.
 * Memory: one 4 MiB chunk buffer at a time, whatever the model size.
 */
#ifndef SP_VERIFY_H
#define SP_VERIFY_H

#include <stdint.h>


typedef struct sp_verify_result {
    int shards;
    int64_t tensors;
    int64_t bytes;     /* tensor bytes hashed */
    double seconds;    /* wall time of the hashing pass */
} sp_verify_result;

int sp_verify_model(const char *dir, sp_verify_result *out);

#endif
