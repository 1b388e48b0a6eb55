/* pipeline/run/slice.h — SliceGPT, docs/algorithm.md §5, layer at a time:
 * `slicepipe run manifest.toml`. */
#ifndef SP_SLICE_H
#define SP_SLICE_H

#include <stdint.h>

#include "manifest.h"

typedef struct sp_run_opts {
    int dry_run;   /* print the plan and stop */
    int quiet;     /* no progress on stderr */
    int io_pread;  /* --io=pread: never use io_uring */
    int restart;   /* --restart: discard the job directory's journal and start fresh */
    int nested;    /* a job run for another (split = "auto"'s candidates): no plan on a dry run, no summary */
} sp_run_opts;

/* Runs the whole job described by the manifest. Returns 0 or a sysexits status
 * with a message (sp_errmsg). */
int sp_slice_run(const sp_manifest *mf, const sp_run_opts *o);

/* split = "auto" (split_auto.c): the candidates scored on held-back
 * calibration windows, then the chosen split's job. sp_slice_run calls it. */
int sp_split_auto_run(const sp_manifest *mf, const sp_run_opts *o);
/* `slicepipe status`: an auto split's recorded scores and candidate folders,
 * printed; 0 when OUT_DIR has none. cand (n bytes): a candidate folder found,
 * or "" (its job is the one running while the final one has not started). */
int sp_split_auto_status(const char *out_dir, char *cand, size_t n);

/* `slicepipe status OUT_DIR`: prints how far the job in OUT_DIR got. */
int sp_job_status(const char *out_dir);


#endif
