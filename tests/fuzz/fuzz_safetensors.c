/* tests/fuzz/fuzz_safetensors.c — libFuzzer target for the safetensors reader.
 *
 * Each input is written to an in-memory file (memfd) and opened with
 * sp_st_open through /proc/self/fd/N, exactly as a checkpoint on disk would be;
 * when it validates, every float tensor is read with sp_st_read_f32 and every
 * tensor with sp_st_read_raw. Any crash, sanitizer report or SP_ASSERT is a bug:
 * bad input must only ever produce a status (65) and a message.
 *
 * Build: CC=clang cmake -S . -B build-fuzz -DSLICEPIPE_FUZZ=ON -DSLICEPIPE_SANITIZE=address,undefined
 *        cmake --build build-fuzz --target fuzz_safetensors
 * Run:   build-fuzz/fuzz_safetensors -max_len=65536 CORPUS_DIR
 */
#include "error.h"
#include "safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int g_fd = -1;
static char g_path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (g_fd < 0) {
        g_fd = memfd_create("fuzz_safetensors", MFD_CLOEXEC);
        SP_ASSERT(g_fd >= 0);
        snprintf(g_path, sizeof g_path, "/proc/self/fd/%d", g_fd);
    }
    SP_ASSERT(ftruncate(g_fd, 0) == 0);
    size_t off = 0;
    while (off < size) {
        ssize_t w = pwrite(g_fd, data + off, size - off, (off_t)off);
        SP_ASSERT(w > 0);
        off += (size_t)w;
    }
    sp_st_file *f = NULL;
    int rc = sp_st_open(g_path, &f);
    if (rc) {
        SP_ASSERT(f == NULL);
        SP_ASSERT(rc == SP_EX_DATAERR || rc == SP_EX_SOFTWARE);
        SP_ASSERT(strstr(sp_errmsg(), g_path) != NULL);
        return 0;
    }
    /* validated: all tensors lie inside the file, so sizes are bounded by `size` */
    int64_t end = 8 + sp_st_header_len(f);
    for (int i = 0; i < sp_st_count(f); i++) {
        const sp_st_tensor *t = sp_st_at(f, i);
        SP_ASSERT(t->file_offset == end && t->nbytes >= 0);
        end += t->nbytes;
        SP_ASSERT(sp_st_find(f, t->name) == t);
        void *raw = malloc(t->nbytes ? (size_t)t->nbytes : 1);
        float *out = malloc(t->numel ? (size_t)t->numel * sizeof(float) : 1);
        SP_ASSERT(raw && out);
        SP_ASSERT(sp_st_read_raw(f, t, raw) == 0);
        rc = sp_st_read_f32(f, t, out);
        SP_ASSERT(rc == 0 || rc == SP_EX_DATAERR);
        free(raw);
        free(out);
    }
    SP_ASSERT(end == sp_st_file_size(f) && end == (int64_t)size);
    sp_st_free(f);
    return 0;
}
