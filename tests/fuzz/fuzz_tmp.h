/* tests/fuzz/fuzz_tmp.h — the per-process scratch folder of the file-based
 * libFuzzer targets (fuzz_manifest, fuzz_config, fuzz_tokens, fuzz_journal).
 *
 * The parsers take a path, so each input is written to a file in a folder
 * made once per process with mkdtemp under $TMPDIR, else /dev/shm (tmpfs:
 * fsync is free, which matters for the journal), else /tmp. The same file is
 * rewritten (O_TRUNC) for every input, and the folder is removed at exit.
 * Header-only: each target is one translation unit. */
#ifndef SP_FUZZ_TMP_H
#define SP_FUZZ_TMP_H

#include "error.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_fuzz_dir[256];      /* the scratch folder, "" until made */
static char g_fuzz_file[320];     /* the one file in it */

static void fuzz_tmp_cleanup(void) {
    if (g_fuzz_file[0]) unlink(g_fuzz_file);
    if (g_fuzz_dir[0]) rmdir(g_fuzz_dir);
}

/* Makes the folder on first use and returns the path of `name` inside it. */
static const char *fuzz_tmp_path(const char *name) {
    if (!g_fuzz_dir[0]) {
        const char *base = getenv("TMPDIR");
        if (!base || !*base) base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        SP_ASSERT(snprintf(g_fuzz_dir, sizeof g_fuzz_dir, "%s/sp_fuzz.XXXXXX", base) < (int)sizeof g_fuzz_dir);
        SP_ASSERT(mkdtemp(g_fuzz_dir) != NULL);
        SP_ASSERT(snprintf(g_fuzz_file, sizeof g_fuzz_file, "%s/%s", g_fuzz_dir, name) < (int)sizeof g_fuzz_file);
        atexit(fuzz_tmp_cleanup);
    }
    return g_fuzz_file;
}

/* Replaces the file's contents with (data, size). */
static void fuzz_tmp_write(const char *path, const uint8_t *data, size_t size) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    SP_ASSERT(fd >= 0);
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        SP_ASSERT(w > 0);
        off += (size_t)w;
    }
    SP_ASSERT(close(fd) == 0);
}

#endif
