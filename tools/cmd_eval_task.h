/* tools/cmd_eval_task.h — `slicepipe eval MODEL --task FILE ...` (tools/cmd_eval_task.c),
 * parsed by tools/slicepipe.c's cmd_eval. */
#ifndef SP_CMD_EVAL_TASK_H
#define SP_CMD_EVAL_TASK_H

#include <stdint.h>

typedef struct sp_eval_task_args {
    const char *model_dir;
    const char **tasks; /* (n_tasks) task files */
    int n_tasks;
    int64_t limit;       /* 0: every item; else the first `limit` of each task */
    int64_t max_length;  /* 0: the model's context */
    int64_t threads, chunk_bytes;
    const char *backend, *spill_dir;
    int json, quiet;
} sp_eval_task_args;

/* 0, or the status of the first failure (its message recorded). */
int sp_cmd_eval_tasks(const sp_eval_task_args *a);

#endif
