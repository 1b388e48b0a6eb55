/* pipeline/run/report.h — the run's human-readable outputs: OUT/slicing.json (the
 * slicing decisions with every PCA spectrum) and OUT/report.html (one
 * self-contained page: inline SVG plots, no scripts, no external resources).
 *
 * The report does not own anything: the caller fills sp_report with pointers
 * that stay valid during the call.
 *
 * slicing.json (numbers print with the fewest of 15..17 significant digits
 * that read back to the identical double; NaN/Inf and unknown values are null):
 *   {"model":str, "hidden_size":D, "num_layers":L, "sparsity":s, "round_to":r,
 *    "policy":str, "params_target":f|null, "ffn":{"before":F, "after":k},
 *    ["split_auto":{"holdout_windows":n, "nll_dense":x, "chosen":s,
 *                   "candidates":[{"split":s, "nll":x|null, "params":n}, ...]},]  (split = "auto" only)
 *    "embed":{"width":d,"evr":x,"eigenvalues":[D values, descending]},
 *    "layers":[{"d_in":..,"d_mid":..,"d_out":..,
 *               "attn":{"width":d_mid,"evr":..,"eigenvalues":[..]},
 *               "mlp":{"width":d_out,"evr":..,"eigenvalues":[..]}}, ...],
 *    "eval":{"nll_dense","ppl_dense","nll_sliced","ppl_sliced","tokens","seqlen"},
 *    "timing":{"<stage>":seconds, ...},
 *    "params":{"before","after"}, "bytes":{"before","after"}, "peak_rss_bytes":n,
 *    "stages":{"<stage>":{"busy_seconds","wait_seconds","bytes_read","bytes_written",
 *              "gb_per_s_busy","peak_rss_bytes"}, ..., "supervisor":{"peak_rss_bytes"},
 *              "peak_rss_sum_bytes", "wall_seconds", "memory_plan_bytes",
 *              "compute_phases":{"<phase>":seconds, ...}}}   (stages only with n_stages > 0)
 * EVR ("explained variance ratio") at width d = sum of the top d eigenvalues
 * / sum of all of them (sp_report_evr); it is computed here, not supplied.
 */
#ifndef SP_REPORT_H
#define SP_REPORT_H

#include <stdint.h>

struct sp_slice_plan;

typedef struct sp_report_pca {
    int64_t width;             /* d kept, in [0, hidden_size] */
    const double *eigenvalues; /* (hidden_size) descending; NULL = not recorded */
} sp_report_pca;

typedef struct sp_report_layer {
    int64_t d_in, d_mid, d_out;
    sp_report_pca attn; /* PCA of M = shortcut + attention output; width d_mid */
    sp_report_pca mlp;  /* PCA of Y, the layer output; width d_out */
} sp_report_layer;

typedef struct sp_report_timing {
    const char *name; /* e.g. "calibration", "layers", "eval_dense" */
    double seconds;
} sp_report_timing;

/* One process of the pipeline, as its stats page recorded it. */
typedef struct sp_report_stage {
    const char *name;              /* "reader", "compute", "writer" */
    double busy_seconds, wait_seconds;
    int64_t bytes_read, bytes_written, peak_rss_bytes;
} sp_report_stage;

typedef struct sp_report {
    const char *model_name;        /* free text (escaped on output); NULL = "" */
    int64_t hidden_size;           /* D >= 1 */
    int64_t n_layers;              /* L >= 0 */
    double sparsity;               /* the residual width's own (under [slicing] params: 1 − d/D) */
    int64_t round_to;
    const char *policy;            /* how it was made, in words; NULL = "SliceGPT" */
    double params_target;          /* [slicing] params; NAN = not given */
    int64_t ffn_before, ffn_after; /* MLP neurons a layer; 0 = not recorded */
    const struct sp_split_choice *split_choice; /* split = "auto": the candidates' held-back NLLs; NULL = none */
    sp_report_pca embed;           /* PCA of the embeddings; width = layers[0].d_in */
    const sp_report_layer *layers; /* (n_layers) */
    double nll_dense, nll_sliced;  /* mean NLL in nats per predicted token; NAN = not measured */
    int64_t eval_tokens;           /* predicted tokens; 0 = unknown */
    int64_t eval_seqlen;           /* 0 = unknown */
    const sp_report_timing *timings; /* (n_timings) */
    int n_timings;
    int64_t params_before, params_after; /* element counts; -1 = unknown */
    int64_t bytes_before, bytes_after;   /* tensor data bytes; -1 = unknown */
    int64_t peak_rss_bytes;              /* of the slicing process; <= 0 = unknown */
    const sp_report_stage *stages;       /* (n_stages) the stage processes; 0: no "stages" */
    int n_stages;
    int64_t supervisor_rss_bytes;        /* with stages: the supervisor's peak RSS */
    double pipeline_seconds;             /* with stages: wall time of the pipeline */
    int64_t memory_plan_bytes;           /* with stages: the plan summed RSS is held to */
    const sp_report_timing *phases;      /* (n_phases) where the compute stage's time went */
    int n_phases;
    double behind_seconds;               /* with stages: boundaries' file I/O on their own thread, meanwhile (not a phase) */
} sp_report;

/* sum(eig[0..d)) / sum(eig[0..n)), with compensated summation. NAN if eig is
 * NULL, d outside [0, n], a value is not finite, or the total is <= 0. */
double sp_report_evr(const double *eig, int64_t n, int64_t d);

/* The two documents as malloc'd NUL-terminated text. Returns 0, or 70 for an
 * inconsistent report (message says which field) or out of memory. */
int sp_report_json(const sp_report *r, char **text_out, int64_t *len_out);
int sp_report_html(const sp_report *r, char **text_out, int64_t *len_out);

/* Writes out_dir/slicing.json and out_dir/report.html, each atomically
 * (sp_io_write_atomic). Returns 0, 70, 73 or 74. */
int sp_report_write(const sp_report *r, const char *out_dir);

/* The pipeline's adapter: fills an sp_report from a finished run and writes
 * it into mf->output_path. evals is ((1 + 2L), D) eigenvalues, descending per
 * row: the embedding PCA, then per layer l the attention-output PCA (row
 * 1 + 2l) and the MLP-output PCA (row 2 + 2l). d_in/d_mid/d_out are (L).
 * dense/sliced may be NULL or hold NAN when not measured. pipeline, when not
 * NULL, supplies the stage statistics and the compute phases (its stages,
 * supervisor_rss_bytes, pipeline_seconds, memory_plan_bytes and phases).
 * n_pca: PCAs per layer, 2 (rows as above) or 1 (a parallel block: row
 * 1 + l is the layer output's PCA, reported as "mlp"; "attn" has none). */
struct sp_manifest;
struct sp_model;
struct sp_eval_result;
int sp_report_write_run(const struct sp_manifest *mf, const struct sp_model *m, const struct sp_slice_plan *plan,
                        const double *evals, const struct sp_eval_result *dense,
                        const struct sp_eval_result *sliced, double slice_seconds, int64_t params_after, int64_t bytes_after,
                        int64_t peak_rss_bytes, const sp_report *pipeline, int n_pca);

#endif
